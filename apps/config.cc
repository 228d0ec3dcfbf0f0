#include "apps/config.h"

#include <algorithm>

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/container/flat_hash_set.h"
#include "operators/metric_stats.h"
#include "operators/strings.h"
#include "operators/windows.h"

namespace streammetrics {
namespace {

// The largest unit that divides ms exactly: "36500d", "1h", "250ms".
std::string FormatDuration(int64_t ms) {
  if (ms == 0) return "0";
  struct Unit {
    int64_t scale;
    const char* name;
  };
  for (const Unit& u : {Unit{86'400'000, "d"}, Unit{3'600'000, "h"}, Unit{60'000, "m"},
                        Unit{1'000, "s"}}) {
    if (ms != 0 && ms % u.scale == 0) return StrCat(ms / u.scale, u.name);
  }
  return StrCat(ms, "ms");
}

// yaml-cpp reports errors by exception; they are caught here and become statuses, so
// none crosses this file.
class Reader {
 public:
  static absl::Status Error(const std::string& path, std::string_view what) {
    return absl::InvalidArgumentError(StrCat(path.empty() ? "config" : path, ": ", what));
  }

  static absl::Status CheckKeys(const YAML::Node& node, const std::string& path,
                                std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) return Error(path, "expected a mapping");
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) return Error(path, "a key must be a name, not a list or mapping");
      std::string key = kv.first.Scalar();
      bool ok = false;
      for (std::string_view a : allowed) ok |= key == a;
      if (ok) continue;
      // A dotted top-level key as Kafka users write them (`application.id: x`) whose
      // first part is a section: say how it is written.
      const size_t dot = key.find('.');
      bool nests = false;
      if (path.empty() && dot != std::string::npos) {
        for (std::string_view a : allowed) nests |= std::string_view(key).substr(0, dot) == a;
      }
      if (!nests) return Error(Join(path, key), "unknown key");
      std::string nested, closing;
      for (std::string_view rest = key; !rest.empty();) {
        const size_t at = rest.find('.');
        nested += StrCat(nested.empty() ? "" : "{", rest.substr(0, at), ": ");
        if (at == std::string_view::npos) break;
        closing += "}";
        rest.remove_prefix(at + 1);
      }
      return Error(Join(path, key),
                   StrCat("unknown key; keys nest, write it as ", nested, "...", closing));
    }
    return absl::OkStatus();
  }

  static std::string Join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : StrCat(path, ".", key);
  }

  static absl::StatusOr<std::string> String(const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) return Error(path, "expected a string");
    return n.Scalar();
  }

  static absl::StatusOr<bool> Bool(const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) return Error(path, "expected true or false");
    const std::string& s = n.Scalar();
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    return Error(path, StrCat("expected true or false, got '", s, "'"));
  }

  // A finite number: NaN would turn every comparison with it false (a bound off), and
  // no setting here means anything by an infinity.
  static absl::StatusOr<double> Double(const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) return Error(path, "expected a number");
    const std::string& s = n.Scalar();
    double v;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(v)) {
      return Error(path, StrCat("expected a finite number, got '", s, "'"));
    }
    return v;
  }

  static absl::StatusOr<int64_t> Int(const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) return Error(path, "expected an integer");
    const std::string& s = n.Scalar();
    int64_t v;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) {
      return Error(path, StrCat("expected an integer, got '", s, "'"));
    }
    return v;
  }

  static absl::StatusOr<int64_t> IntIn(const YAML::Node& n, const std::string& path, int64_t min,
                                       int64_t max) {
    absl::StatusOr<int64_t> v = Int(n, path);
    if (!v.ok()) return v;
    if (*v < min || *v > max) {
      return Error(path, StrCat("must be in [", min, ", ", max, "], got ", *v));
    }
    return v;
  }

  // A duration in [min_ms, max_ms] (every duration key has one: kMaxDurationMs at most,
  // so sums of timestamps and durations stay in int64).
  static absl::StatusOr<int64_t> Duration(const YAML::Node& n, const std::string& path,
                                          int64_t min_ms, int64_t max_ms) {
    if (!n.IsScalar()) return Error(path, "expected a duration such as 10s");
    absl::StatusOr<int64_t> d = ParseDuration(n.Scalar());
    if (!d.ok()) {
      if (d.status().code() == absl::StatusCode::kOutOfRange) {
        return Error(path, StrCat("must be in [", FormatDuration(min_ms), ", ",
                                  FormatDuration(max_ms), "], got '", n.Scalar(), "'"));
      }
      return Error(path, Message(d.status()));
    }
    if (*d < min_ms || *d > max_ms) {
      return Error(path, StrCat("must be in [", FormatDuration(min_ms), ", ",
                                FormatDuration(max_ms), "], got '", n.Scalar(), "'"));
    }
    return d;
  }

  // A Kafka topic name: 1 to 249 of [a-zA-Z0-9._-], not "." or "..".
  static absl::Status Topic(const std::string& path, const std::string& topic) {
    absl::Status s = CheckTopicName(topic);
    if (!s.ok()) return Error(path, Message(s));
    return absl::OkStatus();
  }

  static absl::StatusOr<std::string> TopicString(const YAML::Node& n, const std::string& path) {
    absl::StatusOr<std::string> t = String(n, path);
    if (!t.ok()) return t;
    if (absl::Status s = Topic(path, *t); !s.ok()) return s;
    return t;
  }

  static absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& n,
                                                             const std::string& path) {
    if (!n.IsSequence()) return Error(path, "expected a list");
    std::vector<std::string> out;
    for (size_t i = 0; i < n.size(); ++i) {
      absl::StatusOr<std::string> s = String(n[i], StrCat(path, "[", i, "]"));
      if (!s.ok()) return s.status();
      out.push_back(*std::move(s));
    }
    return out;
  }

  static absl::StatusOr<EnrichOptions::Attributes> Attributes(const YAML::Node& n,
                                                              const std::string& path) {
    if (!n.IsMap()) return Error(path, "expected a mapping of attribute: value");
    EnrichOptions::Attributes attrs;
    for (const auto& kv : n) {
      std::string key = kv.first.Scalar();
      absl::StatusOr<std::string> v = String(kv.second, Join(path, key));
      if (!v.ok()) return v.status();
      attrs.emplace_back(key, *std::move(v));
    }
    return attrs;
  }
};

