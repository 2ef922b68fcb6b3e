#!/usr/bin/env bash
# One-command, idempotent set-up of the addp_mm environment in ./.venv.
#
#   1. create .venv (python3.11 by default, override with PYTHON=...)
#   2. install torch + torchvision first (pins from requirements.txt)
#   3. build mmcv 2.1.0 from its PyPI sdist with the compiled ops and the
#      C++20 fix, cache the wheel in ~/.cache/addp_mm/wheels/<py>-torch<ver>-<cpu|cuXY>
#   4. install requirements.txt with --only-binary mmcv (so an unpatched source
#      build can never happen silently), then addp_mm itself in editable mode
#   5. verify: import the stack and run mmcv.ops.nms
#
# A stamp file records the hash of requirements.txt + this script; a second run
# with an unchanged stamp only re-verifies (a few seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VENV:-$ROOT/.venv}"
PIP="$VENV/bin/pip"
VPY="$VENV/bin/python"
STAMP="$VENV/.addp_mm_setup"
MMCV_VERSION=2.1.0
step() { printf '\n\033[1m[setup %s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }

want_hash="$(cat requirements.txt scripts/setup_env.sh setup.py 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_hash" ] && [ -x "$VPY" ]; then
  step "environment up to date ($VENV); verifying"
  "$VPY" scripts/verify_env.py && exit 0
  step "verification failed; reinstalling"
fi

if [ ! -x "$VPY" ]; then
  step "creating virtual environment $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

TORCH_PIN="$(grep -E '^torch==' requirements.txt | cut -d' ' -f1)"
TV_PIN="$(grep -E '^torchvision==' requirements.txt | cut -d' ' -f1)"
step "installing $TORCH_PIN $TV_PIN (first, everything else builds on it)"
"$PIP" install --progress-bar on "$TORCH_PIN" "$TV_PIN"
step "installing build tools (setuptools<81, wheel, ninja)"
"$PIP" install -q "setuptools>=77.0.3,<81" wheel ninja

TORCH_VER="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])')"
PY_TAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
if "$VPY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  FLAVOUR="cuda$("$VPY" -c 'import torch; print(torch.version.cuda)')"; FORCE_CUDA=1
else
  FLAVOUR=cpu; FORCE_CUDA=0
fi
CACHE_ROOT="${ADDP_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/addp_mm}"
WHEELS="$CACHE_ROOT/wheels/${PY_TAG}-torch${TORCH_VER}-${FLAVOUR}"
mkdir -p "$WHEELS"

if ! ls "$WHEELS"/mmcv-${MMCV_VERSION}-*.whl >/dev/null 2>&1; then
  step "no cached mmcv wheel in $WHEELS: building mmcv ${MMCV_VERSION} from source ($FLAVOUR ops, about 13 min on 2 cores)"
  SRC="$(mktemp -d)"; LOG="$CACHE_ROOT/mmcv-build-$(date +%Y%m%d-%H%M%S).log"
  "$PIP" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==${MMCV_VERSION}" -d "$SRC"
  tar xzf "$SRC/mmcv-${MMCV_VERSION}.tar.gz" -C "$SRC"
  # torch>=2.14 headers need C++20; mmcv's setup.py hard-codes -std=c++17 after CFLAGS.
  sed -i "s/'-std=c++17'/'-std=c++20'/g" "$SRC/mmcv-${MMCV_VERSION}/setup.py"
  grep -q "'-std=c++20'" "$SRC/mmcv-${MMCV_VERSION}/setup.py" || { echo "C++20 patch did not apply to mmcv setup.py" >&2; exit 1; }
  echo "build log: $LOG"
  ( MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PIP" wheel -v --no-deps --no-build-isolation -w "$WHEELS" "$SRC/mmcv-${MMCV_VERSION}" >"$LOG" 2>&1 ) &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    progress=$(grep -oE '\[[0-9]+/[0-9]+\]' "$LOG" 2>/dev/null | tail -n 1 || true)
    printf '  mmcv build: compile step %s, %s\n' "${progress:-[starting]}" "$(date +%H:%M:%S)"
    sleep 30
  done
  if ! wait "$pid"; then
    echo "---- last 40 lines of $LOG ----" >&2; tail -n 40 "$LOG" >&2
    reason="$(grep -m1 -E 'error:|Error:' "$LOG" || true)"
    echo "mmcv build FAILED. First error: ${reason:-see log}. Full log: $LOG" >&2
    rm -rf "$SRC"; exit 1
  fi
  rm -rf "$SRC"
else
  step "using cached mmcv wheel: $(ls "$WHEELS"/mmcv-${MMCV_VERSION}-*.whl)"
fi

step "installing requirements.txt (mmcv from the cached wheel only)"
"$PIP" install --progress-bar on --find-links "$WHEELS" --only-binary mmcv -r requirements.txt
step "installing addp_mm (editable)"
"$PIP" install -q --no-deps --no-build-isolation -e .
step "verifying"
"$VPY" scripts/verify_env.py
echo "$want_hash" > "$STAMP"
step "done: activate with 'source .venv/bin/activate'"
