"""The JAX adapter ``optnet.jax.solve`` (float64: x64 is enabled for this module).

XLA compiles every new shape and every new transformation of the solver (about
ten seconds each on a CPU), so the transformations are checked together: one
jitted function (``transforms`` fixture, compiled once) evaluates the solve,
``jvp``, ``grad``, ``vmap`` and ``grad(vmap)`` on a batched problem and the solve
and ``grad`` on a shared-input one; a second (``more_transforms``, slow tests
only) ``vmap(grad)``, ``jacfwd``, ``jacrev`` and ``vmap`` with ``in_axes=None``.
The tests compare the outputs with each other and with the NumPy backend
(``optnet.solve`` / ``optnet.vjp`` / ``optnet.jvp``).

``jax.test_util.check_grads`` (finite differences, forward and reverse mode) runs
on the batched problem and, marked slow, on the shared-input ones. Problems have
a known, strictly complementary optimum (slacks and multipliers >= 0.5), so the
finite-difference steps never change the active set.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import optnet  # noqa: E402

NAMES = ("Q", "q", "G", "h", "A", "b")
SOLVED = int(optnet.Status.SOLVED)
ROOT = Path(__file__).resolve().parent.parent
B, N, P, M = 3, 3, 4, 1


# ---------------------------------------------------------------------------
# problems with a known, strictly complementary optimum
# ---------------------------------------------------------------------------


def make_qp(seed, batch=B, n=N, p=P, m=M, pattern="batched"):
    """NumPy float64 batch of QPs and its exact solution ``{"x", "z", "y"}``.

    pattern: "batched" (all inputs batched), "shared_mats" (Q, G, A shared) or
    "shared_vecs" (q, h, b shared).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, n))
    Z = np.zeros((batch, p))
    S = np.zeros((batch, p))
    for i in range(batch):
        k = int(rng.integers(1, min(p, n - m) + 1))
        act = rng.permutation(p)[:k]
        Z[i, act] = rng.uniform(0.5, 1.5, size=k)
        S[i] = np.where(Z[i] > 0, 0.0, rng.uniform(0.5, 1.5, size=p))
    Y = rng.normal(size=(batch, m))
    if pattern == "shared_vecs":
        q, h, b = rng.normal(size=n), rng.normal(size=p), rng.normal(size=m)
        Qs, Gs, As = [], [], []
        for i in range(batch):
            for _ in range(1000):
                x = -2.0 * q / np.linalg.norm(q) + 0.7 * rng.normal(size=n)
                G = rng.normal(size=(p, n))
                G = G + np.outer(h - S[i] - G @ x, x) / (x @ x)        # G x = h - s
                A = rng.normal(size=(m, n))
                A = A + np.outer(b - A @ x, x) / (x @ x)               # A x = b
                v = -(q + G.T @ Z[i] + A.T @ Y[i])                     # = Q x
                if x @ v > 0.3 * np.linalg.norm(x) * np.linalg.norm(v):
                    break
            X[i] = x
            Qs.append(np.eye(n) + np.outer(v, v) / (x @ v) - np.outer(x, x) / (x @ x))
            Gs.append(G), As.append(A)
        Q, G, A = np.stack(Qs), np.stack(Gs), np.stack(As)
    else:
        shape = () if pattern == "shared_mats" else (batch,)
        L = rng.normal(size=(*shape, n, n)) / math.sqrt(n)
        Q = L @ np.swapaxes(L, -1, -2) + np.eye(n)
        G = rng.normal(size=(*shape, p, n))
        A = rng.normal(size=(*shape, m, n))
        Qb, Gb, Ab = (np.broadcast_to(a, (batch, *a.shape[-2:])) for a in (Q, G, A))
        q = -(np.einsum("bij,bj->bi", Qb, X) + np.einsum("bpi,bp->bi", Gb, Z)
              + np.einsum("bmi,bm->bi", Ab, Y))
        h = np.einsum("bpi,bi->bp", Gb, X) + S
        b = np.einsum("bmi,bi->bm", Ab, X)
    return {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}, {"x": X, "z": Z, "y": Y}


