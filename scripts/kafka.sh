#!/usr/bin/env bash
# A real Apache Kafka (KRaft, combined broker+controller nodes) on loopback, for the tests
# and benchmarks. The jars come from Maven Central through Maven (scripts/kafka/pom.xml
# pins the version) into a cache; each start formats fresh storage in the directory given.
#
#   scripts/kafka.sh fetch                 the pinned Kafka's jars into the cache (idempotent)
#   scripts/kafka.sh start DIR [NODES]     format and start NODES nodes (1, default, or 3) in DIR
#                                          on free loopback ports; prints and writes
#                                          DIR/bootstrap ("127.0.0.1:PORT,...") once all serve
#   scripts/kafka.sh stop DIR              stop every node of DIR (SIGTERM, SIGKILL after 20 s)
#                                          and remove DIR
#   scripts/kafka.sh kill DIR NODE         kill -9 node NODE (1-based) and wait for it to end
#   scripts/kafka.sh restart DIR NODE      start node NODE again on its ports and storage
#   scripts/kafka.sh tool NAME ARGS...     Kafka's CLI tools from the same jars: topics,
#                                          consumer-groups, transactions, configs,
#                                          get-offsets, delete-records, console-consumer,
#                                          console-producer, dump-log
#
# Environment: SM_CACHE_DIR (default ~/.cache/streammetrics), KAFKA_HEAP_OPTS (default
# -Xms256m -Xmx1g a node).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
POM="$HERE/kafka/pom.xml"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${SM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streammetrics}"
LIBS="$CACHE/kafka-$VERSION/libs"
JAVA="${JAVA:-java}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  command -v "$JAVA" >/dev/null || die "java not found (apt-get install openjdk-17-jre-headless)"
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  echo "kafka.sh: fetching Kafka $VERSION's jars into $LIBS" >&2
  mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$LIBS" >&2 || die "maven could not fetch Kafka $VERSION"
  touch "$LIBS/.complete"
}

# A loopback port nothing listens on, below the kernel's ephemeral range (where other
# tests' servers take theirs), and not handed out earlier in this run.
declare -A TAKEN=()
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((10000 + RANDOM % 20000))
    [ -n "${TAKEN[$p]:-}" ] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      TAKEN[$p]=1
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

