"""Iterative refinement of the KKT solves (``_kkt.solve``): with ``lanes`` given, an eager
backend stops once no lane of ``lanes`` gains from another step, and only then."""

from __future__ import annotations

import numpy as np
import pytest

from optnet import _kkt
from optnet._problem import canonicalize
from optnet.backends import numpy as numpy_backend

xp, ops = numpy_backend.namespace, numpy_backend.ops
B, N, M = 6, 40, 10


@pytest.fixture
def system():
    """An equality-constrained KKT system (the polish's shape) and its right-hand sides."""
    rng = np.random.default_rng(0)
    U = rng.standard_normal((B, N, N))
    Q = U @ np.swapaxes(U, -1, -2) / N + 0.1 * np.eye(N)
    A = rng.standard_normal((B, M, N))
    prob = canonicalize(xp, Q, rng.standard_normal((B, N)), None, None, A,
                        rng.standard_normal((B, M)))
    rx, ry = rng.standard_normal((B, N, 1)), rng.standard_normal((B, M, 1))
    return prob, rx, ry


def _count(monkeypatch):
    """The solves with the factor, counted: one, then one per refinement step."""
    calls = []
    inner = _kkt._solve_reg

    def counted(*a):
        calls.append(1)
        return inner(*a)

    monkeypatch.setattr(_kkt, "_solve_reg", counted)
    return calls


def _residual(prob, F, sol, rx, ry):
    kx, ky, _ = _kkt.apply_K(xp, prob, F.w, *sol, z_row=False)
    top = max(np.abs(kx - rx).max(), np.abs(ky - ry).max())
    return top / max(np.abs(rx).max(), np.abs(ry).max(), np.abs(kx).max(), np.abs(ky).max())


def test_stops_once_at_the_rounding_level(system, monkeypatch):
    """A factor of the matrix itself (shift 1e-15): at most one step is taken of the five
    allowed, and the answer is the one all five steps give, to rounding."""
    prob, rx, ry = system
    F = _kkt.factor(xp, ops, prob, None, 1e-15, np.zeros(B, bool))
    calls = _count(monkeypatch)
    adaptive = _kkt.solve(xp, ops, prob, F, rx, ry, None, 5, np.ones(B, bool))
    assert len(calls) <= 2, len(calls)
    full = _kkt.solve(xp, ops, prob, F, rx, ry, None, 5)
    assert len(calls) - 2 <= 6
    for a, f in zip(adaptive[:2], full[:2]):
        assert np.max(np.abs(a - f)) <= 1e-12 * np.max(np.abs(f))
    assert _residual(prob, F, adaptive, rx, ry) <= (N + M) * np.finfo(float).eps


def test_keeps_refining_while_a_lane_gains(system, monkeypatch):
    """A factor of a shifted matrix (shift 1e-6 of the diagonal): the unrefined solve is off
    by far more than rounding, and the steps go on until the residual is at rounding level."""
    prob, rx, ry = system
    F = _kkt.factor(xp, ops, prob, None, 1e-6, np.zeros(B, bool))
    assert _residual(prob, F, _kkt.solve(xp, ops, prob, F, rx, ry, None, 0), rx, ry) > 1e-9
    calls = _count(monkeypatch)
    sol = _kkt.solve(xp, ops, prob, F, rx, ry, None, 8, np.ones(B, bool))
    assert len(calls) >= 3, len(calls)
    assert _residual(prob, F, sol, rx, ry) <= (N + M) * np.finfo(float).eps


def test_lanes_outside_the_mask_do_not_keep_it_refining(monkeypatch):
    """A skipped lane (identity factor: its residual is of order one) that is not in
    ``lanes`` does not make the others take a step they do not need (a well-conditioned
    system, whose first solve is already at rounding level); in ``lanes`` it does."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((B, M, N)) / np.sqrt(N)
    prob = canonicalize(xp, np.broadcast_to(np.eye(N), (B, N, N)), rng.standard_normal((B, N)),
                        None, None, A, rng.standard_normal((B, M)))
    rx, ry = rng.standard_normal((B, N, 1)), rng.standard_normal((B, M, 1))
    skip = np.zeros(B, bool)
    skip[2] = True
    F = _kkt.factor(xp, ops, prob, None, 1e-15, skip)
    calls = _count(monkeypatch)
    _kkt.solve(xp, ops, prob, F, rx, ry, None, 5, ~skip)
    assert len(calls) == 1, len(calls)
    calls.clear()
    _kkt.solve(xp, ops, prob, F, rx, ry, None, 5, np.ones(B, bool))
    assert len(calls) >= 2, len(calls)