def args_of(prob):
    return tuple(prob[k] for k in NAMES)


def numpy_reference(prob, w, tangents):
    """NumPy solution, vjp with cotangents ``w = (wx, wz, wy)``, jvp along ``tangents``."""
    sol = optnet.solve(*args_of(prob))
    g = optnet.vjp(sol, w[0], dz=w[1], dy=w[2])
    t = optnet.jvp(sol, **{"d" + k: v for k, v in zip(NAMES, tangents)})
    return sol, g, t


def close(got, ref, rtol, what=""):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: {got.shape} != {ref.shape}"
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    err = float(np.max(np.abs(got - ref)))
    assert err <= rtol * scale, f"{what}: max error {err:.3e} > {rtol:g} * {scale:.3e}"


# ---------------------------------------------------------------------------
# every transformation in one compiled function
# ---------------------------------------------------------------------------


def _solve3(*a):
    return optnet.jax.solve(*a, duals=True)


def _loss(w, *a):
    x, z, y = _solve3(*a)
    return jnp.sum(w[0] * x) + jnp.sum(w[1] * z) + jnp.sum(w[2] * y)


ALL = tuple(range(6))
SHARED_AXES = (None, 0, None, 0, None, 0)   # shared_mats: Q, G, A unbatched


def _weighted(w, outs):
    return sum(jnp.sum(wi * oi) for wi, oi in zip(w, outs))


def _core_transforms(bat, shr, w, tan):
    """solve, jvp, grad, vmap and grad(vmap); shared-input solve and grad."""
    out = {}
    # solve (with status) and its forward-mode derivative
    primal, tangent = jax.jvp(lambda *a: optnet.jax.solve(*a, duals=True, status=True),
                              bat, tan)
    out["solve"], out["jvp"] = primal, tangent[:3]
    out["grad"] = jax.grad(lambda *a: _loss(w, *a), argnums=ALL)(*bat)
    # vmap over the lanes of unbatched solves: its outputs come with grad(vmap).
    out["grad_vmap"], out["vmap"] = jax.grad(
        lambda *a: (lambda o: (_weighted(w, o), o))(jax.vmap(_solve3)(*a)),
        argnums=ALL, has_aux=True)(*bat)
    # Shared inputs: the broadcasting solve and its gradient (summed over the lanes).
    out["shared_grad"], out["shared_solve"] = jax.grad(
        lambda *a: (lambda o: (_weighted(w, o), o))(_solve3(*a)),
        argnums=ALL, has_aux=True)(*shr)
    return out


def _more_transforms(bat, shr, w):
    """vmap(grad), jacfwd, jacrev; vmap with in_axes None over shared inputs."""
    out = {}
    out["vmap_grad"] = jax.vmap(
        jax.grad(lambda wi, *a: _loss(wi, *a), argnums=tuple(range(1, 7))),
    )(w, *bat)
    out["jacfwd"] = jax.jacfwd(lambda Q, h: _solve3(Q, bat[1], bat[2], h, *bat[4:]),
                               argnums=(0, 1))(bat[0], bat[3])
    out["jacrev"] = jax.jacrev(lambda Q, h: _solve3(Q, bat[1], bat[2], h, *bat[4:]),
                               argnums=(0, 1))(bat[0], bat[3])
    out["shared_vmap"] = jax.vmap(_solve3, in_axes=SHARED_AXES)(*shr)
    return out


@pytest.fixture(scope="module")
def problems():
    bat, bat_sol = make_qp(0, pattern="batched")
    shr, shr_sol = make_qp(1, pattern="shared_mats")
    rng = np.random.default_rng(2)
    w = (rng.normal(size=(B, N)), rng.normal(size=(B, P)), rng.normal(size=(B, M)))
    tan = tuple(rng.normal(size=bat[k].shape) for k in NAMES)
    return {"bat": bat, "bat_sol": bat_sol, "shr": shr, "shr_sol": shr_sol, "w": w, "tan": tan}


