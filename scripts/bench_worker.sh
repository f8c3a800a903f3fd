#!/usr/bin/env bash
# End-to-end benchmark on the local broker, side by side with a passthrough baseline in the same
# run (issue #7):
#  1. N events (and their labels) pre-produced on P partitions, event times ending now;
#  2. passthrough (examples/passthrough.rs): a consumer-group member with the worker's client
#     settings copying every event record to another topic, decoding nothing — timed from its
#     start to the broker's acknowledgement of the last copy;
#  3. the release worker (shipped config, checkpoints every 1 s) — timed from its start to the
#     checkpoint that covers every event and label (so including the ~1 s group join and up to
#     1 s of checkpoint interval); its peak RSS (VmHWM);
#  4. latency (examples/latency.rs) at LOAD (default 0.5) x the worker's measured events/s for
#     SECONDS against the caught-up worker: event->prediction p50/p99/p999 from the probe's own
#     send to its receipt of the prediction.
#   scripts/bench_worker.sh [EVENTS=200000] [PARTITIONS=3] [LOAD=0.5] [SECONDS=30]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
parts=${2:-3}
load=${3:-0.5}
secs=${4:-30}
scripts/install.sh
cargo build --release --locked --quiet --bin streamlr --example passthrough --example latency
bin=${CARGO_TARGET_DIR:-target}/release/streamlr
ex=${CARGO_TARGET_DIR:-target}/release/examples
work=$(mktemp -d)
worker_pid=""
cleanup() {
  if [ -n "$worker_pid" ]; then kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; fi
  scripts/broker.sh stop "$work/broker"
  rm -rf "$work"
}
trap cleanup EXIT
client=(session.timeout.ms=2000 heartbeat.interval.ms=300)
bootstrap=$(scripts/broker.sh start "$work/broker")
for t in events labels predictions passthrough-out; do scripts/broker.sh topic "$work/broker" "$t" "$parts" >/dev/null; done
scripts/broker.sh topic "$work/broker" dead-letter 1 >/dev/null
# One event per ms of event time, the last one now: the latency probe's live events follow on.
start_ts=$(( $(date +%s%3N) - n ))
summary=$("$bin" simulate --brokers "$bootstrap" --count "$n" --rate 1000 --start-ts "$start_ts" \
  --label-delay-max 10m --malformed-rate 0.001 2>&1 >/dev/null | tail -1)
events=$(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print(s['events']+s['malformed'])" "$summary")
labels=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['labels'])" "$summary")

pass=$("$ex/passthrough" "$bootstrap" events passthrough-out "$events" "${client[@]}")

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
worker_rate=$(python3 -c "print($events/($end-$start))")
rate=$(python3 -c "print(round($worker_rate*$load))")
lat=$("$ex/latency" "$bootstrap" "$rate" "$secs" predictions "${client[@]}")
python3 - "$pass" "$lat" <<PY
import json, sys
p = json.loads(sys.argv[1]); l = json.loads(sys.argv[2])
t = $end - $start; e = $events; r = $events + $labels
w = e / t
print(f"machine: $(nproc) cores, broker tansu (memory) on the same machine; {e} event records, {$labels} labels, $parts partitions")
print(f"passthrough  {p['records_per_s']:>10,.0f} events/s  ({p['records']} records in {p['seconds']:.1f} s)")
print(f"worker       {w:>10,.0f} events/s  ({r/t:,.0f} records/s incl. labels, {t:.1f} s)  ratio {w/p['records_per_s']:.2f}")
print(f"worker peak RSS {$peak/1024:.0f} MiB")
print(f"latency at {l['rate']:.0f} events/s ({$load:.0%} of the worker's rate), {l['measured']} measured after warm-up: "
      f"p50 {l['p50_ms']:.2f} ms  p99 {l['p99_ms']:.2f} ms  p999 {l['p999_ms']:.2f} ms  max {l['max_ms']:.2f} ms")
PY
