#!/usr/bin/env bash
# Resume the seed-001 study (issue 24) on this machine: a frozen install of the study's commit, the finished
# runs kept in this folder put back, and one lane of sweeps (two workers) started in the background.
#
#   bash study/run.sh                # from the repository root; prints where the logs go
#   bash study/run.sh --prepare      # everything but starting the lane (checkout, venv, runs restored)
#   bash study/save.sh               # later: keep what finished (then commit study/)
#
# STUDY_HOME (default: ../study-work beside the repository) holds the checkout of the commit, its venv, the
# live run directories and the lane's log; nothing there is committed. One lane trains the sweeps in the order
# written below (the most informative first), STUDY_WORKERS (default 2) groups at a time within each sweep.
set -euo pipefail
case "${1:-}" in
  "") start=1 ;;
  --prepare) start=0 ;;
  *) echo "study/run.sh: unknown argument '$1' (valid: --prepare, or nothing)" >&2; exit 2 ;;
esac
workers=${STUDY_WORKERS:-2}
case "$workers" in
  [1-9]|[1-9][0-9]) ;;
  *) echo "study/run.sh: STUDY_WORKERS must be a whole number of workers from 1, got '$workers'" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$start" = 1 ] && pgrep -f "moerl-study-[l]ane" > /dev/null; then
  echo "study/run.sh: the study's lane is already running (pgrep -af moerl-study-lane); a second one would" \
    "take the sweeps it has not reached yet and oversubscribe the cores" >&2
  exit 2
fi
commit=$(cat "$repo/study/COMMIT")
home=${STUDY_HOME:-$repo/../study-work}
mkdir -p "$home"
home=$(cd "$home" && pwd)
if [ ! -d "$home/code" ]; then
  git -C "$repo" worktree add --detach "$home/code" "$commit"
fi
if [ ! -x "$home/venv/bin/moerl" ]; then
  python3 -m venv "$home/venv"
  "$home/venv/bin/pip" install -q torch==2.13.0
  "$home/venv/bin/pip" install -q -c "$home/code/constraints.txt" "$home/code[stats]"
fi
built=$(cd "$home" && venv/bin/python -c "import json, importlib.resources as r; print(json.loads(r.files('moerl').joinpath('_build_info.json').read_text())['commit'])")
[ "$built" = "$commit" ] || { echo "study/run.sh: $home/venv has moerl of $built, not $commit" >&2; exit 2; }
for sweep in full-cartpole full-cartpole-seeds10-19 full-mountaincar full-mountaincar-seeds10-19 full-classic; do
  if [ -d "$repo/study/$commit/paper-$sweep" ]; then
    "$home/venv/bin/python" "$repo/scripts/study_archive.py" restore "$repo/study/$commit/paper-$sweep" \
      "$home/runs/paper-$sweep"
  fi
done
lane() {  # the sweeps in order, each with $workers groups at a time; a relaunch resumes
  local log=$1; shift
  (cd "$home" && nohup setsid bash -c '
    . venv/bin/activate
    workers=$1; shift
    for f in "$@"; do
      echo "== $(date -u +%FT%TZ) start $f"
      moerl sweep code/configs/paper/$f.yaml --workers "$workers" --logdir runs/paper-$f
      echo "== $(date -u +%FT%TZ) end $f rc=$?"
    done' moerl-study-lane "$workers" "$@" >> "$log" 2>&1 &)
}
sampler() {  # every 30 s while the lane runs: the batches' peak memory (scripts/study_memory.py), and the
  # study's processes put at the lowest CPU priority (autogroup nice 19: each batch starts a session of its own,
  # so a plain nice would not reach it), so that tests, CI and builds beside the study take the cores first
  (cd "$home" && nohup setsid bash -c '
    while pgrep -f "moerl-study-[l]ane" > /dev/null; do
      "$1" "$2" sample "$3" || true
      for p in $(pgrep -f "^$3/venv/bin/python"); do echo 19 > "/proc/$p/autogroup"; done 2> /dev/null
      sleep 30
    done
    ' moerl-study-memory "$home/venv/bin/python" "$repo/scripts/study_memory.py" "$home" >> "$home/memory.log" 2>&1 &)
}
if [ "$start" = 0 ]; then
  echo "study/run.sh: prepared $home from $commit; run it again without --prepare to start the lanes"
  exit 0
fi
# One lane with two workers, not two lanes of one: a sweep locks its logdir, so two lanes can never share the
# longest sweep (full-mountaincar) and one would go on to the mixed classic suite, which the study needs only
# the first settings of. Two workers idle one core only while a sweep's last group trains.
lane "$home/lane.log" full-cartpole full-cartpole-seeds10-19 full-mountaincar-seeds10-19 full-mountaincar full-classic
pgrep -f "moerl-study-[m]emory" > /dev/null || sampler
echo "study/run.sh: the lane started from $commit ($workers workers); log $home/lane.log"
