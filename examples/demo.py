"""Solve a batch of random QPs (the OptNet paper's benchmark problem) and report.

Run: ``python examples/demo.py [--batch 16] [--n 50] [--dtype float64]``, the same
as ``optnet demo [...]`` (the code is in ``optnet/experiments/demo.py``). A few
lanes are made infeasible or unbounded on purpose to show per-problem statuses;
the others are solved and their objective printed.
"""

from __future__ import annotations

import sys

from optnet.experiments.cli import main as optnet_main


def main(argv=None):
    return optnet_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
