#!/usr/bin/env bash
# Here, before the GPU calls: put what each call carries into the git-ignored .stash/ and .whl/.
#   DATASET=ml100k benchmarks/gpu/prepare_carry.sh      # MovieLens-100k, leave-one-out
#   DATASET=toys    benchmarks/gpu/prepare_carry.sh      # Amazon Toys + its SASRec run (assistant)
# .stash/gpu1 (call 1): first half of the bundled GGUF, its sha256, the model's shape (config and
# tokenizer files, no weights) and the prepared dataset. .stash/gpu2 (call 2): the second half
# and, for toys, the trained SASRec run used as D3's assistant. .whl: the gguf wheel (the GPU
# image lacks it). Each folder stays under the 64 MiB a call may carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
DATASET="${DATASET:-ml100k}"
rm -rf .stash/gpu1 .stash/gpu2
mkdir -p .stash/gpu1/shape .stash/gpu2 .whl

model_dir=$("$PYTHON" -c "from cftrec.modeling import resolve_model_path as r; print(r('bundled:smollm2-135m'))")
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  [ -f "$model_dir/$f" ] && cp "$model_dir/$f" .stash/gpu1/shape/
done
gguf=$("$PYTHON" -c "from cftrec.assets import bundled_gguf_path as p; print(p())")
sha256sum "$gguf" | cut -d' ' -f1 > .stash/gpu1/gguf.sha256
cp .stash/gpu1/gguf.sha256 .stash/gpu2/gguf.sha256
split -b 50M "$gguf" .stash/gguf.part-
mv .stash/gguf.part-aa .stash/gpu1/ && mv .stash/gguf.part-ab .stash/gpu2/

# The dataset, and pop and SASRec trained and evaluated here on the CPU on the same users as the
# GPU rows (the report compares them): .stash/$DATASET, .stash/$DATASET-{pop,sasrec},
# .stash/baselines-$DATASET/{pop,sasrec}. Toys' SASRec run also travels as D3's assistant.
cftrec=("$PYTHON" -m cftrec)
data=".stash/$DATASET"
case "$DATASET" in
  ml100k)
    sample=()
    sasrec_options=(--epochs 30)
    if [ ! -d "$data" ]; then
      raw=$("$PYTHON" -c "from cftrec.assets import movielens_100k_cache as c; print(c())")
      "${cftrec[@]}" data prepare recbole "$raw" -o "$data" --split loo
    fi ;;
  toys)
    sample=(--sample 2000 --sample-seed 0)
    sasrec_options=(--dropout 0.3 --patience 3)  # as in benchmarks/results/baselines.md
    [ -d "$data" ] || "${cftrec[@]}" data prepare sequences ../shared/data/amazon-toys -o "$data" --split loo ;;
  *) echo "DATASET must be ml100k or toys" >&2; exit 2 ;;
esac
[ -d "$data-pop" ] || "${cftrec[@]}" baseline pop --data "$data" -o "$data-pop"
[ -d "$data-sasrec" ] || OMP_NUM_THREADS=1 "${cftrec[@]}" baseline sasrec --data "$data" \
  -o "$data-sasrec" --device cpu "${sasrec_options[@]}"
for baseline in pop sasrec; do
  [ -f ".stash/baselines-$DATASET/$baseline/results.json" ] || "${cftrec[@]}" evaluate \
    --run "$data-$baseline" --data "$data" "${sample[@]}" -o ".stash/baselines-$DATASET/$baseline"
done
cp -r "$data" ".stash/gpu1/$DATASET"
[ "$DATASET" = toys ] && cp -r "$data-sasrec" .stash/gpu2/assistant
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d .whl gguf
du -sh .stash/gpu1 .stash/gpu2 .whl
