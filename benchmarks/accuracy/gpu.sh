#!/usr/bin/env bash
# The accuracy suite on one lent GPU (H100/H200) in about 9 minutes; results under $OUT.
#
# The GPU machine has torch/transformers/peft/accelerate but no network and no cftrec install:
# src/ goes on PYTHONPATH. The bundled model's GGUF (98 MB) travels in two halves (see
# benchmarks/accuracy/README.md); this script joins them, checks the sha256 and converts once.
# The machine lacks `gguf` (needed once, for the conversion): carry its wheel in .whl/.
# MovieLens-100k travels prepared (`cftrec data prepare recbole ... -o .stash/ml100k`, ~1 MB).
# Dry run on a CPU at tiny size:
#   PYTHON=.venv/bin/python SCALE=tiny MODEL=/path/to/tiny-model OUT=/tmp/out benchmarks/accuracy/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CFTREC_HOME="${CFTREC_HOME:-/root/stash/cftrec-home}"
SCALE="${SCALE:-gpu}"
OUT="${OUT:-$PWD/runs-accuracy/$SCALE-out}"
WORK="${WORK:-/root/stash/accuracy}"
mkdir -p "$OUT" "$WORK"
model_args=()
[ -n "${MODEL:-}" ] && model_args=(--model "$MODEL")
data_args=()
[ -d .stash/ml100k ] && data_args=(--data .stash/ml100k)

# The bundled model: join the carried GGUF halves once (part 1 may already sit in /root/stash).
GGUF_SHA256=${GGUF_SHA256:-}
if [ -z "${MODEL:-}" ] && [ -z "${CFTREC_GGUF:-}" ]; then
  parts=(/root/stash/gguf.part-* .stash/gguf.part-*)
  gguf=/root/stash/SmolLM2-135M-Instruct.Q4_1.gguf
  if [ ! -f "$gguf" ]; then
    # Join in part order (aa, ab, ...) wherever each half lies.
    for f in "${parts[@]}"; do [ -f "$f" ] && echo "$(basename "$f") $f"; done | sort \
      | while read -r _ path; do cat "$path"; done > "$gguf"
  fi
  if [ -n "$GGUF_SHA256" ]; then
    echo "$GGUF_SHA256  $gguf" | sha256sum -c -
  fi
  export CFTREC_GGUF="$gguf"
fi

( nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU" ) \
  | tee "$OUT/device.txt"
# MovieLens-100k at full size: every train sample, one epoch, every test user, 10 beams.
timeout "${ML_TIMEOUT:-420}" "$PYTHON" benchmarks/accuracy/run.py "$SCALE" "${model_args[@]}" \
  "${data_args[@]}" --out "$WORK/ml100k" --results-dir "$OUT" 2>&1 | tee "$OUT/ml100k.log"
# With time left: a fixed sample of amazon-video-games users (a prepared dataset carried in .stash/games).
if [ -d .stash/games ]; then
  timeout "${GAMES_TIMEOUT:-120}" "$PYTHON" benchmarks/accuracy/run.py "$SCALE" "${model_args[@]}" \
    --data .stash/games --out "$WORK/games" --results-dir "$OUT/games" 2>&1 \
    | tee "$OUT/games.log" || echo "games run stopped at its time limit"
fi
