"""``benchmarks/floor.py``: its instrumentation records the solver's primitives without
changing the solve, and is undone afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from strategies import paper_problem

import optnet
from optnet import _kkt, _polish, _step
from optnet.backends import numpy as numpy_backend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
floor = pytest.importorskip("floor")


def test_instrumented_solve_is_the_solve_and_is_undone():
    d = paper_problem(np.random.default_rng(0), 3, n=64, p=64)
    args = [d[k] for k in ("Q", "q", "G", "h")]
    plain = optnet.solve(*args)
    originals = (_kkt._factor, _kkt.mv, _step.mv, _polish.mtv, _polish.active_system,
                 numpy_backend.ops)
    rec, undo = floor.Recorder(), []
    floor.instrument(undo, rec, numpy_backend)
    try:
        assert _kkt._factor is not originals[0]
        spied = optnet.solve(*args)
    finally:
        for obj, name, old in reversed(undo):
            setattr(obj, name, old)
    assert (_kkt._factor, _kkt.mv, _step.mv, _polish.mtv, _polish.active_system,
            numpy_backend.ops) == originals
    np.testing.assert_array_equal(np.asarray(spied.x), np.asarray(plain.x))
    # One Cholesky per interior-point factorization (plus the start, the convexity
    # check and the polish), at least two triangular solves per factorization's solve.
    iters = int(np.max(plain.iterations))
    assert len(rec.calls["Cholesky"]) >= iters + 2
    assert len(rec.calls["forming H"]) >= iters
    assert len(rec.calls["triangular solves"]) >= 4 * iters
    assert len(rec.calls["products"]) >= 3 * iters
    assert len(rec.calls["polish set-up"]) >= 1
    # Self times: nested primitives are not counted twice.
    total = sum(rec.time.values())
    assert all(t >= 0 for t in rec.time.values()) and total > 0


def test_replayer_times_every_recorded_kind():
    d = paper_problem(np.random.default_rng(1), 2, n=40, p=40)
    rec, undo = floor.Recorder(), []
    floor.instrument(undo, rec, numpy_backend)
    try:
        optnet.solve(*(d[k] for k in ("Q", "q", "G", "h")))
    finally:
        for obj, name, old in reversed(undo):
            setattr(obj, name, old)
    rp = floor.Replayer(numpy_backend)
    for kind in floor.KINDS:
        keys = rec.calls[kind]
        assert keys, kind
        assert all(rp.time(kind, key) >= 0 for key in keys[:3])
    assert rp.time("forming H", rec.calls["forming H"][0]) > 0
