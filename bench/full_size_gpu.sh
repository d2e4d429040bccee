#!/usr/bin/env bash
# The full-size bench on one GPU: SD1.5 (512 px), SDXL, PixArt-alpha and SD3 (1024 px), real
# architectures with random weights, each under gpu24, gpu40 and gpu80, then the evaluation's Inception
# and CLIP ViT-g-14; about 10 minutes on one H100 (cases that would start after BUDGET_S seconds are
# skipped, saying so). Writes docs/benchmarks.md (its full-size section) and docs/benchmarks.json, and
# copies both and the log to $OUT when it is set. Extra arguments go to the bench (e.g. --cases sdxl).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python}
LOG=${OUT:-/tmp}/full_size_bench.log
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>&1 | tee "$LOG" || true
status=0
"$PY" -m flash_exp.bench --full-size --budget-s "${BUDGET_S:-420}" --work-dir "${WORK_DIR:-/tmp}" "$@" >>"$LOG" 2>&1 \
  || status=$?
grep -v -e "Loading weights" -e "Writing model shards" "$LOG" | tail -n 80
if [ -n "${OUT:-}" ]; then cp docs/benchmarks.md docs/benchmarks.json "$OUT"/ || true; fi
exit "$status"
