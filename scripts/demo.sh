#!/usr/bin/env bash
# Quick start (offline): builds streamlr, generates a fraud-like stream with delayed labels and
# an abrupt drift, replays it through the learner and prints the report.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/demo}
mkdir -p "$out"
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/streamlr
"$bin" simulate --events-out "$out/events.jsonl" --labels-out "$out/labels.jsonl" \
  --count 300000 --drift-at 150000 --malformed-rate 0.001
"$bin" replay --config configs/streamlr.toml --events "$out/events.jsonl" --labels "$out/labels.jsonl" \
  --predictions "$out/predictions.jsonl" --report "$out/report.json"
cat "$out/report.json"
