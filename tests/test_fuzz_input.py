"""Fuzzing ``optnet.solve`` with bad and odd input.

The contract checked here: every call either

* raises ``ValueError`` whose message names an offending argument (as a word)
  and, for shape and dtype errors, says what it received; or
* returns a result with one status per lane, where ``iterations <= max_iter``,
  lanes that are SOLVED or MAX_ITER have finite ``x``, ``y``, ``z`` and ``s``
  (``s = +inf`` exactly on rows with ``h = +inf``), failed lanes
  (PRIMAL_INFEASIBLE, DUAL_INFEASIBLE, NUMERICAL_ERROR) have NaN arrays, lanes
  whose data hold NaN/Inf (other than ``+inf`` in ``h``) are NUMERICAL_ERROR,
  and the lanes whose data are untouched get what they get when solved alone.

Never any other exception type from deep inside a library, and never a
different answer for the same numbers in a different memory layout.

Dimensions fuzzed: shapes and ranks (including zero-size dimensions), NaN/Inf
and huge values in one lane of a batch, dtypes and array libraries (and their
mixtures, with and without a named backend), memory layouts (strided,
transposed, Fortran-ordered, negative strides, read-only), and the magnitude of
the data (the whole problem, or single rows, scaled by up to 1e+-8).

JAX runs eagerly at about ten seconds a call (every loop compiles), so it is
fuzzed only where no solve runs (errors), or through one ``jax.jit``-compiled
function of a fixed shape.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from conftest import n_examples, to_numpy
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from strategies import ARGS, CORE_RANK, QPSpec, feasible_lane, qp_specs

import optnet
from optnet import Status

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

FIELDS = ("x", "z", "y", "s", "status", "iterations", "primal_residual", "dual_residual", "gap")
POINT = ("x", "y", "z", "s")
RESIDUALS = ("primal_residual", "dual_residual", "gap")
EAGER = ("numpy", "array_api_strict", "torch")
FAILED = (int(Status.PRIMAL_INFEASIBLE), int(Status.DUAL_INFEASIBLE),
          int(Status.NUMERICAL_ERROR), int(Status.NONCONVEX))
OK = (int(Status.SOLVED), int(Status.MAX_ITER))
DEFAULT_MAX_ITER = 100


# ---------------------------------------------------------------- helpers


def word(name: str) -> str:
    """Regex matching ``name`` as a whole word."""
    return rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])"


def names_any(msg: str, names) -> bool:
    return any(re.search(word(k), msg) for k in names)


def assert_value_error(call, names, *, must_contain=()):
    """``call()`` raises ValueError naming one of ``names`` (and every ``must_contain``).

    Any other exception type fails the test with its type and message.
    """
    try:
        call()
    except ValueError as err:
        msg = str(err)
        assert names_any(msg, names), f"message {msg!r} names none of {sorted(names)}"
        for s in must_contain:
            assert s in msg, f"message {msg!r} lacks {s!r}"
        return msg
    except Exception as err:  # noqa: BLE001 - any other type is the failure
        pytest.fail(f"expected ValueError naming one of {sorted(names)}; got "
                    f"{type(err).__module__}.{type(err).__name__}: {err}")
    pytest.fail(f"expected ValueError naming one of {sorted(names)}; got a result")


def solve_np(data: dict, **kw) -> dict:
    """Solve and return every field as a NumPy array."""
    sol = optnet.solve(*(data[k] for k in ARGS), **kw)
    return {f: to_numpy(getattr(sol, f)) for f in FIELDS}


def check_lanes(out: dict, *, batch_shape, n, p, m, h=None, max_iter=DEFAULT_MAX_ITER):
    """The per-lane contract of a result (see the module docstring).

    ``h`` is the broadcast ``h`` (``(*batch_shape, p)``) or None; it tells which
    rows may have ``s = +inf``.
    """
    bs = tuple(batch_shape)
    want = {"x": bs + (n,), "y": bs + (m,), "z": bs + (p,), "s": bs + (p,)}
    for f in FIELDS:
        assert out[f].shape == want.get(f, bs), (f, out[f].shape, want.get(f, bs))
    status, its = out["status"], out["iterations"]
    assert np.issubdtype(status.dtype, np.integer)
    assert set(np.unique(status).tolist()) <= {int(s) for s in Status}, status
    assert np.all(its >= 0) and np.all(its <= max_iter), (its, max_iter)
    free = np.zeros(bs + (p,), bool) if h is None or p == 0 else np.isposinf(
        np.broadcast_to(h, bs + (p,)))
    for idx in np.ndindex(*bs):
        code = int(status[idx])
        if code in OK:
            for f in ("x", "y", "z"):
                assert np.all(np.isfinite(out[f][idx])), (idx, code, f, out[f][idx])
            s = out["s"][idx]
            assert np.all(np.isfinite(s[~free[idx]])), (idx, code, "s", s)
            assert np.all(np.isposinf(s[free[idx]])), (idx, code, "s", s)
            assert np.all(out["z"][idx][free[idx]] == 0.0), (idx, "z on a free row")
            for f in RESIDUALS:
                assert np.isfinite(out[f][idx]), (idx, code, f)
        else:
            # Failed lanes (optnet._types.STATUS_EXPLANATIONS): NUMERICAL_ERROR has NaN
            # arrays; PRIMAL_INFEASIBLE its Farkas certificate in y, z (x, s NaN);
            # DUAL_INFEASIBLE its direction in x (y, z, s NaN). On rows with h = +inf,
            # z = 0 and s = +inf whatever the status.
            assert code in FAILED, code
            cert = {int(Status.PRIMAL_INFEASIBLE): ("y", "z"),
                    int(Status.DUAL_INFEASIBLE): ("x",)}.get(code, ())
            for f in RESIDUALS:
                assert np.isnan(out[f][idx]), (idx, code, f, out[f][idx])
            for f in POINT:
                v = out[f][idx]
                if f in cert:
                    assert np.all(np.isfinite(v)), (idx, code, f, v)
                    continue
                rows = free[idx] if f in ("z", "s") else np.zeros(v.shape, bool)
                assert np.all(np.isnan(v[~rows])), (idx, code, f, v)
                on_free = 0.0 if f == "z" else np.inf
                assert np.all(np.isnan(v[rows]) | (v[rows] == on_free)), (idx, code, f, v)
            if "z" in cert:
                assert np.all(out["z"][idx] >= 0), (idx, code, out["z"][idx])


def assert_same_lane(got: dict, idx, ref: dict, rtol: float, what: str = ""):
    """Lane ``idx`` of ``got`` equals the single problem ``ref``: status, iterations, point."""
    assert int(got["status"][idx]) == int(ref["status"]), (what, idx, got["status"][idx],
                                                           ref["status"])
    assert int(got["iterations"][idx]) == int(ref["iterations"]), (
        what, idx, got["iterations"][idx], ref["iterations"])
    for f in POINT:
        a, b = got[f][idx], ref[f]
        scale = max(1.0, float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale,
                                   err_msg=f"{what}: {f}, lane {idx}")


# ---------------------------------------------------------------- shapes and ranks

MUTATIONS = ("core_plus", "core_minus", "core_zero", "drop_last", "drop_first", "append",
             "prepend", "scalar", "batch_bad", "n_zero")
FULL_BATCHES = ((), (0,), (1,), (2,), (3,), (2, 3), (0, 3), (3, 1))


@st.composite
def shape_cases(draw, *, invalid_only: bool = False):
    """A dict of argument shapes (None for absent blocks), near-valid with a few mutations."""
    n = draw(st.integers(1, 3), label="n")
    p = draw(st.integers(0, 3), label="p")
    m = draw(st.integers(0, 1), label="m")
    g_given = p > 0 or draw(st.booleans(), label="G_zero_rows_given")
    a_given = m > 0 or draw(st.booleans(), label="A_zero_rows_given")
    full = draw(st.sampled_from(FULL_BATCHES), label="batch")
    core = {"Q": (n, n), "q": (n,), "G": (p, n), "h": (p,), "A": (m, n), "b": (m,)}
    shapes = {}
    for k in ARGS:
        if (k in "Gh" and not g_given) or (k in "Ab" and not a_given):
            shapes[k] = None
            continue
        bs = full[draw(st.integers(0, len(full)), label=f"cut_{k}"):]
        ones = draw(st.lists(st.booleans(), min_size=len(bs), max_size=len(bs)),
                    label=f"ones_{k}")
        shapes[k] = tuple(1 if o else d for o, d in zip(ones, bs)) + core[k]
    n_mut = draw(st.integers(1 if invalid_only else 0, 2), label="n_mutations")
    for _ in range(n_mut):
        kind = draw(st.sampled_from(MUTATIONS), label="mutation")
        if kind == "n_zero":
            for k in ARGS:
                if shapes[k] is not None:
                    s = list(shapes[k])
                    s[-1] = 0
                    if k == "Q":
                        s[-2] = 0
                    shapes[k] = tuple(s)
            continue
        k = draw(st.sampled_from([a for a in ARGS if shapes[a] is not None]), label="arg")
        s = list(shapes[k])
        i = draw(st.integers(1, max(1, min(len(s), CORE_RANK[k]))), label="dim")
        if kind in ("core_plus", "core_minus", "core_zero") and len(s) >= i:
            s[-i] = {"core_plus": s[-i] + 1, "core_minus": max(0, s[-i] - 1),
                     "core_zero": 0}[kind]
        elif kind == "drop_last" and s:
            s = s[:-1]
        elif kind == "drop_first" and s:
            s = s[1:]
        elif kind == "append":
            s = s + [draw(st.integers(0, 3), label="appended")]
        elif kind == "prepend":
            s = [draw(st.integers(0, 4), label="prepended")] + s
        elif kind == "scalar":
            s = []
        elif kind == "batch_bad":
            s = [draw(st.sampled_from([5, 7]), label="bad_batch")] + s
        shapes[k] = tuple(s)
    if invalid_only:
        assume(shape_problems(shapes))
    return shapes


def shape_problems(shapes: dict) -> set:
    """The arguments involved in a violated shape rule (empty: the shapes are valid).

    Rules (optnet.solve's docstring and ``_problem``): Q (..., n, n) with n >= 1,
    q (..., n), G (..., p, n), h (..., p), A (..., m, n), b (..., m); zero rows
    (p = 0, m = 0) and zero-size batch dimensions are allowed; the batch
    dimensions broadcast NumPy-style.
    """
    given = {k: s for k, s in shapes.items() if s is not None}
    bad = {k for k, s in given.items() if len(s) < CORE_RANK[k]}
    n = None
    if "Q" not in bad:
        Q = given["Q"]
        if Q[-1] != Q[-2] or Q[-1] == 0:
            bad.add("Q")
        n = Q[-1]
    if "q" not in bad and n is not None and given["q"][-1] != n:
        bad |= {"q", "Q"}
    for M, v in (("G", "h"), ("A", "b")):
        if M not in given:
            continue
        if M not in bad and n is not None and given[M][-1] != n:
            bad |= {M, "Q"}
        if M not in bad and v not in bad and given[v][-1] != given[M][-2]:
            bad |= {M, v}
    if not bad:
        batch = {k: s[: len(s) - CORE_RANK[k]] for k, s in given.items()}
        try:
            np.broadcast_shapes(*batch.values())
        except ValueError:
            bad |= {k for k, b in batch.items() if any(d != 1 for d in b)}
    return bad


def data_for(shapes: dict, seed: int) -> tuple[dict, dict | None]:
    """Arrays of the given shapes; for valid shapes, one feasible problem broadcast to them.

    Returns the data and (for valid shapes) the single problem.
    """
    rng = np.random.default_rng(seed)
    if shape_problems(shapes):
        return {k: None if s is None else rng.standard_normal(s) for k, s in shapes.items()}, None
    n = shapes["Q"][-1]
    p = shapes["G"][-2] if shapes["G"] is not None else 0
    m = shapes["A"][-2] if shapes["A"] is not None else 0
    lane = feasible_lane(rng, n, p, m)
    lane.update({"G": np.zeros((0, n)), "h": np.zeros(0)} if p == 0 else {})
    lane.update({"A": np.zeros((0, n)), "b": np.zeros(0)} if m == 0 else {})
    data = {k: None if s is None else np.broadcast_to(lane[k], s).copy()
            for k, s in shapes.items()}
    return data, lane


def check_shape_case(shapes: dict, seed: int, backend: str) -> None:
    data, lane = data_for(shapes, seed)
    bad = shape_problems(shapes)
    if bad:
        assert_value_error(lambda: solve_np(data, backend=backend), bad,
                           must_contain=("received",))
        return
    given = {k: s for k, s in shapes.items() if s is not None}
    bs = np.broadcast_shapes(*(s[: len(s) - CORE_RANK[k]] for k, s in given.items()))
    n, p, m = lane["Q"].shape[-1], lane["h"].shape[-1], lane["b"].shape[-1]
    out = solve_np(data, backend=backend)
    check_lanes(out, batch_shape=bs, n=n, p=p, m=m)
    if math.prod(bs) and m < n:
        # Every lane is the same feasible, strictly convex problem.
        alone = solve_np({k: lane[k] if shapes[k] is not None else None for k in ARGS})
        assert np.all(out["status"] == int(Status.SOLVED)), out["status"]
        for f in POINT:
            np.testing.assert_allclose(out[f], np.broadcast_to(alone[f], out[f].shape),
                                       rtol=1e-9, atol=1e-9, err_msg=f)


@pytest.mark.parametrize("backend", EAGER)
@settings(max_examples=n_examples(40))
@given(shapes=shape_cases(), seed=st.integers(0, 2**16))
# A 0-d q once became shape (1,) on torch and array-api-strict (a C-order copy that
# made 0-d arrays 1-d) and was then taken for a vector of n = 1.
@example(shapes={"Q": (1, 1), "q": (), "G": None, "h": None, "A": None, "b": None}, seed=0)
def test_fuzz_shapes(backend, shapes, seed):
    """Random (often wrong) shapes: ValueError naming an offending argument, or a
    result of the broadcast batch shape whose every lane is the one problem."""
    check_shape_case(shapes, seed, backend)


@settings(max_examples=n_examples(30))
@given(shapes=shape_cases(invalid_only=True), seed=st.integers(0, 2**16))
def test_fuzz_shapes_jax(shapes, seed):
    """The same wrong shapes through the JAX backend (no solve runs: errors only)."""
    check_shape_case(shapes, seed, "jax")


def test_shape_oracle_is_not_vacuous():
    """The shape rules of this module accept and reject what they should."""
    ok = {"Q": (2, 3, 3), "q": (3,), "G": (1, 4, 3), "h": (3, 1, 4), "A": (0, 3), "b": (0,)}
    assert shape_problems(ok) == set()
    assert shape_problems(dict(ok, Q=(0, 0), q=(0,), G=(1, 4, 0), A=(0, 0))) == {"Q"}
    assert shape_problems(dict(ok, h=(3, 5))) == {"G", "h"}
    assert shape_problems(dict(ok, q=(2, 2))) == {"Q", "q"}
    assert shape_problems(dict(ok, Q=(3, 3), h=(1, 4), b=(0, 0))) == set()   # batch (0,)
    assert shape_problems(dict(ok, b=(4, 0))) == {"Q", "h", "b"}
    assert shape_problems(dict(ok, G=None, h=None, q=())) == {"q"}


# Explicit zero-size cases: (description, shapes) -> valid.
ZERO_SIZE_CASES = {
    "batch0_Q": {"Q": (0, 3, 3)},
    "batch0_q": {"q": (0, 3)},
    "batch0_G_h": {"G": (0, 4, 3), "h": (0, 4)},
    "batch0_b": {"b": (0, 1)},
    "batch0_all": {"Q": (0, 3, 3), "q": (0, 3), "G": (0, 4, 3), "h": (0, 4), "A": (0, 1, 3),
                   "b": (0, 1)},
    "batch_2x0": {"Q": (2, 0, 3, 3)},
    "batch_0x2": {"q": (0, 2, 3), "h": (2, 4)},
    "batch0_with_1": {"Q": (0, 3, 3), "q": (1, 3)},
    "p0": {"G": (0, 3), "h": (0,)},
    "p0_batched": {"G": (2, 0, 3), "h": (5, 2, 0)},
    "m0": {"A": (0, 3), "b": (0,)},
    "p0_m0": {"G": (0, 3), "h": (0,), "A": (0, 3), "b": (0,)},
    "p0_m0_batch0": {"G": (0, 0, 3), "h": (0,), "A": (0, 3), "b": (0,)},
}
BASE_SHAPES = {"Q": (3, 3), "q": (3,), "G": (4, 3), "h": (4,), "A": (1, 3), "b": (1,)}


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("case", sorted(ZERO_SIZE_CASES))
def test_zero_size_dimensions(backend, case):
    """Zero-size batch dimensions give empty results of the right shapes; blocks with
    zero rows give exactly (bit for bit) the result of leaving the block out, in a batch of
    the same shape (a zero-row block's batch dimensions still make the batch: ``q`` carries
    them in the reference, so that both solves multiply the shared matrices by the same
    batch)."""
    shapes = dict(BASE_SHAPES, **ZERO_SIZE_CASES[case])
    assert not shape_problems(shapes)
    data, lane = data_for(shapes, 3)
    out = solve_np(data, backend=backend)
    bs = np.broadcast_shapes(*(s[: len(s) - CORE_RANK[k]] for k, s in shapes.items()))
    p, m = shapes["G"][-2], shapes["A"][-2]
    check_lanes(out, batch_shape=bs, n=3, p=p, m=m)
    assert out["x"].dtype == np.float64 and out["status"].dtype == np.int32
    if p == 0 or m == 0:
        absent = dict(data)
        if p == 0:
            absent.update(G=None, h=None)
        if m == 0:
            absent.update(A=None, b=None)
        absent["q"] = np.broadcast_to(absent["q"], (*bs, 3))
        ref = solve_np(absent, backend=backend)
        for f in FIELDS:
            want = ref[f]
            if want.shape != out[f].shape:      # the zero-row block's own batch dims
                want = np.broadcast_to(want, out[f].shape)
            assert np.array_equal(out[f], want), f


def test_zero_size_dimensions_jax():
    """A zero-size batch and zero-row blocks through eager JAX (one call)."""
    shapes = dict(BASE_SHAPES, Q=(0, 3, 3), G=(0, 3), h=(0,), A=(0, 3), b=(0,))
    data, _ = data_for(shapes, 4)
    sol = optnet.solve(*(data[k] for k in ARGS), backend="jax")
    assert isinstance(sol.x, jax.Array)
    out = {f: to_numpy(getattr(sol, f)) for f in FIELDS}
    check_lanes(out, batch_shape=(0,), n=3, p=0, m=0)


@pytest.mark.parametrize("backend", EAGER + ("jax",))
@pytest.mark.parametrize("shapes", [
    {"Q": (0, 0), "q": (0,), "G": (4, 0), "A": (1, 0)},
    {"Q": (0, 0), "q": (0,), "G": None, "h": None, "A": None, "b": None},
    {"Q": (2, 0, 0), "q": (0,), "G": (0, 0), "h": (0,), "A": None, "b": None},
    {"Q": (0, 0, 0), "q": (0, 0), "G": None, "h": None, "A": None, "b": None},
], ids=["n0", "n0_no_constraints", "n0_batched", "n0_batch0"])
def test_zero_variables_rejected(backend, shapes):
    """n = 0 is documented as an error (Q must have n >= 1), whatever else is empty."""
    full = dict(BASE_SHAPES, **shapes)
    assert shape_problems(full) >= {"Q"}
    data, _ = data_for(full, 5)
    assert_value_error(lambda: solve_np(data, backend=backend), {"Q"},
                       must_contain=("received",))


def _ragged(a: np.ndarray) -> list:
    """A nested list like ``a``'s (or ``[a]``'s) with a last row one entry too long."""
    rows = a.tolist() if a.ndim == 2 else [a.tolist()]
    return rows + [[1.0] * (a.shape[-1] + 1)]


@pytest.mark.parametrize("backend", EAGER + ("jax",))
@pytest.mark.parametrize("arg", ["Q", "b"])
def test_ragged_nested_list(backend, arg):
    """A ragged nested list has no shape: ValueError naming the argument."""
    data = feasible_lane(np.random.default_rng(6), 3, 4, 1)
    data[arg] = _ragged(data[arg])
    assert_value_error(lambda: solve_np(data, backend=backend), {arg})


@pytest.mark.parametrize("backend", EAGER)
def test_nested_lists_and_python_scalars_work(backend):
    """Nested lists of the right shape (and a 1x1 problem of Python floats) are data."""
    data = feasible_lane(np.random.default_rng(7), 3, 4, 1)
    ref = solve_np(data)
    out = solve_np({k: v.tolist() for k, v in data.items()}, backend=backend)
    assert int(out["status"]) == int(Status.SOLVED)
    # Python floats are the library's default float (float32 for torch).
    tol = 1e-9 if out["x"].dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out["x"], ref["x"], rtol=tol, atol=tol)
    out = solve_np({"Q": [[2.0]], "q": [-2.0], "G": [[1.0]], "h": [0.5], "A": None,
                    "b": None}, backend=backend)
    assert int(out["status"]) == int(Status.SOLVED)
    np.testing.assert_allclose(out["x"], [0.5], rtol=tol)


# ---------------------------------------------------------------- NaN, Inf, huge values

BAD_VALUES = (math.nan, math.inf, -math.inf, 1e300, -1e300, 1e200, 1e30, -1e30, 1e-300,
              5e-324)


@st.composite
def corrupted_batches(draw, batch=None):
    """A feasible batch (some arguments shared) and a few values written into it.

    Returns ``(spec, corruptions)``; a corruption is ``(arg, lane, flat index, value)``
    (``lane`` is ignored where ``arg`` is shared by the batch).
    """
    B = draw(st.integers(2, 5), label="B") if batch is None else batch
    spec = draw(qp_specs(kinds=("pd",), max_n=4, batch_shapes=[(B,)],
                         dtypes=("float64", "float32"), inf_rows=draw(st.booleans())))
    present = [k for k in ARGS if not (k in "Gh" and spec.p == 0) and not (k in "Ab" and
                                                                           spec.m == 0)]
    corruptions = draw(st.lists(
        st.tuples(st.sampled_from(present), st.integers(0, B - 1), st.integers(0, 10**6),
                  st.sampled_from(BAD_VALUES)), min_size=1, max_size=3), label="corruptions")
    return spec, corruptions


def nonfinite_lanes(data: dict, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Per lane: whether its data hold NaN/Inf (other than +inf in h), and whether the
    only such values are in rows of G whose h is +inf (rows that are "no constraint")."""
    def lanes(k):
        a = data[k]
        return np.broadcast_to(a, (B,) + a.shape[a.ndim - CORE_RANK[k]:])

    bad = np.zeros(B, bool)
    for k in ("Q", "q", "A", "b"):
        if data[k] is not None:
            bad |= ~np.isfinite(lanes(k)).reshape(B, -1).all(axis=1)
    only_free_rows = np.zeros(B, bool)
    if data["G"] is not None:
        h, G = lanes("h"), lanes("G")
        bad |= (np.isnan(h) | np.isneginf(h)).any(axis=1)
        G_bad = ~np.isfinite(G).all(axis=2)
        free = np.isposinf(h)
        only_free_rows = ~bad & (G_bad & free).any(axis=1) & ~(G_bad & ~free).any(axis=1)
        bad |= (G_bad & ~free).any(axis=1)
    return bad, only_free_rows


