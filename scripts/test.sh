#!/usr/bin/env bash
# Install optnet with its test and documentation dependencies (PyTorch CPU build first,
# then JAX) and run the whole test suite (tests/test_docs.py builds the docs site and runs
# its examples). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The pinned CPU build of torch first: a bare "torch" requirement would pull a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test,torch,jax,experiments,docs]"
python -m pytest -q "$@"
