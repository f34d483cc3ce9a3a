#!/usr/bin/env bash
# Install optnet with its test dependencies and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
