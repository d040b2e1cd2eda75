#!/usr/bin/env bash
# The reports a trained 2.0.0 candidate gets (docs/training.md): export with the gated variants and
# speeds, the real-image gate in FP32 and INT8, the small-image crops, the synthetic evaluation.
#   bash scripts/candidate_post.sh RUN "UNSEEN_FOLDER..." [CROPS_FOLDER]     # ~5 min on 2 cores
# CROPS_FOLDER: stedq data synth --out data/crops-eval3 --actin 300 --tubulin 0 --seed 7 --no-dense-axons --no-dense-bundles (then .../actin)
set -euo pipefail
run=$1; unseen=$2; crops=${3:-}
stedq=${STEDQ:-stedq}
$stedq export "$run" --out "$run/bundle" --model-version 2.0.0 --measure-speed
$stedq evaluate --real validation/real-dev --model "$run/bundle" --out "$run/real"
$stedq evaluate --real validation/real-dev --model "$run/bundle" --variant int8 --out "$run/real-int8"
if [ -n "$crops" ]; then
  $stedq evaluate --crops "$crops" --model "$run/bundle" --out "$run/crops"
fi
$stedq evaluate "$run" $(for u in $unseen; do printf -- "--unseen %s " "$u"; done)
