#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the whole suite with
# cargo-nextest, which prints its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
cargo nextest run --workspace --lib --bins --tests --locked --no-fail-fast "$@"
