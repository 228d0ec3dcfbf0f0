package streammetrics.peers;

import com.fasterxml.jackson.annotation.JsonAlias;
import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.annotation.JsonDeserialize;
import java.io.IOException;
import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.util.Map;

/**
 * reference/002's MetricEvent as the engine decodes it: camelCase or snake_case names,
 * unknown members ignored, null means absent; {@code timestamp} is epoch milliseconds
 * (an integer), epoch seconds (a number with a fraction) or an RFC 3339 string.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public final class MetricEvent {
  @JsonAlias("event_id") public String eventId;
  @JsonDeserialize(using = TimestampDeserializer.class) public Long timestamp;
  @JsonAlias("service_id") public String serviceId;
  @JsonAlias("instance_id") public String instanceId;
  @JsonAlias("metric_type") public String metricType;
  @JsonAlias("metric_name") public String metricName;
  public Double value;
  public String unit;
  public Map<String, String> tags;
  public Map<String, String> metadata;

  // Set by enrich.
  public String statusClass;
  public boolean isError;
  public String team;
  public String tier;

  // The input record, for dead letters further down.
  public transient byte[] rawKey;
  public transient byte[] rawValue;
  public transient long rawTimestamp;
  public transient String rawTopic;
  public transient int rawPartition;
  public transient long rawOffset;

  /** Epoch ms from an integer (ms), a fractional number (seconds) or an RFC 3339 string. */
  public static final class TimestampDeserializer extends JsonDeserializer<Long> {
    @Override
    public Long deserialize(JsonParser p, DeserializationContext ctxt) throws IOException {
      JsonToken t = p.currentToken();
      if (t == JsonToken.VALUE_NUMBER_INT) return p.getLongValue();
      if (t == JsonToken.VALUE_NUMBER_FLOAT) {
        return p.getDecimalValue().multiply(BigDecimal.valueOf(1000)).longValue();
      }
      if (t == JsonToken.VALUE_STRING) {
        return OffsetDateTime.parse(p.getText()).toInstant().toEpochMilli();
      }
      throw ctxt.wrongTokenException(p, Long.class, JsonToken.VALUE_NUMBER_INT, "timestamp");
    }
  }
}
