#!/usr/bin/env bash
# Soak: the release worker under steady live traffic for a while, its memory sampled over time,
# to tell growth that levels off (the join window filling, caches warming) from growth that does
# not (a leak).
#
#   scripts/soak.sh [MINUTES=10] [RATE=2000] [OUT=out/soak]
#
# Starts a local broker (scripts/broker.sh, free port) with 3 + 3 partitions, produces RATE
# events/s of wall-clock time with labels LABEL_DELAY_MIN..LABEL_DELAY_MAX after their event
# (default 5s..2m, so the join window holds about RATE x the mean delay), runs the worker on the
# shipped config (HTTP on a free loopback port), and every 30 s prints and appends to
# OUT/soak.csv: minutes, VmRSS and VmHWM (MiB), events scored, labels joined, join entries, and the
# join store engine's tables (count, MiB on disk), block cache and memtables (MiB). Stops
# the worker (SIGTERM), the generator and the broker by their pids at the end. SESSION_TIMEOUT_MS /
# HEARTBEAT_MS set the consumer session (default 2000 / 300 ms, as the quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
rate=${2:-2000}
out=${3:-out/soak}
mkdir -p "$out"
out=$(cd "$out" && pwd)
scripts/install.sh
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/streamlr
sim_pid=""
worker_pid=""
cleanup() {
  if [ -n "$worker_pid" ]; then kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; fi
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  scripts/broker.sh stop "$out/broker"
}
trap cleanup EXIT
source scripts/local_stack.sh
bootstrap=$(local_broker "$out")
local_config "$out" "$bootstrap" -e "s|^listen = .*|listen = \"127.0.0.1:0\"|"
count=$((rate * 60 * (minutes + 5)))
"$bin" simulate --brokers "$bootstrap" --pace --rate "$rate" --count "$count" \
  --label-delay-min "${LABEL_DELAY_MIN:-5s}" --label-delay-max "${LABEL_DELAY_MAX:-2m}" \
  2>"$out/simulate.log" &
sim_pid=$!
"$bin" run --config "$out/streamlr.toml" 2>"$out/worker.log" &
worker_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -o 'HTTP listening.*addr=[0-9.:]*' "$out/worker.log" | sed 's/.*addr=//' | head -1 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "worker did not start; log:" >&2; cat "$out/worker.log" >&2; exit 1; }
echo "soak: $rate events/s for $minutes min; worker pid $worker_pid, metrics on http://$addr/metrics"
echo "minutes,rss_mib,hwm_mib,events_scored,labels_joined,join_entries,store_tables,store_table_mib,store_cache_mib,store_memtable_mib" | tee "$out/soak.csv"
start=$(date +%s)
while :; do
  sleep 30
  kill -0 "$worker_pid" 2>/dev/null || { echo "worker exited; log:" >&2; tail -20 "$out/worker.log" >&2; exit 1; }
  python3 - "$worker_pid" "$addr" "$start" <<'PY' | tee -a "$out/soak.csv"
import sys, time, urllib.request
pid, addr, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
status = {l.split(":")[0]: int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith(("VmRSS", "VmHWM"))}
metrics = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
def metric(name):
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0
scored = metric('streamlr_events_total{outcome="scored"}')
joined = metric('streamlr_labels_total{outcome="joined"}')
entries = metric("streamlr_join_store_entries")
store = [metric("streamlr_join_store_tables")] + [
    metric(f"streamlr_join_store_{m}_bytes") >> 20 for m in ("table", "cache", "memtable")]
print(f"{(time.time() - start) / 60:.1f},{status['VmRSS'] // 1024},{status['VmHWM'] // 1024},"
      f"{scored},{joined},{entries}," + ",".join(map(str, store)))
PY
  [ $(( $(date +%s) - start )) -ge $((minutes * 60)) ] && break
done
kill -TERM "$worker_pid"
wait "$worker_pid" || true
worker_pid=""
echo "soak: done; samples in $out/soak.csv, logs in $out"