#define SM_ASSIGN(lhs, expr)                  \
  do {                                        \
    auto sm_value = (expr);                   \
    if (!sm_value.ok()) return sm_value.status(); \
    lhs = *std::move(sm_value);               \
  } while (0)
#define SM_RETURN_IF_ERROR(expr)            \
  do {                                      \
    absl::Status sm_status = (expr);        \
    if (!sm_status.ok()) return sm_status;  \
  } while (0)

absl::Status ParseWindow(const YAML::Node& n, const std::string& path, WindowSpec* w) {
  SM_RETURN_IF_ERROR(
      Reader::CheckKeys(n, path, {"name", "type", "size", "advance", "grace", "emit", "topic"}));
  if (!n["name"]) return Reader::Error(path + ".name", "is required");
  SM_ASSIGN(w->name, Reader::String(n["name"], path + ".name"));
  if (!n["size"]) return Reader::Error(path + ".size", "is required");
  SM_ASSIGN(w->size_ms, Reader::Duration(n["size"], path + ".size", 1, kMaxDurationMs));
  std::string type = "tumbling";
  if (n["type"]) SM_ASSIGN(type, Reader::String(n["type"], path + ".type"));
  if (type == "tumbling") {
    if (n["advance"]) return Reader::Error(path + ".advance", "only hopping windows advance");
    w->advance_ms = w->size_ms;
  } else if (type == "hopping") {
    if (!n["advance"]) return Reader::Error(path + ".advance", "is required for a hopping window");
    SM_ASSIGN(w->advance_ms, Reader::Duration(n["advance"], path + ".advance", 1, w->size_ms));
    if (w->size_ms % w->advance_ms != 0) {
      return Reader::Error(path + ".advance", "size must be a multiple of it");
    }
    if (w->size_ms / w->advance_ms > kMaxWindowsPerRecord) {
      return Reader::Error(
          path + ".advance",
          StrCat("must be at least size / ", kMaxWindowsPerRecord,
                 " (each record is in size / advance windows), got ",
                 w->size_ms / w->advance_ms, " windows per record"));
    }
  } else {
    return Reader::Error(path + ".type", StrCat("expected tumbling or hopping, got '", type, "'"));
  }
  if (n["grace"]) {
    SM_ASSIGN(w->grace_ms, Reader::Duration(n["grace"], path + ".grace", 0, kMaxDurationMs));
  }
  if (n["emit"]) {
    std::string emit;
    SM_ASSIGN(emit, Reader::String(n["emit"], path + ".emit"));
    if (emit == "final") {
      w->emit = EmitMode::kFinal;
    } else if (emit == "update") {
      w->emit = EmitMode::kUpdate;
    } else {
      return Reader::Error(path + ".emit", StrCat("expected final or update, got '", emit, "'"));
    }
  }
  if (n["topic"]) SM_ASSIGN(w->topic, Reader::TopicString(n["topic"], path + ".topic"));
  if (absl::Status s = ValidateWindowSpec(*w); !s.ok()) return Reader::Error(path, Message(s));
  return absl::OkStatus();
}

