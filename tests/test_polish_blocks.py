"""The traced polish's passes on blocks of lanes (``_polish._passes_in_blocks``): each lane
makes the passes it makes on the whole batch, so the solution, the status and the
derivatives (from the factored system each lane accepted) are those of the unblocked
passes, on a batch where some lanes swap rows and one is infeasible. And the pieces:
``_polish.block_size``, ``_lanes.first_lanes``, writes of a padded block."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import count_calls, patch_settings, to_numpy
from strategies import paper_problem

import optnet
from optnet import _lanes, _polish

SOLVED = int(optnet.Status.SOLVED)


class _Cfg:
    def __init__(self, polish_block, polish_blocks):
        self.polish_block, self.polish_blocks = polish_block, polish_blocks


@pytest.mark.parametrize("B", [1, 7, 32, 33, 64, 100, 128, 129, 512, 4096])
@pytest.mark.parametrize("block,blocks", [(32, 4), (8, 4), (0, 4), (32, 1)])
def test_block_size(B, block, blocks):
    """The whole batch up to ``polish_block`` lanes (or with 0); otherwise equal blocks, as
    few as keep each within ``max(polish_block, B / polish_blocks)`` lanes, covering the
    batch."""
    size = _polish.block_size(B, _Cfg(block, blocks))
    if block == 0 or B <= block:
        assert size == B
        return
    most = max(block, math.ceil(B / blocks))
    count = math.ceil(B / size)
    assert size <= most and count == math.ceil(B / most)
    assert count * size >= B > (count - 1) * size
    assert size < B or blocks == 1           # (one block per batch: the whole batch)


def _namespaces():
    import array_api_strict

    out = [("numpy", np, np.asarray), ("array_api_strict", array_api_strict,
                                        array_api_strict.asarray)]
    try:
        import jax.numpy as jnp
    except ImportError:
        return out
    return out + [("jax", jnp, jnp.asarray)]


@pytest.mark.parametrize("name,xp,conv", _namespaces(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_first_lanes(name, xp, conv):
    """The first ``size`` True lanes in increasing order, then ``B``: as ``np.nonzero``."""
    rng = np.random.default_rng(0)
    for B, size, frac in ((1, 1, 0.5), (9, 4, 0.3), (9, 4, 0.9), (40, 8, 0.0), (40, 40, 1.0),
                          (40, 16, 0.5)):
        mask = rng.uniform(size=B) < frac
        want = np.full(size, B)
        hits = np.nonzero(mask)[0][:size]
        want[: hits.size] = hits
        got = to_numpy(_lanes.first_lanes(xp, conv(mask), size))
        np.testing.assert_array_equal(got, want)


def _traced_backends():
    out = ["array_api_strict-lockstep"]
    try:
        import jax  # noqa: F401
    except ImportError:
        return out
    return out + ["jax"]


@pytest.mark.parametrize("backend", _traced_backends())
def test_put_state_drops_the_padding(backend, monkeypatch):
    """A block's writes back (``put_state`` on a traced backend, with ``ops.put_lanes`` on
    JAX, by selection on the bare standard): lanes ``idx`` written, the padding entries
    ``B`` write nothing."""
    rng = np.random.default_rng(1)
    B = 5
    full_np = (rng.standard_normal((B, 3, 2)), rng.standard_normal((B, 4)),
               rng.integers(0, 9, B))
    part_np = tuple(a[:3] * 0 - 1 for a in full_np)
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        from optnet.backends import jax as mod
    else:
        from optnet.backends import array_api_strict as mod

        monkeypatch.setattr(mod, "ops", mod.ops._replace(eager=False))
    xp = mod.namespace
    conv = xp.asarray
    idx = conv(np.array([0, 3, B]))
    out = _lanes.put_state(xp, tuple(conv(a) for a in full_np),
                           tuple(conv(a) for a in part_np), idx, B, mod.ops)
    for o, f, p in zip(out, full_np, part_np, strict=True):
        want = f.copy()
        want[[0, 3]] = p[:2]
        np.testing.assert_array_equal(to_numpy(o), want)


MAX_ITER = 6     # the interior point stops early: the polish rescues lanes, swapping rows


def _batch():
    """24 lanes of the paper's QP, n = p = 40, lane 5 with a NaN in ``q`` (a bad lane: not
    polished). Stopped after ``MAX_ITER`` iterations, the polish's first guess is wrong in
    most lanes: each of its swap passes rescues some, and some lanes are still unsolved
    after the last (checked below)."""
    d = paper_problem(np.random.default_rng(3), 24, 40, 40)
    d = {k: d[k] for k in ("Q", "q", "G", "h")}
    d["q"][5, 0] = np.nan
    return d


def _solve_and_vjp(backend, d, dx, monkeypatch):
    if backend == "jax":
        import collections

        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as conv_mod

        from optnet import _solve

        # A program compiled for other settings is not reused.
        monkeypatch.setattr(_solve, "_JAX_PROGRAMS", collections.OrderedDict())
        conv, name = conv_mod.asarray, None
    else:
        import array_api_strict

        conv, name = array_api_strict.asarray, "array_api_strict"
    kw = {} if name is None else {"backend": name}
    sol = optnet.solve(**{k: conv(v) for k, v in d.items()}, max_iter=MAX_ITER, **kw)
    g = optnet.vjp(sol, conv(dx))
    return sol, g


def _lockstep(monkeypatch):
    from optnet.backends import array_api_strict as mod

    monkeypatch.setattr(mod, "ops", mod.ops._replace(eager=False))


@pytest.mark.parametrize("backend", _traced_backends())
def test_blocked_passes_give_the_whole_batch_passes(backend, monkeypatch):
    """Blocks of 8 lanes (3 blocks for pass 0) against the whole batch: per lane the same
    status, solution, multipliers and vector-Jacobian product (the latter from the system
    the lane accepted, pass 0's or a swap's), to rounding."""
    d = _batch()
    B, n = d["q"].shape
    dx = np.random.default_rng(7).standard_normal((B, n))
    _lockstep(monkeypatch)
    # The passes of the whole batch (the bare standard's traced path holds values): pass 0
    # leaves lanes to swap, a later pass accepts some, the last leaves some unsolved.
    attempts = []
    attempt = _polish._attempt

    def spy(xp, ops, prob, cfg, pt, system, lanes):
        a = attempt(xp, ops, prob, cfg, pt, system, lanes)
        attempts.append((int(np.sum(np.asarray(lanes))), int(np.sum(np.asarray(a.feasible)))))
        return a

    with monkeypatch.context() as m:
        m.setattr(_polish, "_attempt", spy)
        patch_settings(m, polish_block=0)
        _solve_and_vjp("array_api_strict", d, dx, m)
    last = attempts[-4:]                                 # the final polish: passes 0 .. 3
    assert last[0][0] > last[0][1] > 0, attempts
    assert any(ok > 0 for _, ok in last[1:]) and last[-1][0] > last[-1][1], attempts

    if backend.endswith("-lockstep"):
        backend = backend.removesuffix("-lockstep")
    blocked = count_calls(monkeypatch, _polish, "_passes_in_blocks")
    patch_settings(monkeypatch, polish_block=0)
    whole, g_whole = _solve_and_vjp(backend, d, dx, monkeypatch)
    assert not blocked
    patch_settings(monkeypatch, polish_block=8)
    blk, g_blk = _solve_and_vjp(backend, d, dx, monkeypatch)
    assert blocked                                         # the path under test was taken

    status = to_numpy(whole.status)
    np.testing.assert_array_equal(to_numpy(blk.status), status)
    ok = status == SOLVED
    assert 0 < ok.sum() < B - 1 and status[5] != SOLVED, status
    for k in ("x", "z", "s"):
        # Every lane's point: the unsolved ones report theirs too (the interior point's).
        a, b = to_numpy(getattr(blk, k)), to_numpy(getattr(whole, k))
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=k)
        some = ~np.isnan(b)
        assert some[ok].all() and some[~ok].any(), k
        np.testing.assert_allclose(a[some], b[some], rtol=0,
                                   atol=1e-13 * max(1, np.abs(b[some]).max()), err_msg=k)
    for k in ("Q", "q", "G", "h"):
        a, b = to_numpy(getattr(g_blk, k))[ok], to_numpy(getattr(g_whole, k))[ok]
        assert np.isfinite(a).all(), k
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1.0, np.abs(b).max()),
                                   err_msg=k)
