#!/usr/bin/env bash
# Main job: install optnet and run the demo (a batch of QPs with per-problem statuses).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e .
python examples/demo.py "$@"