// Checks of the document itself, before its keys are read: yaml-cpp keeps the entries of
// a key given twice (lookups see the first) and ends a quoted scalar left open at the
// end of the file, so both would be read silently otherwise.
class DocumentChecker {
 public:
  explicit DocumentChecker(std::string_view text) : text_(text) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  // Every mapping's keys are names and distinct; no quoted scalar runs past the end of its
  // line (none of the config's values spans lines, and an unterminated quote swallows the
  // keys after it); at most kMaxConfigNodes nodes, aliases expanded.
  absl::Status Check(const YAML::Node& node, const std::string& path) {
    if (++nodes_ > kMaxConfigNodes) {
      return Reader::Error("", StrCat("more than ", kMaxConfigNodes, " values (aliases expanded)"));
    }
    if (node.IsMap()) {
      absl::flat_hash_set<std::string> keys;
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          return Reader::Error(path, "a key must be a name, not a list or mapping");
        }
        const std::string key_path = Reader::Join(path, kv.first.Scalar());
        SM_RETURN_IF_ERROR(CheckQuoted(kv.first, key_path));
        if (!keys.insert(kv.first.Scalar()).second) return Reader::Error(key_path, "given twice");
        SM_RETURN_IF_ERROR(Check(kv.second, key_path));
      }
    } else if (node.IsSequence()) {
      for (size_t i = 0; i < node.size(); ++i) {
        SM_RETURN_IF_ERROR(Check(node[i], StrCat(path, "[", i, "]")));
      }
    } else if (node.IsScalar()) {
      SM_RETURN_IF_ERROR(CheckQuoted(node, path));
    }
    return absl::OkStatus();
  }

 private:
  // A scalar that starts with a quote must close it on the same line.
  absl::Status CheckQuoted(const YAML::Node& n, const std::string& path) const {
    const YAML::Mark m = n.Mark();
    if (m.line < 0 || m.column < 0 || static_cast<size_t>(m.line) >= line_starts_.size()) {
      return absl::OkStatus();
    }
    const size_t at = line_starts_[m.line] + static_cast<size_t>(m.column);
    if (at >= text_.size() || (text_[at] != '"' && text_[at] != '\'')) return absl::OkStatus();
    const char quote = text_[at];
    for (size_t i = at + 1; i < text_.size(); ++i) {
      const char ch = text_[i];
      if (ch == '\n' || ch == '\r' || (quote == '"' && ch == '\\' && i + 1 < text_.size() &&
                                       (text_[i + 1] == '\n' || text_[i + 1] == '\r'))) {
        return Reader::Error(path, StrCat("the quoted value opened on line ", m.line + 1,
                                          " runs past the end of its line (unterminated quote?)"));
      }
      if (quote == '"' && ch == '\\') {
        ++i;  // an escape
      } else if (ch == quote) {
        if (quote == '\'' && i + 1 < text_.size() && text_[i + 1] == '\'') {
          ++i;  // '' is a quote inside single quotes
          continue;
        }
        return absl::OkStatus();
      }
    }
    return Reader::Error(path, StrCat("the quoted value opened on line ", m.line + 1,
                                      " is never closed"));
  }

  std::string_view text_;
  std::vector<size_t> line_starts_;
  size_t nodes_ = 0;
};