def corrupt(spec, corruptions):
    """The clean data, the corrupted data, and per lane: touched; non-finite data (not
    counting +inf in h); non-finite data only in rows of G where h is +inf."""
    clean = spec.build()
    B = max((s[0] for _, s in spec.shapes if s), default=1)
    if _bs(clean) != (B,):          # only absent blocks were batched: batch q
        clean["q"] = np.broadcast_to(clean["q"], (B, spec.n)).copy()
    data = {k: None if a is None else a.copy() for k, a in clean.items()}
    touched = np.zeros(B, bool)
    for arg, lane, pos, value in corruptions:
        a = data[arg]
        shared = a.ndim == CORE_RANK[arg]
        flat = (a if shared else a[lane]).reshape(-1)      # a view: the write goes through
        with np.errstate(over="ignore"):                    # 1e300 in float32 is inf
            flat[pos % flat.size] = value
        touched[slice(None) if shared else lane] = True
    nonfinite, only_free_rows = nonfinite_lanes(data, B)
    return clean, data, touched, nonfinite, only_free_rows


def lane_of(data: dict, i: int) -> dict:
    return {k: None if a is None else (a if a.ndim == CORE_RANK[k] else a[i])
            for k, a in data.items()}


def check_corrupted(spec, corruptions, backend):
    clean, data, touched, nonfinite, _ = corrupt(spec, corruptions)
    B = touched.size
    out = solve_np(data, backend=backend)
    h = data["h"]
    check_lanes(out, batch_shape=(B,), n=spec.n, p=spec.p, m=spec.m, h=h)
    for i in range(B):
        if nonfinite[i]:
            assert out["status"][i] == int(Status.NUMERICAL_ERROR), (i, out["status"])
        elif not touched[i]:
            # Untouched lane: exactly what it gets alone (a feasible, strictly convex QP).
            alone = solve_np(lane_of(data, i), backend=backend)
            assert int(alone["status"]) == int(Status.SOLVED), alone["status"]
            rtol = 1e-12 if spec.dtype == "float64" else 1e-6
            assert_same_lane(out, i, alone, rtol, f"untouched lane {i}")


