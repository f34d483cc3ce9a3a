"""Derivatives of the QP solution: ``optnet.vjp`` and ``optnet.jvp``.

Checked against central finite differences on problems whose optimum is known
and strictly complementary (``gradcheck_utils.make_qp``), against each other
(``<w, J v> = <J' w, v>``), against closed forms, and for their handling of
broadcasting, failed lanes, degenerate points, ``h = +inf`` rows and bad input.

Error measure for a directional derivative (``gradcheck_utils.directional_error``)::

    |fd - an| / max(|fd|, 1e-3 * |g| |D|)

with ``|g| |D|`` the Cauchy-Schwarz bound on ``<g, D>`` (``g`` the whole
gradient, over all six inputs, ``|D| = 1``); tangents are measured the same way
against the norm of the whole tangent. The step: the solver's polished
solutions are reproducible to ~1e-15, so a central difference with step ``eps``
has rounding error ~1e-15 / eps and truncation error ~eps^2 (relative, for
well-conditioned problems); ``eps = 1e-5`` balances the two at ~1e-10, and the
perturbation is far too small to change the active set (slacks and multipliers
of the constructed problems are >= 0.5). Observed errors over hundreds of random
problems stay below 3e-7, so the tolerance 1e-5 has a wide margin while any
wrong term (an O(1) error) is caught.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optnet

try:  # tests/ on sys.path (rootdir-less "prepend" import mode)
    import gradcheck_utils as gu
except ImportError:  # pragma: no cover - tests imported as a package
    from tests import gradcheck_utils as gu

EPS = 1e-5            # central differences (see the module docstring)
# One-sided (second-order) differences at a kink: truncation O(eps^2) ~ 1e-6. The step is
# not smaller because within ~1e-5 of a degenerate point the solver's solution is only
# accurate to ~sqrt(tol) (see test_near_degenerate_rows).
EPS_ONE_SIDED = 1e-3
FD_RTOL = 1e-5
SOLVED = int(optnet.Status.SOLVED)
LOSSES = {"x": "x", "z": "z", "y": "y", "mixed": "xzy"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def as_backend(a, backend):
    """A NumPy array (or None) as an array of ``backend``."""
    if a is None:
        return None
    if backend == "array_api_strict":
        import array_api_strict

        return array_api_strict.asarray(np.asarray(a, dtype=np.float64))
    return np.asarray(a)


def backend_prob(prob, backend):
    return {k: as_backend(a, backend) for k, a in prob.items()}


def vjp_np(sol, cot, backend="numpy"):
    dx, dz, dy = (as_backend(c, backend) for c in cot)
    return gu.grads_numpy(optnet.vjp(sol, dx, dz=dz, dy=dy))


def jvp_np(sol, tangents: dict, backend="numpy"):
    kw = {"d" + k: as_backend(v, backend) for k, v in tangents.items()}
    return gu.tangents_numpy(optnet.jvp(sol, **kw))


def assert_solved(sold):
    assert np.all(sold["status"] == SOLVED), sold["status"]


def assert_grad_shapes(g, prob):
    for k in gu.NAMES:
        if prob.get(k) is None:
            assert g[k] is None, k
        else:
            assert g[k].shape == prob[k].shape, (k, g[k].shape, prob[k].shape)
            assert np.all(np.isfinite(g[k])), k


def check_fd(prob, cot, g, pm, dirs, rtol=FD_RTOL):
    """Compare <g_X, D_X> to central differences of the loss; return the errors."""
    dx, dz, dy = cot
    gn = gu.grad_norm(g)
    errs, report = {}, {}
    for k, d in dirs.items():
        plus, minus = pm[k]
        fd = (gu.loss(plus, dx, dz, dy) - gu.loss(minus, dx, dz, dy)) / (2 * EPS)
        an = float(np.sum(g[k] * d))
        scale = gn * float(np.linalg.norm(d))
        if scale == 0.0:
            # The whole gradient is exactly zero: the loss must be locally constant.
            # (relative to the size of the terms of the loss, i.e. to the loss's scale)
            errs[k] = abs(fd) / (1e-3 * (gu.loss_terms(plus, dx, dz, dy) + 1.0))
        else:
            errs[k] = gu.directional_error(fd, an, scale)
        report[k] = (fd, an, errs[k])
    assert max(errs.values(), default=0.0) <= rtol, report
    return errs


def check_jvp_fd(sol, pm, dirs, backend="numpy", rtol=FD_RTOL):
    """Compare jvp along each single-input direction to the central differences."""
    fdt = gu.fd_tangents(pm, EPS)
    report = {}
    worst = 0.0
    for k, d in dirs.items():
        t = jvp_np(sol, {k: d}, backend)
        tscale = math.sqrt(sum(float(np.sum(v * v)) for v in t.values()))
        # scale of the solution, for a direction along which nothing moves
        solscale = 1.0 + sum(float(np.linalg.norm(pm[k][0][f])) for f in ("x", "z", "y"))
        for f in gu.SOL_FIELDS:
            assert t[f].shape == fdt[k][f].shape, (k, f, t[f].shape, fdt[k][f].shape)
            if tscale == 0.0:
                err = float(np.linalg.norm(fdt[k][f])) / (1e-3 * solscale * np.linalg.norm(d))
            else:
                err = gu.vector_error(fdt[k][f], t[f], tscale)
            report[(k, f)] = err
            worst = max(worst, err)
    assert worst <= rtol, {kf: e for kf, e in report.items() if e > rtol}
    return report


def jvp_vjp_dot(sol, g, w, v, backend="numpy"):
    """(<w, J v>, <J' w, v>, rounding scale) with the full tangent ``v`` over all inputs."""
    t = jvp_np(sol, v, backend)
    wx, wz, wy = w
    lhs = float(np.sum(wx * t["x"]))
    terms = float(np.sum(np.abs(wx * t["x"])))
    if wz is not None:
        lhs += float(np.sum(wz * t["z"]))
        terms += float(np.sum(np.abs(wz * t["z"])))
    if wy is not None:
        lhs += float(np.sum(wy * t["y"]))
        terms += float(np.sum(np.abs(wy * t["y"])))
    rhs = sum(float(np.sum(g[k] * v[k])) for k in v)
    terms_r = sum(float(np.sum(np.abs(g[k] * v[k]))) for k in v)
    return lhs, rhs, max(terms, terms_r)


# Problem configurations for the fixed (non-hypothesis) finite-difference tests.
CONFIGS = {
    "unbatched": dict(n=5, m=2, p=6, batch=(), shared=(), seed=11),
    "batched": dict(n=5, m=2, p=6, batch=(3,), shared=(), seed=12),
    "shared_matrices": dict(n=5, m=2, p=6, batch=(3,), shared=("Q", "G", "A"), seed=13),
    "shared_vectors": dict(n=5, m=2, p=6, batch=(3,), shared=("q", "h", "b"), seed=14),
    "mixed_shared": dict(n=4, m=1, p=5, batch=(2, 2), shared=("Q", "h"), seed=15),
}
_CACHE: dict = {}


def fd_setup(name):
    """Problem, solution, directions and the finite-difference solutions (cached)."""
    if name not in _CACHE:
        c = CONFIGS[name]
        rng = np.random.default_rng(c["seed"])
        # Two tight rows (n - m = 3 allows up to 3) so that z and its derivative are nonzero.
        prob, opt = gu.make_qp(rng, c["n"], c["m"], c["p"], batch=c["batch"],
                               shared=c["shared"], n_active=2)
        sol = gu.solve(prob)
        sold = gu.sol_numpy(sol)
        assert_solved(sold)
        dirs = gu.random_directions(rng, prob)
        pm = gu.fd_solutions(prob, dirs, EPS)
        _CACHE[name] = (c, rng, prob, opt, sol, sold, dirs, pm)
    return _CACHE[name]


# ---------------------------------------------------------------------------
# 1 + 5. finite differences, every input, several losses and sharing patterns
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_vjp_matches_finite_differences(config, loss):
    c, _, prob, opt, sol, sold, dirs, pm = fd_setup(config)
    # The construction's optimum is the solver's.
    for f in ("x", "z", "y"):
        np.testing.assert_allclose(sold[f], opt[f], rtol=0, atol=1e-9)
    rng = np.random.default_rng(1000 + 10 * list(CONFIGS).index(config) + list(LOSSES).index(loss))
    cot = gu.random_cotangents(rng, c["batch"], c["n"], c["m"], c["p"], LOSSES[loss])
    g = vjp_np(sol, cot)
    assert_grad_shapes(g, prob)
    assert gu.grad_norm(g) > 0.0
    check_fd(prob, cot, g, pm, dirs)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_jvp_matches_finite_differences(config):
    _, _, prob, _, sol, _, dirs, pm = fd_setup(config)
    check_jvp_fd(sol, pm, dirs)


def test_q_gradient_symmetric_and_nonsymmetric_direction():
    """dL/dQ is symmetric; a non-symmetric direction of Q moves x through its symmetric part."""
    rng = np.random.default_rng(21)
    prob, _ = gu.make_qp(rng, 5, 2, 6, batch=(2,), n_active=2)
    sol = gu.solve(prob)
    cot = gu.random_cotangents(rng, (2,), 5, 2, 6)
    g = vjp_np(sol, cot)
    np.testing.assert_allclose(g["Q"], np.swapaxes(g["Q"], -1, -2), rtol=0,
                               atol=1e-14 * float(np.max(np.abs(g["Q"]))))
    D = rng.normal(size=prob["Q"].shape)
    D /= np.linalg.norm(D)
    assert np.linalg.norm(D - np.swapaxes(D, -1, -2)) > 0.5
    pm = gu.fd_solutions(prob, {"Q": D}, EPS)
    check_fd(prob, cot, g, pm, {"Q": D})
    # jvp symmetrizes dQ: D and its symmetric part give the same tangents.
    t1 = jvp_np(sol, {"Q": D})
    t2 = jvp_np(sol, {"Q": 0.5 * (D + np.swapaxes(D, -1, -2))})
    for f in gu.SOL_FIELDS:
        np.testing.assert_allclose(t1[f], t2[f], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("which", ["z", "y"])
def test_dual_cotangents_by_finite_differences(which):
    """Gradients of losses through the duals only (z or y), checked by finite differences,
    and structural facts: an inactive row's dual is locally zero, so weight on it is ignored."""
    c, _, prob, opt, sol, sold, dirs, pm = fd_setup("batched")
    rng = np.random.default_rng(31 if which == "z" else 32)
    cot = gu.random_cotangents(rng, c["batch"], c["n"], c["m"], c["p"], which)
    g = vjp_np(sol, cot)
    assert gu.grad_norm(g) > 1e-3
    check_fd(prob, cot, g, pm, dirs)
    if which == "z":
        inactive = opt["s"] > 0
        w = rng.normal(size=inactive.shape)
        dx0 = np.zeros_like(cot[0])
        g_inactive = gu.grad_norm(vjp_np(sol, (dx0, np.where(inactive, w, 0.0), None)))
        g_active = gu.grad_norm(vjp_np(sol, (dx0, np.where(inactive, 0.0, w), None)))
        # weight on the active rows' duals matters, on the inactive rows' not at all
        assert g_active > 1e-3
        assert g_inactive <= 1e-12 * g_active, (g_inactive, g_active)


# ---------------------------------------------------------------------------
# 2. jvp / vjp consistency
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_jvp_vjp_adjoint(config):
    c, _, prob, _, sol, _, _, _ = fd_setup(config)
    rng = np.random.default_rng(41)
    for _ in range(3):
        w = gu.random_cotangents(rng, c["batch"], c["n"], c["m"], c["p"])
        g = vjp_np(sol, w)
        v = gu.random_directions(rng, prob, symmetric_Q=False)
        lhs, rhs, terms = jvp_vjp_dot(sol, g, w, v)
        assert abs(lhs) > 1e-6 * terms
        assert gu.dot_error(lhs, rhs, terms) <= 1e-10, (lhs, rhs, terms)


# ---------------------------------------------------------------------------
# 3. shared input == sum over the batch of the tiled input's gradient
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shared", ["Q", "q", "G", "h", "A", "b", "QGA"])
def test_shared_gradient_is_sum_of_tiled(shared):
    names = tuple(shared) if len(shared) > 1 else (shared,)
    rng = np.random.default_rng(51 + len(shared) + gu.NAMES.index(names[0]))
    B, n, m, p = 4, 4, 1, 5
    prob, _ = gu.make_qp(rng, n, m, p, batch=(B,), shared=names, n_active=2)
    tiled = gu.expand(prob)
    for k in names:
        assert prob[k].ndim == gu.CORE_RANK[k]
        assert tiled[k].shape[0] == B
    cot = gu.random_cotangents(rng, (B,), n, m, p)
    sol_s, sol_t = gu.solve(prob), gu.solve(tiled)
    assert_solved(gu.sol_numpy(sol_s))
    g_s, g_t = vjp_np(sol_s, cot), vjp_np(sol_t, cot)
    assert_grad_shapes(g_s, prob)
    assert_grad_shapes(g_t, tiled)
    for k in gu.NAMES:
        want = g_t[k].sum(axis=0) if k in names else g_t[k]
        scale = float(np.max(np.abs(want)))
        assert scale > 0.0, k
        np.testing.assert_allclose(g_s[k], want, rtol=0, atol=1e-12 * scale, err_msg=k)
    # and jvp: a shared tangent acts on every lane like the tiled tangent.
    v = gu.random_directions(rng, prob)
    t_s = jvp_np(sol_s, v)
    t_t = jvp_np(sol_t, {k: np.broadcast_to(d, tiled[k].shape).copy() for k, d in v.items()})
    for f in gu.SOL_FIELDS:
        scale = float(np.max(np.abs(t_t[f])))
        np.testing.assert_allclose(t_s[f], t_t[f], rtol=0, atol=1e-12 * scale, err_msg=f)


# ---------------------------------------------------------------------------
# 4. broadcasting batch shapes
# ---------------------------------------------------------------------------


def _broadcast_problem(rng, n=4, m=1, p=5):
    """batch (2, 3): Q shared, q (3, n), G (2, 3, p, n), h (2, 1, p), A (1, 3, m, n), b (2, 1, m).

    Feasible by construction (h_i >= G_ij x_ij + 0.1 for a solution x_ij of A_j x = b_i)
    and bounded (Q positive definite); the optimum is generic (strictly complementary
    with probability one).
    """
    Q = gu._spd(rng, n)
    q = rng.normal(size=(3, n))
    G = rng.normal(size=(2, 3, p, n))
    A = rng.normal(size=(1, 3, m, n))
    b = rng.normal(size=(2, 1, m))
    x_part = np.einsum("jnm,ijm->ijn", np.linalg.pinv(A[0]), np.broadcast_to(b, (2, 3, m)))
    Gx = np.einsum("ijpn,ijn->ijp", G, x_part)
    h = (Gx.max(axis=1) + rng.uniform(0.1, 0.6, size=(2, p)))[:, None, :]
    return {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}


def test_broadcast_batch_shapes():
    rng = np.random.default_rng(61)
    n, m, p = 4, 1, 5
    prob = _broadcast_problem(rng, n, m, p)
    assert gu.batch_shape_of(prob) == (2, 3)
    sol = gu.solve(prob)
    sold = gu.sol_numpy(sol)
    assert_solved(sold)
    assert sold["x"].shape == (2, 3, n)
    # Some rows bind and some do not, so the test covers both kinds.
    act = sold["z"] > sold["s"]
    assert act.any() and (~act).any()
    cot = gu.random_cotangents(rng, (2, 3), n, m, p)
    g = vjp_np(sol, cot)
    assert_grad_shapes(g, prob)

    full = gu.expand(prob)
    sol_full = gu.solve(full)
    g_full = vjp_np(sol_full, cot)
    assert_grad_shapes(g_full, full)
    for k in gu.NAMES:
        want = gu.sum_to_shape(g_full[k], prob[k].shape, gu.CORE_RANK[k])
        scale = float(np.max(np.abs(want)))
        assert scale > 0.0, k
        np.testing.assert_allclose(g[k], want, rtol=0, atol=1e-12 * scale, err_msg=k)

    # Per-lane gradients of the expanded batch equal those of each problem solved alone.
    for idx in [(0, 0), (1, 2)]:
        one = gu.lane(prob, idx)
        g1 = vjp_np(gu.solve(one), tuple(c[idx] for c in cot))
        for k in gu.NAMES:
            scale = float(np.max(np.abs(g1[k])))
            np.testing.assert_allclose(g_full[k][idx], g1[k], rtol=0, atol=1e-10 * scale,
                                       err_msg=f"{k} lane {idx}")

    # Finite differences on the broadcast inputs themselves.
    dirs = gu.random_directions(rng, prob)
    pm = gu.fd_solutions(prob, dirs, EPS)
    check_fd(prob, cot, g, pm, dirs)

    # jvp with broadcast tangents == jvp of the expanded problem with tiled tangents.
    t = jvp_np(sol, dirs)
    t_full = jvp_np(sol_full, {k: np.broadcast_to(d, full[k].shape).copy()
                               for k, d in dirs.items()})
    for f in gu.SOL_FIELDS:
        assert t[f].shape == (2, 3, p if f in "zs" else (m if f == "y" else n))
        scale = float(np.max(np.abs(t_full[f])))
        np.testing.assert_allclose(t[f], t_full[f], rtol=0, atol=1e-12 * scale, err_msg=f)


# ---------------------------------------------------------------------------
# 6. property-based: random strictly complementary problems, both backends
# ---------------------------------------------------------------------------


@st.composite
def qp_cases(draw):
    n = draw(st.integers(1, 8))
    m = draw(st.integers(0, min(3, n - 1)))
    p = draw(st.integers(0, 8))
    batch = draw(st.sampled_from([(), (2,)]))
    shared = draw(st.sampled_from([(), ("Q", "G", "A"), ("q", "h", "b")])) if batch else ()
    which = draw(st.sampled_from(["x", "z", "y", "xzy"]))
    empty_blocks = draw(st.booleans())   # m or p == 0: pass empty arrays instead of None
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(n=n, m=m, p=p, batch=batch, shared=shared, which=which,
                empty_blocks=empty_blocks, seed=seed)


def _with_empty_blocks(prob, batch, n, m, p):
    prob = dict(prob)
    if p == 0:
        prob["G"], prob["h"] = np.zeros((*batch, 0, n)), np.zeros((*batch, 0))
    if m == 0:
        prob["A"], prob["b"] = np.zeros((0, n)), np.zeros((0,))
    return prob


@pytest.mark.parametrize("backend", gu.BACKENDS)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=qp_cases())
def test_property_vjp_fd_and_jvp(backend, case):
    n, m, p, batch = case["n"], case["m"], case["p"], case["batch"]
    rng = np.random.default_rng(case["seed"])
    prob, opt = gu.make_qp(rng, n, m, p, batch=batch, shared=case["shared"])
    if case["empty_blocks"]:
        prob = _with_empty_blocks(prob, batch, n, m, p)
    sol = gu.solve(backend_prob(prob, backend), backend=backend)
    sold = gu.sol_numpy(sol)
    assert_solved(sold)
    np.testing.assert_allclose(sold["x"], opt["x"], rtol=0, atol=1e-8)

    cot = gu.random_cotangents(rng, batch, n, m, p, case["which"])
    grads = optnet.vjp(sol, as_backend(cot[0], backend), dz=as_backend(cot[1], backend),
                       dy=as_backend(cot[2], backend))
    if backend == "array_api_strict":
        assert type(grads.q).__module__.startswith("array_api_strict")
    g = gu.grads_numpy(grads)
    assert_grad_shapes(g, prob)

    dirs = {k: d for k, d in gu.random_directions(rng, prob).items() if d.size}
    pm = gu.fd_solutions(prob, dirs, EPS, backend=backend)
    check_fd(prob, cot, g, pm, dirs)
    check_jvp_fd(sol, pm, dirs, backend=backend)

    w = gu.random_cotangents(rng, batch, n, m, p)
    gw = vjp_np(sol, w, backend)
    v = gu.random_directions(rng, prob, symmetric_Q=False)
    lhs, rhs, terms = jvp_vjp_dot(sol, gw, w, v, backend)
    assert gu.dot_error(lhs, rhs, terms) <= 1e-10, (lhs, rhs, terms)


# ---------------------------------------------------------------------------
# 7. failed lanes
# ---------------------------------------------------------------------------


def _failing_batch(rng, n=4, m=1, p=4):
    """Lanes 0, 2: ordinary; lane 1: infeasible (x_0 <= -1 and -x_0 <= -1);
    lane 3: unbounded (Q = 0, no binding constraint)."""
    prob, _ = gu.make_qp(rng, n, m, p, batch=(4,), n_active=2)
    prob["G"][1, 0], prob["G"][1, 1] = 0.0, 0.0
    prob["G"][1, 0, 0], prob["h"][1, 0] = 1.0, -1.0
    prob["G"][1, 1, 0], prob["h"][1, 1] = -1.0, -1.0
    prob["Q"][3] = 0.0
    prob["G"][3] = 0.0
    prob["h"][3] = 1.0
    prob["A"][3] = 0.0
    prob["b"][3] = 0.0
    prob["q"][3] = rng.normal(size=n)
    return prob


def test_failed_lanes_get_zero_and_leave_neighbours_alone():
    rng = np.random.default_rng(71)
    n, m, p = 4, 1, 4
    prob = _failing_batch(rng, n, m, p)
    sol = gu.solve(prob)
    sold = gu.sol_numpy(sol)
    status = sold["status"]
    assert status[0] == SOLVED and status[2] == SOLVED
    assert status[1] != SOLVED and status[3] != SOLVED
    cot = gu.random_cotangents(rng, (4,), n, m, p)
    g = vjp_np(sol, cot)
    assert_grad_shapes(g, prob)
    v = gu.random_directions(rng, prob)
    t = jvp_np(sol, v)
    for bad in (1, 3):
        for k in gu.NAMES:
            np.testing.assert_array_equal(g[k][bad], 0.0, err_msg=f"{k} lane {bad}")
        for f in gu.SOL_FIELDS:
            np.testing.assert_array_equal(t[f][bad], 0.0, err_msg=f"{f} lane {bad}")
    for good in (0, 2):
        one = gu.lane(prob, (good,))
        sol1 = gu.solve(one)
        g1 = vjp_np(sol1, tuple(c[good] for c in cot))
        for k in gu.NAMES:
            scale = float(np.max(np.abs(g1[k])))
            assert scale > 0.0
            np.testing.assert_allclose(g[k][good], g1[k], rtol=0, atol=1e-12 * scale,
                                       err_msg=f"{k} lane {good}")
        t1 = jvp_np(sol1, {k: d[good] for k, d in v.items()})
        for f in gu.SOL_FIELDS:
            scale = float(np.max(np.abs(t1[f])))
            np.testing.assert_allclose(t[f][good], t1[f], rtol=0, atol=1e-12 * scale,
                                       err_msg=f"{f} lane {good}")


def test_failed_lane_with_shared_inputs():
    """Shared Q: its gradient is the sum over the SOLVED lanes only (and finite)."""
    rng = np.random.default_rng(72)
    n, m, p = 4, 1, 4
    prob = _failing_batch(rng, n, m, p)
    prob = {k: a[:3] for k, a in prob.items()}        # drop the unbounded lane
    prob["Q"] = gu._spd(rng, n)                        # shared
    sol = gu.solve(prob)
    status = gu.sol_numpy(sol)["status"]
    assert list(status != SOLVED) == [False, True, False]
    cot = gu.random_cotangents(rng, (3,), n, m, p)
    g = vjp_np(sol, cot)
    assert_grad_shapes(g, prob)
    want = np.zeros((n, n))
    for good in (0, 2):
        one = gu.lane(prob, (good,))
        want += vjp_np(gu.solve(one), tuple(c[good] for c in cot))["Q"]
    np.testing.assert_allclose(g["Q"], want, rtol=0, atol=1e-12 * float(np.max(np.abs(want))))


def test_max_iter_lanes_get_zero_gradients():
    """Lanes that end at MAX_ITER get zero derivatives; the others are unaffected."""
    rng = np.random.default_rng(31)
    n = p = 30
    Q = np.stack([u.T @ u + 1e-3 * np.eye(n) for u in rng.uniform(size=(6, n, n))])
    G = rng.standard_normal((6, p, n))
    h = (G @ rng.standard_normal((6, n, 1)))[..., 0] + rng.uniform(size=(6, p))
    prob = {"Q": Q, "q": rng.standard_normal((6, n)), "G": G, "h": h, "A": None, "b": None}
    sol = optnet.solve(**prob, max_iter=1)
    status = np.asarray(sol.status)
    hit = status == int(optnet.Status.MAX_ITER)
    assert np.any(hit), status
    cot = rng.standard_normal((6, n)), rng.standard_normal((6, p))
    g = gu.grads_numpy(optnet.vjp(sol, cot[0], dz=cot[1]))
    for k in ("Q", "q", "G", "h"):
        np.testing.assert_array_equal(g[k][hit], 0.0, err_msg=k)
    # A solved lane's derivative is that of the fully converged solve.
    if np.any(~hit):
        full = optnet.solve(**prob)
        gf = gu.grads_numpy(optnet.vjp(full, cot[0], dz=cot[1]))
        for k in ("Q", "q", "G", "h"):
            np.testing.assert_allclose(g[k][~hit], gf[k][~hit], rtol=1e-6, atol=1e-8,
                                       err_msg=k)


# ---------------------------------------------------------------------------
# 8. degenerate point: a tight row with a zero multiplier
# ---------------------------------------------------------------------------


def _pieces(prob, k):
    """The two smooth pieces at a degenerate row k: removed (inactive) / an equality (active)."""
    keep = [i for i in range(prob["G"].shape[0]) if i != k]
    inactive = dict(prob, G=prob["G"][keep], h=prob["h"][keep])
    active = dict(inactive, A=np.concatenate([prob["A"], prob["G"][k:k + 1]]),
                  b=np.concatenate([prob["b"], prob["h"][k:k + 1]]))
    return keep, inactive, active


@pytest.mark.parametrize("seed", [81, 82, 83])
def test_degenerate_point_one_sided(seed):
    rng = np.random.default_rng(seed)
    n, m, p = 4, 1, 3
    prob, opt = gu.make_qp(rng, n, m, p, n_active=1, degenerate=1)
    k = p                                           # the degenerate row (last)
    assert opt["s"][k] == 0.0 and opt["z"][k] == 0.0
    sol = gu.solve(prob)
    sold = gu.sol_numpy(sol)
    assert_solved(sold)
    np.testing.assert_allclose(sold["x"], opt["x"], rtol=0, atol=1e-7)
    cot = gu.random_cotangents(rng, (), n, m, p + 1)
    g = vjp_np(sol, cot)
    assert_grad_shapes(g, prob)                   # finite: no NaN / Inf
    t = jvp_np(sol, gu.random_directions(rng, prob))
    for f in gu.SOL_FIELDS:
        assert np.all(np.isfinite(t[f])), f

    # Second-order one-sided differences along h_k, from the exact value at the kink:
    #   up   (the row goes slack): (-3 L0 + 4 L(+eps) - L(+2 eps)) / (2 eps)
    #   down (the row binds):      ( 3 L0 - 4 L(-eps) + L(-2 eps)) / (2 eps)
    # The solution is smooth on each side, so the truncation error is O(eps^2).
    e = np.zeros(p + 1)
    e[k] = EPS_ONE_SIDED
    stacked = dict(prob, h=np.stack([prob["h"] + j * e for j in (1, 2, -1, -2)]))
    s4 = gu.sol_numpy(gu.solve(stacked))
    assert_solved(s4)
    L1, L2, Lm1, Lm2 = (gu.loss({f: s4[f][i] for f in gu.SOL_FIELDS}, *cot) for i in range(4))
    L0 = gu.loss(opt, *cot)
    fwd = (-3 * L0 + 4 * L1 - L2) / (2 * EPS_ONE_SIDED)
    bwd = (3 * L0 - 4 * Lm1 + Lm2) / (2 * EPS_ONE_SIDED)
    scale = gu.grad_norm(g)
    # The point is a genuine kink: the two one-sided derivatives differ.
    assert abs(fwd - bwd) > 1e-2 * scale, (fwd, bwd, scale)
    an = float(g["h"][k])
    err = min(gu.directional_error(fwd, an, scale), gu.directional_error(bwd, an, scale))
    assert err <= 1e-4, (fwd, bwd, an)

    # Stronger: the whole gradient is that of one of the two smooth pieces.
    keep, inactive, active = _pieces(prob, k)
    dx, dz, dy = cot
    g_in = vjp_np(gu.solve(inactive), (dx, dz[keep], dy))
    g_ac = vjp_np(gu.solve(active), (dx, dz[keep], np.concatenate([dy, dz[k:k + 1]])))
    piece_in = dict(g_in, G=np.insert(g_in["G"], k, 0.0, axis=0),
                    h=np.insert(g_in["h"], k, 0.0))
    piece_ac = dict(g_ac, G=np.insert(g_ac["G"], k, g_ac["A"][m], axis=0),
                    h=np.insert(g_ac["h"], k, g_ac["b"][m]), A=g_ac["A"][:m], b=g_ac["b"][:m])

    def dist(piece):
        return max(float(np.max(np.abs(g[kk] - piece[kk]))) for kk in gu.NAMES) / scale

    d_in, d_ac = dist(piece_in), dist(piece_ac)
    assert max(d_in, d_ac) > 1e-3, (d_in, d_ac)     # the pieces differ ...
    assert min(d_in, d_ac) <= 1e-8, (d_in, d_ac)    # ... and g is one of them


@pytest.mark.parametrize("kind", ["slack", "multiplier"])
def test_near_degenerate_rows(kind):
    """A row with a small but nonzero margin is not degenerate: the derivative is the
    smooth one of its side.

    ``slack``: the row is slack by ``delta`` with a zero multiplier, so locally it is no
    constraint and the gradient is that of the problem without the row (zero for h_k
    and G_k). ``multiplier``: the row is tight with multiplier ``delta``, so locally it
    is an equality. ``delta = 1e-6`` is 1000x the solver's tolerance; the two pieces'
    gradients differ by O(1), and the tolerance 1e-4 allows for a solution accurate only
    to ~sqrt(tol).
    """
    delta = 1e-6
    n, m, p = 4, 1, 3
    k = p
    failures = []
    for seed in range(8):
        rng = np.random.default_rng(800 + seed)
        prob, opt = gu.make_qp(rng, n, m, p, n_active=1, degenerate=1)
        prob = dict(prob)
        if kind == "slack":
            prob["h"] = prob["h"] + delta * (np.arange(p + 1) == k)
        else:
            prob["q"] = prob["q"] - delta * prob["G"][k]       # z_k = delta, x unchanged
        cot = gu.random_cotangents(rng, (), n, m, p + 1)
        sol = gu.solve(prob)
        sold = gu.sol_numpy(sol)
        assert_solved(sold)
        g = vjp_np(sol, cot)
        keep, inactive, active = _pieces(prob, k)
        dx, dz, dy = cot
        if kind == "slack":
            g_in = vjp_np(gu.solve(inactive), (dx, dz[keep], dy))
            want = dict(g_in, G=np.insert(g_in["G"], k, 0.0, axis=0),
                        h=np.insert(g_in["h"], k, 0.0))
        else:
            g_ac = vjp_np(gu.solve(active), (dx, dz[keep], np.concatenate([dy, dz[k:k + 1]])))
            want = dict(g_ac, G=np.insert(g_ac["G"], k, g_ac["A"][m], axis=0),
                        h=np.insert(g_ac["h"], k, g_ac["b"][m]), A=g_ac["A"][:m],
                        b=g_ac["b"][:m])
        err = max(float(np.max(np.abs(g[kk] - want[kk]))) for kk in gu.NAMES)
        err /= gu.grad_norm(want)
        if err > 1e-4:
            failures.append(dict(seed=800 + seed, grad_rel_err=err,
                                 x_err=float(np.max(np.abs(sold["x"] - opt["x"]))),
                                 z_k=float(sold["z"][k]), s_k=float(sold["s"][k])))
    assert not failures, "; ".join(
        f"seed {f['seed']}: grad rel err {f['grad_rel_err']:.2e}, |x - x*| {f['x_err']:.1e}, "
        f"z_k {f['z_k']:.1e}, s_k {f['s_k']:.1e}" for f in failures)


@pytest.mark.parametrize("kind", ["slack", "multiplier"])
def test_near_degenerate_rows_batched_as_alone(kind):
    """The near-degenerate problems above, solved as one batch among well-posed ones: each
    lane's solution and derivative are those of the problem solved alone (the active-set
    corrections of the polish then run on a subset of the lanes)."""
    delta, n, m, p = 1e-6, 4, 1, 3
    probs = []
    for seed in range(8):
        rng = np.random.default_rng(800 + seed)
        prob, _ = gu.make_qp(rng, n, m, p, n_active=1, degenerate=1)
        prob = dict(prob)
        if kind == "slack":
            prob["h"] = prob["h"] + delta * (np.arange(p + 1) == p)
        else:
            prob["q"] = prob["q"] - delta * prob["G"][p]
        probs.append(prob)
    for seed in range(8):      # well-posed neighbours
        probs.append(dict(gu.make_qp(np.random.default_rng(900 + seed), n, m, p + 1)[0]))
    batch = {k: np.stack([pr[k] for pr in probs]) for k in gu.NAMES}
    rng = np.random.default_rng(7)
    cot = gu.random_cotangents(rng, (16,), n, m, p + 1)
    sol = gu.solve(batch)
    sold = gu.sol_numpy(sol)
    g = vjp_np(sol, cot)
    for i, pr in enumerate(probs):
        one = gu.solve(pr)
        ones = gu.sol_numpy(one)
        gi = vjp_np(one, tuple(c[i] for c in cot))
        assert sold["status"][i] == ones["status"] == int(optnet.Status.SOLVED)
        np.testing.assert_allclose(sold["x"][i], ones["x"], rtol=1e-9, atol=1e-11)
        for k in gu.NAMES:
            np.testing.assert_allclose(g[k][i], gi[k], rtol=1e-7, atol=1e-9,
                                       err_msg=f"lane {i}, {k}")


# ---------------------------------------------------------------------------
# 9. h = +inf rows
# ---------------------------------------------------------------------------


def test_inf_rows_are_not_constraints():
    rng = np.random.default_rng(91)
    n, m, p = 4, 1, 5
    prob, opt = gu.make_qp(rng, n, m, p, batch=(2,), n_active=2)
    free = np.zeros((2, p), dtype=bool)
    # lane 0: one tight and one slack row become free; lane 1: one slack row.
    tight0 = np.flatnonzero(opt["s"][0] == 0.0)
    slack0 = np.flatnonzero(opt["s"][0] > 0.0)
    free[0, [tight0[0], slack0[0]]] = True
    free[1, np.flatnonzero(opt["s"][1] > 0.0)[0]] = True
    prob["h"] = np.where(free, np.inf, prob["h"])
    sol = gu.solve(prob)
    sold = gu.sol_numpy(sol)
    assert_solved(sold)
    assert np.all(np.isposinf(sold["s"][free])) and np.all(sold["z"][free] == 0.0)

    cot = gu.random_cotangents(rng, (2,), n, m, p)
    g = vjp_np(sol, cot)
    assert_grad_shapes(g, prob)
    np.testing.assert_array_equal(g["h"][free], 0.0)
    np.testing.assert_array_equal(g["G"][free], 0.0)

    v = gu.random_directions(rng, prob)
    t = jvp_np(sol, v)
    for f in gu.SOL_FIELDS:
        assert np.all(np.isfinite(t[f])), f
    np.testing.assert_array_equal(t["s"][free], 0.0)
    # Tangents supported only on the free rows change nothing.
    t0 = jvp_np(sol, {"h": np.where(free, 1.0, 0.0),
                      "G": np.where(free[..., None], v["G"], 0.0)})
    for f in gu.SOL_FIELDS:
        np.testing.assert_array_equal(t0[f], 0.0, err_msg=f)

    # Each lane equals the problem with its free rows removed.
    for i in range(2):
        keep = np.flatnonzero(~free[i])
        one = dict(gu.lane(prob, (i,)))
        one["G"], one["h"] = one["G"][keep], one["h"][keep]
        sol1 = gu.solve(one)
        g1 = vjp_np(sol1, (cot[0][i], cot[1][i][keep], cot[2][i]))
        for k in ("Q", "q", "A", "b"):
            scale = float(np.max(np.abs(g1[k])))
            np.testing.assert_allclose(g[k][i], g1[k], rtol=0, atol=1e-10 * scale, err_msg=k)
        for k in ("G", "h"):
            scale = float(np.max(np.abs(g1[k])))
            np.testing.assert_allclose(g[k][i][keep], g1[k], rtol=0, atol=1e-10 * scale,
                                       err_msg=k)
        t1 = jvp_np(sol1, {k: (d[i][keep] if k in "Gh" else d[i]) for k, d in v.items()})
        for f in ("x", "y"):
            scale = float(np.max(np.abs(t1[f])))
            np.testing.assert_allclose(t[f][i], t1[f], rtol=0, atol=1e-10 * scale, err_msg=f)
        for f in ("z", "s"):
            scale = float(np.max(np.abs(t1[f])))
            np.testing.assert_allclose(t[f][i][keep], t1[f], rtol=0, atol=1e-10 * scale,
                                       err_msg=f)

    # Finite differences still hold with the free rows present.
    dirs = gu.random_directions(rng, prob)
    dirs["h"] = np.where(free, 0.0, dirs["h"])
    pm = gu.fd_solutions(prob, dirs, EPS)
    check_fd(prob, cot, g, pm, dirs)


# ---------------------------------------------------------------------------
# 10. unconstrained: closed form
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shared_Q", [False, True])
def test_unconstrained_closed_form(shared_Q):
    rng = np.random.default_rng(101 + shared_Q)
    n, B = 5, 3
    Q = gu._spd(rng, n) if shared_Q else gu._spd(rng, n, (B,))
    q = rng.normal(size=(B, n))
    sol = optnet.solve(Q, q)
    sold = gu.sol_numpy(sol)
    assert_solved(sold)
    Qb = np.broadcast_to(Q, (B, n, n))
    x = -np.linalg.solve(Qb, q[..., None])[..., 0]
    np.testing.assert_allclose(sold["x"], x, rtol=1e-12, atol=1e-12)
    w = rng.normal(size=(B, n))
    g = vjp_np(sol, (w, None, None))
    assert g["G"] is None and g["h"] is None and g["A"] is None and g["b"] is None
    u = np.linalg.solve(Qb, w[..., None])[..., 0]                  # Q^{-1} w
    gq = -u
    gQ = -0.5 * (u[:, :, None] * x[:, None, :] + x[:, :, None] * u[:, None, :])
    if shared_Q:
        gQ = gQ.sum(axis=0)
    np.testing.assert_allclose(g["q"], gq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g["Q"], gQ, rtol=1e-10, atol=1e-12)
    # jvp: dx = -Q^{-1} (sym(dQ) x + dq)
    dQ = rng.normal(size=Q.shape)
    dq = rng.normal(size=q.shape)
    t = jvp_np(sol, {"Q": dQ, "q": dq})
    dQs = np.broadcast_to(0.5 * (dQ + np.swapaxes(dQ, -1, -2)), (B, n, n))
    dx = -np.linalg.solve(Qb, (dQs @ x[..., None])[..., 0][..., None] + dq[..., None])[..., 0]
    np.testing.assert_allclose(t["x"], dx, rtol=1e-10, atol=1e-12)
    assert t["z"].shape == (B, 0) and t["y"].shape == (B, 0) and t["s"].shape == (B, 0)


# ---------------------------------------------------------------------------
# 11. bad input
# ---------------------------------------------------------------------------


def test_vjp_of_chosen_inputs():
    """``wrt``: the chosen gradients equal those of a full vjp, the others are None; an
    unknown name is a ValueError naming the argument."""
    rng = np.random.default_rng(112)
    prob, _ = gu.make_qp(rng, 5, 2, 4, batch=(3,), n_active=2)
    sol = gu.solve(prob)
    dx = rng.normal(size=(3, 5))
    full = optnet.vjp(sol, dx)
    part = optnet.vjp(sol, dx, wrt=("q", "A", "h"))
    for k in "QqGhAb":
        if k in "qAh":
            np.testing.assert_array_equal(getattr(part, k), getattr(full, k), err_msg=k)
        else:
            assert getattr(part, k) is None, k
    assert optnet.vjp(sol, dx, wrt="Q").Q.shape == full.Q.shape
    with pytest.raises(ValueError, match="wrt"):
        optnet.vjp(sol, dx, wrt=("q", "x"))


def test_bad_cotangent_and_tangent_input():
    rng = np.random.default_rng(111)
    prob, _ = gu.make_qp(rng, 4, 1, 3, batch=(2,), n_active=1)
    sol = gu.solve(prob)
    with pytest.raises(ValueError, match="dx"):
        optnet.vjp(sol, np.ones((2, 5)))
    with pytest.raises(ValueError, match="dx"):
        optnet.vjp(sol, np.ones(4))                       # missing batch dim
    with pytest.raises(ValueError, match="dz"):
        optnet.vjp(sol, np.ones((2, 4)), dz=np.ones((2, 4)))
    with pytest.raises(ValueError, match="dy"):
        optnet.vjp(sol, np.ones((2, 4)), dy=np.ones((2, 2)))
    with pytest.raises(ValueError, match="dq"):
        optnet.jvp(sol, dq=np.ones((2, 3)))
    # Tangents have the shape of the input given to solve, not the broadcast shape.
    shared = optnet.solve(prob["Q"], prob["q"][0], prob["G"], prob["h"], prob["A"], prob["b"])
    with pytest.raises(ValueError, match="dq"):
        optnet.jvp(shared, dq=np.ones((2, 4)))
    unc = optnet.solve(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="dG"):
        optnet.jvp(unc, dG=np.ones((1, 3)))
    with pytest.raises(ValueError, match="dh"):
        optnet.jvp(unc, dh=np.ones(1))
    with pytest.raises(ValueError, match="dA"):
        optnet.jvp(unc, dA=np.ones((1, 3)))
