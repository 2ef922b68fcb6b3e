#!/usr/bin/env bash
# GPU check of addp_mm: every performance target in one call (about 5 minutes on
# one H100/H200, most of it process start-up, model builds and the first
# torch.compile of the frozen parts; every stage has its own time limit).
#
#   bash tools/gpu_check.sh                       # summary appended to docs/benchmarks.md
#   OUT=/tmp/gpu.md bash tools/gpu_check.sh
#   SIZES=base bash tools/gpu_check.sh            # ViT-B only
#   STAGES="trainstep sample_config" bash tools/gpu_check.sh
#
# For ViT-B and ViT-L at 256 px (random weights, official sizes), batch 64:
#   train_plain     tools/benchmark.py train --preset plain --dtype fp32  (fp32 eager, no switches)
#   train_fast      tools/benchmark.py train --preset fast --dtype bf16   (bf16 autocast + switches)
#   trainstep       tools/benchmark.py trainstep: model.train_step with the config's own
#                   optimizer wrapper, switches and cuDNN setting, i.e. what
#                   tools/train.py runs; images/s, peak memory and MFU against a
#                   bf16 matmul measured in the same run
#   sample_plain    sampling step at 50 % masked + a full 20-step run, fp32 eager
#   sample_fast     the same under bf16 autocast with the fast switches
#   sample_config   the generation config as tools/sample.py runs it (its own switches
#                   and precision: bf16 on the GPU, compiled VQGAN)
# then one summary table (markdown, with the card and the targets) printed and
# appended to $OUT. The targets use the reference implementation's numbers on
# an H200 (REF_TRAIN_MS=436, REF_SAMPLE_MS=159, REF_PEAK_GIB=22.5 for ViT-B);
# set them for another card.
#
# Exit status: 0 = every stage ran, 1 = a stage failed or timed out (the
# summary still lists the others), 2 = no usable CUDA device.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
OUT=${OUT:-"$ROOT/docs/benchmarks.md"}
DEVICE=${DEVICE:-cuda}
TRAIN_BATCH=${TRAIN_BATCH:-64}
SAMPLE_BATCH=${SAMPLE_BATCH:-64}
SIZES=${SIZES:-"base large"}
STAGES=${STAGES:-"trainstep train_fast train_plain sample_config sample_fast sample_plain"}
REF_TRAIN_MS=${REF_TRAIN_MS:-436}
REF_SAMPLE_MS=${REF_SAMPLE_MS:-159}
REF_PEAK_GIB=${REF_PEAK_GIB:-22.5}
BENCH="$ROOT/tools/benchmark.py"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# a GPU box without OpenMMLab: install the wheels of ../shared/tools/gpu_bundle.sh (WHEELS folder)
WHEELS=${WHEELS:-"$ROOT/.gpu_whl"}
if ! "$PYTHON" -c 'import mmengine, mmpretrain' >/dev/null 2>&1 && [ -d "$WHEELS" ]; then
    SITE=${SITE:-/tmp/addp_mm_site}
    echo "gpu_check: installing the OpenMMLab wheels of $WHEELS into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
# compiled kernels are cached on disk: the second model size reuses the VQGAN's
export TORCHINDUCTOR_FX_GRAPH_CACHE=${TORCHINDUCTOR_FX_GRAPH_CACHE:-1}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

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
             'the bf16 checks cannot run.')
EOF
then
    exit 2
fi

CARD="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n1)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
status=0
jsons=()
run() {  # run LIMIT_SECONDS NAME ARGS...
    local limit=$1 name=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$PYTHON" "$BENCH" "$@" --device "$DEVICE" --json "$TMP/$name.json"
    local rc=$?
    echo "--- $name: exit $rc after $((SECONDS - t0)) s"
    if [ $rc -ne 0 ]; then
        [ $rc -eq 124 ] && echo "gpu_check: $name hit its ${limit}s time limit" >&2
        echo "gpu_check: FAILED: $name (exit $rc)" >&2
        status=1
    elif [ -f "$TMP/$name.json" ]; then
        jsons+=("$TMP/$name.json")
    fi
}

for size in $SIZES; do
    case $size in
        base) TRAIN_CFG="$ROOT/configs/addp/addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py"
              GEN_CFG="$ROOT/configs/addp_gen/addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py"
              scale=1 ;;
        large) TRAIN_CFG="$ROOT/configs/addp/addp_vit-large-p16_32xb128-amp-coslr-800e_in1k-256px.py"
               GEN_CFG="$ROOT/configs/addp_gen/addp_vit-large-p16_iterdec-cosine-20step_in1k-256px.py"
               scale=2 ;;
        *) echo "gpu_check: unknown size $size (base, large)" >&2; exit 2 ;;
    esac
    for stage in $STAGES; do
        case $stage in
            trainstep) run $((90 * scale)) "${size}_trainstep" trainstep --config "$TRAIN_CFG" \
                --batch "$TRAIN_BATCH" --warmup 3 --repeat 5 --label "train path (tools/train.py)" ;;
            train_fast) run $((40 * scale)) "${size}_train_fast" train --config "$TRAIN_CFG" \
                --preset fast --dtype bf16 --batch "$TRAIN_BATCH" --warmup 2 --repeat 3 \
                --label "fast bf16" ;;
            train_plain) run $((45 * scale)) "${size}_train_plain" train --config "$TRAIN_CFG" \
                --preset plain --dtype fp32 --batch "$TRAIN_BATCH" --warmup 1 --repeat 2 \
                --label "plain fp32" ;;
            sample_config) run $((75 * scale)) "${size}_sample_config" sample --config "$GEN_CFG" \
                --preset config --batch "$SAMPLE_BATCH" --warmup 2 --repeat 3 --full-runs 1 \
                --label "sample path (tools/sample.py)" ;;
            sample_fast) run $((35 * scale)) "${size}_sample_fast" sample --config "$GEN_CFG" \
                --preset fast --dtype bf16 --batch "$SAMPLE_BATCH" --warmup 1 --repeat 3 \
                --full-runs 1 --label "fast bf16" ;;
            sample_plain) run $((40 * scale)) "${size}_sample_plain" sample --config "$GEN_CFG" \
                --preset plain --dtype fp32 --batch "$SAMPLE_BATCH" --warmup 1 --repeat 2 \
                --full-runs 0 --label "plain fp32" ;;
            *) echo "gpu_check: unknown stage $stage" >&2; exit 2 ;;
        esac
    done
done

if [ ${#jsons[@]} -gt 0 ]; then
    "$PYTHON" "$BENCH" summary "${jsons[@]}" --ref-train-ms "$REF_TRAIN_MS" \
        --ref-sample-ms "$REF_SAMPLE_MS" --ref-peak-gib "$REF_PEAK_GIB" --min-images-per-s 40 \
        --append --out "$OUT" \
        --note "tools/gpu_check.sh; nvidia-smi: ${CARD:-n/a}. Targets from the reference's ViT-B numbers on an H200 (REF_TRAIN_MS=$REF_TRAIN_MS, REF_SAMPLE_MS=$REF_SAMPLE_MS, REF_PEAK_GIB=$REF_PEAK_GIB); ViT-L rows need the reference's ViT-L numbers for the same ratios." \
        || status=1
fi
if [ $status -eq 0 ]; then
    echo "gpu_check: every stage ran; summary appended to $OUT"
else
    echo "gpu_check: some stages FAILED (see above); the summary holds the others" >&2
fi
exit $status