@pytest.mark.parametrize("backend", EAGER)
@settings(max_examples=n_examples(30))
@given(case=corrupted_batches())
def test_fuzz_nonfinite_and_huge_values(backend, case):
    """NaN/+-Inf/huge/denormal values at random positions of random arguments of one
    lane (or of a shared argument): that lane is NUMERICAL_ERROR where its data are
    non-finite, any status with finite output otherwise; untouched lanes are unchanged."""
    check_corrupted(*case, backend)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nonfinite_G_in_row_with_infinite_h(value):
    """NaN/Inf in G on a row whose h is +inf is still NaN/Inf in the data: the documented
    outcome is NUMERICAL_ERROR (only +inf in h is exempt), lane by lane."""
    rng = np.random.default_rng(17)
    lanes = [feasible_lane(rng, 3, 4, 1) for _ in range(3)]
    data = {k: np.stack([d[k] for d in lanes]) for k in ARGS}
    data["h"][1, 2] = math.inf
    data["G"][1, 2, 0] = value
    out = solve_np(data)
    assert out["status"].tolist() == [0, int(Status.NUMERICAL_ERROR), 0], out["status"]


def test_corrupt_helper_is_not_vacuous():
    """The bookkeeping of the corruption: shared arguments touch every lane."""
    spec = QPSpec(n=3, p_rand=2, m=1, shapes=tuple((k, () if k == "Q" else (3,)) for k in ARGS))
    _, _, touched, nonfinite, _ = corrupt(spec, [("Q", 1, 0, math.nan)])
    assert touched.all() and nonfinite.all()
    _, _, touched, nonfinite, _ = corrupt(spec, [("h", 1, 0, math.inf), ("q", 2, 0, 1e300)])
    assert touched.tolist() == [False, True, True] and not nonfinite.any()
    _, _, touched, nonfinite, _ = corrupt(spec, [("h", 0, 0, -math.inf)])
    assert nonfinite.tolist() == [True, False, False]
    _, _, _, nonfinite, free_only = corrupt(spec, [("h", 2, 1, math.inf), ("G", 2, 3, math.nan)])
    assert not nonfinite.any() and free_only.tolist() == [False, False, True]


