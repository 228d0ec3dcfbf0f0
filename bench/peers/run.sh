#!/usr/bin/env bash
# StreamMetrics beside Kafka Streams 4.1.1 on one real Kafka broker (bench/peers/README.md).
#
#   bash bench/peers/run.sh [--events N (3000000)] [--partitions P (12)]
#        [--event-rate E (5000)] [--latency-rate R (2000)] [--latency-seconds S (90)]
#        [--skip-latency] [--skip-context]
#
# One invocation: starts a one-node KRaft broker (scripts/kafka.sh) on loopback; fills
# one input topic (N events, P partitions, lz4, event time E events a second); drains it
# with the engine (build/apps/streammetrics run, exactly_once_v2, 2 stream threads,
# commits every 100 ms, RocksDB) and then with the Kafka Streams app
# (bench/peers/kafka-streams, the same settings), each in its own process with a fresh
# application id, watched from outside the same way (peer_bench watch); checks that both
# wrote the same window results (peer_bench compare); for context, drains it once more
# with Kafka Streams without percentiles (not the same job: no t-digest; --skip-context
# leaves it out); then the emit latency of each at R events a second (peer_bench
# latency); prints a table; stops the broker. BUILD_DIR (default build) holds
# streammetrics and peer_bench.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
EVENTS=3000000 PARTITIONS=12 EVENT_RATE=5000 LAT_RATE=2000 LAT_SECONDS=90 LATENCY=1 CONTEXT=1
while (($#)); do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --partitions) PARTITIONS="$2"; shift 2 ;;
    --event-rate) EVENT_RATE="$2"; shift 2 ;;
    --latency-rate) LAT_RATE="$2"; shift 2 ;;
    --latency-seconds) LAT_SECONDS="$2"; shift 2 ;;
    --skip-latency) LATENCY=0; shift ;;
    --skip-context) CONTEXT=0; shift ;;
    *) sed -n '2,18p' "$0" >&2; exit 2 ;;
  esac
done

SM="$BUILD/apps/streammetrics" PB="$BUILD/bench/peer_bench"
JAR="$ROOT/bench/peers/kafka-streams/target/peer-kafka-streams.jar"
[ -x "$SM" ] && [ -x "$PB" ] || { echo "run.sh: build streammetrics and peer_bench first (cmake --build $BUILD --target streammetrics peer_bench)" >&2; exit 1; }
if [ ! -f "$JAR" ] || [ -n "$(find "$ROOT/bench/peers/kafka-streams/src" "$ROOT/bench/peers/kafka-streams/pom.xml" -newer "$JAR" 2>/dev/null)" ]; then
  (cd "$ROOT/bench/peers/kafka-streams" && { mvn -q -B -o package 2>/dev/null || mvn -q -B package; })
fi

WORK="$(mktemp -d /tmp/sm-peers.XXXXXX)"
KAFKA_DIR="$WORK/kafka"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bash "$ROOT/scripts/kafka.sh" stop "$KAFKA_DIR" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"
BOOT="$(bash "$ROOT/scripts/kafka.sh" start "$KAFKA_DIR" 1)"
RUN="$(date +%s)"
echo "broker at $BOOT; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

topics_for() {  # PREFIX: the app's output topics (3 partitions, as reference/001's)
  local p="$1"
  echo "${p}metrics-aggregated-1m:3,${p}metrics-aggregated-5m:3,${p}metrics-aggregated-1m-10s:3,${p}metrics-dead-letter:3"
}
"$PB" topics --bootstrap "$BOOT" --create "$(topics_for sm.),$(topics_for ks.),$(topics_for sm-lat.),$(topics_for ks-lat.),$(topics_for ksnp.),peer-latency-sm:$PARTITIONS,peer-latency-ks:$PARTITIONS"
"$PB" fill --bootstrap "$BOOT" --topic peer-input --partitions "$PARTITIONS" --events "$EVENTS" --compression lz4 --event-rate "$EVENT_RATE"

