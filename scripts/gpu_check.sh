#!/usr/bin/env bash
# The GPU figures in one run of at most 8 minutes, on a machine with a CUDA GPU (not run in CI):
#
#   scripts/gpu_check.sh [--work DIR]
#
# ResNet-50 and EfficientNet-Lite0 (random weights), AMP + channels_last at batch 128: training images/s on
# batches already on the device and through spectro's loader, peak GPU memory, Predictor latency of a 3 s clip
# on CUDA; with two GPUs, a 2-process torchrun epoch beside one process. Prints one table (scripts/bench_gpu.py).
# Without a GPU it stops at once with exit status 2.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$root/.venv/bin/python}
work=${TMPDIR:-/tmp}/spectro-gpu-check
[ "${1:-}" != --work ] || work=$2
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU is visible to torch on this machine (nvidia-smi: $(command -v nvidia-smi || echo none)); nothing to measure" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 480 "$PYTHON" "$root/scripts/bench_gpu.py" --work "$work"
