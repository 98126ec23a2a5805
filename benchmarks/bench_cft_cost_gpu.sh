#!/usr/bin/env bash
# GPU counterpart of bench_cft_cost.py: run from the repository root on a CUDA machine.
#   benchmarks/bench_cft_cost_gpu.sh [--data PREPARED_ML100K] [--model PATH_OR_HUB_ID]
# Writes benchmarks/results/training_cft_cost_gpu_{lora,full}.json and prints markdown tables.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for mode in lora full; do
    extra=()
    [[ $mode == full ]] && extra=(--full)
    "$PYTHON" benchmarks/bench_cft_cost.py --device cuda --dtype bfloat16 --batch-size 32 \
        --rounds 20 --warmup 3 "${extra[@]}" \
        --out "benchmarks/results/training_cft_cost_gpu_${mode}.json" "$@"
done
