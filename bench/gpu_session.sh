#!/usr/bin/env bash
# Everything this session runs on the lent GPU, in one call. Needs the wheels in .whl/ (see README).
# Writes results under $OUT (or bench/results when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 90
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton, pydantic, typer, rich; assert torch.cuda.is_available(); print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" || exit 91
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
status=0
REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu --tb=short 2>&1 | tee "$OUT/gpu-tests.log" || status=1
python3 bench/dobench_examples.py --out "$OUT" 2>&1 | tee "$OUT/dobench.log" || status=1
python3 bench/timing_overhead.py --out "$OUT" 2>&1 | tee "$OUT/timing-overhead.log" || status=1
python3 bench/gpu_examples.py --devices cuda --out "$OUT" 2>&1 | tee "$OUT/gpu-examples.log" || status=1
exit $status
