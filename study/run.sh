#!/usr/bin/env bash
# Resume the seed-001 study (issue 24) on this machine: a frozen install of the study's commit, the finished
# runs kept in this folder put back, and one lane of sweeps (two workers) started in the background.
#
#   bash study/run.sh                # from the repository root; prints where the logs go
#   bash study/run.sh --prepare      # everything but starting the lane (checkout, venv, runs restored)
#   bash study/save.sh               # later: keep what finished (then commit study/)
#   bash study/stop.sh               # stop the lane; running groups checkpoint
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
# The parts of a sweep the study runs before the whole (configs/paper/parts/): copied beside the checkout,
# and used only if the frozen install plans each of their runs exactly as the whole sweep of the study's
# commit does (the same check as tests/test_sweep.py, on the frozen code), so the whole skips them later.
mkdir -p "$home/parts"
for part in "$repo"/configs/paper/parts/*.yaml; do
  rm -f "$home/parts/$(basename "$part")"
  "$home/venv/bin/python" - "$part" "$home/code/configs/paper" <<'EOF_PART' || exit 2
import json, sys
from pathlib import Path
from moerl.runs.sweep.spec import load_sweep
part = load_sweep(sys.argv[1])
whole = load_sweep(Path(sys.argv[2]) / f"{part.name.removeprefix('paper-')}.yaml")
runs = lambda s: {j.run_dir(x): json.dumps(j.config, sort_keys=True) for j in s.jobs for x in j.seeds}
if part.logdir != whole.logdir or not runs(part) or any(runs(whole).get(r) != c for r, c in runs(part).items()):
    sys.exit(f"study/run.sh: {sys.argv[1]} is not a part of {part.name} as the study's commit plans it")
EOF_PART
  cp "$part" "$home/parts/"
done
lane() {  # the sweep files (relative to $home) in order, each with $workers groups at a time, into the file's
  # own logdir (runs/<name>); a relaunch resumes
  local log=$1; shift
  (cd "$home" && nohup setsid bash -c '
    . venv/bin/activate
    workers=$1; shift
    for f in "$@"; do
      echo "== $(date -u +%FT%TZ) start $f"
      moerl sweep "$f" --workers "$workers"
      echo "== $(date -u +%FT%TZ) end $f rc=$?"
    done' moerl-study-lane "$workers" "$@" >> "$log" 2>&1 &)
}
sampler() {  # every 30 s while the lane runs: the batches' peak memory (scripts/study_memory.py), and the
  # study's batches put at the lowest CPU priority (autogroup nice 19: each batch starts a session of its own,
  # so a plain nice would not reach it), so that tests, CI and builds beside the study take the cores first.
  # Only the batches (`moerl sweep-group` / `moerl train` children of the sweep, each in a session of its
  # own): the nice of an autogroup is its whole session's, and the study's python run from a user's shell
  # (save.sh, run.sh --prepare) would otherwise put that shell, and the tests it runs next, at nice 19 too.
  (cd "$home" && nohup setsid bash -c '
    while pgrep -f "moerl-study-[l]ane" > /dev/null; do
      "$1" "$2" sample "$3" || true
      for p in $(pgrep -f "^$3/venv/bin/python[0-9.]* -m moerl (sweep-group|train) "); do
        echo 19 > "/proc/$p/autogroup"
      done 2> /dev/null
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
# the first setting of (its part, before the whole). Two workers idle one core only while a sweep's last group
# trains.
paper=code/configs/paper
lane "$home/lane.log" $paper/full-cartpole.yaml $paper/full-cartpole-seeds10-19.yaml \
  $paper/full-mountaincar-seeds10-19.yaml $paper/full-mountaincar.yaml parts/full-classic-crl-sequential.yaml \
  $paper/full-classic.yaml
pgrep -f "moerl-study-[m]emory" > /dev/null || sampler
echo "study/run.sh: the lane started from $commit ($workers workers); log $home/lane.log"
