package streammetrics.peers;

import com.tdunning.math.stats.MergingDigest;
import java.nio.ByteBuffer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/** One window's aggregate for one group key: count, sum, min, max and a t-digest. */
public final class WindowAgg {
  public static final double COMPRESSION = 100;
  /** --percentiles false: no t-digest (for context only: not the reference job). */
  static volatile boolean percentiles = true;

  long count;
  double sum;
  double min = Double.POSITIVE_INFINITY;
  double max = Double.NEGATIVE_INFINITY;
  MergingDigest digest;

  WindowAgg() {
    digest = percentiles ? new MergingDigest(COMPRESSION) : null;
  }

  private WindowAgg(MergingDigest digest) {
    this.digest = digest;
  }

  void add(double v) {
    ++count;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
    if (digest != null) digest.add(v);
  }

  double quantile(double q) {
    return digest == null ? Double.NaN : digest.quantile(q);
  }

  /** count, sum, min, max, then the digest's own encoding (MergingDigest.asBytes). */
  static final Serializer<WindowAgg> SERIALIZER = (topic, a) -> {
    if (a == null) return null;
    ByteBuffer buf = ByteBuffer.allocate(32 + (a.digest == null ? 0 : a.digest.byteSize()));
    buf.putLong(a.count).putDouble(a.sum).putDouble(a.min).putDouble(a.max);
    if (a.digest != null) a.digest.asBytes(buf);
    return buf.array();
  };

  static final Deserializer<WindowAgg> DESERIALIZER = (topic, bytes) -> {
    if (bytes == null) return null;
    ByteBuffer buf = ByteBuffer.wrap(bytes);
    long count = buf.getLong();
    double sum = buf.getDouble(), min = buf.getDouble(), max = buf.getDouble();
    WindowAgg a = new WindowAgg(buf.hasRemaining() ? MergingDigest.fromBytes(buf) : null);
    a.count = count;
    a.sum = sum;
    a.min = min;
    a.max = max;
    return a;
  };

  static final Serde<WindowAgg> SERDE = Serdes.serdeFrom(SERIALIZER, DESERIALIZER);
}
