#!/usr/bin/env bash
# Wheels of what a GPU machine without network lacks for benchmarks/gpu_check.sh:
# array-api-compat and array-api-strict (downloaded for that machine's Python) and qpth
# (pure Python; its sdist builds only with an old setuptools, here in a throwaway venv).
#   bash benchmarks/gpu_wheels.sh WHEELS_DIR [PYTHON_VERSION]    (default 3.12)
set -euo pipefail
dir=${1:?usage: bash benchmarks/gpu_wheels.sh WHEELS_DIR [PYTHON_VERSION]}
py=${2:-3.12}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp -d "$dir" "array-api-compat==1.16.0" "array-api-strict==2.6.1"
venv=$(mktemp -d)
python3 -m venv "$venv"
"$venv/bin/pip" install -q "setuptools<66" wheel
"$venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$dir" qpth==0.0.18
rm -rf "$venv"
ls "$dir"
