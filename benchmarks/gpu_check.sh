#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU and PyTorch, JAX and CuPy
# built for it: the suite's GPU rows (torch CUDA, JAX GPU, CuPy: tests/test_backend_matrix.py
# and tests/test_torch.py) and benchmarks/gpu.py (batch 128 and 4096 against qpth).
#
#   bash benchmarks/gpu_check.sh OUT_DIR [WHEELS_DIR] [gpu.py options]
#
# WHEELS_DIR: wheels of what that machine lacks (array-api-compat, array-api-strict, qpth),
# installed without network into a temporary folder first. Logs go to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [WHEELS_DIR] [gpu.py options]}
wheels=${2:-}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/optnet-site \
        "$wheels"/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/optnet-site"
fi
{ nvidia-smi -L; python3 -c "import torch, jax; print('torch', torch.__version__, 'jax', jax.__version__, jax.devices())"; } \
    > "$out/device.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu or cupy" \
    tests/test_backend_matrix.py tests/test_torch.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
python3 benchmarks/gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, gpu.py exit $bench" | tee -a "$out/device.txt"
exit $(( tests || bench ))
