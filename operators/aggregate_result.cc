#include "operators/strings.h"
#include "operators/aggregate_result.h"

#include <charconv>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "operators/metric_event_codec.h"

namespace streammetrics {

std::string QuantileName(double q) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), q * 100);
  return StrCat("p", std::string_view(buf, end - buf));
}

absl::StatusOr<std::vector<QuantileSpec>> MakeQuantileSpecs(const std::vector<double>& qs) {
  if (qs.empty() || qs.size() > kMaxQuantiles) {
    return absl::InvalidArgumentError(
        StrCat("quantiles: between 1 and ", kMaxQuantiles, " values required"));
  }
  std::vector<QuantileSpec> specs;
  absl::flat_hash_set<std::string> names;
  for (double q : qs) {
    if (!(q > 0 && q < 1)) {
      return absl::InvalidArgumentError(StrCat("quantiles: ", q, " is not in (0, 1)"));
    }
    QuantileSpec spec{q, QuantileName(q)};
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(StrCat("quantiles: ", q, " given twice"));
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

std::string_view WindowedAggregate::Dim(std::string_view name) const {
  for (size_t i = 0; i < dim_names->size(); ++i) {
    if ((*dim_names)[i] == name) return (*dim_values)[i];
  }
  return {};
}

void AppendJsonDouble(double v, std::string* out) {
  if (!std::isfinite(v)) {
    out->append("null");
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, end - buf);
}

namespace {

void AppendInt(int64_t v, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, end - buf);
}

void AppendField(std::string_view name, std::string* out) {
  out->push_back(',');
  out->push_back('"');
  out->append(name);
  out->append("\":");
}

}  // namespace

void AppendAggregateJson(const WindowedAggregate& r, std::string* out) {
  out->push_back('{');
  bool first = true;
  for (std::string_view top : {std::string_view("serviceId"), std::string_view("metricName")}) {
    for (size_t i = 0; i < r.dim_names->size(); ++i) {
      if ((*r.dim_names)[i] != top) continue;
      if (!first) out->push_back(',');
      first = false;
      AppendJsonString(top, out);
      out->push_back(':');
      AppendJsonString((*r.dim_values)[i], out);
    }
  }
  if (!first) out->push_back(',');
  out->append("\"window\":");
  AppendJsonString(r.window->name, out);
  AppendField("windowStart", out);
  AppendInt(r.window_start, out);
  AppendField("windowEnd", out);
  AppendInt(r.window_end, out);
  AppendField("count", out);
  AppendInt(static_cast<int64_t>(r.stats->count()), out);
  AppendField("sum", out);
  AppendJsonDouble(r.stats->sum(), out);
  AppendField("avg", out);
  AppendJsonDouble(r.stats->avg(), out);
  AppendField("min", out);
  AppendJsonDouble(r.stats->min(), out);
  AppendField("max", out);
  AppendJsonDouble(r.stats->max(), out);
  for (size_t i = 0; i < r.quantiles->size(); ++i) {
    AppendField((*r.quantiles)[i].name, out);
    AppendJsonDouble(r.quantile_values[i], out);
  }
  AppendField("rate", out);
  AppendJsonDouble(r.rate, out);
  out->append(",\"tags\":{");
  bool first_tag = true;
  for (size_t i = 0; i < r.dim_names->size(); ++i) {
    const std::string& name = (*r.dim_names)[i];
    if (name == "serviceId" || name == "metricName") continue;
    if (!first_tag) out->push_back(',');
    first_tag = false;
    AppendJsonString(name, out);
    out->push_back(':');
    AppendJsonString((*r.dim_values)[i], out);
  }
  out->append("}}");
}

void AppendAggregateKey(const WindowedAggregate& r, std::string* out) {
  for (size_t i = 0; i < r.dim_names->size(); ++i) {
    if ((*r.dim_names)[i] == "serviceId") {
      out->append((*r.dim_values)[i]);
      return;
    }
  }
  for (size_t i = 0; i < r.dim_values->size(); ++i) {
    if (i) out->push_back('|');
    out->append((*r.dim_values)[i]);
  }
}

}  // namespace streammetrics
