#!/usr/bin/env bash
# GPU check for addp_mm (about 3-4 minutes on one recent GPU; every stage has
# its own time limit so the whole script stays under 5 minutes).
#
#   bash tools/gpu_check.sh              # results appended to docs/benchmarks.md
#   OUT=/tmp/gpu.md bash tools/gpu_check.sh
#   FULL=1 bash tools/gpu_check.sh       # also plain fp32 vs optimised vs bf16 (+3-4 min)
#
# 1. bf16 AMP training steps of ViT-B ADDP at the official sizes (random
#    weights, mmengine AmpOptimWrapper(dtype='bfloat16'), model.train_step):
#    fails unless every loss is finite.
# 2. Sampling throughput (20-step, bf16, optimised switches) for ViT-B and ViT-L.
# Every result is appended with the card name (torch.cuda.get_device_name and
# nvidia-smi) and library versions. Exit status: 0 = all passed, 1 = a check
# failed, 2 = no usable CUDA device.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
OUT=${OUT:-"$ROOT/docs/benchmarks.md"}
DEVICE=${DEVICE:-cuda}
TRAIN_BATCH=${TRAIN_BATCH:-8}
SAMPLE_BATCH=${SAMPLE_BATCH:-32}
BASE_CFG="$ROOT/configs/addp/addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py"
LARGE_CFG="$ROOT/configs/addp/addp_vit-large-p16_32xb128-amp-coslr-800e_in1k-256px.py"
BENCH="$ROOT/tools/benchmark.py"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ---- fail fast without CUDA
if ! "$PYTHON" - "$DEVICE" <<'EOF'
import sys
import torch
dev = sys.argv[1]
if not torch.cuda.is_available():
    sys.exit(f'gpu_check: no CUDA device visible to torch {torch.__version__} (built with CUDA '
             f'{torch.version.cuda}); run this on a machine with an NVIDIA GPU and a CUDA build '
             'of PyTorch (CUDA_VISIBLE_DEVICES may be hiding it).')
torch.zeros(1, device=dev)
print(f'gpu_check: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}, '
      f'bf16 supported: {torch.cuda.is_bf16_supported()}')
if not torch.cuda.is_bf16_supported():
    sys.exit('gpu_check: this GPU has no bf16 support (needs compute capability >= 8.0); '
             'the bf16 AMP checks cannot run.')
EOF
then
    exit 2
fi

CARD="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n1)"
NOTE="gpu_check.sh; nvidia-smi: ${CARD:-n/a}"
status=0
run() {  # run LIMIT_SECONDS LABEL ARGS...
    local limit=$1 label=$2
    shift 2
    echo "=== $label (limit ${limit}s)"
    timeout "$limit" "$PYTHON" "$BENCH" "$@" --device "$DEVICE" --append --out "$OUT" --note "$NOTE"
    local rc=$?
    if [ $rc -ne 0 ]; then
        [ $rc -eq 124 ] && echo "gpu_check: $label hit its ${limit}s time limit" >&2
        echo "gpu_check: FAILED: $label (exit $rc)" >&2
        status=1
    fi
}

run 110 "bf16 AMP training, ViT-B" ampcheck --config "$BASE_CFG" --batch "$TRAIN_BATCH" \
    --warmup 1 --repeat 5
run 75 "sampling throughput, ViT-B, bf16" sample --config "$BASE_CFG" --preset fast --dtype bf16 \
    --batch "$SAMPLE_BATCH" --warmup 1 --repeat 3 --full-runs 2
run 95 "sampling throughput, ViT-L, bf16" sample --config "$LARGE_CFG" --preset fast --dtype bf16 \
    --batch "$SAMPLE_BATCH" --warmup 1 --repeat 3 --full-runs 2
if [ "${FULL:-0}" = "1" ]; then
    run 280 "plain fp32 vs optimised fp32 vs bf16, ViT-B" compare --config "$BASE_CFG" \
        --batch "$TRAIN_BATCH" --warmup 1 --repeat 3 --timeout 120
fi

if [ $status -eq 0 ]; then
    echo "gpu_check: all checks passed; results appended to $OUT"
else
    echo "gpu_check: some checks FAILED (see above); partial results in $OUT" >&2
fi
exit $status