# JAX: one jit-compiled function of one shape (compiled once, a few seconds).
JAX_B, JAX_N, JAX_P, JAX_M = 4, 3, 4, 1
_JIT = {}


def jax_solve_jit(data: dict) -> dict:
    if "f" not in _JIT:
        _JIT["f"] = jax.jit(lambda *a: tuple(optnet.solve(*a, backend="jax"))[:9])
    res = _JIT["f"](*(jnp.asarray(data[k]) for k in ARGS))
    return {f: np.asarray(v) for f, v in zip(FIELDS, res)}


@settings(max_examples=n_examples(15))
@given(seed=st.integers(0, 2**32 - 1),
       corruptions=st.lists(st.tuples(st.sampled_from(ARGS), st.integers(0, JAX_B - 1),
                                      st.integers(0, 10**6), st.sampled_from(BAD_VALUES)),
                            min_size=1, max_size=3))
def test_fuzz_nonfinite_and_huge_values_jax_jit(seed, corruptions):
    """The same under ``jax.jit`` (every argument batched): untouched lanes are bit for
    bit those of the clean batch."""
    rng = np.random.default_rng(seed)
    lanes = [feasible_lane(rng, JAX_N, JAX_P, JAX_M) for _ in range(JAX_B)]
    clean = {k: np.stack([d[k] for d in lanes]) for k in ARGS}
    data = {k: a.copy() for k, a in clean.items()}
    touched = np.zeros(JAX_B, bool)
    for arg, lane, pos, value in corruptions:
        flat = data[arg][lane].reshape(-1)          # a view: the write goes through
        flat[pos % flat.size] = value
        touched[lane] = True
    ref = jax_solve_jit(clean)
    out = jax_solve_jit(data)
    check_lanes(out, batch_shape=(JAX_B,), n=JAX_N, p=JAX_P, m=JAX_M, h=data["h"])
    nonfinite, _ = nonfinite_lanes(data, JAX_B)
    for i in range(JAX_B):
        if nonfinite[i]:
            assert out["status"][i] == int(Status.NUMERICAL_ERROR), (i, out["status"])
        if not touched[i]:
            for f in FIELDS:
                assert np.array_equal(out[f][i], ref[f][i]), (i, f, out[f][i], ref[f][i])


