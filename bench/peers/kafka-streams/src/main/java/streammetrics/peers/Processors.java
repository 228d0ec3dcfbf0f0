package streammetrics.peers;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.state.WindowStoreIterator;

/**
 * The reference pipeline's steps (config/reference.yaml), each a Kafka Streams processor:
 * parse and validate, enrich, dedupe, and the windowed aggregate that emits each window
 * once, when it closes. Semantics as docs/SEMANTICS.md gives them for the engine.
 */
final class Processors {
  private Processors() {}

  static final String DEAD_LETTER = "dead-letter";
  static final long MAX_FUTURE_SKEW_MS = 5 * 60_000;
  static final long DEDUPE_WITHIN_MS = 10 * 60_000;

  static final AtomicLong INPUT = new AtomicLong();
  static final AtomicLong INVALID = new AtomicLong();
  static final AtomicLong DUPLICATES = new AtomicLong();
  static final AtomicLong LATE = new AtomicLong();
  static final AtomicLong RESULTS = new AtomicLong();

  private static final ObjectReader READER = JsonMapper.builder()
      .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS)
      .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
      .build()
      .readerFor(MetricEvent.class);

  private static final Set<String> METRIC_TYPES = Set.of(
      "HTTP_REQUEST", "DATABASE_QUERY", "CACHE_HIT", "CACHE_MISS", "EXTERNAL_API_CALL",
      "MESSAGE_QUEUE_PUBLISH", "MESSAGE_QUEUE_CONSUME", "CUSTOM_COUNTER", "CUSTOM_GAUGE",
      "CUSTOM_HISTOGRAM");

  /** A dead letter: the input record's key and value, unchanged, with dlq.* headers. */
  static Record<byte[], byte[]> deadLetter(byte[] key, byte[] value, long timestamp, String topic,
                                           int partition, long offset, String reason, String error) {
    RecordHeaders h = new RecordHeaders();
    h.add("dlq.reason", reason.getBytes(StandardCharsets.UTF_8));
    h.add("dlq.error", error.getBytes(StandardCharsets.UTF_8));
    h.add("dlq.topic", topic.getBytes(StandardCharsets.UTF_8));
    h.add("dlq.partition", Integer.toString(partition).getBytes(StandardCharsets.UTF_8));
    h.add("dlq.offset", Long.toString(offset).getBytes(StandardCharsets.UTF_8));
    h.add("dlq.timestamp", Long.toString(timestamp).getBytes(StandardCharsets.UTF_8));
    return new Record<>(key, value, timestamp, h);
  }

  private static String checkText(String field, String v, int maxBytes) {
    if (v == null) return field + ": is required";
    if (v.isBlank()) return field + ": must not be blank";
    if (v.length() > maxBytes && v.getBytes(StandardCharsets.UTF_8).length > maxBytes) {
      return field + ": longer than " + maxBytes + " bytes";
    }
    return null;
  }

  /** validation: reference/002's rules, value > 0, at most 5 min ahead of the clock. */
  static String validate(MetricEvent e, long nowMs) {
    String err;
    if ((err = checkText("eventId", e.eventId, 256)) != null) return err;
    if ((err = checkText("serviceId", e.serviceId, 100)) != null) return err;
    if ((err = checkText("instanceId", e.instanceId, 256)) != null) return err;
    if ((err = checkText("metricName", e.metricName, 200)) != null) return err;
    if (e.metricType == null) return "metricType: is required";
    if (e.timestamp == null) return "timestamp: is required";
    if (e.value == null) return "value: is required";
    double v = e.value;
    if (!Double.isFinite(v)) return "value: must be finite";
    if (v <= 0) return "value: must be > 0, got " + v;
    if (e.timestamp > nowMs + MAX_FUTURE_SKEW_MS) return "timestamp: too far ahead of the clock";
    return null;
  }

  /** JSON -> MetricEvent, validated; anything else is dead-lettered. */
  static final class Parse implements Processor<byte[], byte[], Object, Object> {
    private ProcessorContext<Object, Object> ctx;

    @Override
    public void init(ProcessorContext<Object, Object> context) {
      ctx = context;
    }

    @Override
    public void process(Record<byte[], byte[]> r) {
      INPUT.incrementAndGet();
      RecordMetadata m = ctx.recordMetadata().orElseThrow();
      MetricEvent e = null;
      String reason = "deserialization", error = null;
      try {
        e = r.value() == null ? null : READER.readValue(r.value());
        if (e == null) {
          error = "not a JSON object";
        } else if (e.metricType != null && !METRIC_TYPES.contains(e.metricType)) {
          error = "metricType: unknown value";
        } else {
          reason = "validation";
          error = validate(e, System.currentTimeMillis());
        }
      } catch (Exception ex) {
        error = "invalid JSON: " + ex.getClass().getSimpleName();
      }
      if (error != null) {
        INVALID.incrementAndGet();
        ctx.forward(deadLetter(r.key(), r.value(), r.timestamp(), m.topic(), m.partition(),
            m.offset(), reason, error), DEAD_LETTER);
        return;
      }
      e.rawKey = r.key();
      e.rawValue = r.value();
      e.rawTimestamp = r.timestamp();
      e.rawTopic = m.topic();
      e.rawPartition = m.partition();
      e.rawOffset = m.offset();
      // Event time from here on.
      ctx.forward(new Record<Object, Object>(r.key(), e, e.timestamp), "enrich");
    }
  }

  /** enrich: statusClass and isError from tags.statusCode, team and tier by serviceId. */
  static final class Enrich implements Processor<Object, MetricEvent, Object, MetricEvent> {
    private static final String[] CLASSES = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    private static final Map<String, String[]> TABLE = Map.of(
        "payment-service", new String[] {"payments", "1"},
        "order-service", new String[] {"commerce", "1"},
        "user-service", new String[] {"identity", "2"},
        "inventory-service", new String[] {"commerce", "2"},
        "search-service", new String[] {"discovery", "2"},
        "notification-service", new String[] {"messaging", "3"});
    private static final String[] DEFAULT = {"unknown", "3"};
    private ProcessorContext<Object, MetricEvent> ctx;

    @Override
    public void init(ProcessorContext<Object, MetricEvent> context) {
      ctx = context;
    }

    @Override
    public void process(Record<Object, MetricEvent> r) {
      MetricEvent e = r.value();
      int code = 0;
      String s = e.tags == null ? null : e.tags.get("statusCode");
      if (s != null) {
        try {
          code = Integer.parseInt(s);
        } catch (NumberFormatException ex) {
          code = 0;
        }
      }
      if (code >= 100 && code <= 599) e.statusClass = CLASSES[code / 100 - 1];
      e.isError = code >= 500 || (e.tags != null && "true".equals(e.tags.get("error")));
      String[] row = TABLE.getOrDefault(e.serviceId, DEFAULT);
      e.team = row[0];
      e.tier = row[1];
      ctx.forward(r);
    }
  }

  /**
   * dedupe: drops an event whose eventId was first seen within 10 min of stream time (the
   * largest event time this processor was given). Ids in a window store (RocksDB, with a
   * changelog), each at the stream time it was first seen; the store drops them by time.
   */
  static final class Dedupe implements Processor<Object, MetricEvent, Object, MetricEvent> {
    static final String STORE = "dedupe-ids";
    private ProcessorContext<Object, MetricEvent> ctx;
    private WindowStore<String, Long> ids;
    private long streamTime = Long.MIN_VALUE;

    @Override
    public void init(ProcessorContext<Object, MetricEvent> context) {
      ctx = context;
      ids = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<Object, MetricEvent> r) {
      if (r.timestamp() > streamTime) streamTime = r.timestamp();
      String id = r.value().eventId;
      try (WindowStoreIterator<Long> it = ids.fetch(id, streamTime - DEDUPE_WITHIN_MS + 1, streamTime)) {
        if (it.hasNext()) {
          DUPLICATES.incrementAndGet();
          return;
        }
      }
      ids.put(id, streamTime, streamTime);
      ctx.forward(r);
    }
  }

  /** A window definition of reference/001. */
  record WindowDef(String name, long sizeMs, long advanceMs, long graceMs, String store, String sink) {
    long latestStart(long ts) {
      return Math.floorDiv(ts, advanceMs) * advanceMs;
    }

    long closeTime(long start) {
      return start + sizeMs + graceMs;
    }
  }

  static final WindowDef[] WINDOWS = {
      new WindowDef("1m", 60_000, 60_000, 10_000, "agg-1m", "out-1m"),
      new WindowDef("5m", 300_000, 300_000, 10_000, "agg-5m", "out-5m"),
      new WindowDef("1m-10s", 60_000, 10_000, 10_000, "agg-1m-10s", "out-1m-10s"),
  };

  /**
   * The windowed aggregate grouped by (serviceId, metricName), as the DSL's
   * windowedBy(...).aggregate(...) does it — per event, each window that contains it is
   * read from its window store, updated and written back — with
   * emitStrategy(onWindowClose)'s output: each window once, when stream time (the largest
   * event time given to this processor) reaches its end + grace. Events late for every
   * window are dead-lettered. No repartition: the input is keyed (so partitioned) by
   * serviceId, and every group of a service is in its partition.
   */
  static final class Aggregate implements Processor<Object, MetricEvent, Object, Object> {
    static final String EMIT_STORE = "agg-emitted";
    private ProcessorContext<Object, Object> ctx;
    private final WindowStore<String, WindowAgg>[] stores = newStores();
    private KeyValueStore<String, Long> emitted;
    private final long[] nextStart = new long[WINDOWS.length];
    private long streamTime = Long.MIN_VALUE;
    private final StringBuilder json = new StringBuilder(256);

    @SuppressWarnings("unchecked")
    private static WindowStore<String, WindowAgg>[] newStores() {
      return (WindowStore<String, WindowAgg>[]) new WindowStore[WINDOWS.length];
    }

    @Override
    public void init(ProcessorContext<Object, Object> context) {
      ctx = context;
      emitted = context.getStateStore(EMIT_STORE);
      for (int w = 0; w < WINDOWS.length; ++w) {
        stores[w] = context.getStateStore(WINDOWS[w].store());
        Long next = emitted.get(WINDOWS[w].name());
        nextStart[w] = next == null ? Long.MIN_VALUE : next;
      }
      Long st = emitted.get("streamTime");
      if (st != null) streamTime = st;
    }

    @Override
    public void process(Record<Object, MetricEvent> r) {
      MetricEvent e = r.value();
      long ts = r.timestamp();
      if (ts > streamTime) streamTime = ts;
      String key = e.serviceId + '\u0000' + e.metricName;
      double v = e.value;
      int late = 0;
      for (int w = 0; w < WINDOWS.length; ++w) {
        WindowDef d = WINDOWS[w];
        long latest = d.latestStart(ts);
        if (d.closeTime(latest) <= streamTime) {
          ++late;
          continue;
        }
        WindowStore<String, WindowAgg> store = stores[w];
        for (long s = latest - d.sizeMs() + d.advanceMs(); s <= latest; s += d.advanceMs()) {
          if (d.closeTime(s) <= streamTime) continue;  // closed (emitted) already
          WindowAgg a = store.fetch(key, s);
          if (a == null) a = new WindowAgg();
          a.add(v);
          store.put(key, a, s);
          if (nextStart[w] == Long.MIN_VALUE || s < nextStart[w]) nextStart[w] = s;
        }
      }
      if (late == WINDOWS.length) {
        LATE.incrementAndGet();
        ctx.forward(deadLetter(e.rawKey, e.rawValue, e.rawTimestamp, e.rawTopic, e.rawPartition,
            e.rawOffset, "late", "late: every window containing the event has closed"), DEAD_LETTER);
        return;
      }
      emitClosed();
    }

    private void emitClosed() {
      boolean any = false;
      for (int w = 0; w < WINDOWS.length; ++w) {
        WindowDef d = WINDOWS[w];
        if (nextStart[w] == Long.MIN_VALUE || d.closeTime(nextStart[w]) > streamTime) continue;
        long lastClosed = Math.floorDiv(streamTime - d.sizeMs() - d.graceMs(), d.advanceMs()) * d.advanceMs();
        try (KeyValueIterator<Windowed<String>, WindowAgg> it = stores[w].fetchAll(nextStart[w], lastClosed)) {
          while (it.hasNext()) {
            KeyValue<Windowed<String>, WindowAgg> kv = it.next();
            emit(d, kv.key.key(), kv.key.window().start(), kv.value);
          }
        }
        nextStart[w] = lastClosed + d.advanceMs();
        emitted.put(d.name(), nextStart[w]);
        any = true;
      }
      if (any) emitted.put("streamTime", streamTime);
    }

    private void emit(WindowDef d, String groupKey, long start, WindowAgg a) {
      int cut = groupKey.indexOf('\u0000');
      String service = groupKey.substring(0, cut), metric = groupKey.substring(cut + 1);
      long end = start + d.sizeMs();
      StringBuilder b = json;
      b.setLength(0);
      b.append("{\"serviceId\":");
      appendString(b, service);
      b.append(",\"metricName\":");
      appendString(b, metric);
      b.append(",\"window\":\"").append(d.name()).append("\",\"windowStart\":").append(start)
          .append(",\"windowEnd\":").append(end).append(",\"count\":").append(a.count)
          .append(",\"sum\":").append(a.sum).append(",\"avg\":").append(a.sum / a.count)
          .append(",\"min\":").append(a.min).append(",\"max\":").append(a.max)
          .append(",\"p50\":").append(json(a.quantile(0.5)))
          .append(",\"p95\":").append(json(a.quantile(0.95)))
          .append(",\"p99\":").append(json(a.quantile(0.99)))
          .append(",\"rate\":").append(a.count / (d.sizeMs() / 1000.0))
          .append(",\"tags\":{}}");
      RESULTS.incrementAndGet();
      ctx.forward(new Record<Object, Object>(service, b.toString(), end - 1), d.sink());
    }

    private static String json(double v) {
      return Double.isFinite(v) ? Double.toString(v) : "null";
    }

    private static void appendString(StringBuilder b, String s) {
      b.append('"');
      for (int i = 0; i < s.length(); ++i) {
        char c = s.charAt(i);
        if (c == '"' || c == '\\') {
          b.append('\\').append(c);
        } else if (c < 0x20) {
          b.append(String.format("\\u%04x", (int) c));
        } else {
          b.append(c);
        }
      }
      b.append('"');
    }
  }
}