engine_config() {  # APP_ID INPUT PREFIX: config/reference.yaml's job, on this broker
  cat <<EOF
application: {id: $1}
topics: {input: $2, dead_letter: ${3}metrics-dead-letter}
input: {format: json}
validation: {value_min: 0, max_future_skew: 5m}
enrich:
  derive: [statusClass, isError]
  lookup:
    key: serviceId
    table:
      payment-service:      {team: payments, tier: "1"}
      order-service:        {team: commerce, tier: "1"}
      user-service:         {team: identity, tier: "2"}
      inventory-service:    {team: commerce, tier: "2"}
      search-service:       {team: discovery, tier: "2"}
      notification-service: {team: messaging, tier: "3"}
    default: {team: unknown, tier: "3"}
dedupe: {within: 10m}
aggregate:
  group_by: [serviceId, metricName]
  quantiles: [0.5, 0.95, 0.99]
  compression: 100
  late_to_dead_letter: true
  store: rocksdb
  idle_close: "off"
  windows:
    - {name: 1m, type: tumbling, size: 1m, grace: 10s, topic: ${3}metrics-aggregated-1m}
    - {name: 5m, type: tumbling, size: 5m, grace: 10s, topic: ${3}metrics-aggregated-5m}
    - {name: 1m-10s, type: hopping, size: 1m, advance: 10s, grace: 10s, topic: ${3}metrics-aggregated-1m-10s}
processing: {guarantee: exactly_once_v2, threads: 2, commit_interval: 100ms}
state: {dir: $WORK/state-$1}
kafka: {bootstrap.servers: "$BOOT"}
EOF
}

