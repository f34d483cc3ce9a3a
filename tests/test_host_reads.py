"""Host reads of the interior point (each one a device synchronisation on a GPU).

The step reads nothing on the host, so that it can be captured (``jax.jit``,
``torch.compile``, CUDA graphs); the eager driver reads once every
``Settings.sync_every`` steps. Counted exactly with the counters of
``benchmarks/counts.py`` on PyTorch CPU tensors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
counts = pytest.importorskip("counts")

import optnet  # noqa: E402
from optnet import _pdipm  # noqa: E402

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")


def test_the_iteration_reads_nothing_on_the_host(monkeypatch):
    """Every iteration of a torch solve (classification, progress and step; equalities,
    inequalities, a batch of 3) makes no host read, while the driver around it does make
    some (the counter sees them)."""
    rng = np.random.default_rng(0)
    n, p, m, B = 6, 8, 2, 3
    U = rng.standard_normal((B, n, n))
    Q = torch.as_tensor(U @ U.transpose(0, 2, 1) + np.eye(n))
    q = torch.as_tensor(rng.standard_normal((B, n)))
    G = torch.as_tensor(rng.standard_normal((B, p, n)))
    A = torch.as_tensor(rng.standard_normal((B, m, n)))
    x0 = rng.standard_normal((B, n))
    h = G @ torch.as_tensor(x0)[..., None]
    h = h[..., 0] + 1.0
    b = (A @ torch.as_tensor(x0)[..., None])[..., 0]
    reads = []
    inner = _pdipm.iterate

    def counted(*args, **kw):
        c = counts.Counter()
        with c:
            out = inner(*args, **kw)
        reads.append(c.host)
        return out

    monkeypatch.setattr(_pdipm, "iterate", counted)
    whole = counts.Counter()
    with whole:
        sol = optnet.solve(Q, q, G, h, A, b)
    assert np.all(sol.status.numpy() == int(optnet.Status.SOLVED))
    assert len(reads) >= int(sol.iterations.max())
    assert reads == [0] * len(reads)
    assert whole.host > 0


def test_host_reads_per_solve_on_the_paper_problem():
    """Forward and backward of the paper's problem at batch 1 (n = p = 10): at most 12 host
    reads in all, none in the backward pass."""
    fwd, bwd, status, _ = counts.count(10, 1)
    assert status.tolist() == [int(optnet.Status.SOLVED)]
    assert fwd.calls_mode.host <= 12
    assert bwd.calls_mode.host == 0
