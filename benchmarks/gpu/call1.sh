#!/usr/bin/env bash
# Call 1 on the GPU machine (run tool: carry [".stash/gpu1"], timeout_s about 150):
#   benchmarks/gpu/call1.sh [--data toys]
# Moves the carried files out of the repository into $STASH (the machine keeps them while warm),
# then runs the CUDA smoke test, the CFT cost benchmark and the sizing (run.py smoke).
set -euo pipefail
cd "$(dirname "$0")/../.."
STASH="${STASH:-/root/stash}"
OUT="${OUT:?set by the device tool}"
mkdir -p "$STASH"
cp -r .stash/gpu1/. "$STASH/" && rm -rf .stash/gpu1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CFTREC_HOME="$STASH/cftrec-home"
"${PYTHON:-python3}" benchmarks/gpu/run.py smoke --stash "$STASH" --out "$OUT" "$@" 2>&1 \
  | tee "$OUT/call1.log"