start_engine() {  # APP_ID INPUT PREFIX; sets APP_PID
  engine_config "$1" "$2" "$3" >"$WORK/$1.yaml"
  "$SM" run --config "$WORK/$1.yaml" --quiet true >"$WORK/$1.log" 2>&1 &
  APP_PID=$!
  PIDS+=("$APP_PID")
}
start_ks() {  # APP_ID INPUT PREFIX [ARGS...]; sets APP_PID
  java -Xms1g -Xmx4g ${KS_JAVA_OPTS:-} -jar "$JAR" --bootstrap "$BOOT" --application-id "$1" --input "$2" \
    --output-prefix "$3" --threads 2 --commit-ms 100 --guarantee exactly_once_v2 \
    --state-dir "$WORK/state-$1" "${@:4}" >"$WORK/$1.log" 2>&1 &
  APP_PID=$!
  PIDS+=("$APP_PID")
}
stop_app() {  # PID
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

echo "== drain: engine (exactly_once_v2)"
start_engine sm-drain peer-input sm.
SM_DRAIN="$("$PB" watch --bootstrap "$BOOT" --group sm-drain --topic peer-input --pid "$APP_PID" --broker-pid "$(cat "$KAFKA_DIR/node-1/pid")")"
echo "$SM_DRAIN"
stop_app "$APP_PID"

echo "== drain: Kafka Streams (exactly_once_v2)"
start_ks ks-drain peer-input ks.
KS_DRAIN="$("$PB" watch --bootstrap "$BOOT" --group ks-drain --topic peer-input --pid "$APP_PID" --broker-pid "$(cat "$KAFKA_DIR/node-1/pid")")"
echo "$KS_DRAIN"
stop_app "$APP_PID"
grep -h "kafka-streams counters" "$WORK/ks-drain.log" || true

echo "== same results?"
COMPARE=0
"$PB" compare --bootstrap "$BOOT" --a sm. --b ks. || COMPARE=$?

KSNP_DRAIN=""
if ((CONTEXT)); then
  echo "== drain: Kafka Streams without percentiles (context: not the same job)"
  start_ks ksnp-drain peer-input ksnp. --percentiles false
  KSNP_DRAIN="$("$PB" watch --bootstrap "$BOOT" --group ksnp-drain --topic peer-input --pid "$APP_PID" --broker-pid "$(cat "$KAFKA_DIR/node-1/pid")")"
  echo "$KSNP_DRAIN"
  stop_app "$APP_PID"
fi

declare -A LAT=()
if ((LATENCY)); then
  for app in sm ks; do
    echo "== latency: $app at $LAT_RATE events/s for $LAT_SECONDS s"
    if [ "$app" = sm ]; then start_engine sm-lat peer-latency-sm sm-lat.; else start_ks ks-lat peer-latency-ks ks-lat.; fi
    LAT[$app]="$("$PB" latency --bootstrap "$BOOT" --input "peer-latency-$app" \
      --results "$app-lat.metrics-aggregated-1m-10s" --rate "$LAT_RATE" --seconds "$LAT_SECONDS" \
      --warmup 30 --group "$app-lat" --partitions "$PARTITIONS" || true)"
    echo "${LAT[$app]}"
    stop_app "$APP_PID"
  done
fi

echo
echo "Kafka Streams side by side: $EVENTS events, $PARTITIONS partitions (lz4), exactly_once_v2, 2 stream threads, commit 100 ms, RocksDB; started $STARTED, $(( $(date +%s) - RUN )) s"
printf '| %-28s | %12s | %12s |\n' "" "StreamMetrics" "Kafka Streams"
printf '| %-28s | %12s | %12s |\n' "---" "---" "---"
row() { printf '| %-28s | %12s | %12s |\n' "$1" "$2" "$3"; }
row "drain events/s (settled)" "$(field "$SM_DRAIN" events_per_s)" "$(field "$KS_DRAIN" events_per_s)"
row "CPU per event (process, us)" "$(field "$SM_DRAIN" cpu_us_per_event)" "$(field "$KS_DRAIN" cpu_us_per_event)"
row "cores used" "$(field "$SM_DRAIN" cores)" "$(field "$KS_DRAIN" cores)"
row "events/s per core" "$(field "$SM_DRAIN" events_per_s_per_core)" "$(field "$KS_DRAIN" events_per_s_per_core)"
row "whole drain events/s" "$(field "$SM_DRAIN" whole_events_per_s)" "$(field "$KS_DRAIN" whole_events_per_s)"
row "whole drain CPU/event (us)" "$(field "$SM_DRAIN" whole_cpu_us_per_event)" "$(field "$KS_DRAIN" whole_cpu_us_per_event)"
row "broker CPU/event (us)" "$(field "$SM_DRAIN" broker_cpu_us_per_event)" "$(field "$KS_DRAIN" broker_cpu_us_per_event)"
row "peak RSS (MiB)" "$(field "$SM_DRAIN" peak_rss_mib)" "$(field "$KS_DRAIN" peak_rss_mib)"
if ((LATENCY)); then
  row "latency p50 @${LAT_RATE}/s (ms)" "$(field "${LAT[sm]}" p50_ms)" "$(field "${LAT[ks]}" p50_ms)"
  row "latency p99 @${LAT_RATE}/s (ms)" "$(field "${LAT[sm]}" p99_ms)" "$(field "${LAT[ks]}" p99_ms)"
fi
if [ -n "$KSNP_DRAIN" ]; then
  echo "Context, Kafka Streams without percentiles (no t-digest; not the reference job): $(field "$KSNP_DRAIN" events_per_s) events/s, $(field "$KSNP_DRAIN" cpu_us_per_event) us CPU per event, $(field "$KSNP_DRAIN" cores) cores, $(field "$KSNP_DRAIN" events_per_s_per_core) events/s per core"
fi
SMC="$(field "$SM_DRAIN" events_per_s_per_core)" KSC="$(field "$KS_DRAIN" events_per_s_per_core)"
if [ -n "$SMC" ] && [ -n "$KSC" ]; then
  awk -v a="$SMC" -v b="$KSC" 'BEGIN { printf "events/s per core, StreamMetrics / Kafka Streams: %.1fx\n", a / b }'
fi
echo "results compared: $([ "$COMPARE" = 0 ] && echo same || echo DIFFERENT)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$COMPARE"
