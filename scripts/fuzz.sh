#!/usr/bin/env bash
# Fuzzes event decoding, label decoding and config parsing with cargo-fuzz (libFuzzer +
# AddressSanitizer), each target for SECONDS (default 600), from and into the corpus kept in
# fuzz/corpus/<target>. Exits non-zero on the first crash (the input lands in
# fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: event label config (default: all)
#
# Runs on the machine's stable toolchain: RUSTC_BOOTSTRAP=1 lets rustc take the -Z flags
# cargo-fuzz passes (sanitizer, coverage), so no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(event label config); fi
# Its own target directory: other RUSTFLAGS than the main build's.
target_dir="${FUZZ_TARGET_DIR:-/var/tmp/streamlr-fuzz-target}"
cd fuzz
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz $t for ${secs}s"
  mkdir -p "$target_dir"
  log="$target_dir/fuzz-$t.log"
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$target_dir" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -v -E '^#[0-9]+' "$log" | tail -n 80 >&2
    echo "fuzz $t: FAILED (the input is in fuzz/artifacts/$t; full log $log)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
