#!/usr/bin/env bash
# Quick start: from nothing to a running worker on a local broker.
#   1. installs what is needed (scripts/install.sh) and builds streamlr (release);
#   2. starts the local Kafka-protocol broker (tansu, loopback, free port) and creates the topics;
#   3. produces paced fraud-like traffic with delayed labels (streamlr simulate --pace);
#   4. runs the worker in the foreground: every 10 s it logs events/s, labels joined, log loss,
#      AUC and the model version; every checkpoint is logged too.
# Ctrl-C stops the worker gracefully (final checkpoint), then the generator and the broker (by
# their pids). State, config and logs stay in out/quickstart (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/quickstart}
mkdir -p "$out"
out=$(cd "$out" && pwd)

scripts/install.sh
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/streamlr

sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  scripts/broker.sh stop "$out/broker"
}
trap cleanup EXIT

source scripts/local_stack.sh
bootstrap=$(local_broker "$out")
echo "broker on $bootstrap; topics events, labels (3 partitions each), predictions, dead-letter"
# The shipped example, pointed at this broker and state directory.
local_config "$out" "$bootstrap"

# 2000 events/s of wall-clock time; labels 5 s to 2 min after their event; drift at event 600k.
"$bin" simulate --brokers "$bootstrap" --pace --rate 2000 --count 2000000 --drift-at 600000 \
  --label-delay-min 5s --label-delay-max 2m --malformed-rate 0.001 2>"$out/simulate.log" &
sim_pid=$!
echo "simulate producing 2000 events/s (log: $out/simulate.log); starting the worker - Ctrl-C to stop"
echo "live metrics: curl -s http://127.0.0.1:9898/metrics | grep ^streamlr_   (readiness: /readyz)"
"$bin" run --config "$out/streamlr.toml" &
worker_pid=$!
# Ctrl-C / SIGTERM go to the worker, which drains and writes its final checkpoint; only then are
# the generator and the broker stopped (EXIT trap).
trap 'kill -INT "$worker_pid" 2>/dev/null || true' INT TERM
while kill -0 "$worker_pid" 2>/dev/null; do wait "$worker_pid" || true; done
