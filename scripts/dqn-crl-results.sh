#!/usr/bin/env bash
# The README's MoE DQN results: cartpole-crl with default settings, several archs x seeds,
# then one table with `moerl report`. Usage: bash scripts/dqn-crl-results.sh [LOGDIR] [SEEDS...]
set -euo pipefail
logdir="${1:-runs/crl-results}"
shift || true
seeds=("${@:-0 1 2}")
read -r -a seeds <<< "${seeds[*]}"
runs=()
for spec in "dense softmoe" "big softmoe" "big topk" "big hardcoded"; do
  read -r arch router <<< "$spec"
  for seed in "${seeds[@]}"; do
    name="cartpole-crl_${arch}_${router}_s${seed}"
    if [ ! -f "$logdir/$name/results.json" ]; then
      moerl train --env cartpole-crl --arch "$arch" --router "$router" --seed "$seed" \
        --logdir "$logdir" --run-name "$name" --no-progress
    fi
    runs+=("$logdir/$name")
  done
done
moerl report "${runs[@]}" --out "$logdir/table.md"
