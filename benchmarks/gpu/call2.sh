#!/usr/bin/env bash
# Call 2, at once after call 1 (run tool: carry [".stash/gpu2", ".whl"], timeout_s = BUDGET_S):
#   BUDGET_S=540 benchmarks/gpu/call2.sh [--data toys --eval-users 2000]
# Joins the GGUF halves and checks the sha256, converts the model (the gguf wheel is carried),
# sizes the training from call 1's measurements and runs sft vs cft (run.py main).
set -euo pipefail
cd "$(dirname "$0")/../.."
STASH="${STASH:-/root/stash}"
OUT="${OUT:?set by the device tool}"
mkdir -p "$STASH"
cp -r .stash/gpu2/. "$STASH/" && rm -rf .stash/gpu2
PYTHON="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$STASH/site" .whl/*.whl
  export PYTHONPATH="$STASH/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CFTREC_HOME="$STASH/cftrec-home"
# The run tool's limit covers this whole script; the planner keeps --spare-s of it unused.
"$PYTHON" benchmarks/gpu/run.py main --stash "$STASH" --out "$OUT" \
  --budget-s "$(( ${BUDGET_S:-540} - 15 ))" "$@" 2>&1 | tee "$OUT/call2.log"