# ---------------------------------------------------------------- dtypes and libraries

# An integer-valued problem (exact in every dtype drawn below): two lanes through q.
INT_DATA = {
    "Q": np.array([[4, 1, 0], [1, 3, 1], [0, 1, 2]]),
    "q": np.array([[-1, 2, -3], [3, -2, 1]]),
    "G": np.array([[1, 1, 0], [0, -1, 1], [1, 0, 0], [-1, 0, 0]]),
    "h": np.array([2, 1, 2, 2]),
    "A": np.array([[1, 1, 1]]),
    "b": np.array([0]),
}
GOOD_DTYPES = ("float64", "float32", "int64", "int32", "int16", "int8")
BAD_DTYPES = ("bool", "complex128", "complex64", "float16", "object")
LIBS = ("numpy", "torch", "torch_grad", "jax", "list", "garbage")
GARBAGE = ("abc", {"a": 1}, object())


def make_input(a: np.ndarray, dtype: str, lib: str, garbage: int):
    """``a`` in ``dtype`` as an array of ``lib``; (value, library or None, dtype name)."""
    arr = a.astype(dtype)
    if lib == "garbage":
        return GARBAGE[garbage], None, "garbage"
    if dtype == "object" or lib == "numpy":
        return arr, "numpy", dtype
    if lib == "list":
        v = arr.tolist()
        return v, None, str(np.asarray(v).dtype)
    if lib in ("torch", "torch_grad"):
        t = torch.as_tensor(arr)
        if lib == "torch_grad" and t.is_floating_point():
            t.requires_grad_(True)
        return t, "torch", dtype
    return jnp.asarray(arr), "jax", dtype