def _np_tree(out):
    return jax.tree_util.tree_map(np.asarray, out)


@pytest.fixture(scope="module")
def transforms(problems):
    """Outputs of ``_core_transforms`` under ``jax.jit`` (one compilation), as NumPy."""
    f = jax.jit(_core_transforms)
    return _np_tree(f(args_of(problems["bat"]), args_of(problems["shr"]), problems["w"],
                      problems["tan"]))


@pytest.fixture(scope="module")
def more_transforms(problems):
    """Outputs of ``_more_transforms`` under ``jax.jit`` (one compilation), as NumPy."""
    f = jax.jit(_more_transforms)
    return _np_tree(f(args_of(problems["bat"]), args_of(problems["shr"]), problems["w"]))


def test_jit_solve_matches_numpy_and_known_solution(problems, transforms):
    x, z, y, status = transforms["solve"]
    np.testing.assert_array_equal(status, [SOLVED] * B)
    assert x.dtype == np.float64
    ref = optnet.solve(*args_of(problems["bat"]))
    for k, v in zip("xzy", (x, z, y)):
        close(v, getattr(ref, k), 1e-9, k)
        np.testing.assert_allclose(v, problems["bat_sol"][k], atol=1e-9)


def test_jit_grad_matches_numpy_vjp(problems, transforms):
    _, g, _ = numpy_reference(problems["bat"], problems["w"], problems["tan"])
    for k, got in zip(NAMES, transforms["grad"]):
        assert float(np.max(np.abs(got))) > 0, k
        close(got, getattr(g, k), 1e-8, f"grad {k}")


def test_jvp_matches_numpy_jvp(problems, transforms):
    _, _, t = numpy_reference(problems["bat"], problems["w"], problems["tan"])
    for k, got in zip("xzy", transforms["jvp"]):
        assert float(np.max(np.abs(got))) > 0, k
        close(got, getattr(t, k), 1e-8, f"tangent {k}")


def test_vmap_matches_batched_solve(transforms):
    for k, a, b in zip("xzy", transforms["vmap"], transforms["solve"][:3]):
        close(a, b, 1e-12, f"vmap {k}")


def test_grad_vmap_matches_grad(transforms):
    for k, g, gv in zip(NAMES, transforms["grad"], transforms["grad_vmap"]):
        close(gv, g, 1e-10, f"grad(vmap) {k}")


@pytest.mark.slow
def test_vmap_grad_matches_grad(transforms, more_transforms):
    for k, g, vg in zip(NAMES, transforms["grad"], more_transforms["vmap_grad"]):
        close(vg, g, 1e-10, f"vmap(grad) {k}")


@pytest.mark.slow
def test_jacfwd_matches_jacrev(problems, transforms, more_transforms):
    transforms = {**transforms, **more_transforms}
    for out_k, jf, jr in zip("xzy", transforms["jacfwd"], transforms["jacrev"]):
        for in_k, a, b in zip(("Q", "h"), jf, jr):
            assert a.shape == b.shape
            close(a, b, 1e-10, f"d{out_k}/d{in_k}")
    # Contracting the Jacobians with the cotangents gives the gradient.
    w = problems["w"]
    for i, in_k in enumerate(("Q", "h")):
        core = problems["bat"][in_k].ndim
        g = sum(np.tensordot(wi, jf[i], axes=wi.ndim)
                for wi, jf in zip(w, transforms["jacfwd"]))
        assert g.ndim == core
        close(g, transforms["grad"][NAMES.index(in_k)], 1e-10, f"J'w for {in_k}")


