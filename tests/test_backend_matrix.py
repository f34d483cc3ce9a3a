"""Every backend gives the NumPy answer: solutions, statuses, ``vjp`` gradients, ``jvp`` tangents.

One fixture, ``bk``, runs over the backends: NumPy (inputs given as nested
lists and converted by name), array-api-strict, torch on the CPU, JAX on the CPU
(float64: x64 is enabled for this module), and torch CUDA / JAX GPU / CuPy
where the machine has them (skipped otherwise).

Problems (hypothesis-drawn sizes, sharing pattern and seed) are feasible and
strictly convex by construction::

    Q = M M' + 0.1 I,   h = G x0 + s0 (s0 in [0, 1), up to n - m rows 0),
    b = A x0 (A: m < n rows, full row rank)

with each of ``Q``, ``q``, ``G``, ``A`` and the feasible point ``(x0, s0)``
either batched or shared (``h``/``b`` are batched when anything they are built
from is), and batch shapes of rank 1 or 2 (some arguments broadcasting along the
leading axis). All backends run the same float64 algorithm, so they agree far
below the solver tolerance: the results are compared to ``RTOL = 1e-9`` of the
size of each NumPy result (``max |got - ref| <= RTOL * max |ref|``), the
derivatives to ``DTOL = 1e-8``.

JAX compiles per shape (tens of seconds each on CPU), so its hypothesis cases
use one fixed shape and sharing pattern (values drawn), through ``jax.jit``;
eager JAX (``optnet.solve(..., backend="jax")`` outside ``jit``) is checked on
one problem and marked slow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optnet

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

NAMES = ("Q", "q", "G", "h", "A", "b")
CORE_RANK = {"Q": 2, "q": 1, "G": 2, "h": 1, "A": 2, "b": 1}
RTOL = 1e-9
DTOL = 1e-8
SOLVED = int(optnet.Status.SOLVED)
SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The one shape every JAX case uses (a second shape would cost a second compilation):
# batch (4,), n = 4, p = 5, m = 2, A shared, everything else batched.
JAX_B, JAX_N, JAX_P, JAX_M = 4, 4, 5, 2


# ---------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Backend:
    """How to move NumPy arrays to one backend and back, and how to solve there."""

    name: str
    to: Callable            # NumPy array -> backend array
    back: Callable          # backend array -> NumPy array
    backend_arg: str | None = None   # passed as ``backend=``
    jax: bool = False

    def run(self, prob: dict, cot: tuple, tan: dict) -> dict:
        """Solve, vjp and jvp on this backend; all results as NumPy arrays."""
        if self.jax:
            return _run_jax_jit(self, prob, cot, tan)
        args = [None if prob[k] is None else self.to(prob[k]) for k in NAMES]
        sol = optnet.solve(*args, backend=self.backend_arg)
        cot_b = [None if c is None else self.to(c) for c in cot]
        g = optnet.vjp(sol, cot_b[0], dz=cot_b[1], dy=cot_b[2])
        t = optnet.jvp(sol, **{"d" + k: self.to(v) for k, v in tan.items()})
        return _collect(self.back, sol.x, sol.z, sol.y, sol.s, sol.status, g, t)


def _collect(back, x, z, y, s, status, g, t) -> dict:
    out = {"x": back(x), "z": back(z), "y": back(y), "s": back(s),
           "status": back(status).astype(np.int64)}
    for k in NAMES:
        v = getattr(g, k)
        out["g" + k] = None if v is None else back(v)
    for k in ("x", "z", "y", "s"):
        out["t" + k] = back(getattr(t, k))
    return out


def _np_back(a):
    return np.asarray(a)


def _torch_backend(device):
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")

    def to(a):
        return torch.as_tensor(np.asarray(a), device=device)

    def back(a):
        return a.detach().cpu().numpy()

    return Backend(f"torch-{device}", to, back)


def _jax_backend(platform):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    try:
        dev = jax.devices(platform)[0]
    except RuntimeError:
        pytest.skip(f"JAX has no {platform} device")

    def to(a):
        return jax.device_put(np.asarray(a), dev)

    def back(a):
        return np.asarray(jax.device_get(a))

    return Backend(f"jax-{platform}", to, back, jax=True)


def _cupy_backend():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device for CuPy")
    except Exception:
        pytest.skip("no CUDA device for CuPy")
    return Backend("cupy", cupy.asarray, cupy.asnumpy, backend_arg="cupy")


def _strict_backend():
    xp = pytest.importorskip("array_api_strict")
    return Backend("array_api_strict", lambda a: xp.asarray(np.asarray(a)),
                   lambda a: np.asarray(a), backend_arg="array_api_strict")


def _numpy_lists_backend():
    # Inputs as nested Python lists converted by name: the reference itself is
    # computed from NumPy arrays with the backend inferred.
    return Backend("numpy", lambda a: np.asarray(a).tolist(), _np_back, backend_arg="numpy")


MATRIX = {
    "numpy": _numpy_lists_backend,
    "array_api_strict": _strict_backend,
    "torch-cpu": lambda: _torch_backend("cpu"),
    "jax-cpu": lambda: _jax_backend("cpu"),
    "torch-cuda": lambda: _torch_backend("cuda"),
    "jax-gpu": lambda: _jax_backend("gpu"),
    "cupy": _cupy_backend,
}


@pytest.fixture(params=list(MATRIX), ids=list(MATRIX), scope="module")
def bk(request) -> Backend:
    """One backend of the matrix (skips where the library or device is missing)."""
    return MATRIX[request.param]()


# ---------------------------------------------------------------------------
# JAX: solve + vjp + jvp in one jitted function (one compilation per shape)
# ---------------------------------------------------------------------------


def _jax_all(args, cot, tan):
    sol = optnet.solve(*args)
    g = optnet.vjp(sol, cot[0], dz=cot[1], dy=cot[2])
    t = optnet.jvp(sol, **tan)
    return sol.x, sol.z, sol.y, sol.s, sol.status, tuple(g), tuple(t)


_JITTED = {}


def _jitted_all():
    import jax

    if "all" not in _JITTED:
        _JITTED["all"] = jax.jit(_jax_all)
    return _JITTED["all"]


def _run_jax_jit(bk, prob, cot, tan):
    args = tuple(None if prob[k] is None else bk.to(prob[k]) for k in NAMES)
    cot_j = tuple(None if c is None else bk.to(c) for c in cot)
    tan_j = {"d" + k: bk.to(v) for k, v in tan.items()}
    x, z, y, s, status, g, t = _jitted_all()(args, cot_j, tan_j)
    return _collect(bk.back, x, z, y, s, status, optnet.QPGrads(*g), optnet.QPTangents(*t))


# ---------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------


def make_problem(seed, n, p, m, batch, batched, lead_only=()):
    """A feasible, strictly convex batch of QPs as NumPy float64 arrays.

    ``batched``: the subset of {"Q", "q", "G", "A", "x0"} that has the batch
    dimensions (the rest is shared). ``lead_only``: batched names that get only
    the trailing batch axis (they broadcast along the leading one).
    """
    rng = np.random.default_rng(seed)

    def bshape(name):
        if name not in batched:
            return ()
        return batch[1:] if name in lead_only else batch

    M = rng.normal(size=(*bshape("Q"), n, n))
    Q = M @ np.swapaxes(M, -1, -2) + 0.1 * np.eye(n)
    q = rng.normal(size=(*bshape("q"), n))
    x0 = rng.normal(size=(*bshape("x0"), n))
    prob = {"Q": Q, "q": q, "G": None, "h": None, "A": None, "b": None}
    if p:
        G = rng.normal(size=(*bshape("G"), p, n))
        s0 = rng.uniform(0.0, 1.0, size=(*bshape("x0"), p))
        # Some rows tight at x0, at most n - m of them: more would make x0 a degenerate
        # vertex (more than n active hyperplanes through it), where the optimum often
        # lands and the duals (and the derivatives) are not unique.
        k = int(rng.integers(0, min(p, n - m) + 1))
        s0[..., rng.permutation(p)[:k]] = 0.0
        prob["G"] = G
        prob["h"] = np.einsum("...pn,...n->...p", G, x0) + s0
    if m:
        A = rng.normal(size=(*bshape("A"), m, n))      # full row rank (m < n) almost surely
        prob["A"] = A
        prob["b"] = np.einsum("...mn,...n->...m", A, x0)
    return prob


def batch_shape_of(prob):
    shapes = [a.shape[: a.ndim - CORE_RANK[k]] for k, a in prob.items() if a is not None]
    return tuple(np.broadcast_shapes(*shapes))


def directions(prob, seed):
    """Random cotangents (dx, dz, dy) of the solution's shape and tangents of the inputs'."""
    rng = np.random.default_rng(seed)
    bs = batch_shape_of(prob)
    n = prob["Q"].shape[-1]
    p = 0 if prob["G"] is None else prob["G"].shape[-2]
    m = 0 if prob["A"] is None else prob["A"].shape[-2]
    cot = (rng.normal(size=(*bs, n)),
           rng.normal(size=(*bs, p)) if p else None,
           rng.normal(size=(*bs, m)) if m else None)
    tan = {k: rng.normal(size=a.shape) for k, a in prob.items() if a is not None}
    return cot, tan


@st.composite
def problems(draw, fixed_jax_shape=False):
    seed = draw(st.integers(0, 2**32 - 1))
    if fixed_jax_shape:
        batched = {"Q", "q", "G", "x0"}
        return make_problem(seed, JAX_N, JAX_P, JAX_M, (JAX_B,), batched)
    n = draw(st.integers(1, 8))
    p = draw(st.integers(0, 2 * n))
    m = draw(st.integers(0, n - 1))
    batch = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    batched = set(draw(st.lists(st.sampled_from(["Q", "q", "G", "A", "x0"]), unique=True)))
    lead_only = ()
    if len(batch) == 2:
        lead_only = tuple(draw(st.lists(st.sampled_from(sorted(batched) or ["Q"]), unique=True)))
    if not batched and batch:
        batched = {"q"}                   # keep the drawn batch shape
    return make_problem(seed, n, p, m, batch, batched, lead_only)


def reference(prob, cot, tan):
    sol = optnet.solve(*(prob[k] for k in NAMES))
    g = optnet.vjp(sol, cot[0], dz=cot[1], dy=cot[2])
    t = optnet.jvp(sol, **{"d" + k: v for k, v in tan.items()})
    return _collect(_np_back, sol.x, sol.z, sol.y, sol.s, sol.status, g, t)


def _maxabs(a):
    if a is None:
        return 0.0
    a = a[np.isfinite(a)]
    return float(np.max(np.abs(a))) if a.size else 0.0


def assert_close(got, ref, tol, what, floor=0.0):
    """``max |got - ref| <= tol * max(max |ref|, floor)`` over the finite entries of ``ref``.

    ``floor`` keeps a field whose reference is (nearly) zero from being compared
    against nothing: the callers pass 1e-3 of the size of the whole result group
    (solution, gradients or tangents) it belongs to.
    """
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(got)), f"{what}: NaN pattern differs"
    if not finite.any():
        return
    err = np.max(np.abs(got[finite] - ref[finite]))
    scale = max(_maxabs(ref), floor, 1e-300)
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:g} * {scale:.3e}"


def assert_matches(got, ref):
    np.testing.assert_array_equal(got["status"], ref["status"])
    groups = {
        "": ("x", "z", "y", "s"),
        "g": NAMES,
        "t": ("x", "z", "y", "s"),
    }
    for prefix, fields in groups.items():
        keys = [prefix + k for k in fields]
        floor = 1e-3 * max(_maxabs(ref[k]) for k in keys)
        tol = RTOL if prefix == "" else DTOL
        for k in keys:
            if ref[k] is None:
                assert got[k] is None, f"{k} should be None"
            else:
                assert_close(got[k], ref[k], tol, k, floor)


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_solution_and_derivatives_match_numpy(bk, data):
    prob = data.draw(problems(fixed_jax_shape=bk.jax), label="problem")
    cot, tan = directions(prob, seed=data.draw(st.integers(0, 2**16), label="direction seed"))
    ref = reference(prob, cot, tan)
    assert np.all(ref["status"] == SOLVED), ref["status"]
    got = bk.run(prob, cot, tan)
    assert_matches(got, ref)


def test_results_are_arrays_of_the_backend(bk):
    prob = make_problem(3, JAX_N, JAX_P, JAX_M, (JAX_B,), {"Q", "q", "G", "x0"})
    args = [bk.to(prob[k]) for k in NAMES]
    if bk.jax:
        import jax

        cot, tan = directions(prob, seed=3)
        x = _jitted_all()(tuple(args), tuple(bk.to(c) for c in cot),
                          {"d" + k: bk.to(v) for k, v in tan.items()})[0]
        assert isinstance(x, jax.Array)
        assert x.dtype == np.float64
        assert x.devices() == args[0].devices()
        return
    sol = optnet.solve(*args, backend=bk.backend_arg)
    if bk.name == "numpy":
        assert isinstance(sol.x, np.ndarray)
    elif bk.name.startswith("torch"):
        import torch

        assert isinstance(sol.x, torch.Tensor) and sol.x.dtype == torch.float64
        assert sol.x.device == args[0].device
        assert sol.status.device == args[0].device
    else:
        assert type(sol.x).__module__.split(".")[0] == bk.name
    assert tuple(sol.x.shape) == (JAX_B, JAX_N)


def mixed_status_problem():
    """Four lanes: SOLVED, PRIMAL_INFEASIBLE, DUAL_INFEASIBLE, NUMERICAL_ERROR.

    The JAX shape (A shared, the rest batched), so that JAX reuses its compilation.
    """
    prob = make_problem(11, JAX_N, JAX_P, JAX_M, (JAX_B,), {"Q", "q", "G", "x0"})
    Q, q, G, h, A = (prob[k].copy() for k in ("Q", "q", "G", "h", "A"))
    b = prob["b"].copy()
    n = JAX_N
    # lane 1: x_0 <= -1 and -x_0 <= -1, i.e. x_0 <= -1 and x_0 >= 1
    G[1, 0] = np.eye(n)[0]
    G[1, 1] = -np.eye(n)[0]
    h[1, :2] = -1.0
    # lane 2: an LP unbounded along d (A d = 0, G d <= 0, q'd < 0)
    _, _, vt = np.linalg.svd(A)
    d = vt[-1]
    G[2] = G[2] - np.outer(G[2] @ d + 0.1, d) / (d @ d)   # now G[2] d = -0.1
    Q[2] = 0.0
    q[2] = -d
    # lane 3: NaN data
    Q[3, 0, 0] = np.nan
    return {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}


EXPECTED_MIXED = [int(optnet.Status.SOLVED), int(optnet.Status.PRIMAL_INFEASIBLE),
                  int(optnet.Status.DUAL_INFEASIBLE), int(optnet.Status.NUMERICAL_ERROR)]


def test_mixed_infeasible_lanes_identical_statuses(bk):
    prob = mixed_status_problem()
    cot, tan = directions(prob, seed=5)
    ref = reference(prob, cot, tan)
    got = bk.run(prob, cot, tan)
    # Identical across backends ...
    np.testing.assert_array_equal(got["status"], ref["status"])
    # ... and the right ones.
    np.testing.assert_array_equal(got["status"], EXPECTED_MIXED)
    # The failed lanes are NaN but for their certificates (lane 1: Farkas (y, z); lane 2:
    # a direction x with q'x = -1), and the solved lane agrees with NumPy.
    assert np.all(np.isnan(got["x"][[1, 3]])) and np.all(np.isnan(got["z"][2:]))
    assert np.all(np.isfinite(got["z"][1])) and np.all(got["z"][1] >= 0)
    assert_close(got["z"][1:2], ref["z"][1:2], RTOL, "Farkas vector of the infeasible lane")
    assert_close(got["x"][2:3], ref["x"][2:3], RTOL, "direction of the unbounded lane")
    assert abs(float(prob["q"][2] @ got["x"][2]) + 1.0) <= 1e-4
    assert_close(got["x"][:1], ref["x"][:1], RTOL, "x of the solved lane")
    assert_close(got["z"][:1], ref["z"][:1], RTOL, "z of the solved lane")
    assert_close(got["y"][:1], ref["y"][:1], RTOL, "y of the solved lane")
    # Derivatives: zero for the failed lanes, NumPy's for the solved one.
    for k in ("Q", "q", "G", "h", "b"):
        g = got["g" + k]
        assert np.all(np.isfinite(g)), k
        assert np.all(g[1:] == 0.0), k
        assert_close(g[:1], ref["g" + k][:1], DTOL, f"grad {k}")
    assert np.all(np.isfinite(got["gA"]))
    assert_close(got["gA"], ref["gA"], DTOL, "grad A (shared: the solved lane's)")
    for k in ("x", "z", "y"):
        t = got["t" + k]
        assert np.all(t[1:] == 0.0), k
        assert_close(t[:1], ref["t" + k][:1], DTOL, f"tangent {k}")


# ---------------------------------------------------------------------------
# JAX outside jit
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_jax_eager_matches_numpy_and_jit():
    """``optnet.solve(backend="jax")`` outside ``jit`` (slow: every loop compiles)."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    bk = _jax_backend("cpu")
    prob = make_problem(2, JAX_N, JAX_P, JAX_M, (JAX_B,), {"Q", "q", "G", "x0"})
    cot, tan = directions(prob, seed=2)
    ref = reference(prob, cot, tan)
    sol = optnet.solve(*(prob[k] for k in NAMES), backend="jax")
    assert isinstance(sol.x, jax.Array)
    g = optnet.vjp(sol, bk.to(cot[0]), dz=bk.to(cot[1]), dy=bk.to(cot[2]))
    t = optnet.jvp(sol, **{"d" + k: bk.to(v) for k, v in tan.items()})
    eager = _collect(bk.back, sol.x, sol.z, sol.y, sol.s, sol.status, g, t)
    assert_matches(eager, ref)
    jitted = _run_jax_jit(bk, prob, cot, tan)
    assert_matches(jitted, eager)


def test_problem_construction_is_feasible():
    """The generator's problems are what the docstring says (guards the matrix itself)."""
    for seed in range(5):
        prob = make_problem(seed, 5, 6, 2, (2, 3), {"Q", "q", "G", "A", "x0"}, ("Q",))
        assert prob["Q"].shape == (3, 5, 5) and prob["G"].shape == (2, 3, 6, 5)
        assert batch_shape_of(prob) == (2, 3)
        assert np.all(np.linalg.eigvalsh(prob["Q"]) >= 0.1 - 1e-12)
        assert np.linalg.matrix_rank(prob["A"][0, 0]) == 2
        sol = optnet.solve(*(prob[k] for k in NAMES))
        assert np.all(sol.status == SOLVED)
        assert math.isfinite(float(np.max(np.abs(sol.x))))