def effective_dtype(dtype: str, lib, backend: str) -> str:
    """The dtype an input of ``dtype`` has once converted to ``backend``.

    Lists of Python floats become the library's default float: float64, except for
    torch (``torch.get_default_dtype()``).
    """
    if lib is None and dtype == "float64" and backend == "torch":
        return str(torch.get_default_dtype()).removeprefix("torch.")
    return dtype


@st.composite
def dtype_cases(draw):
    dtypes = {k: draw(st.sampled_from(GOOD_DTYPES + BAD_DTYPES if draw(st.integers(0, 3)) == 0
                                      else GOOD_DTYPES), label=f"dtype_{k}") for k in ARGS}
    libs = {k: draw(st.sampled_from(LIBS[:5]) if draw(st.integers(0, 9)) else st.just("garbage"),
                    label=f"lib_{k}") for k in ARGS}
    garbage = draw(st.integers(0, len(GARBAGE) - 1), label="garbage")
    backend = draw(st.sampled_from([None, "numpy", "torch", "array_api_strict"]),
                   label="backend")
    return dtypes, libs, garbage, backend


@settings(max_examples=n_examples(60))
@given(case=dtype_cases())
def test_fuzz_dtypes_and_libraries(case):
    """Every argument in its own dtype and array library (or a list, or garbage), with
    or without a named backend: ValueError naming an offending argument (mixed libraries
    without a backend; bool/complex/float16/object dtypes; non-arrays), or the answer of
    the float64 problem in the documented result dtype."""
    dtypes, libs, garbage, backend = case
    inputs = {k: make_input(INT_DATA[k], dtypes[k], libs[k], garbage) for k in ARGS}
    values = {k: v for k, (v, _, _) in inputs.items()}
    arr_libs = {k: lib for k, (_, lib, _) in inputs.items() if lib is not None}
    be = backend
    if be is None:
        found = set(arr_libs.values())
        if len(found) > 1:
            assert_value_error(lambda: solve_np(values), set(arr_libs))
            return
        be = found.pop() if found else "numpy"
    eff = {k: effective_dtype(dt, lib, be) for k, (_, lib, dt) in inputs.items()}
    bad = {k for k, dt in eff.items() if dt not in GOOD_DTYPES}
    if be == "jax" and not bad:
        assume(False)        # a JAX solve outside jit takes ~10 s; see the jit tests
    grad_elsewhere = {k for k in ARGS if libs[k] == "torch_grad" and be != "torch"
                      and dtypes[k] in ("float32", "float64")}
    try:
        out = solve_np(values, backend=backend)
    except ValueError as err:
        offending = bad | grad_elsewhere
        assert offending, f"unexpected ValueError: {err}"
        assert names_any(str(err), offending), (str(err), sorted(offending))
        return
    except Exception as err:  # noqa: BLE001 - any other type is the failure
        pytest.fail(f"{type(err).__module__}.{type(err).__name__}: {err}")
    assert not bad, f"no error for {sorted(bad)} ({eff})"
    floats = {eff[k] for k in ARGS} & {"float32", "float64"}
    want = "float64" if "float64" in floats or not floats else "float32"
    for f in POINT + RESIDUALS:
        assert out[f].dtype == np.dtype(want), (f, out[f].dtype, want)
    ref = solve_np({k: a.astype(np.float64) for k, a in INT_DATA.items()})
    check_lanes(out, batch_shape=(2,), n=3, p=4, m=1)
    assert np.all(out["status"] == int(Status.SOLVED)), out["status"]
    atol = 1e-4 if want == "float32" else 1e-9
    np.testing.assert_allclose(out["x"], ref["x"], rtol=0, atol=atol)


# Inputs every backend must either solve or reject with a ValueError naming the argument.
CONVERSIONS = {
    "object_array": lambda a: a.astype(object),
    "str_array": lambda a: a.astype(str),
    "float16_array": lambda a: a.astype(np.float16),
    "torch_bfloat16": lambda a: torch.as_tensor(a).to(torch.bfloat16),
    "jax_bfloat16": lambda a: jnp.asarray(a, dtype=jnp.bfloat16),
    "string": lambda a: "abc",
    "dict": lambda a: {"a": 1},
}


@pytest.mark.parametrize("backend", EAGER + ("jax",))
@pytest.mark.parametrize("kind", sorted(CONVERSIONS))
def test_unconvertible_inputs(backend, kind):
    """Data no backend can compute with (in h), passed with a named backend: ValueError
    naming the argument, never the conversion's own TypeError."""
    data = feasible_lane(np.random.default_rng(8), 3, 4, 1)
    data["h"] = CONVERSIONS[kind](data["h"])
    assert_value_error(lambda: solve_np(data, backend=backend), {"h"})


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "jax"])
def test_torch_tensor_requiring_grad_with_other_backend(backend):
    """A torch tensor that requires grad, converted to another backend: a result or a
    ValueError naming the argument (not torch's RuntimeError)."""
    data = feasible_lane(np.random.default_rng(9), 3, 4, 1)
    data["q"] = torch.as_tensor(data["q"]).requires_grad_(True)
    try:
        out = solve_np(data, backend=backend)
    except ValueError as err:
        assert re.search(word("q"), str(err)), str(err)
        return
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"{type(err).__module__}.{type(err).__name__}: {err}")
    assert int(out["status"]) == int(Status.SOLVED)


