#!/usr/bin/env bash
# The accuracy suite on one lent GPU (H100/H200), within about 9 minutes, results under $OUT.
# The GPU machine has torch/transformers/peft/accelerate but no network and no pip install:
# src/ goes on PYTHONPATH; the bundled model travels as a converted folder in .stash/model
# (see benchmarks/accuracy/README.md for how to carry it).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CFTREC_HOME="${CFTREC_HOME:-$PWD/.stash/cftrec-home}"
OUT="${OUT:-$PWD/runs-accuracy/gpu-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt" || true
# MovieLens-100k at full size: every train sample, one epoch, every test user, 10 beams.
timeout 480 python benchmarks/accuracy/run.py gpu --out "$PWD/runs-accuracy/gpu" \
  --results-dir "$OUT" 2>&1 | tee "$OUT/gpu-ml100k.log"
# With time left, a fixed sample of amazon-video-games users (prepared dataset carried in .stash).
if [ -d .stash/games ]; then
  timeout 120 python benchmarks/accuracy/run.py gpu --data .stash/games --out "$PWD/runs-accuracy/gpu-games" \
    --results-dir "$OUT/games" 2>&1 | tee "$OUT/gpu-games.log" || echo "games run stopped at its time limit"
fi
