package streammetrics.peers;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.Stores;

/**
 * The engine's reference pipeline (config/reference.yaml) on Kafka Streams:
 *
 *   java -jar peer-kafka-streams.jar --bootstrap HOST:PORT --application-id ID
 *       [--input metrics-events] [--output-prefix P] [--threads 2] [--commit-ms 100]
 *       [--state-dir DIR] [--guarantee exactly_once_v2|at_least_once] [--percentiles true]
 *
 * reads --input, writes results to P + metrics-aggregated-{1m,5m,1m-10s} and dead letters
 * to P + metrics-dead-letter (the topics must exist); runs until SIGTERM, then prints its
 * counters. --percentiles false leaves out the t-digest (p50/p95/p99 null): not the
 * reference job, only to show what the percentiles cost.
 */
public final class MetricsApp {
  public static void main(String[] argv) throws Exception {
    Map<String, String> a = new HashMap<>();
    for (int i = 0; i + 1 < argv.length; i += 2) {
      if (!argv[i].startsWith("--")) throw new IllegalArgumentException("unexpected " + argv[i]);
      a.put(argv[i].substring(2), argv[i + 1]);
    }
    String prefix = a.getOrDefault("output-prefix", "");
    String input = a.getOrDefault("input", "metrics-events");
    WindowAgg.percentiles = Boolean.parseBoolean(a.getOrDefault("percentiles", "true"));

    Topology t = new Topology();
    t.addSource("source", Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer(), input);
    t.addProcessor("parse", Processors.Parse::new, "source");
    t.addProcessor("enrich", Processors.Enrich::new, "parse");
    t.addProcessor("dedupe", Processors.Dedupe::new, "enrich");
    t.addProcessor("aggregate", Processors.Aggregate::new, "dedupe");
    // State in RocksDB with changelogs, as the DSL's defaults; the aggregates' stores cached
    // as the DSL caches them.
    t.addStateStore(Stores.windowStoreBuilder(
        Stores.persistentWindowStore(Processors.Dedupe.STORE,
            Duration.ofMillis(Processors.DEDUPE_WITHIN_MS), Duration.ofMillis(Processors.DEDUPE_WITHIN_MS), false),
        Serdes.String(), Serdes.Long()), "dedupe");
    for (Processors.WindowDef d : Processors.WINDOWS) {
      // Retention: size + grace, and a minute more so that a window's segment is still
      // there when it closes and is read for its result.
      t.addStateStore(Stores.windowStoreBuilder(
          Stores.persistentWindowStore(d.store(), Duration.ofMillis(d.sizeMs() + d.graceMs() + 60_000),
              Duration.ofMillis(d.sizeMs()), false),
          Serdes.String(), WindowAgg.SERDE).withCachingEnabled(), "aggregate");
      t.addSink(d.sink(), prefix + "metrics-aggregated-" + d.name(),
          Serdes.String().serializer(), Serdes.String().serializer(), "aggregate");
    }
    t.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore(Processors.Aggregate.EMIT_STORE), Serdes.String(), Serdes.Long()),
        "aggregate");
    t.addSink(Processors.DEAD_LETTER, prefix + "metrics-dead-letter",
        Serdes.ByteArray().serializer(), Serdes.ByteArray().serializer(), "parse", "aggregate");

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.getOrDefault("application-id", "streammetrics-ks"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.getOrDefault("bootstrap", "127.0.0.1:9092"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.getOrDefault("threads", "2"));
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.getOrDefault("commit-ms", "100"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, a.getOrDefault("state-dir", "/tmp/peer-kafka-streams"));
    p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

    KafkaStreams streams = new KafkaStreams(t, p);
    CountDownLatch done = new CountDownLatch(1);
    streams.setStateListener((now, before) -> {
      System.err.println("kafka-streams: " + before + " -> " + now);
      if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) done.countDown();
    });
    AtomicBoolean stopping = new AtomicBoolean();
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      stopping.set(true);
      streams.close(Duration.ofSeconds(20));
      System.err.printf("kafka-streams counters: input %d, invalid %d, duplicates %d, late %d, results %d%n",
          Processors.INPUT.get(), Processors.INVALID.get(), Processors.DUPLICATES.get(),
          Processors.LATE.get(), Processors.RESULTS.get());
      System.err.flush();
    }));
    System.err.println("kafka-streams: pid " + ProcessHandle.current().pid() + ", topology\n" + t.describe());
    streams.start();
    done.await();
    // On SIGTERM the shutdown hook closes and exits; System.exit here would wait for it.
    if (!stopping.get()) System.exit(streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
  }
}
