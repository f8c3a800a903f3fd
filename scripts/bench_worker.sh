#!/usr/bin/env bash
# End-to-end benchmark on the local broker, side by side with a passthrough baseline in the same
# run (issue #7):
#  1. N events (and their labels) pre-produced on P partitions, event times ending now;
#  2. passthrough (examples/passthrough.rs): a consumer-group member with the worker's client
#     settings copying every event record to another topic, decoding nothing — timed from its
#     start to the broker's acknowledgement of the last copy;
#  3. the release worker (shipped config, checkpoints every 1 s) — timed from its start to the
#     durable checkpoint (file and store commit) that covers every event and label (so including
#     the ~1 s group join and up to 1 s of checkpoint interval); its peak RSS (VmHWM);
#  4. latency (examples/latency.rs) at LOAD (default 0.5) x the worker's measured events/s for
#     SECONDS against the caught-up worker: event->prediction p50/p99/p999 from the probe's own
#     send to its receipt of the prediction;
#  5. the same probe at the same rate against a live passthrough (reading from the end): the
#     latency floor of this broker and client.
#   scripts/bench_worker.sh [EVENTS=200000] [PARTITIONS=3] [LOAD=0.5] [SECONDS=30]
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter itself, not pyenv's shim (a bash script per call).
py=$(python3 -c "import sys; print(sys.executable)")
n=${1:-200000}
parts=${2:-3}
load=${3:-0.5}
secs=${4:-30}
scripts/install.sh
cargo build --release --locked --quiet --bin streamlr --example passthrough --example latency
# STREAMLR_BIN: the worker binary to measure (default: this tree's release build), for A/B runs.
bin=${STREAMLR_BIN:-${CARGO_TARGET_DIR:-target}/release/streamlr}
ex=${CARGO_TARGET_DIR:-target}/release/examples
work=$(mktemp -d)
worker_pid=""
# Stops a process this script started and, first, what it started in turn (a STREAMLR_BIN wrapper
# that runs the worker under perf or heaptrack), leaves first. The peak RSS and CPU figures are
# those of the started process: a wrapper should `exec` the worker for them to be the worker's.
stop_tree() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do stop_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
cleanup() {
  if [ -n "$worker_pid" ]; then stop_tree "$worker_pid"; wait "$worker_pid" 2>/dev/null || true; fi
  scripts/broker.sh stop "$work/broker"
  rm -rf "$work"
}
trap cleanup EXIT
# CLIENT="k=v k=v": librdkafka properties for every client of the run (worker, passthrough, probe),
# e.g. CLIENT="fetch.wait.max.ms=10" (tansu holds a fetch that long when nothing is new).
read -r -a extra_client <<<"${CLIENT:-}"
client=(session.timeout.ms=2000 heartbeat.interval.ms=300 "${extra_client[@]}")
worker_client=()
for kv in "${client[@]}"; do
  worker_client+=(-e "/^\[kafka.client\]/a \"${kv%%=*}\" = \"${kv#*=}\"")
