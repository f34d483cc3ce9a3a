#!/usr/bin/env bash
# Main job: install optnet with the experiments' dependencies and run the quick Sudoku
# experiment (OptNet vs a conv net on generated 4x4 puzzles, about a minute on a CPU).
# Extra arguments go to "optnet sudoku".
set -euo pipefail
cd "$(dirname "$0")/.."
# The pinned CPU build of torch first: a bare "torch" requirement would pull a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[experiments,torch,jax]"
optnet sudoku --quick "$@"
