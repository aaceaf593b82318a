#!/usr/bin/env bash
# After study/save.sh: rewrite everything generated from the kept runs (see study/README.md), then read the
# diff, update the prose that cites numbers (docs/results-study.md, README.md's study screen) and commit.
# The prose may be edited while it runs: each --write puts its blocks into the file as it is when it writes.
#
#   bash study/refresh.sh            # from the repository root, in the environment of `pip install -e .[dev]`
#
# It writes the study's result blocks (docs/results-study.md per suite, README.md's screen over both suites)
# with scripts/check_results.py --write, redraws the figures the docs show (docs/study-cartpole/,
# docs/study-mountaincar/) with moerl report, and rewrites the page's command outputs (its progress counts,
# cost and memory tables: scripts/doc_outputs.py). A sweep that has kept nothing yet reads as an empty
# folder (its block shows only the other sweep's runs), never as a rerun.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
S=study/$(cat study/COMMIT)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/empty"
kept() { if [ -d "$S/paper-$1" ]; then echo "$S/paper-$1"; else echo "$work/empty"; fi; }
CP=configs/paper/full-cartpole.yaml+configs/paper/full-cartpole-seeds10-19.yaml
MC=configs/paper/full-mountaincar.yaml+configs/paper/full-mountaincar-seeds10-19.yaml
cp_runs=(--runs "$(kept full-cartpole)" --runs "$(kept full-cartpole-seeds10-19)")
mc_runs=(--runs "$(kept full-mountaincar)" --runs "$(kept full-mountaincar-seeds10-19)")

python scripts/check_results.py docs/results-study.md --write --only "$CP" "${cp_runs[@]}"
python scripts/check_results.py docs/results-study.md --write --only "$MC" "${mc_runs[@]}"
python scripts/check_results.py README.md --write --only "$CP+$MC" "${cp_runs[@]}" "${mc_runs[@]}"
# the mixed classic suite's first setting (its part), once it has kept runs and the page has its block
CL=configs/paper/parts/full-classic-crl-sequential.yaml
if [ -d "$S/paper-full-classic" ] && grep -q "<!-- results: $CL -->" docs/results-study.md; then
  python scripts/check_results.py docs/results-study.md --write --only "$CL" --runs "$S/paper-full-classic"
fi

# figures: moerl report's file per setting -> the name the docs link to
figures() {  # suite, curves, report folders...
  local suite=$1 curves=$2; shift 2
  local folders=()
  for f in "$@"; do [ -d "$f" ] && folders+=("$f"); done
  [ ${#folders[@]} -gt 0 ] || { echo "refresh: no kept runs of $suite yet: no figures"; return; }
  moerl report "${folders[@]}" --out "$work/$suite" --curves "$curves" > /dev/null
  local seq="$suite-crl-crl-env-kwargs-order-sequential" rev="$suite-crl-crl-env-kwargs-order-reverse"
  mkdir -p "docs/study-$suite"
  for pair in "$seq-eval-curves:crl-sequential-eval-curves" "$rev-eval-curves:crl-reverse-eval-curves" \
              "$suite-mtrl-mtrl-eval-curves:mtrl-eval-curves" "$seq-aggregates:crl-sequential-aggregates" \
              "$seq-dormant:crl-sequential-dormant" "$seq-usage-big-softmoe:crl-sequential-usage-big-softmoe" \
              "$seq-usage-big-topk:crl-sequential-usage-big-topk"; do
    src="$work/$suite/${pair%%:*}.png" dst="docs/study-$suite/${pair#*:}.png"
    if [ -f "$src" ]; then cp "$src" "$dst"; elif [ -f "$dst" ]; then echo "refresh: $src not drawn; $dst kept"; fi
  done
}
figures cartpole dense,big/softmoe,big/topk,big/hardcoded "$S/paper-full-cartpole" "$S/paper-full-cartpole-seeds10-19"
figures mountaincar dense,big/softmoe,big/hardcoded "$S/paper-full-mountaincar" "$S/paper-full-mountaincar-seeds10-19"

# the command outputs the page quotes (progress counts, cost and memory tables): from the kept runs
python scripts/doc_outputs.py --write docs/results-study.md
for dir in "$S"/paper-*; do  # a sweep with kept runs that the cost block's command does not name yet
  compgen -G "$dir/*_s*" > /dev/null || continue  # a launch record alone: no run for study_cost.py yet
  name=$(basename "$dir")
  grep -q "^<!-- output: python scripts/study_cost.py .*\$S/$name " docs/results-study.md ||
    echo "refresh: $S/$name is kept but the cost block's command (docs/results-study.md) does not name it: add \$S/$name"
done
git status --short docs README.md
