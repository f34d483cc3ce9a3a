"""The diagonal-``H`` factorization (``_kkt._factor_diagonal``, ``Problem.diagonal_h``).

Where ``Q`` is diagonal and every row of ``G`` has at most one nonzero (bounds on the
variables), eager backends factor ``H = Q + G'W^{-1}G`` as a vector. These tests check
when the path is taken, and that its answers, statuses and derivatives are those of the
general factorization (the path forced off) and of the reference solver, on every
backend of the shared fixture: box constraints with equalities, a variable with no
quadratic term (``Q_jj = 0``, an LP direction held by its bounds), a one-sided bound, a
shared ``G`` and an infeasible lane.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_numpy
from reference import SOLVED as REF_SOLVED
from reference import reference_solve

import optnet
from optnet import _kkt, _pdipm
from optnet._problem import canonicalize
from optnet.backends import numpy as numpy_backend

SOLVED = int(optnet.Status.SOLVED)
INFEASIBLE = int(optnet.Status.PRIMAL_INFEASIBLE)


def _box_batch(seed=0, B=4, n=9, m=3):
    """Diagonal Q (one entry zero), |x_j| <= 1 for all j but the last (x_last <= 2 only),
    equalities A x = b; G and h shared; the last lane's equalities beyond the box."""
    rng = np.random.default_rng(seed)
    Q = np.zeros((B, n, n))
    Q[:, np.arange(n), np.arange(n)] = rng.uniform(0.1, 3.0, size=(B, n))
    Q[:, 2, 2] = 0.0
    q = rng.normal(size=(B, n))
    G = np.concatenate([np.eye(n), -np.eye(n)[:-1]])
    G[3] *= 2.5                                  # a scaled bound row: 2.5 x_3 <= 2.5
    h = np.concatenate([np.ones(n), np.ones(n - 1)])
    h[n - 1] = 2.0
    h[3] = 2.5
    A = rng.normal(size=(B, m, n))
    b = np.einsum("bmn,bn->bm", A, rng.uniform(-0.5, 0.5, size=(B, n)))
    b[-1] = 1e3
    return {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}


def _flag(data):
    xp, ops = numpy_backend.namespace, numpy_backend.ops
    prob = canonicalize(xp, *(None if data.get(k) is None else np.asarray(data[k])
                              for k in ("Q", "q", "G", "h", "A", "b")))
    return _pdipm.iteration_problem(xp, ops, prob, _pdipm.default_settings(xp, prob)).diagonal_h


def test_taken_where_H_is_diagonal_only():
    data = _box_batch()
    assert _flag(data)
    assert _flag({k: data[k] for k in "Qq"})                    # no constraints at all
    assert _flag({**data, "G": None, "h": None})                 # equalities only
    dense = {**data, "Q": data["Q"].copy()}
    dense["Q"][1, 0, 4] = dense["Q"][1, 4, 0] = 0.01             # one lane's off-diagonal pair
    assert not _flag(dense)
    two = {**data, "G": data["G"].copy()}
    two["G"][5, 0] = 0.5                                         # one row with two nonzeros
    assert not _flag(two)


def _solve(data, backend, general=False, monkeypatch=None):
    if general:
        monkeypatch.setattr(_pdipm, "_structure", lambda xp, prob: (xp.asarray(False),) * 3)
    return optnet.solve(**data, backend=backend)


def test_same_answers_as_the_general_factorization(backend, monkeypatch):
    """Solution, duals, statuses and the derivatives of every input: those of the general
    factorization (the path forced off); NaN in the same places. (Traced backends never
    take the path: there both runs are the general one.)"""
    data = _box_batch()
    calls = []
    inner = _kkt._factor_diagonal

    def spy(*args, **kw):
        calls.append(1)
        return inner(*args, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(_kkt, "_factor_diagonal", spy)
        fast = _solve(data, backend)
        taken = len(calls)
        slow = _solve(data, backend, general=True, monkeypatch=mp)
    traced = not optnet.backends.load(backend).ops.eager
    assert (taken == 0) if traced else (taken > 0)
    assert len(calls) == taken           # the general run never takes it
    st = to_numpy(fast.status).tolist()
    assert st == to_numpy(slow.status).tolist() == [SOLVED] * 3 + [INFEASIBLE]
    for k in ("x", "y", "z"):
        a, b = to_numpy(getattr(fast, k)), to_numpy(getattr(slow, k))
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), atol=1e-9, rtol=1e-9)
    dx = np.linspace(0.5, 1.5, 9)[None] * np.ones((4, 9))
    g_fast, g_slow = optnet.vjp(fast, dx), optnet.vjp(slow, dx)
    for k in "QqGhAb":
        np.testing.assert_allclose(to_numpy(getattr(g_fast, k)), to_numpy(getattr(g_slow, k)),
                                   atol=1e-8, rtol=1e-8, err_msg=k)


def test_agrees_with_the_reference_solver():
    """Each solved lane against Clarabel (plus its polish), including the lane whose
    variable 2 has no quadratic term."""
    data = _box_batch(seed=1)
    sol = optnet.solve(**data)
    for i in range(3):
        ref = reference_solve(data["Q"][i], data["q"][i], data["G"], data["h"],
                              data["A"][i], data["b"][i])
        assert ref.status == REF_SOLVED
        assert int(sol.status[i]) == SOLVED
        np.testing.assert_allclose(sol.x[i], ref.x, atol=1e-7)


def test_torch_iteration_and_float32():
    """The torch backend's own iteration (not the NumPy route) and float32 input."""
    torch = pytest.importorskip("torch")
    from optnet.backends import _torch_via_numpy

    data = _box_batch(seed=2)
    ref = optnet.solve(**data)
    before = _torch_via_numpy.NUMPY_MAX_ENTRIES
    _torch_via_numpy.NUMPY_MAX_ENTRIES = 0
    try:
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
            t = {k: torch.as_tensor(v, dtype=dtype) for k, v in data.items()}
            sol = optnet.solve(**t)
            assert sol.status.tolist() == [SOLVED] * 3 + [INFEASIBLE]
            np.testing.assert_allclose(sol.x[:3].double().numpy(), ref.x[:3], atol=tol)
    finally:
        _torch_via_numpy.NUMPY_MAX_ENTRIES = before