@pytest.mark.parametrize("libs", [("numpy", "torch", "jax"), ("torch", "jax"),
                                  ("jax", "numpy"), ("torch", "list")])
def test_mixed_libraries_without_backend(libs):
    """numpy + torch + jax in one call, no backend: ValueError naming the arguments of
    every library involved."""
    data = feasible_lane(np.random.default_rng(10), 3, 4, 1)
    conv = {"numpy": np.asarray, "torch": torch.as_tensor, "jax": jnp.asarray,
            "list": lambda a: a.tolist()}
    named = {}
    for i, k in enumerate(ARGS):
        lib = libs[i % len(libs)]
        data[k] = conv[lib](data[k])
        if lib != "list":
            named[k] = lib
    if len(set(named.values())) == 1:
        out = solve_np(data)
        assert int(out["status"]) == int(Status.SOLVED)
        return
    msg = assert_value_error(lambda: solve_np(data), set(named))
    for k in named:
        assert re.search(word(k), msg), (k, msg)


@pytest.mark.parametrize("backend", EAGER)
def test_mixed_libraries_with_backend(backend):
    """numpy + torch + jax in one call with a named backend: converted, and the answer
    of the all-NumPy call."""
    data = feasible_lane(np.random.default_rng(11), 3, 4, 1)
    ref = solve_np(data)
    mixed = dict(data, q=torch.as_tensor(data["q"]), G=jnp.asarray(data["G"]),
                 b=torch.as_tensor(data["b"]))
    out = solve_np(mixed, backend=backend)
    assert int(out["status"]) == int(Status.SOLVED)
    for f in POINT:
        np.testing.assert_allclose(out[f], ref[f], rtol=1e-12, atol=1e-12, err_msg=f)


@pytest.mark.parametrize("backend", EAGER)
def test_python_float_lists_keep_float64_data(backend):
    """A list of Python floats (doubles) among float64 arrays: its values are not rounded
    (to float32) on the way in -- the answer is the all-float64 one."""
    data = feasible_lane(np.random.default_rng(11), 3, 4, 1)
    ref = solve_np(data)
    out = solve_np(dict(data, h=data["h"].tolist()), backend=backend)
    assert int(out["status"]) == int(Status.SOLVED)
    for f in POINT:
        np.testing.assert_allclose(out[f], ref[f], rtol=1e-12, atol=1e-12, err_msg=f)


BAD_TOL = {"str": "abc", "list": [1e-6], "array": np.array([1e-6, 1e-6]), "complex": 1j,
           "object": object()}
BAD_MAX_ITER = {"str": "abc", "inf": math.inf, "nan": math.nan, "list": [3],
                "array": np.array([3, 4]), "object": object()}


@pytest.mark.parametrize("value", list(BAD_TOL.values()), ids=list(BAD_TOL))
def test_odd_tol(value):
    data = feasible_lane(np.random.default_rng(12), 3, 4, 1)
    assert_value_error(lambda: solve_np(data, tol=value), {"tol"})


@pytest.mark.parametrize("value", list(BAD_MAX_ITER.values()), ids=list(BAD_MAX_ITER))
def test_odd_max_iter(value):
    data = feasible_lane(np.random.default_rng(13), 3, 4, 1)
    assert_value_error(lambda: solve_np(data, max_iter=value), {"max_iter"})


# ---------------------------------------------------------------- memory layout

LAYOUTS = ("C", "F", "strided", "negstride", "transposed", "readonly", "zero_stride")


def relayout(a: np.ndarray, layout: str) -> np.ndarray:
    """The values of ``a`` (C-contiguous) in another memory layout."""
    if layout == "C":
        return a.copy()
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (3 * a.shape[-1],), a.dtype)
        big[..., 1::3] = a
        return big[..., 1::3]
    if layout == "negstride":
        return np.ascontiguousarray(a[::-1, ...])[::-1, ...] if a.ndim else a.copy()
    if layout == "transposed":
        if a.ndim < 2:
            return a[::1]
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)
    if layout == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if layout == "zero_stride":
        # An all-equal leading axis stored once (stride 0): broadcast_to of one slice.
        if a.ndim == 0 or a.shape[0] == 0:
            return a.copy()
        return np.broadcast_to(a[:1], a.shape)
    raise ValueError(layout)


def check_layouts(data: dict, layouts: dict, backend: str) -> None:
    data = {k: None if a is None else (np.broadcast_to(a[:1], a.shape).copy()
                                       if layouts[k] == "zero_stride" and a.ndim and a.shape[0]
                                       else a) for k, a in data.items()}
    odd = {k: None if a is None else relayout(a, layouts[k]) for k, a in data.items()}
    before = {k: None if a is None else a.copy() for k, a in odd.items()}
    contiguous = {k: None if a is None else np.ascontiguousarray(a) for k, a in odd.items()}
    for k, a in odd.items():
        if a is not None:
            assert np.array_equal(a, data[k]), k
    ref = solve_np(contiguous, backend=backend)
    out = solve_np(odd, backend=backend)
    for f in FIELDS:
        assert out[f].dtype == ref[f].dtype, f
        assert np.array_equal(out[f], ref[f], equal_nan=True), (
            f"{f} differs from the contiguous copy's (layouts {layouts}): max |diff| "
            f"{np.nanmax(np.abs(out[f].astype(float) - ref[f]))}")
    for k, a in odd.items():          # the inputs are not written to
        if a is not None:
            assert np.array_equal(a, before[k], equal_nan=True), k


@pytest.mark.parametrize("backend", EAGER)
@settings(max_examples=n_examples(25))
@given(spec=qp_specs(max_n=5, batch_shapes=[(), (3,), (2, 3)], dtypes=("float64", "float32")),
       layouts=st.fixed_dictionaries({k: st.sampled_from(LAYOUTS) for k in ARGS}))
# A batched Fortran-ordered b once rounded differently on array-api-strict (its
# reductions followed the layout until asarray made every input C-ordered).
@example(spec=QPSpec(n=5, kind="lp", p_rand=0, box=True, m=4,
                     shapes=(("Q", ()), ("q", ()), ("G", ()), ("h", ()), ("A", ()), ("b", (3,))),
                     dtype="float64", seed=1, rank=0, eps=0.0, q_scale=0.1, inf_rows=False),
         layouts={"Q": "C", "q": "C", "G": "C", "h": "C", "A": "C", "b": "F"})
