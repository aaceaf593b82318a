#!/usr/bin/env bash
# The README's MoE DQN results: a task suite (default cartpole-crl; ENV=cartpole-mtrl for MTRL) with
# default settings, several archs x seeds, then one table with `moerl report`.
# Usage: [ENV=cartpole-mtrl] bash scripts/dqn-suite-results.sh [LOGDIR] [SEEDS...]
# Finished runs already in LOGDIR are reused, so seeds can be run in parallel and the table made after.
set -euo pipefail
env="${ENV:-cartpole-crl}"
logdir="${1:-runs/crl-results}"
shift || true
seeds=("${@:-0 1 2}")
read -r -a seeds <<< "${seeds[*]}"
runs=()
for spec in "dense" "big softmoe" "big topk" "big hardcoded"; do
  read -r arch router <<< "$spec"
  for seed in "${seeds[@]}"; do
    # a fixed name so that a finished run is found again; dense has no router (none in its name or flags)
    name="${env}_${arch}${router:+_$router}_s${seed}"
    if [ ! -f "$logdir/$name/results.json" ]; then
      moerl train --env "$env" --arch "$arch" ${router:+--router "$router"} --seed "$seed" \
        --logdir "$logdir" --run-name "$name" --no-progress
    fi
    runs+=("$logdir/$name")
  done
done
moerl report "${runs[@]}" --out "$logdir/table.md"
