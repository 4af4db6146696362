#!/usr/bin/env bash
# One call on the lent GPU host: installs the carried wheels once, runs each argument (a quoted list of
# bench/gpu_session.sh steps) as its own gpu_session.sh, all arguments side by side, and packs every result into
# $OUT/gpu-results.tar.gz after each minute and at the end. The device returns at most 8 files, and a call cut at
# its time limit returns only what is already under $OUT, so nothing waits for the end to be saved.
# DEADLINE_S (default 540) stops whatever still runs, leaving the rest of a 600 s call for packing and transfer.
# Usage: OUT=... bash bench/gpu_call.sh "tests" "corpus confine_bench"     (steps needing GPU time alone: one argument)
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back}"
deadline=${DEADLINE_S:-540}
results=${RESULTS_DIR:-$(mktemp -d /tmp/gpu-results.XXXX)}  # RESULTS_DIR: where the groups write, before packing
mkdir -p "$results"
pack() { tar czf "$OUT/gpu-results.tar.gz.part" -C "$results" . && mv "$OUT/gpu-results.tar.gz.part" "$OUT/gpu-results.tar.gz"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 90
export GPU_SITE_READY=1
pids=()
index=0
for steps in "$@"; do
  index=$((index + 1))
  mkdir -p "$results/$index"
  # setsid: each group is its own process group, so the deadline can stop it with everything it started
  OUT="$results/$index" setsid bash bench/gpu_session.sh $steps > "$results/$index/session.log" 2>&1 &
  pids+=($!)
done
started=$SECONDS
while :; do
  running=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
  [ $running = 1 ] || break
  if [ $((SECONDS - started)) -ge "$deadline" ]; then
    echo "deadline ${deadline}s reached: stopping what still runs" | tee "$results/deadline.txt"
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    sleep 5
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
    break
  fi
  sleep 10
  [ $(((SECONDS - started) % 60)) -lt 10 ] && pack
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
index=0
for steps in "$@"; do
  index=$((index + 1))
  echo "=== group $index ($steps)"; tail -25 "$results/$index/session.log"
done
pack
exit $status
