#!/usr/bin/env bash
# End-to-end worker throughput on the local broker: N pre-produced events (and their labels) on
# P partitions, one release worker; reports records/s from the worker's start to the checkpoint
# that covers every record (so it includes the ~1 s group join and up to 1 s of checkpoint
# interval), and the worker's peak RSS.
#   scripts/bench_worker.sh [EVENTS=200000] [PARTITIONS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
parts=${2:-3}
scripts/install.sh
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/streamlr
work=$(mktemp -d)
worker_pid=""
cleanup() {
  if [ -n "$worker_pid" ]; then kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; fi
  scripts/broker.sh stop "$work/broker"
  rm -rf "$work"
}
trap cleanup EXIT
bootstrap=$(scripts/broker.sh start "$work/broker")
for t in events labels predictions; do scripts/broker.sh topic "$work/broker" "$t" "$parts" >/dev/null; done
scripts/broker.sh topic "$work/broker" dead-letter 1 >/dev/null
summary=$("$bin" simulate --brokers "$bootstrap" --count "$n" --start-ts 1780000000000 \
  --label-delay-max 10m --malformed-rate 0.001 2>&1 >/dev/null | tail -1)
events=$(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print(s['events']+s['malformed'])" "$summary")
labels=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['labels'])" "$summary")
sed -e "s|^brokers = .*|brokers = \"$bootstrap\"|" \
    -e "s|^dir = \"state\"|dir = \"$work/state\"|" \
    -e "s|^every = \"30s\"|every = \"1s\"|" \
    -e "s|^level = .*|level = \"warn\"|" \
    -e '/^\[kafka.client\]/a "session.timeout.ms" = "2000"' \
    -e '/^\[kafka.client\]/a "heartbeat.interval.ms" = "300"' \
    configs/streamlr.toml >"$work/streamlr.toml"
start=$(date +%s.%N)
"$bin" run --config "$work/streamlr.toml" 2>"$work/worker.log" &
worker_pid=$!
peak=0
while :; do
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$worker_pid/status" 2>/dev/null || echo 0)
  if [ "${rss:-0}" -gt "$peak" ]; then peak=$rss; fi
  done_=$("$bin" checkpoint show --config "$work/streamlr.toml" 2>/dev/null | python3 -c "
import json,sys
try: s=json.load(sys.stdin)
except Exception: print(0); sys.exit()
o=s['meta']['offsets']
e=sum(max(x['offset'],0) for x in o if x['topic']=='events'); l=sum(max(x['offset'],0) for x in o if x['topic']=='labels')
print(1 if (e==$events and l==$labels) else 0)" || true)
  if [ "$done_" = 1 ]; then break; fi
  sleep 0.5
done
end=$(date +%s.%N)
python3 -c "
t=$end-$start; r=$events+$labels
print(f'events {$events}  labels {$labels}  partitions {$parts}  seconds {t:.1f}  events/s {$events/t:,.0f}  records/s {r/t:,.0f}  peak RSS {$peak/1024:.0f} MiB')"
