# Sourced by scripts/quickstart.sh and scripts/soak.sh (from the repository root): a local
# broker with the worker's topics, and the shipped config pointed at it.

# local_broker OUT: starts a broker in OUT/broker (scripts/broker.sh: loopback, free port) and
# creates events and labels (3 partitions each), predictions (3) and dead-letter (1). Prints the
# bootstrap address.
local_broker() {
  local out=$1 bootstrap t
  bootstrap=$(scripts/broker.sh start "$out/broker")
  for t in events:3 labels:3 predictions:3 dead-letter:1; do
    scripts/broker.sh topic "$out/broker" "${t%%:*}" "${t##*:}" >/dev/null
  done
  echo "$bootstrap"
}

# local_config OUT BOOTSTRAP [SED ARGS...]: writes OUT/streamlr.toml, the shipped example pointed
# at BOOTSTRAP with its state in OUT/state (emptied), edited further by the extra sed arguments.
# The local broker joins a group much faster with short session timeouts (fine on loopback;
# production Kafka needs >= 6 s): SESSION_TIMEOUT_MS (default 2000) and HEARTBEAT_MS (default
# 300) set them; a loaded machine answers heartbeats late, so long runs want longer sessions.
local_config() {
  local out=$1 bootstrap=$2
  shift 2
  sed -e "s|^brokers = .*|brokers = \"$bootstrap\"|" \
      -e "s|^dir = \"state\"|dir = \"$out/state\"|" \
      -e "/^\[kafka.consumer\]/a \"session.timeout.ms\" = \"${SESSION_TIMEOUT_MS:-2000}\"" \
      -e "/^\[kafka.consumer\]/a \"heartbeat.interval.ms\" = \"${HEARTBEAT_MS:-300}\"" \
      "$@" configs/streamlr.toml >"$out/streamlr.toml"
  rm -rf "$out/state"
}
