"""The polish's elimination of the variables its active bounds fix (``_polish.Eliminated``).

Where every row of ``G`` has at most one nonzero (``Problem.bound_rows``), eager backends
solve the polish's active-set system on the free variables only, and the derivatives
solve with that system too. These tests check when it is taken, and that solutions,
statuses and derivatives are those of the general active-set system (the path forced off)
and of the reference solver, on every backend of the shared fixture: a dense ``Q`` with
two-sided bounds and equalities (the ``rho`` term of the reduced system), a diagonal ``Q``
with a zero entry (an LP direction held by a bound: ``rho`` again), bounds alone (no
equalities), a variable fixed by equal lower and upper bounds (two active rows on one
column) and the Sudoku layer's shape (``Q = 0.1 I``, ``G = -I``, more equalities than
free variables at the optimum: the diagonal reduced system, dependent active rows).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import count_calls, to_numpy
from reference import SOLVED as REF_SOLVED
from reference import reference_solve

import optnet
from optnet import _pdipm, _polish

SOLVED = int(optnet.Status.SOLVED)


def _bounded(lo, hi):
    """``G = [I; -I]``, ``h = [hi; -lo]`` (shared), two rows scaled (2.5 x_3 <= 2.5 hi_3,
    -0.4 x_5 <= -0.4 lo_5)."""
    n = lo.shape[0]
    G = np.concatenate([np.eye(n), -np.eye(n)])
    h = np.concatenate([hi, -lo])
    scale = np.ones(2 * n)
    scale[3], scale[n + 5] = 2.5, 0.4
    return G * scale[:, None], h * scale


def _case(kind: str, seed: int = 0, B: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    if kind == "sudoku":
        n, m = 64, 40
        A = rng.uniform(size=(m, n))
        # One-hot boards' worth of feasible points: b = A z0 with z0 in the box.
        z0 = (rng.uniform(size=(B, n)) < 0.25).astype(float)
        return {"Q": 0.1 * np.eye(n), "q": -rng.uniform(size=(B, n)), "G": -np.eye(n),
                "h": np.zeros(n), "A": A, "b": z0 @ A.T, "kind": kind}
    n, m = 8, 3
    lo, hi = -np.ones(n), np.ones(n)
    if kind == "fixed":
        lo[2] = hi[2] = 0.3                       # x_2 = 0.3, by two inequality rows
    G, h = _bounded(lo, hi)
    if kind == "lp":
        Q = np.zeros((B, n, n))
        Q[:, np.arange(n), np.arange(n)] = rng.uniform(0.5, 2.0, size=(B, n))
        Q[:, 1, 1] = 0.0
    else:
        R = rng.normal(size=(B, n, n))
        Q = R @ R.transpose(0, 2, 1) / n + 0.1 * np.eye(n)
    q = 3.0 * rng.normal(size=(B, n))             # large enough to make bounds active
    data = {"Q": Q, "q": q, "G": G, "h": h, "kind": kind}
    if kind != "box":
        A = rng.normal(size=(B, m, n))
        data["A"] = A
        data["b"] = np.einsum("bmn,bn->bm", A, rng.uniform(-0.5, 0.5, size=(B, n)))
        if kind == "fixed":
            data["b"] = A @ np.where(np.arange(n) == 2, 0.3, 0.1)
    return data


KINDS = ["dense", "lp", "box", "fixed", "sudoku"]


def _args(data):
    return {k: v for k, v in data.items() if k != "kind"}


def _directions(data):
    """Tangents of forward mode with right-hand sides in the rows of the active bounds:
    along ``h`` and ``b``, where the active rows are independent. Where they are not, the
    solution is differentiable along ``q`` (its tangent then comes from the bound rows'
    elimination as well) and, for the fixed variable, along the tangents of ``h`` that
    move its two bounds together."""
    rng = np.random.default_rng(5)
    kind = data["kind"]
    if kind == "sudoku":
        return {"dq": rng.normal(size=data["q"].shape)}
    dh = rng.normal(size=data["h"].shape)
    if kind == "fixed":
        n = data["q"].shape[-1]
        dh[n + 2] = -dh[2]
        return {"dq": rng.normal(size=data["q"].shape), "dh": dh}
    out = {"dh": dh}
    if "b" in data:
        out["db"] = rng.normal(size=data["b"].shape)
    return out


def _solve(data, backend, monkeypatch, general: bool):
    with monkeypatch.context() as mp:
        calls = count_calls(mp, _polish, "_eliminated_system")
        if general:
            # No structure found: neither the diagonal factorization nor the elimination.
            mp.setattr(_pdipm, "_structure", lambda xp, prob: (xp.asarray(False),) * 3)
        sol = optnet.solve(**_args(data), backend=backend)
        weights = np.linspace(0.5, 1.5, sol.x.shape[-1]) * np.ones(sol.x.shape)
        grads = optnet.vjp(sol, weights)
        tangents = optnet.jvp(sol, **_directions(data))
    return sol, (grads, tangents), len(calls)


@pytest.mark.parametrize("kind", KINDS)
def test_same_answers_as_the_general_system(kind, backend, monkeypatch):
    """Solutions, statuses and derivatives equal to the general system's. Where the
    active rows are dependent (``fixed``, ``sudoku``) the multipliers are not unique:
    there ``G'z + A'y`` (which stationarity fixes) and the gradients of ``q`` are compared
    instead of the multipliers and the other gradients. The tangent of ``x`` along ``h``
    and ``b`` (forward mode) is compared everywhere."""
    data = _case(kind)
    fast, (g_fast, t_fast), taken = _solve(data, backend, monkeypatch, general=False)
    slow, (g_slow, t_slow), none = _solve(data, backend, monkeypatch, general=True)
    traced = not optnet.backends.load(backend).ops.eager
    assert none == 0
    assert (taken == 0) if traced else (taken > 0)
    assert to_numpy(fast.status).tolist() == to_numpy(slow.status).tolist() == [SOLVED] * 4
    close = {"atol": 1e-8, "rtol": 1e-8}
    np.testing.assert_allclose(to_numpy(fast.x), to_numpy(slow.x), **close)
    unique = kind not in ("fixed", "sudoku")
    if unique:
        for k in ("y", "z"):
            if getattr(fast, k) is not None:
                np.testing.assert_allclose(to_numpy(getattr(fast, k)), to_numpy(getattr(slow, k)),
                                           **close, err_msg=k)
    else:
        def combo(sol):
            G = np.asarray(data["G"])
            out = np.einsum("pn,bp->bn", G, to_numpy(sol.z))
            y = to_numpy(sol.y)
            A = np.broadcast_to(data["A"], (*y.shape, out.shape[-1]))
            return out + np.einsum("bmn,bm->bn", A, y)

        np.testing.assert_allclose(combo(fast), combo(slow), **close)
    np.testing.assert_allclose(to_numpy(t_fast.x), to_numpy(t_slow.x), atol=1e-7, rtol=1e-7)
    for k in ("QqGhAb" if unique else "q"):
        a, b = getattr(g_fast, k), getattr(g_slow, k)
        if a is None:
            assert b is None
            continue
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-7, rtol=1e-7, err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_agrees_with_the_reference_solver(kind):
    """Every lane against Clarabel (plus its polish)."""
    data = _case(kind, seed=1)
    sol = optnet.solve(**_args(data))
    for i in range(4):
        lane = {k: (v[i] if np.ndim(v) == {"q": 1, "h": 1, "b": 1}.get(k, 2) + 1 else v)
                for k, v in _args(data).items()}
        ref = reference_solve(lane["Q"], lane["q"], lane["G"], lane["h"], lane.get("A"),
                              lane.get("b"))
        assert ref.status == REF_SOLVED
        assert int(sol.status[i]) == SOLVED
        np.testing.assert_allclose(sol.x[i], ref.x, atol=1e-7)


def test_bounds_active_in_the_cases():
    """The cases exercise what they name: active bounds in every lane, and in ``fixed``
    two active rows on one column."""
    for kind in KINDS:
        sol = optnet.solve(**_args(_case(kind)))
        active = sol.z > 1e-8
        assert active.any(axis=-1).all(), kind
        if kind == "fixed":
            assert active[:, 2].any() or active[:, 8 + 2].any()
            np.testing.assert_allclose(sol.x[:, 2], 0.3, atol=1e-9)


@pytest.mark.parametrize("kind", ["dense", "sudoku"])
def test_torch_iteration_and_autograd(kind, torch_native):
    """The torch backend's own iteration (the path of CUDA tensors) and autograd through
    the eliminated system: the NumPy backend's solution and ``q`` gradient."""
    torch = pytest.importorskip("torch")
    data = _args(_case(kind, seed=2))
    ref = optnet.solve(**data)
    weights = np.linspace(0.5, 1.5, ref.x.shape[-1]) * np.ones(ref.x.shape)
    g_ref = optnet.vjp(ref, weights)
    t = {k: torch.as_tensor(v) for k, v in data.items()}
    t["q"].requires_grad_(True)
    x = optnet.torch.solve(t["Q"], t["q"], t["G"], t["h"], t.get("A"), t.get("b"))
    (x * torch.as_tensor(weights)).sum().backward()
    np.testing.assert_allclose(x.detach().numpy(), ref.x, atol=1e-9)
    np.testing.assert_allclose(t["q"].grad.numpy(), g_ref.q, atol=1e-7, rtol=1e-7)
