"""Scale: a batch of 100 000 tiny problems and a single large problem.

Memory and time are measured by ``benchmarks/scale.py``; these tests check that the answers at
scale are the answers of the problems solved on their own (or by the reference solver).
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import SOLVED, reference_solve
from strategies import paper_problem

import optnet


@pytest.mark.slow
def test_hundred_thousand_tiny_problems():
    """100 000 problems with n = p = 5: all SOLVED, sampled lanes equal solving them alone."""
    d = paper_problem(np.random.default_rng(0), 100_000, n=5, p=5)
    sol = optnet.solve(d["Q"], d["q"], d["G"], d["h"])
    status = np.asarray(sol.status)
    assert status.shape == (100_000,)
    assert np.all(status == int(optnet.Status.SOLVED)), np.bincount(status)
    assert int(np.max(sol.iterations)) <= 30
    x = np.asarray(sol.x)
    assert np.all(np.isfinite(x))
    sample = np.random.default_rng(1).choice(100_000, size=20, replace=False)
    alone = optnet.solve(*(d[k][sample] for k in ("Q", "q", "G", "h")))
    np.testing.assert_allclose(x[sample], np.asarray(alone.x), rtol=1e-9, atol=1e-9)
    for i in sample[:5]:
        ref = reference_solve(d["Q"][i], d["q"][i], d["G"][i], d["h"][i])
        assert ref.status == SOLVED
        err = np.linalg.norm(x[i] - ref.x) / max(1.0, np.linalg.norm(ref.x))
        assert err <= 1e-7, (i, err)


@pytest.mark.slow
def test_single_problem_n300():
    """One problem with n = p = 300 (no batch dimension) agrees with the reference solver."""
    d = paper_problem(np.random.default_rng(2), 1, n=300, p=300)
    Q, q, G, h = (d[k][0] for k in ("Q", "q", "G", "h"))
    sol = optnet.solve(Q, q, G, h)
    assert np.asarray(sol.status).shape == ()
    assert int(sol.status) == int(optnet.Status.SOLVED)
    ref = reference_solve(Q, q, G, h)
    assert ref.status == SOLVED
    err = np.linalg.norm(np.asarray(sol.x) - ref.x) / max(1.0, np.linalg.norm(ref.x))
    assert err <= 1e-6, err
