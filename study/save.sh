#!/usr/bin/env bash
# Keep the study's finished runs in study/<commit>/ (see study/README.md); then commit study/.
# To stop the lane first (each running group checkpoints; its runs are not finished, so not kept):
#   bash study/stop.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(cat "$repo/study/COMMIT")
home=${STUDY_HOME:-$repo/../study-work}
for dir in "$home"/runs/paper-*; do
  [ -d "$dir" ] || continue
  python3 "$repo/scripts/study_archive.py" save "$dir" "$repo/study/$commit/$(basename "$dir")"
done
if [ -f "$home/memory.json" ]; then  # the batches' peak memory (scripts/study_memory.py), merged over machines
  "$home/venv/bin/python" "$repo/scripts/study_memory.py" keep "$home/memory.json" "$repo/study/$commit/memory.json"
fi