done
bootstrap=$(scripts/broker.sh start "$work/broker")
for t in events labels predictions passthrough-out; do scripts/broker.sh topic "$work/broker" "$t" "$parts" >/dev/null; done
scripts/broker.sh topic "$work/broker" dead-letter 1 >/dev/null
# Label delays (log-uniform): LABEL_DELAY_MIN=1d LABEL_DELAY_MAX=2d puts every label after every
# event, so the worker holds all N entries pending at its peak (the RSS-with-pending figure).
delay_min=${LABEL_DELAY_MIN:-1m}
delay_max=${LABEL_DELAY_MAX:-10m}
delay_max_ms=$(python3 -c "
import sys; v=sys.argv[1]; u={'ms':1,'s':1000,'m':60000,'h':3600000,'d':86400000}
k=next(k for k in ('ms','s','m','h','d') if v.endswith(k)); print(int(float(v[:-len(k)])*u[k]))" "$delay_max")
# One event per ms of event time, the last labels by now; with short delays the last event is
# close to now, so the latency probe's live events follow on.
start_ts=$(( $(date +%s%3N) - n - (delay_max_ms > 600000 ? delay_max_ms : 0) ))
summary=$("$bin" simulate --brokers "$bootstrap" --count "$n" --rate 1000 --start-ts "$start_ts" \
  --label-delay-min "$delay_min" --label-delay-max "$delay_max" --malformed-rate 0.001 2>&1 >/dev/null | tail -1)
events=$(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print(s['events']+s['malformed'])" "$summary")
labels=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['labels'])" "$summary")

# DRAIN_ONLY=1: the worker's drain alone (no passthrough, no latency phases), so that the broker's
# memory-only storage holds only events, labels and predictions — the 10M-pending RSS figure.
drain_only=${DRAIN_ONLY:-0}
if [ "$drain_only" != 1 ]; then
  pass=$("$ex/passthrough" "$bootstrap" events passthrough-out "$events" "${client[@]}")
fi

http_port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
sed -e "s|^brokers = .*|brokers = \"$bootstrap\"|" \
    -e "s|^dir = \"state\"|dir = \"$work/state\"|" \
    -e "s|^every = \"30s\"|every = \"1s\"|" \
    -e "s|^level = .*|level = \"warn\"|" \
    -e "s|^listen = .*|listen = \"127.0.0.1:$http_port\"|" \
    "${worker_client[@]}" \
    configs/streamlr.toml >"$work/streamlr.toml"
start=$(date +%s.%N)
"$bin" run --config "$work/streamlr.toml" 2>"$work/worker.log" &
worker_pid=$!
# One watcher process for the whole drain (a python start per poll, through pyenv's shims, took
# ~15 % of this 2-core machine away from the worker): every 0.25 s it samples the worker's VmHWM
# and /metrics — the join entries, and whether the last durable checkpoint covers every record
# (`streamlr_checkpoint_offset`; `streamlr checkpoint show` 4 times a second, as before, cost
# ~20 ms of CPU each, reading and checking the whole checkpoint). It prints the end time, the
# peak RSS (KiB), the most entries held, the loop's shares, labels joined from memory
# (join.recent_bytes) / joined, and the worker's CPU seconds.
read -r end peak held loop_shares recent cpu_total cpu_threads < <("$py" - "$worker_pid" "$http_port" "$events" "$labels" <<'PY'
import sys, time, urllib.request
pid, port, events, labels = sys.argv[1:5]
events, labels = int(events), int(labels)
peak = held = 0
loop = {}
recent = "-"
while True:
    try:
        with open(f"/proc/{pid}/status") as f:
            peak = max(peak, next((int(l.split()[1]) for l in f if l.startswith("VmHWM")), 0))
    except OSError:
        sys.exit("worker exited before draining")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
        held = max(held, next((int(float(l.split()[1])) for l in text.splitlines()
                               if l.startswith("streamlr_join_store_entries ")), 0))
        loop = {l.split('"')[1]: float(l.split()[1]) for l in text.splitlines()
                if l.startswith("streamlr_loop_seconds_total{")}
        value = lambda name: next((int(float(l.split()[1])) for l in text.splitlines()
                                   if l.startswith(name + " ")), 0)
        joined = value('streamlr_labels_total{outcome="joined"}')
        recent = f"{value('streamlr_join_store_recent_joins_total')}/{joined}"
        covered = lambda t: sum(int(float(l.split()[1])) for l in text.splitlines()
                                if l.startswith(f'streamlr_checkpoint_offset{{topic="{t}",'))
        if covered("events") == events and covered("labels") == labels:
            break
    except Exception:
        pass
    time.sleep(0.25)
end = time.time()
total = sum(loop.values()) or 1.0
shares = ",".join(f"{k}={v / total:.0%}" for k, v in loop.items())
# CPU seconds (user + system) of the worker process so far, and by thread name: the main loop,
# fjall's workers (flushes, compactions), librdkafka's threads; the cut writers (one thread per
# cut) have exited and count in the total only. A second view for A/B comparisons (on this VM
# about as noisy as events/s: ±10 % between runs of one build).
import os
tick = os.sysconf("SC_CLK_TCK")
def cpu(stat_path):
    with open(stat_path) as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, (int(fields[11]) + int(fields[12])) / tick
_, total_cpu = cpu(f"/proc/{pid}/stat")
by_name = {}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        comm, secs = cpu(f"/proc/{pid}/task/{tid}/stat")
    except OSError:
        continue
    name = "main" if tid == pid else ("rdkafka" if comm.startswith("rdk:") else comm)
    by_name[name] = by_name.get(name, 0.0) + secs
by_name["exited"] = max(total_cpu - sum(by_name.values()), 0.0)
threads = ",".join(f"{k}={v:.1f}" for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v >= 0.05)
print(f"{end:.3f} {peak} {held} {shares or '-'} {recent} {total_cpu:.2f} {threads}")
PY
)
# Without DRAIN_ONLY: the latency phases; the summary leaves out what was not measured.
pass=${pass:-null}; lat=null; plat=null
if [ "$drain_only" != 1 ]; then
  worker_rate=$(python3 -c "print($events/($end-$start))")
  rate=$(python3 -c "print(round($worker_rate*$load))")
  lat=$("$ex/latency" "$bootstrap" "$rate" "$secs" predictions "${client[@]}")
  stop_tree "$worker_pid"; wait "$worker_pid" 2>/dev/null || true; worker_pid=""
  # The passthrough's latency at the same offered rate, from the end of the events topic.
  "$ex/passthrough" "$bootstrap" events passthrough-out 1000000000000 "${client[@]}" \
    group.id=streamlr-passthrough-live auto.offset.reset=latest >/dev/null 2>"$work/passthrough.log" &
  worker_pid=$!
  sleep 3
  plat=$("$ex/latency" "$bootstrap" "$rate" "$secs" passthrough-out "${client[@]}")
fi
python3 - "$pass" "$lat" "$plat" <<PY
import json, sys
p = json.loads(sys.argv[1]); l = json.loads(sys.argv[2]); pl = json.loads(sys.argv[3])
t = $end - $start; e = $events; r = $events + $labels
w = e / t
print(f"machine: $(nproc) cores, broker tansu (memory) on the same machine; {e} event records, {$labels} labels, $parts partitions; client extras: ${CLIENT:-none}"
      + ("" if p else "; drain only"))
if p:
    print(f"passthrough  {p['records_per_s']:>10,.0f} events/s  ({p['records']} records in {p['seconds']:.1f} s)")
print(f"worker       {w:>10,.0f} events/s  ({r/t:,.0f} records/s incl. labels, {t:.1f} s)"
      + (f"  ratio {w/p['records_per_s']:.2f}" if p else ""))
print(f"worker peak RSS {$peak/1024:.0f} MiB; most join entries held (as /metrics showed, sampled every ~0.3 s): {$held}")
print(f"worker CPU {$cpu_total:.1f} s ({$cpu_total * 1e6 / e:.1f} µs per event; by thread, s: $cpu_threads)")
print("worker loop's time by activity (streamlr_loop_seconds_total at the end of the drain, group join included): $loop_shares")
print("labels joined to an entry held in memory (join.recent_bytes) / all joined: $recent")
if l:
    print(f"latency at {l['rate']:.0f} events/s ({$load:.0%} of the worker's rate), {l['measured']} measured after warm-up: "
          f"p50 {l['p50_ms']:.2f} ms  p99 {l['p99_ms']:.2f} ms  p999 {l['p999_ms']:.2f} ms  max {l['max_ms']:.2f} ms")
    print(f"passthrough latency at the same rate, {pl['measured']} measured: "
          f"p50 {pl['p50_ms']:.2f} ms  p99 {pl['p99_ms']:.2f} ms  p999 {pl['p999_ms']:.2f} ms  max {pl['max_ms']:.2f} ms")
PY
