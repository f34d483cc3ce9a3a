#!/usr/bin/env bash
# Create the competitors' virtual environment for the benchmark (default: benchenv/ in the repository root).
#   bash benchmarks/setup_env.sh [VENV_DIR]      (default: benchenv/ in the repository root, ignored by git)
# Versions are those the published results were measured with.
set -euo pipefail
VENV=${1:-"$(cd "$(dirname "$0")/.." && pwd)/benchenv"}
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
# CPU build of torch FIRST: a bare `torch` requirement would pull a multi-GB CUDA build.
"$PIP" install torch==2.13.0
"$PIP" install -r "$(dirname "$0")/requirements.txt"
# qpth's sdist does not build with current setuptools: build it with an old one, then restore.
"$PIP" install "setuptools<66" wheel
"$PIP" install --no-build-isolation --no-deps qpth==0.0.18
"$PIP" install "setuptools>=77.0.3"   # torch 2.13 declares setuptools>=77.0.3
"$VENV/bin/python" - <<'PY'
import importlib
for m in ["torch", "numpy", "scipy", "matplotlib", "clarabel", "jax", "qpax", "proxsuite",
          "cvxpy", "cvxpylayers", "gurobipy", "qpth", "array_api_compat", "array_api_extra"]:
    try:
        importlib.import_module(m)
        print(f"ok      {m}")
    except Exception as exc:  # the harness skips missing competitors
        print(f"MISSING {m}: {exc}")
PY
