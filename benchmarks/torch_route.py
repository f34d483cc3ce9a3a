"""Where small CPU torch problems should go through NumPy views: route on against off.

Forward + backward of ``sum(x)`` through ``optnet.torch.solve`` on the OptNet paper's random
QP (``problems.py``), best of 5, for the sizes of the table below, with
``optnet.backends._torch_via_numpy.NUMPY_MAX_ENTRIES`` set to route every problem and then
none. The ratio native / routed above 1 means the route pays; ``NUMPY_MAX_ENTRIES`` is set
where it stops paying (``benchmarks/RESULTS.md``).

Run: ``python benchmarks/torch_route.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from problems import make_problem  # noqa: E402

import optnet  # noqa: E402
from optnet.backends import _torch_via_numpy  # noqa: E402

SIZES = [(10, 1), (10, 32), (10, 128), (30, 8), (30, 32), (30, 128), (50, 32), (64, 8),
         (64, 32), (64, 64), (100, 1), (100, 8), (100, 16), (100, 32), (100, 128)]


def _best(data, k=5):
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        _forward_backward(data)
        times.append(time.perf_counter() - t0)
    return min(times)


def _forward_backward(data):
    args = {k: v.clone().requires_grad_(True) for k, v in data.items()}
    optnet.torch.solve(**args).sum().backward()


def main():
    before = _torch_via_numpy.NUMPY_MAX_ENTRIES
    try:
        for n, batch in SIZES:
            data = {k: torch.from_numpy(v) for k, v in make_problem(batch, n).items()
                    if v is not None}
            _torch_via_numpy.NUMPY_MAX_ENTRIES = 10**12
            routed = _best(data)
            _torch_via_numpy.NUMPY_MAX_ENTRIES = 0
            native = _best(data)
            print(f"n = {n:3d}, batch {batch:3d}, {batch * 2 * n * n:8d} entries: routed "
                  f"{routed * 1e3:8.2f} ms, native {native * 1e3:8.2f} ms, native / routed "
                  f"{native / routed:5.2f}", flush=True)
    finally:
        _torch_via_numpy.NUMPY_MAX_ENTRIES = before


if __name__ == "__main__":
    main()
