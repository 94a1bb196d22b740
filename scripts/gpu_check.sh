#!/usr/bin/env bash
# The first minutes on a GPU machine, in one command (docs/testing.md says how to prepare it):
#
#   scripts/gpu_check.sh OUT_DIR [DEPS_DIR] [MNIST_DIR]
#
# OUT_DIR: where the log (gpu_check.log), bench.json and formats.json go. DEPS_DIR: pure-Python
# packages the machine lacks (hydra, omegaconf, antlr4), put first on PYTHONPATH. MNIST_DIR: the
# four MNIST .gz files, linked into data/MNIST/raw (read and md5-checked there, never fetched).
# Stages, each under its own time limit: env (card, driver, torch, precision flags), gpu_suite
# (pytest -m gpu, all but the NCCL test), nccl (the DDP test, last of the tests), bench (the
# speedrun, data and shapeset cases on the device), formats (speedrun fit time in fp32/bf16 x
# channels-first/last). Without CUDA it is a dry run: the GPU tests report their skip reasons
# and the bench and formats run tiny on the CPU. The last line is the summary; the exit code
# is the number of failed stages.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR [DEPS_DIR] [MNIST_DIR]}
DEPS=${2:-}
MNIST=${3:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="${DEPS:+$DEPS:}$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
say() { echo "$@" | tee -a "$LOG"; }

if [ -n "$MNIST" ]; then
  mkdir -p data/MNIST/raw
  for f in "$MNIST"/*.gz; do ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" data/MNIST/raw/; done
fi
if "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  DEVICE=cuda
else
  DEVICE=cpu
  say "gpu_check: no CUDA device: a dry run (GPU tests skip with their reason, bench and formats tiny on the CPU)"
fi
TIMEOUT_FLAG=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_FLAG=(--timeout 150)

SUMMARY=()
FAILED=0
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  say "=== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  local verdict=ok
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && verdict="timed out"
  [ "$rc" -ne 0 ] && [ "$verdict" = ok ] && verdict="failed (exit $rc)"
  [ "$verdict" = ok ] || FAILED=$((FAILED + 1))
  say "=== $name: $verdict in ${took} s"
  SUMMARY+=("$name $verdict ${took}s")
}

stage env 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo 'nvidia-smi: none'; $PY - <<'EOF'
import lightning, torch
print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version(),
      '| lightning', lightning.__version__)
if torch.cuda.is_available():
    print('card', torch.cuda.get_device_name(0), '| capability', torch.cuda.get_device_capability(0))
print('TF32: matmul', torch.backends.cuda.matmul.allow_tf32, '| cuDNN', torch.backends.cudnn.allow_tf32,
      '| float32_matmul_precision', torch.get_float32_matmul_precision())
import hydra, omegaconf; print('hydra', hydra.__version__, '| omegaconf', omegaconf.__version__)
EOF"

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rs "${TIMEOUT_FLAG[@]}")
stage gpu_suite 300 "${PYTEST[@]}" -m gpu -k "not ddp" tests
stage nccl 150 "${PYTEST[@]}" -m gpu -k ddp tests

if [ "$DEVICE" = cuda ]; then
  BENCH=(--device cuda --seeds 3)
else
  BENCH=(--device cpu --quick)
fi
stage bench 240 "$PY" scripts/bench.py "${BENCH[@]}" --cases speedrun data shapeset --out "$OUT/bench.json"
stage formats 200 "$PY" scripts/memory_formats.py --device "$DEVICE" --out "$OUT/formats.json" \
  $([ "$DEVICE" = cpu ] && echo --quick)

say "gpu_check summary ($DEVICE): $((${#SUMMARY[@]} - FAILED))/${#SUMMARY[@]} stages ok: $(IFS=';'; echo "${SUMMARY[*]}")"
exit "$FAILED"
