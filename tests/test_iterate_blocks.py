"""The traced interior point on blocks of lanes (``_pdipm._run_blocks``): a work queue in
which each pass steps the first running lanes and a lane that stops gives its place to
the next, each lane counting its own passes. Per lane, the iterations, the status, the
solution and the derivatives are those of the whole-batch loop, on a batch whose lanes
stop after different numbers of iterations, with a bad lane and an infeasible one, and
with a small ``max_iter`` that cuts lanes off at their own last pass."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from conftest import count_calls, patch_settings, to_numpy
from strategies import paper_problem

import optnet
from optnet import _pdipm

SOLVED = int(optnet.Status.SOLVED)
INFEASIBLE = int(optnet.Status.PRIMAL_INFEASIBLE)
MAX_ITER = int(optnet.Status.MAX_ITER)


def _traced_backends():
    out = ["array_api_strict-lockstep"]
    try:
        import jax  # noqa: F401
    except ImportError:
        return out
    return out + ["jax"]


def _batch():
    """20 lanes of the paper's QP, n = p = 30; lane 3 has a NaN in ``q`` (bad data, never
    iterated) and lane 11 two contradictory rows (``g'x <= h_0`` and ``g'x >= h_0 + 1``:
    primal infeasible)."""
    d = paper_problem(np.random.default_rng(5), 20, 30, 30)
    d = {k: d[k] for k in ("Q", "q", "G", "h")}
    d["q"][3, 0] = np.nan
    d["G"][11, 1] = -d["G"][11, 0]
    d["h"][11, 1] = -d["h"][11, 0] - 1.0
    return d


def _solve(backend, d, dx, max_iter, monkeypatch):
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        from optnet import _solve as solve_mod

        # A program compiled for other settings is not reused.
        monkeypatch.setattr(solve_mod, "_JAX_PROGRAMS", collections.OrderedDict())
        conv, kw = jnp.asarray, {}
    else:
        import array_api_strict

        from optnet.backends import array_api_strict as mod

        monkeypatch.setattr(mod, "ops", mod.ops._replace(eager=False))
        conv, kw = array_api_strict.asarray, {"backend": "array_api_strict"}
    sol = optnet.solve(**{k: conv(v) for k, v in d.items()}, max_iter=max_iter, **kw)
    return sol, optnet.vjp(sol, conv(dx))


@pytest.mark.parametrize("max_iter", [50, 7])
@pytest.mark.parametrize("backend", _traced_backends())
def test_blocks_give_the_whole_batch_loop(backend, max_iter, monkeypatch):
    """Blocks of 6 lanes (4 blocks' worth, refilled as lanes stop) against the whole batch:
    per lane the same iterations and status, and the same solution, multipliers and
    vector-Jacobian product to rounding."""
    d = _batch()
    B, n = d["q"].shape
    dx = np.random.default_rng(9).standard_normal((B, n))
    blocked = count_calls(monkeypatch, _pdipm, "_run_blocks")
    patch_settings(monkeypatch, iterate_block=0)
    whole, g_whole = _solve(backend, d, dx, max_iter, monkeypatch)
    assert not blocked
    patch_settings(monkeypatch, iterate_block=6, iterate_blocks=4)
    blk, g_blk = _solve(backend, d, dx, max_iter, monkeypatch)
    assert blocked                                         # the path under test was taken

    status, iters = to_numpy(whole.status), to_numpy(whole.iterations)
    np.testing.assert_array_equal(to_numpy(blk.status), status)
    np.testing.assert_array_equal(to_numpy(blk.iterations), iters)
    assert status[3] != SOLVED and (status[11] == INFEASIBLE or max_iter == 7), status
    ok = status == SOLVED
    if max_iter == 50:
        # Lanes stop at different iterations: the queue refills blocks as they do.
        assert len(set(iters[ok].tolist())) >= 3, iters
    else:
        # Lanes that enter the queue late are cut off at their own last pass, not the
        # loop's: all of them take the 7 steps (MAX_ITER, or solved by the polish there).
        assert (status == MAX_ITER).any() and (iters[ok] == max_iter).sum() > 6, (status, iters)
    for k in ("x", "z", "s"):
        a, b = to_numpy(getattr(blk, k)), to_numpy(getattr(whole, k))
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=k)
        some = ~np.isnan(b)
        np.testing.assert_allclose(a[some], b[some], rtol=0,
                                   atol=1e-13 * max(1, np.abs(b[some]).max()), err_msg=k)
    for k in ("Q", "q", "G", "h"):
        a, b = to_numpy(getattr(g_blk, k))[ok], to_numpy(getattr(g_whole, k))[ok]
        assert np.isfinite(a).all(), k
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1.0, np.abs(b).max()),
                                   err_msg=k)