// Topics must be distinct where one would receive another's records: the input, the
// dead-letter topic and each window's topic.
absl::Status CheckDistinctTopics(const PipelineConfig& p) {
  std::vector<std::pair<std::string, const std::string*>> named = {
      {"topics.input", &p.input_topic}, {"topics.dead_letter", &p.dead_letter_topic}};
  for (size_t i = 0; i < p.windows.size(); ++i) {
    if (p.windows[i].topic.empty()) continue;
    named.emplace_back(StrCat("aggregate.windows[", i, "].topic"), &p.windows[i].topic);
  }
  for (size_t i = 0; i < named.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (*named[i].second == *named[j].second) {
        return Reader::Error(named[i].first, StrCat("'", *named[i].second, "' is also ",
                                                    named[j].first, "; topics must differ"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ParseRoot(const YAML::Node& root, AppConfig* c) {
  PipelineConfig& p = c->pipeline;
  SM_RETURN_IF_ERROR(Reader::CheckKeys(root, "", {"application", "topics", "input", "validation",
                                                  "enrich", "dedupe", "aggregate", "processing",
                                                  "state", "kafka", "sinks"}));
  if (const YAML::Node n = root["application"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(n, "application", {"id"}));
    if (n["id"]) SM_ASSIGN(p.application_id, Reader::String(n["id"], "application.id"));
    // It prefixes internal topics (<id>-<store>-changelog) and names the state directory.
    if (p.application_id.empty()) return Reader::Error("application.id", "must not be empty");
    SM_RETURN_IF_ERROR(Reader::Topic("application.id", p.application_id));
    if (p.application_id.size() > kMaxApplicationIdLength) {
      return Reader::Error("application.id",
                           StrCat("must be at most ", kMaxApplicationIdLength,
                                  " characters (it prefixes internal topic names)"));
    }
  }
  if (const YAML::Node n = root["topics"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(n, "topics", {"input", "dead_letter"}));
    if (n["input"]) SM_ASSIGN(p.input_topic, Reader::TopicString(n["input"], "topics.input"));
    if (n["dead_letter"]) {
      SM_ASSIGN(p.dead_letter_topic, Reader::TopicString(n["dead_letter"], "topics.dead_letter"));
    }
  }
  if (const YAML::Node n = root["input"]) {
    SM_RETURN_IF_ERROR(
        Reader::CheckKeys(n, "input", {"format", "framing", "max_document_bytes",
                                       "keyed_by_service"}));
    if (n["keyed_by_service"]) {
      bool keyed = false;
      SM_ASSIGN(keyed, Reader::Bool(n["keyed_by_service"], "input.keyed_by_service"));
      p.keying = keyed ? InputKeying::kByService : InputKeying::kAny;
    }
    if (n["format"]) {
      std::string f;
      SM_ASSIGN(f, Reader::String(n["format"], "input.format"));
      if (f == "json") {
        p.format = EventFormat::kJson;
      } else if (f == "protobuf") {
        p.format = EventFormat::kProtobuf;
      } else {
        return Reader::Error("input.format", StrCat("expected json or protobuf, got '", f, "'"));
      }
    }
    if (n["framing"]) {
      std::string f;
      SM_ASSIGN(f, Reader::String(n["framing"], "input.framing"));
      if (f == "lines") {
        c->input_framing = InputFraming::kLines;
      } else if (f == "delimited") {
        c->input_framing = InputFraming::kDelimited;
      } else {
        return Reader::Error("input.framing",
                             StrCat("expected lines or delimited, got '", f, "'"));
      }
      // Every protobuf MetricEvent with an eventId starts with 0x0a, field 1's tag: cut at
      // newlines, no such message would arrive whole.
      if (c->input_framing == InputFraming::kLines && p.format == EventFormat::kProtobuf) {
        return Reader::Error("input.framing",
                             "lines cannot frame protobuf input (its messages hold newline "
                             "bytes); use delimited");
      }
    }
    if (n["max_document_bytes"]) {
      int64_t v;
      SM_ASSIGN(v, Reader::IntIn(n["max_document_bytes"], "input.max_document_bytes", 1,
                                 kMaxDocumentBytes));
      p.limits.max_document_bytes = static_cast<size_t>(v);
    }
  }
  if (const YAML::Node n = root["validation"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(
        n, "validation",
        {"value_min", "value_min_inclusive", "value_max", "max_future_skew", "max_age",
         "max_stream_skew"}));
    ValidationRules& v = p.validation;
    if (n["value_min"]) SM_ASSIGN(v.value_min, Reader::Double(n["value_min"], "validation.value_min"));
    if (n["value_min_inclusive"]) {
      SM_ASSIGN(v.value_min_inclusive,
                Reader::Bool(n["value_min_inclusive"], "validation.value_min_inclusive"));
    }
    if (n["value_max"]) SM_ASSIGN(v.value_max, Reader::Double(n["value_max"], "validation.value_max"));
    if (v.value_max < v.value_min) {
      return Reader::Error("validation.value_max", "must be >= validation.value_min");
    }
    if (n["max_future_skew"]) {
      if (n["max_future_skew"].IsScalar() && n["max_future_skew"].Scalar() == "off") {
        v.max_future_skew_ms = -1;
      } else {
        SM_ASSIGN(v.max_future_skew_ms, Reader::Duration(n["max_future_skew"],
                                                         "validation.max_future_skew", 0,
                                                         kMaxDurationMs));
      }
    }
    if (n["max_age"]) {
      SM_ASSIGN(v.max_age_ms,
                Reader::Duration(n["max_age"], "validation.max_age", 0, kMaxDurationMs));
    }
    if (const YAML::Node skew = n["max_stream_skew"]) {
      if (skew.IsScalar() && skew.Scalar() == "off") {
        p.max_stream_skew_ms = 0;
      } else {
        SM_ASSIGN(p.max_stream_skew_ms,
                  Reader::Duration(skew, "validation.max_stream_skew", 1, kMaxDurationMs));
      }
    }
  }
  if (const YAML::Node n = root["enrich"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(n, "enrich", {"enabled", "derive", "lookup"}));
    if (n["enabled"]) SM_ASSIGN(p.enrich_enabled, Reader::Bool(n["enabled"], "enrich.enabled"));
    if (n["derive"]) {
      std::vector<std::string> derive;
      SM_ASSIGN(derive, Reader::StringList(n["derive"], "enrich.derive"));
      p.enrich.derive_status_class = false;
      p.enrich.derive_is_error = false;
      for (const std::string& d : derive) {
        if (d == "statusClass") {
          p.enrich.derive_status_class = true;
        } else if (d == "isError") {
          p.enrich.derive_is_error = true;
        } else {
          return Reader::Error("enrich.derive",
                               StrCat("unknown derived field '", d, "' (statusClass, isError)"));
        }
      }
    }
    if (const YAML::Node l = n["lookup"]) {
      SM_RETURN_IF_ERROR(Reader::CheckKeys(l, "enrich.lookup", {"key", "table", "default"}));
      if (l["key"]) SM_ASSIGN(p.enrich.lookup_key, Reader::String(l["key"], "enrich.lookup.key"));
      if (const YAML::Node t = l["table"]) {
        if (!t.IsMap()) return Reader::Error("enrich.lookup.table", "expected a mapping");
        for (const auto& kv : t) {
          std::string key = kv.first.Scalar();
          EnrichOptions::Attributes attrs;
          SM_ASSIGN(attrs, Reader::Attributes(kv.second, "enrich.lookup.table." + key));
          p.enrich.table[key] = std::move(attrs);
        }
      }
      if (l["default"]) {
        SM_ASSIGN(p.enrich.defaults, Reader::Attributes(l["default"], "enrich.lookup.default"));
      }
    }
  }
  if (const YAML::Node n = root["dedupe"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(n, "dedupe", {"enabled", "within", "max_ids"}));
    if (n["enabled"]) SM_ASSIGN(p.dedupe_enabled, Reader::Bool(n["enabled"], "dedupe.enabled"));
    if (n["within"]) {
      SM_ASSIGN(p.dedupe.within_ms, Reader::Duration(n["within"], "dedupe.within", 1, kMaxDurationMs));
    }
    if (n["max_ids"]) {
      int64_t max_ids = 0;
      SM_ASSIGN(max_ids, Reader::IntIn(n["max_ids"], "dedupe.max_ids", 0, kMaxCount));
      p.dedupe.max_ids = static_cast<uint64_t>(max_ids);
    }
  }
  if (const YAML::Node n = root["aggregate"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(n, "aggregate",
                                         {"group_by", "quantiles", "compression",
                                          "exact_quantiles_up_to", "late_to_dead_letter", "idle_close", "store",
                                          "windows"}));
    if (n["group_by"]) {
      SM_ASSIGN(p.group_by, Reader::StringList(n["group_by"], "aggregate.group_by"));
      if (p.group_by.size() > kMaxGroupByDimensions) {
        return Reader::Error("aggregate.group_by", StrCat("at most ", kMaxGroupByDimensions,
                                                          " dimensions, got ", p.group_by.size()));
      }
    }
    if (const YAML::Node q = n["quantiles"]) {
      if (!q.IsSequence()) return Reader::Error("aggregate.quantiles", "expected a list");
      p.quantiles.clear();
      for (size_t i = 0; i < q.size(); ++i) {
        const std::string path = StrCat("aggregate.quantiles[", i, "]");
        double v;
        SM_ASSIGN(v, Reader::Double(q[i], path));
        if (!(v > 0 && v < 1)) {
          // As written: 0.99999999999999999 reads as the double 1.
          std::string why = StrCat("'", q[i].Scalar(), "' is not in (0, 1)");
          if (v == 1 || v == 0) StrAppend(&why, " (it reads as ", v, ")");
          return Reader::Error(path, why);
        }
        p.quantiles.push_back(v);
      }
      if (absl::StatusOr<std::vector<QuantileSpec>> s = MakeQuantileSpecs(p.quantiles); !s.ok()) {
        return Reader::Error("aggregate.quantiles", Message(s.status()));
      }
    }
    if (n["compression"]) {
      SM_ASSIGN(p.compression, Reader::Double(n["compression"], "aggregate.compression"));
      if (!(p.compression >= 10 && p.compression <= 10000)) {
        return Reader::Error("aggregate.compression", "must be in [10, 10000]");
      }
    }
    if (n["exact_quantiles_up_to"]) {
      int64_t up_to = 0;
      SM_ASSIGN(up_to, Reader::Int(n["exact_quantiles_up_to"], "aggregate.exact_quantiles_up_to"));
      if (up_to < 0 || up_to > MetricStats::kMaxExactUpTo) {
        return Reader::Error("aggregate.exact_quantiles_up_to",
                             StrCat("must be in [0, ", MetricStats::kMaxExactUpTo, "]"));
      }
      p.exact_quantiles_up_to = static_cast<uint32_t>(up_to);
    }
    if (n["late_to_dead_letter"]) {
      SM_ASSIGN(p.late_to_dead_letter,
                Reader::Bool(n["late_to_dead_letter"], "aggregate.late_to_dead_letter"));
    }
    if (const YAML::Node idle = n["idle_close"]) {
      if (idle.IsScalar() && idle.Scalar() == "off") {
        p.idle_close_ms = 0;
      } else {
        SM_ASSIGN(p.idle_close_ms, Reader::Duration(idle, "aggregate.idle_close", 0, kMaxDurationMs));
      }
    }
    if (n["store"]) {
      std::string s;
      SM_ASSIGN(s, Reader::String(n["store"], "aggregate.store"));
      if (s == "memory") {
        p.store = StoreType::kInMemory;
      } else if (s == "rocksdb") {
        p.store = StoreType::kRocksDb;
      } else {
        return Reader::Error("aggregate.store", StrCat("expected memory or rocksdb, got '", s, "'"));
      }
    }
    if (const YAML::Node w = n["windows"]) {
      if (!w.IsSequence() || w.size() == 0) {
        return Reader::Error("aggregate.windows", "expected a non-empty list");
      }
      if (w.size() > kMaxWindowDefinitions) {
        return Reader::Error("aggregate.windows", StrCat("at most ", kMaxWindowDefinitions,
                                                         " windows, got ", w.size()));
      }
      p.windows.clear();
      for (size_t i = 0; i < w.size(); ++i) {
        WindowSpec spec;
        SM_RETURN_IF_ERROR(ParseWindow(w[i], StrCat("aggregate.windows[", i, "]"), &spec));
        p.windows.push_back(std::move(spec));
      }
      if (absl::Status s = ValidateWindowSpecs(p.windows); !s.ok()) {
        return Reader::Error("aggregate.windows", Message(s));
      }
    }
  }
  if (const YAML::Node n = root["processing"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(
        n, "processing",
        {"commit_every_records", "guarantee", "threads", "commit_interval", "marker_refresh"}));
    if (n["guarantee"]) {
      std::string g;
      SM_ASSIGN(g, Reader::String(n["guarantee"], "processing.guarantee"));
      if (g == "exactly_once_v2") {
        c->exactly_once = true;
      } else if (g == "at_least_once") {
        c->exactly_once = false;
      } else {
        return Reader::Error("processing.guarantee",
                             StrCat("expected exactly_once_v2 or at_least_once, got '", g, "'"));
      }
    }
    if (n["threads"]) {
      int64_t v;
      SM_ASSIGN(v, Reader::Int(n["threads"], "processing.threads"));
      if (v < 1 || v > 256) return Reader::Error("processing.threads", "must be in [1, 256]");
      c->threads = static_cast<int>(v);
    }
    if (n["commit_interval"]) {
      SM_ASSIGN(c->commit_interval_ms, Reader::Duration(n["commit_interval"],
                                                        "processing.commit_interval", 1,
                                                        kMaxIntervalMs));
    }
    if (n["marker_refresh"]) {
      SM_ASSIGN(c->marker_refresh_ms, Reader::Duration(n["marker_refresh"],
                                                       "processing.marker_refresh", 1,
                                                       kMaxDurationMs));
    }
    if (n["commit_every_records"]) {
      int64_t v;
      SM_ASSIGN(v, Reader::IntIn(n["commit_every_records"], "processing.commit_every_records", 1,
                                 kMaxCount));
      c->commit_every_records = static_cast<uint64_t>(v);
    }
  }
  if (const YAML::Node n = root["state"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(
        n, "state", {"dir", "cache_max_bytes", "rocksdb_cache_bytes", "rocksdb_write_buffer_bytes"}));
    if (n["dir"]) {
      SM_ASSIGN(c->state_dir, Reader::String(n["dir"], "state.dir"));
      if (c->state_dir.empty()) return Reader::Error("state.dir", "must not be empty");
    }
    struct Size {
      const char* key;
      int64_t min;
      uint64_t* out;
    };
    for (const Size& size : {Size{"cache_max_bytes", 0, &c->state_cache_max_bytes},
                             Size{"rocksdb_cache_bytes", 1 << 20, &c->rocksdb_cache_bytes},
                             Size{"rocksdb_write_buffer_bytes", 1 << 20,
                                  &c->rocksdb_write_buffer_bytes}}) {
      if (!n[size.key]) continue;
      const std::string path = StrCat("state.", size.key);
      int64_t v;
      SM_ASSIGN(v, Reader::IntIn(n[size.key], path, size.min, kMaxMemoryBytes));
      *size.out = static_cast<uint64_t>(v);
    }
    if (c->rocksdb_write_buffer_bytes > c->rocksdb_cache_bytes) {
      return Reader::Error("state.rocksdb_write_buffer_bytes",
                           "must not exceed state.rocksdb_cache_bytes (memtables are charged "
                           "to the cache)");
    }
  }
  if (const YAML::Node sinks = root["sinks"]) {
    SM_RETURN_IF_ERROR(Reader::CheckKeys(sinks, "sinks", {"postgres", "redis"}));
    struct Named {
      const char* name;
      const char* url_key;  // dsn for Postgres, url for Redis
      SinkConfig* config;
    };
    for (const Named& named : {Named{"postgres", "dsn", &c->postgres}, Named{"redis", "url", &c->redis}}) {
      const YAML::Node n = sinks[named.name];
      if (!n) continue;
      const std::string path = StrCat("sinks.", named.name);
      SinkConfig& sc = *named.config;
      const bool postgres = std::string_view(named.name) == "postgres";
      SM_RETURN_IF_ERROR(Reader::CheckKeys(
          n, path, {"enabled", named.url_key, "topics", "batch_size", "flush_interval", "group",
                    postgres ? "connections" : named.url_key}));
      if (n["connections"]) {
        int64_t k = 0;
        SM_ASSIGN(k, Reader::Int(n["connections"], path + ".connections"));
        if (k < 1 || k > 64) return Reader::Error(path + ".connections", "must be in [1, 64]");
        sc.connections = static_cast<int>(k);
      }
      if (n["enabled"]) SM_ASSIGN(sc.enabled, Reader::Bool(n["enabled"], path + ".enabled"));
      if (n[named.url_key]) {
        SM_ASSIGN(sc.url, Reader::String(n[named.url_key], StrCat(path, ".", named.url_key)));
      }
      if (n["topics"]) {
        SM_ASSIGN(sc.topics, Reader::StringList(n["topics"], path + ".topics"));
        for (size_t i = 0; i < sc.topics.size(); ++i) {
          SM_RETURN_IF_ERROR(Reader::Topic(StrCat(path, ".topics[", i, "]"), sc.topics[i]));
        }
      }
      if (n["group"]) SM_ASSIGN(sc.group, Reader::String(n["group"], path + ".group"));
      if (n["batch_size"]) {
        SM_ASSIGN(sc.batch_size, Reader::Int(n["batch_size"], path + ".batch_size"));
        if (sc.batch_size < 1 || sc.batch_size > 1'000'000) {
          return Reader::Error(path + ".batch_size", "must be in [1, 1000000]");
        }
      }
      if (n["flush_interval"]) {
        SM_ASSIGN(sc.flush_interval_ms, Reader::Duration(n["flush_interval"],
                                                         path + ".flush_interval", 1,
                                                         kMaxIntervalMs));
      }
      if (sc.enabled && sc.url.empty()) {
        return Reader::Error(StrCat(path, ".", named.url_key), "required when the sink is enabled");
      }
    }
  }
  if (const YAML::Node n = root["kafka"]) {
    if (!n.IsMap()) return Reader::Error("kafka", "expected a mapping of librdkafka properties");
    for (const auto& kv : n) {
      std::string key = kv.first.Scalar();
      std::string v;
      SM_ASSIGN(v, Reader::String(kv.second, "kafka." + key));
      c->kafka.emplace_back(key, v);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ParseDuration(std::string_view text) {
  text = StripAsciiWhitespace(text);
  int64_t n;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec == std::errc::result_out_of_range) {
    return absl::OutOfRangeError(StrCat("'", text, "' is too long"));
  }
  if (ec != std::errc() || p == text.data() || n < 0) {
    return absl::InvalidArgumentError(
        StrCat("'", text, "' is not a duration (e.g. 250ms, 10s, 1m, 2h, 1d)"));
  }
  std::string_view unit(p, text.data() + text.size() - p);
  int64_t scale;
  if (unit.empty() || unit == "ms") {
    scale = 1;
  } else if (unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60'000;
  } else if (unit == "h") {
    scale = 3'600'000;
  } else if (unit == "d") {
    scale = 86'400'000;
  } else {
    return absl::InvalidArgumentError(
        StrCat("'", text, "': unknown unit '", unit, "' (ms, s, m, h, d)"));
  }
  if (n > INT64_MAX / scale) return absl::OutOfRangeError(StrCat("'", text, "' is too long"));
  return n * scale;
}

absl::StatusOr<AppConfig> ParseConfig(std::string_view yaml) {
  AppConfig config;
  config.pipeline = ReferencePipelineConfig();
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    if (root.IsNull()) return config;  // empty file: all defaults
    DocumentChecker checker(yaml);
    if (absl::Status s = checker.Check(root, ""); !s.ok()) return s;
    if (absl::Status s = ParseRoot(root, &config); !s.ok()) return s;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(StrCat("config: ", e.what()));
  }
  if (absl::Status s = CheckDistinctTopics(config.pipeline); !s.ok()) return s;
  // Catch what only the assembled pipeline can tell (unknown group-by fields, ...).
  if (absl::StatusOr<Topology> t = BuildMetricsTopology(config.pipeline); !t.ok()) {
    return t.status();
  }
  return config;
}

absl::StatusOr<AppConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("config file ", path, ": cannot open"));
  std::stringstream buf;
  buf << in.rdbuf();
  absl::StatusOr<AppConfig> config = ParseConfig(buf.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(), StrCat(path, ": ", Message(config.status())));
  }
  return config;
}

absl::Status CheckTopicName(std::string_view topic) {
  if (topic.empty()) return absl::InvalidArgumentError("must not be empty");
  if (topic.size() > 249) {
    return absl::InvalidArgumentError(
        StrCat("a topic name has at most 249 characters, got ", topic.size()));
  }
  if (topic == "." || topic == "..") {
    return absl::InvalidArgumentError(StrCat("'", topic, "' is not a topic name"));
  }
  for (char ch : topic) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          StrCat("'", topic, "' is not a topic name (letters, digits, '.', '_' and '-' only)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStateDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path at = fs::absolute(fs::path(dir), ec);
  if (ec) return absl::FailedPreconditionError(StrCat("state.dir: '", dir, "': ", ec.message()));
  // The directory itself, or the nearest ancestor that exists, must be a directory.
  while (true) {
    const fs::file_status st = fs::status(at, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return absl::FailedPreconditionError(StrCat("state.dir: '", dir, "': ", ec.message()));
    }
    if (fs::exists(st)) {
      if (!fs::is_directory(st)) {
        return absl::FailedPreconditionError(
            StrCat("state.dir: '", dir, "' cannot be a directory: '", at.string(),
                   "' exists and is not one"));
      }
      if (::access(at.c_str(), W_OK | X_OK) != 0) {
        return absl::FailedPreconditionError(
            StrCat("state.dir: '", dir, "': '", at.string(), "' is not writable"));
      }
      return absl::OkStatus();
    }
    if (!at.has_parent_path() || at.parent_path() == at) return absl::OkStatus();
    at = at.parent_path();
  }
}

std::vector<std::string> NamedTopics(const AppConfig& config) {
  std::vector<std::string> out;
  auto add = [&](const std::string& topic) {
    if (!topic.empty() && std::find(out.begin(), out.end(), topic) == out.end()) out.push_back(topic);
  };
  add(config.pipeline.input_topic);
  for (const WindowSpec& w : config.pipeline.windows) add(w.topic);
  add(config.pipeline.dead_letter_topic);
  for (const SinkConfig* sink : {&config.postgres, &config.redis}) {
    if (!sink->enabled) continue;
    for (const std::string& t : sink->topics) add(t);
  }
  return out;
}

InputFraming InputFramingOf(const AppConfig& config) {
  if (config.input_framing.has_value()) return *config.input_framing;
  return config.pipeline.format == EventFormat::kProtobuf ? InputFraming::kDelimited
                                                          : InputFraming::kLines;
}

std::string BootstrapServers(const AppConfig& config) {
  std::string servers = "embedded";
  for (const auto& [k, v] : config.kafka) {
    if (k == "bootstrap.servers") servers = v;
  }
  return servers;
}

}  // namespace streammetrics