def test_shared_inputs_solve_and_grads(problems, transforms):
    shr = problems["shr"]
    ref = optnet.solve(*args_of(shr))
    assert np.all(ref.status == SOLVED)
    for k, a in zip("xzy", transforms["shared_solve"]):
        close(a, getattr(ref, k), 1e-9, f"shared {k}")
        np.testing.assert_allclose(a, problems["shr_sol"][k], atol=1e-9)
    w = problems["w"]
    g = optnet.vjp(ref, w[0], dz=w[1], dy=w[2])
    for k, got in zip(NAMES, transforms["shared_grad"]):
        assert got.shape == shr[k].shape, k      # shared inputs: gradient summed over lanes
        assert float(np.max(np.abs(got))) > 0, k
        close(got, getattr(g, k), 1e-8, f"shared grad {k}")


@pytest.mark.slow
def test_vmap_with_shared_inputs(transforms, more_transforms):
    for k, a, v in zip("xzy", transforms["shared_solve"], more_transforms["shared_vmap"]):
        close(v, a, 1e-12, f"vmap(in_axes=None) {k}")


# ---------------------------------------------------------------------------
# check_grads: finite differences in forward and reverse mode, all six inputs
# ---------------------------------------------------------------------------


def _check(pattern):
    # Step 1e-5 (check_grads' default is 1e-4): central differences have truncation
    # error ~eps^2 * (third derivative), which at 1e-4 reaches check_grads' float64
    # tolerance on the less well-conditioned shared-vector problems; at 1e-5 rounding
    # (~1e-15 / eps) is still negligible.
    prob, _ = make_qp(3, pattern=pattern)
    f = jax.jit(_solve3)
    check_grads(f, args_of(prob), order=1, modes=("fwd", "rev"), eps=1e-5)


def test_check_grads_batched():
    _check("batched")


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["shared_mats", "shared_vecs"])
def test_check_grads_shared(pattern):
    _check(pattern)


def test_second_order_forward_over_reverse():
    """``jacfwd(grad)`` differentiates the JVP rule itself (the solve inside it is one call
    with a rule of its own): for ``sum(x^2)`` and ``x`` linear in ``q`` on a fixed active
    set, the Hessian in ``q`` is ``2 J'J`` with ``J = dx/dq`` (first-order derivatives,
    checked against finite differences above). At most 4 of the 6 variables are fixed
    by active rows, so ``J`` is not zero."""
    prob, _ = make_qp(5, batch=1, n=6, p=3, m=1)
    a = [None if v is None else jnp.asarray(v)[0] for v in args_of(prob)]

    def x_of(q):
        return optnet.jax.solve(a[0], q, *a[2:])

    H = jax.jacfwd(jax.grad(lambda q: jnp.sum(x_of(q) ** 2)))(a[1])
    J = jax.jacfwd(x_of)(a[1])
    assert float(jnp.max(jnp.abs(J))) > 0.1
    close(H, 2.0 * J.T @ J, 1e-8, "Hessian")


def test_check_grads_detects_a_wrong_derivative():
    """The check is not vacuous: a function with a deliberately wrong JVP fails it."""
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return jnp.sin(x), 1.01 * jnp.cos(x) * t

    with pytest.raises(AssertionError):
        check_grads(f, (jnp.arange(3.0),), order=1, modes=("fwd",))


# ---------------------------------------------------------------------------
# errors at trace time, status, eager
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["q_size", "h_size", "G_cols", "Q_not_square", "G_without_h", "batch_mismatch"],
)
def test_structural_errors_raise_value_error_under_jit(case):
    prob, _ = make_qp(4)
    a = dict(prob)
    if case == "q_size":
        a["q"] = np.ones((B, N + 1))
    elif case == "h_size":
        a["h"] = np.ones((B, P + 1))
    elif case == "G_cols":
        a["G"] = np.ones((B, P, N + 1))
    elif case == "Q_not_square":
        a["Q"] = np.ones((B, N, N + 1))
    elif case == "G_without_h":
        a["h"] = None
    elif case == "batch_mismatch":
        a["q"] = np.ones((B + 1, N))
    f = jax.jit(lambda *args: optnet.jax.solve(*args))
    with pytest.raises(ValueError):
        f(*args_of(a))
    with pytest.raises(ValueError):
        jax.eval_shape(lambda *args: optnet.jax.solve(*args), *args_of(a))


