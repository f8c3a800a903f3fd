#!/usr/bin/env bash
# The broker-restart test, outside the default test command: the packaged tansu keeps everything
# in memory, and building one with SQLite storage takes ~20 minutes on two cores. Builds tansu
# 0.6.0 with `--features dynostore,libsql` once into $TANSU_ROOT (default /var/tmp/tansu-sqlite),
# then runs tests/worker.rs `a_broker_restart_loses_nothing` against it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
root=${TANSU_ROOT:-/var/tmp/tansu-sqlite}
if [ ! -x "$root/bin/tansu" ]; then
  cargo install tansu --version 0.6.0 --features dynostore,libsql --locked --root "$root"
fi
STREAMLR_TANSU_PERSISTENT="$root/bin/tansu" cargo nextest run --locked --test worker \
  --run-ignored only --no-capture a_broker_restart_loses_nothing "$@"