java_node() {  # DIR NODE: runs node NODE in the background, its pid into DIR/node-NODE/pid
  local dir="$1" node="$2" nd="$1/node-$2"
  # setsid and no inherited descriptors: the node outlives this script, and whoever ran
  # the script (ctest) does not wait for its output.
  setsid "$JAVA" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$nd/log4j2.yaml" \
    -cp "$LIBS/*" kafka.Kafka "$nd/server.properties" \
    </dev/null >"$nd/stdout" 2>&1 &
  echo $! >"$nd/pid"
}

wait_started() {  # DIR NODE...: until each node logged that it serves (90 s at most)
  local dir="$1"; shift
  local deadline=$((SECONDS + 90)) node
  for node in "$@"; do
    local nd="$dir/node-$node"
    until grep -q "Kafka Server started" "$nd/server.log" 2>/dev/null; do
      if ! kill -0 "$(cat "$nd/pid")" 2>/dev/null; then
        tail -n 30 "$nd/stdout" "$nd/server.log" >&2 2>/dev/null || true
        die "node $node exited while starting; logs in $nd"
      fi
      if ((SECONDS > deadline)); then
        tail -n 30 "$nd/server.log" >&2 2>/dev/null || true
        die "node $node did not start within 90 s; logs in $nd"
      fi
      sleep 0.1
    done
  done
}

start() {
  local dir="${1:?usage: kafka.sh start DIR [NODES]}" nodes="${2:-1}"
  [ "$nodes" = 1 ] || [ "$nodes" = 3 ] || die "NODES is 1 or 3, not $nodes"
  fetch
  [ -e "$dir/bootstrap" ] && die "$dir already holds a cluster (kafka.sh stop $dir first)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local started=$SECONDS
  local -a bports cports
  local voters="" bootstrap="" i
  for i in $(seq 1 "$nodes"); do
    bports[$i]=$(free_port)
    cports[$i]=$(free_port)
    voters+="${voters:+,}$i@127.0.0.1:${cports[$i]}"
    bootstrap+="${bootstrap:+,}127.0.0.1:${bports[$i]}"
  done
  local rf=$nodes min_isr=$((nodes == 3 ? 2 : 1))
  # A 16-byte cluster id, base64url without padding (22 characters), as KRaft wants; not
  # starting with '-' (1 start in 64), which the format tool's parser reads as an option.
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  done
  for i in $(seq 1 "$nodes"); do
    local nd="$dir/node-$i"
    mkdir -p "$nd/data"
    cat >"$nd/server.properties" <<EOF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${bports[$i]},CONTROLLER://127.0.0.1:${cports[$i]}
advertised.listeners=PLAINTEXT://127.0.0.1:${bports[$i]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$nd/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Tests compact small segments and expect the cleaner to get to them within seconds.
log.cleaner.backoff.ms=1000
# ... and retention to delete expired segments within a second or two.
log.retention.check.interval.ms=1000
EOF
    cat >"$nd/log4j2.yaml" <<EOF
Configuration:
  Appenders:
    File:
      name: file
      fileName: $nd/server.log
      PatternLayout: {pattern: "[%d] %p %m (%c)%n"}
  Loggers:
    Root: {level: INFO, AppenderRef: [{ref: file}]}
EOF
  done
  # Format every node's storage at once (a JVM each, ~3 s), then start them.
  local -a formats=()
  for i in $(seq 1 "$nodes"); do
    "$JAVA" -XX:TieredStopAtLevel=1 -Xshare:auto -cp "$LIBS/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$dir/node-$i/server.properties" >"$dir/node-$i/format.log" 2>&1 &
    formats+=($!)
  done
  for i in "${!formats[@]}"; do
    wait "${formats[$i]}" || { cat "$dir/node-$((i + 1))/format.log" >&2; die "format failed"; }
  done
  for i in $(seq 1 "$nodes"); do java_node "$dir" "$i"; done
  wait_started "$dir" $(seq 1 "$nodes")
  echo "$bootstrap" >"$dir/bootstrap"
  echo "kafka.sh: Kafka $VERSION, $nodes node(s) at $bootstrap, started in $((SECONDS - started)) s" >&2
  echo "$bootstrap"
}

node_pid() { cat "$1/node-$2/pid" 2>/dev/null || true; }

stop() {
  local dir="${1:?usage: kafka.sh stop DIR}" pid nd
  [ -d "$dir" ] || return 0
  for nd in "$dir"/node-*; do
    pid="$(cat "$nd/pid" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 20))
  for nd in "$dir"/node-*; do
    pid="$(cat "$nd/pid" 2>/dev/null || true)"
    [ -z "$pid" ] && continue
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
}

kill_node() {
  local dir="${1:?usage: kafka.sh kill DIR NODE}" node="${2:?usage: kafka.sh kill DIR NODE}" pid
  pid="$(node_pid "$dir" "$node")"
  [ -n "$pid" ] || die "no node $node in $dir"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

restart_node() {
  local dir="${1:?usage: kafka.sh restart DIR NODE}" node="${2:?usage: kafka.sh restart DIR NODE}"
  dir="$(cd "$dir" && pwd)"
  local pid nd="$dir/node-$node"
  [ -f "$nd/server.properties" ] || die "no node $node in $dir"
  pid="$(node_pid "$dir" "$node")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then die "node $node is running"; fi
  # Only this start's "started" line counts.
  [ -f "$nd/server.log" ] && mv "$nd/server.log" "$nd/server.log.$(date +%s%N)"
  java_node "$dir" "$node"
  wait_started "$dir" "$node"
}

tool() {
  local name="${1:?usage: kafka.sh tool NAME ARGS...}" class
  shift
  case "$name" in
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    transactions) class=org.apache.kafka.tools.TransactionsCommand ;;
    configs) class=kafka.admin.ConfigCommand ;;
    get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    delete-records) class=org.apache.kafka.tools.DeleteRecordsCommand ;;
    console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
    dump-log) class=kafka.tools.DumpLogSegments ;;
    *) die "unknown tool $name" ;;
  esac
  fetch
  exec "$JAVA" -XX:TieredStopAtLevel=1 -Dlog4j2.level=WARN -cp "$LIBS/*" "$class" "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  fetch) fetch; echo "$LIBS" ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  kill) kill_node "$@" ;;
  restart) restart_node "$@" ;;
  tool) tool "$@" ;;
  *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
