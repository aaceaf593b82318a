#!/usr/bin/env bash
# Stop the study's lane (study/run.sh): first its loop, so that it starts no further sweep, then its sweeps,
# with SIGTERM, which each sweep passes once to its running groups; each saves a checkpoint (the same machine
# resumes it with the next `bash study/run.sh`). Waits until they have exited, at most STUDY_STOP_WAIT
# seconds (default 300), and says what it stopped. Then: `bash study/save.sh` and commit study/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
home=${STUDY_HOME:-$repo/../study-work}
[ -d "$home" ] || { echo "study/stop.sh: no study home at '$home' (set STUDY_HOME)" >&2; exit 2; }
home=$(cd "$home" && pwd)
wait_s=${STUDY_STOP_WAIT:-300}
case "$wait_s" in
  [0-9]|[1-9][0-9]|[1-9][0-9][0-9]|[1-9][0-9][0-9][0-9]) ;;
  *) echo "study/stop.sh: STUDY_STOP_WAIT must be whole seconds from 0 to 9999, got '$wait_s'" >&2; exit 2 ;;
esac
sweeps="$home/venv/bin/moerl sweep "
pkill -f "moerl-study-[l]ane" && echo "study/stop.sh: the lane's loop stopped" || echo "study/stop.sh: no lane loop running"
if ! pgrep -f "$sweeps" > /dev/null; then
  echo "study/stop.sh: no sweep of the study running"
  exit 0
fi
pgrep -af "$sweeps" | sed 's/^/study\/stop.sh: stopping /'
pkill -TERM -f "$sweeps"
for _ in $(seq "$wait_s"); do
  pgrep -f "$sweeps" > /dev/null || { echo "study/stop.sh: stopped; its groups checkpointed (lane.log says which)"; exit 0; }
  sleep 1
done
echo "study/stop.sh: a sweep is still running after ${wait_s}s (pgrep -af '$sweeps')" >&2
exit 1
