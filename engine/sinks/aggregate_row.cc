#include <simdjson.h>

#include "engine/sinks/sink.h"
#include "operators/strings.h"

namespace streammetrics {
namespace {

simdjson::dom::parser& Parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

absl::Status Missing(std::string_view field) {
  return absl::InvalidArgumentError(StrCat("aggregate: field ", field, " missing or of the wrong type"));
}

bool GetNumber(simdjson::dom::element doc, std::string_view field, double* out) {
  simdjson::dom::element e;
  if (doc[field].get(e)) return false;
  if (e.is_double()) return !e.get(*out);
  int64_t i;
  if (e.is_int64() && !e.get(i)) {
    *out = static_cast<double>(i);
    return true;
  }
  uint64_t u;
  if (e.is_uint64() && !e.get(u)) {
    *out = static_cast<double>(u);
    return true;
  }
  return false;
}

}  // namespace

absl::Status ParseAggregateRow(std::string_view json, AggregateRow* row) {
  simdjson::dom::element doc;
  if (Parser().parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("aggregate: not JSON");
  }
  std::string_view s;
  if (doc["serviceId"].get(s)) return Missing("serviceId");
  row->service_id.assign(s);
  if (doc["metricName"].get(s)) return Missing("metricName");
  row->metric_name.assign(s);
  if (doc["window"].get(s)) return Missing("window");
  row->window.assign(s);
  if (doc["windowStart"].get(row->window_start_ms)) return Missing("windowStart");
  if (doc["windowEnd"].get(row->window_end_ms)) return Missing("windowEnd");
  if (doc["count"].get(row->count)) return Missing("count");
  struct Field {
    const char* name;
    double* out;
  };
  for (const Field& f : {Field{"sum", &row->sum}, Field{"avg", &row->avg}, Field{"min", &row->min},
                         Field{"max", &row->max}, Field{"rate", &row->rate}}) {
    if (!GetNumber(doc, f.name, f.out)) return Missing(f.name);
  }
  struct Optional {
    const char* name;
    std::optional<double>* out;
  };
  for (const Optional& f : {Optional{"p50", &row->p50}, Optional{"p95", &row->p95},
                            Optional{"p99", &row->p99}}) {
    double v;
    if (GetNumber(doc, f.name, &v)) {
      *f.out = v;
    } else {
      f.out->reset();
    }
  }
  simdjson::dom::object tags;
  if (doc["tags"].get(tags) == simdjson::SUCCESS) {
    row->tags_json = simdjson::minify(tags);
  } else {
    row->tags_json = "{}";
  }
  return absl::OkStatus();
}

}  // namespace streammetrics