def test_fuzz_memory_layout(backend, spec, layouts):
    """Non-contiguous, transposed, Fortran-ordered, negatively strided, zero-stride and
    read-only NumPy inputs: the result of their contiguous copies, bit for bit; the
    inputs are left as they were."""
    check_layouts(spec.build(), layouts, backend)


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_memory_layout(backend, layout):
    """Every argument (batched over (2, 3)) in one layout: bit for bit the contiguous result."""
    rng = np.random.default_rng(14)
    lanes = [feasible_lane(rng, 4, 5, 2) for _ in range(6)]
    data = {k: np.stack([d[k] for d in lanes]).reshape((2, 3) + lanes[0][k].shape)
            for k in ARGS}
    check_layouts(data, dict.fromkeys(ARGS, layout), backend)


# ---------------------------------------------------------------- magnitudes

SCALE_MODES = ("all", "Qq", "Gh", "Ab", "G_row", "A_row")


def scaled(data: dict, mode: str, c: float, row: int) -> dict:
    """The same problem (same minimizer x) with data scaled by ``c``."""
    d = {k: None if a is None else a.copy() for k, a in data.items()}
    if mode == "all":
        return {k: None if a is None else a * c for k, a in d.items()}
    if mode in ("Qq", "Gh", "Ab"):
        for k in mode:
            if d[k] is not None:
                d[k] = d[k] * c
        return d
    M, v = ("G", "h") if mode == "G_row" else ("A", "b")
    if d[M] is not None:
        i = row % d[v].shape[-1]
        d[M][..., i, :] *= c
        d[v][..., i] *= c
    return d


@st.composite
def scale_cases(draw):
    spec = draw(qp_specs(kinds=("pd",), max_n=6, batch_shapes=[(), (3,)],
                         dtypes=("float64", "float32")))
    mode = draw(st.sampled_from(SCALE_MODES), label="mode")
    k = draw(st.integers(-8, 8), label="exponent")
    row = draw(st.integers(0, 100), label="row")
    max_iter = draw(st.sampled_from([None, 1, 5, 30]), label="max_iter")
    return spec, mode, k, row, max_iter


def _bs(data):
    return np.broadcast_shapes(*(a.shape[: a.ndim - CORE_RANK[k]] for k, a in data.items()
                                 if a is not None))


@settings(max_examples=n_examples(40))
@given(case=scale_cases())
def test_fuzz_magnitudes(case):
    """The problem (or Q and q, G and h, A and b, or one row of G or A with its h or b)
    scaled by 1e-8 ... 1e8: SOLVED with finite output, or another status with the
    documented arrays; iterations within max_iter. Where c >= 1 (the tolerance is
    relative) a float64 SOLVED lane has the minimizer of the unscaled problem."""
    spec, mode, k, row, max_iter = case
    data = spec.build()
    c = 10.0 ** k
    sc = scaled(data, mode, c, row)
    out = solve_np(sc, max_iter=max_iter)
    check_lanes(out, batch_shape=_bs(data), n=spec.n, p=spec.p, m=spec.m, h=sc["h"],
                max_iter=max_iter or DEFAULT_MAX_ITER)
    if k >= 0 and spec.dtype == "float64" and max_iter is None:
        ref = solve_np(data)
        ok = (out["status"] == int(Status.SOLVED)) & (ref["status"] == int(Status.SOLVED))
        scale = max(1.0, float(np.max(np.abs(ref["x"]))))
        np.testing.assert_allclose(out["x"][ok], ref["x"][ok], rtol=0, atol=1e-6 * scale)


@settings(max_examples=n_examples(40))
@given(spec=qp_specs(kinds=("pd",), max_n=6, batch_shapes=[(), (3,)]),
       k=st.sampled_from([-8, -7, -6, -4, 4, 6, 7, 8]))
def test_scaled_feasible_problem_is_not_certified_infeasible(spec, k):
    """A feasible, strictly convex problem scaled as a whole by 10^k (-8 <= k <= 8) is the
    same problem: it must never be reported PRIMAL_INFEASIBLE (there is no Farkas
    certificate) or DUAL_INFEASIBLE (a strictly convex QP is bounded)."""
    data = spec.build()
    out = solve_np({k_: None if a is None else a * 10.0 ** k for k_, a in data.items()})
    wrong = np.isin(out["status"], [int(Status.PRIMAL_INFEASIBLE), int(Status.DUAL_INFEASIBLE)])
    assert not np.any(wrong), (
        f"scale 1e{k}: statuses {out['status']} (unscaled: {solve_np(data)['status']})")


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
@pytest.mark.parametrize("k", [-8, 8, 300, -300])
def test_magnitudes_backends(backend, k):
    """Extreme scales on the other eager backends: the per-lane contract holds."""
    rng = np.random.default_rng(15)
    lanes = [feasible_lane(rng, 4, 6, 2) for _ in range(4)]
    data = {kk: np.stack([d[kk] for d in lanes]) for kk in ARGS}
    for mode in ("all", "Qq", "Gh"):
        sc = scaled(data, mode, 10.0 ** k, 0)
        out = solve_np(sc, backend=backend)
        check_lanes(out, batch_shape=(4,), n=4, p=6, m=2, h=sc["h"])


@pytest.mark.parametrize("k", [30, 100, 200, 300, 308])
def test_huge_lane_among_normal_lanes(k):
    """One lane scaled by 10^k (up to overflow), its neighbours unchanged."""
    rng = np.random.default_rng(16)
    lanes = [feasible_lane(rng, 4, 6, 2) for _ in range(3)]
    big = {kk: a * 10.0 ** k for kk, a in lanes[1].items()}
    data = {kk: np.stack([lanes[0][kk], big[kk], lanes[2][kk]]) for kk in ARGS}
    out = solve_np(data)
    check_lanes(out, batch_shape=(3,), n=4, p=6, m=2, h=data["h"])
    for i in (0, 2):
        assert_same_lane(out, i, solve_np(lanes[i]), 1e-12, f"k={k}")
