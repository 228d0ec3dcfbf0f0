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

namespace {

// std::to_chars(v)'s output for the common v that is a decimal of at most 3 fractional
// digits printed in fixed notation (latencies in ms, counts, rates), without Ryu's
// search: false for every other v. The decimal d = m / 1000 (m an integer) is v's
// shortest round-trip form when it parses back to v — m / 1000.0, correctly rounded, is
// what parsing d gives — and has at most 15 significant digits: two distinct decimals
// of at most 15 digits never parse to the same double (DBL_DIG), so no shorter form
// exists. to_chars then prints the shorter of fixed and scientific notation, fixed on a
// tie; only fixed is handled here.
bool AppendShortDecimal(double v, std::string* out) {
  const double a = std::fabs(v);
  if (!(a >= 1e-3 && a < 1e12)) return false;  // also NaN
  const double scaled = std::nearbyint(a * 1000.0);
  const uint64_t m = static_cast<uint64_t>(scaled);  // < 1e15 + 1: exact
  if (static_cast<double>(m) / 1000.0 != a) return false;
  uint64_t sig = m;  // m without trailing zeros: the significant digits
  int trailing = 0;
  while (sig % 10 == 0) {
    sig /= 10;
    ++trailing;
  }
  int digits_m = 1;  // decimal digits of m
  for (uint64_t t = m; t >= 10; t /= 10) ++digits_m;
  const int k = digits_m - trailing;  // significant digits
  if (k > 15) return false;
  const int x = digits_m - 4;  // decimal exponent of the first significant digit
  const int fixed_len = x >= 0 ? (k > x + 1 ? k + 1 : x + 1) : k + 1 - x;
  const int ax = x < 0 ? -x : x;
  const int sci_len = k + (k > 1 ? 1 : 0) + 2 + (ax >= 100 ? 3 : 2);
  if (fixed_len > sci_len) return false;
  char buf[32];
  char* p = buf;
  if (v < 0) *p++ = '-';
  p = std::to_chars(p, buf + sizeof(buf), m / 1000).ptr;
  uint32_t frac = static_cast<uint32_t>(m % 1000);
  if (frac != 0) {
    *p++ = '.';
    *p++ = static_cast<char>('0' + frac / 100);
    frac %= 100;
    if (frac != 0) {
      *p++ = static_cast<char>('0' + frac / 10);
      frac %= 10;
      if (frac != 0) *p++ = static_cast<char>('0' + frac);
    }
  }
  out->append(buf, static_cast<size_t>(p - buf));
  return true;
}

}  // namespace

void AppendJsonDouble(double v, std::string* out) {
  if (!std::isfinite(v)) {
    out->append("null");
    return;
  }
  if (AppendShortDecimal(v, out)) return;
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