def test_output_shapes_and_dtypes_by_eval_shape():
    prob, _ = make_qp(5)
    out = jax.eval_shape(lambda *a: optnet.jax.solve(*a, duals=True, status=True),
                         *args_of(prob))
    x, z, y, st = out
    assert x.shape == (B, N) and z.shape == (B, P) and y.shape == (B, M) and st.shape == (B,)
    assert x.dtype == jnp.float64 and jnp.issubdtype(st.dtype, jnp.integer)
    x32 = jax.eval_shape(lambda *a: optnet.jax.solve(*a),
                         *(np.asarray(v, dtype=np.float32) for v in args_of(prob)))
    assert x32.dtype == jnp.float32


@pytest.mark.slow
def test_eager_matches_jit():
    """``optnet.jax.solve`` outside ``jit`` (slow: each loop compiles on every call)."""
    prob, sol = make_qp(0, pattern="batched")
    x, z, y, status = optnet.jax.solve(*args_of(prob), duals=True, status=True)
    assert isinstance(x, jax.Array)
    np.testing.assert_array_equal(np.asarray(status), [SOLVED] * B)
    np.testing.assert_allclose(np.asarray(x), sol["x"], atol=1e-9)
    xj = jax.jit(_solve3)(*args_of(prob))[0]
    close(x, xj, 1e-12, "eager vs jit")


# ---------------------------------------------------------------------------
# multi-device: the batch sharded over two CPU devices (a subprocess)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sharded_batch_over_two_cpu_devices():
    script = ROOT / "tests" / "_distributed" / "jax_sharding.py"
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=str(ROOT), env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert lines["devices"] == "2"
    assert lines["x_shards"] == "2"
    assert float(lines["x_err"]) <= 1e-12
    assert float(lines["grad_err"]) <= 1e-12
    assert lines["status"] == "all_solved"


@pytest.mark.parametrize("constant", [True, False], ids=["Q-G-constants", "Q-G-traced"])
def test_constant_bounds_and_diagonal_take_the_structured_path(diagonal_factorizations, constant):
    """Inside a user's ``jit``, a diagonal ``Q`` and bounds ``G`` that are constants of the
    program (the Sudoku layer's kind) take the structured path (``_kkt._factor_diagonal``),
    as eager solves do; traced, they cannot (the general path). Solution and the
    gradients of ``q`` and ``A`` are NumPy's either way."""
    calls = diagonal_factorizations
    rng = np.random.default_rng(7)
    n, m, batch = 7, 2, 3
    Q, G, h = 0.1 * np.eye(n), -np.eye(n), np.zeros(n)
    A = rng.uniform(size=(m, n))
    q, b = -rng.uniform(size=(batch, n)), A @ np.ones(n)
    w = np.linspace(0.5, 1.5, n)

    if constant:
        def loss(q, A):
            return (optnet.jax.solve(Q, q, G, h, A, b) * w).sum()
        fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        value, (gq, gA) = fn(jnp.asarray(q), jnp.asarray(A))
    else:
        def loss(Q, q, G, A):
            return (optnet.jax.solve(Q, q, G, h, A, b) * w).sum()
        fn = jax.jit(jax.value_and_grad(loss, argnums=(1, 3)))
        value, (gq, gA) = fn(*(jnp.asarray(a) for a in (Q, q, G, A)))
    assert bool(calls) == constant
    sol = optnet.solve(Q, q, G, h, A, b, backend="numpy")
    assert (sol.status == SOLVED).all()
    grads = optnet.vjp(sol, np.broadcast_to(w, (batch, n)))
    np.testing.assert_allclose(float(value), float((sol.x * w).sum()), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(gq), grads.q, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.asarray(gA), grads.A, rtol=1e-7, atol=1e-9)
