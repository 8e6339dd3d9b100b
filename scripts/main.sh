#!/usr/bin/env bash
# The main job: train on the shared faces data and evaluate in-domain and cross-dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${MASKWATCH_SHARED_DATA:-../shared/data}
RUN=runs/main-$(date +%Y%m%d-%H%M%S)
if [ ! -d "$DATA/faces" ]; then
  echo "no dataset at $DATA/faces: set MASKWATCH_SHARED_DATA or run 'maskwatch train --data DIR'" >&2
  exit 2
fi
$BIN/maskwatch train --data "$DATA/faces" --out "$RUN"
if [ -d "$DATA/scenes" ]; then
  $BIN/maskwatch evaluate --model "$RUN/model.pt" --data "$DATA/scenes" --crops --min-face 32 --json "$RUN/scenes.json"
fi
echo "run folder: $RUN"
