#include "engine/redis/redis_sink.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <limits>

#include "absl/container/flat_hash_map.h"

#include "operators/strings.h"

namespace streammetrics {
namespace {

// ARGV: epochs key, positions key, then "topic:partition" fields. Bumps each field's
// epoch; returns {position, epoch} per field.
constexpr std::string_view kAcquire = R"lua(
local out = {}
for i = 3, #ARGV do
  local epoch = redis.call('HINCRBY', ARGV[1], ARGV[i], 1)
  local pos = redis.call('HGET', ARGV[2], ARGV[i]) or '0'
  out[#out + 1] = pos
  out[#out + 1] = tostring(epoch)
end
return out
)lua";

// ARGV: positions key, epochs key, ttl s, history ms, n; n × (field, epoch, first offset,
// end offset); then per key: key, history key, m, m × (window start, JSON) — the client
// grouped the batch by key, one value per window (the last), windows in order: the last
// is the key's newest, its latest. Per key: the latest key is set with
// GET (the old value's window start says whether it was newer: then it is put back),
// windows the history may already hold are removed first (windows older than the hour
// before the newest are not added at all), the new ones added in one
// ZADD per 200, the history trimmed to the hour before its newest and its TTL renewed.
// FENCED: a partition's epoch moved on. BEHIND: a partition's position is past the
// batch's first offset (a retry of an applied batch): the client drops what is below it.
// WRONGTYPE g: the g-th key (or its history) holds another type of value — what the batch
// wrote before it is written again by the retry, which leaves that key's records out
// (they are dead letters); its latest key is put back when only the history refused.
constexpr std::string_view kApply = R"lua(
local pos_key, ep_key = ARGV[1], ARGV[2]
local ttl, span = ARGV[3], tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local i = 6
local ends = {}
for p = 1, n do
  local field, epoch = ARGV[i], ARGV[i + 1]
  local stored = redis.call('HGET', ep_key, field)
  if stored ~= epoch then
    return redis.error_reply('FENCED ' .. field .. ' ' .. tostring(stored))
  end
  local at = redis.call('HGET', pos_key, field) or '0'
  if tonumber(at) > tonumber(ARGV[i + 2]) then
    return redis.error_reply('BEHIND ' .. field .. ' ' .. at)
  end
  ends[#ends + 1] = field
  ends[#ends + 1] = ARGV[i + 3]
  i = i + 4
end
local last = #ARGV
local g = 0
-- A reply that is an error: WRONGTYPE (the key holds another type of value) names the
-- key and its group; anything else is returned as it is (the batch is retried).
local function failed(r, key)
  if type(r) ~= 'table' or not r.err then return nil end
  if string.sub(r.err, 1, 9) == 'WRONGTYPE' then
    return redis.error_reply('WRONGTYPE ' .. g .. ' ' .. key .. ': ' .. r.err)
  end
  return redis.error_reply(r.err)
end
while i <= last do
  g = g + 1
  local key, hist, m = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local stop = i + 2 * m - 1
  local top, latest = tonumber(ARGV[stop - 1]), ARGV[stop]
  local old = redis.pcall('SET', key, latest, 'EX', ttl, 'GET')
  local e = failed(old, key)
  if e then return e end
  local old_top = -math.huge
  if old then
    local ws = string.match(old, '"windowStart":(%-?%d+)')
    if ws then old_top = tonumber(ws) end
  end
  if old_top > top then
    redis.call('SET', key, old, 'EX', ttl)
    top = old_top
  end
  -- The history's first command fails on a key of another type (nothing written to it
  -- yet): the latest is put back before the reply.
  local checked = false
  local function history(r)
    if checked then return nil end
    checked = true
    local e = failed(r, hist)
    if e then
      if old then redis.call('SET', key, old, 'EX', ttl) else redis.call('DEL', key) end
    end
    return e
  end
  -- Windows at or before the hour before the newest would be trimmed at once: skipped.
  local cutoff = top - span
  while i <= stop and tonumber(ARGV[i]) <= cutoff do i = i + 2 end
  if old_top ~= -math.huge then
    for j = i, stop, 2 do
      if tonumber(ARGV[j]) <= old_top then
        local e = history(redis.pcall('ZREMRANGEBYSCORE', hist, ARGV[j], ARGV[j]))
        if e then return e end
      end
    end
  end
  while i <= stop do
    local to = math.min(stop, i + 399)
    local e = history(redis.pcall('ZADD', hist, unpack(ARGV, i, to)))
    if e then return e end
    i = to + 1
  end
  e = history(redis.pcall('ZREMRANGEBYSCORE', hist, '-inf', string.format('%.0f', cutoff)))
  if e then return e end
  redis.call('EXPIRE', hist, ttl)
end
redis.call('HSET', pos_key, unpack(ends))
return 'OK'
)lua";

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

std::string Field(const TopicPartition& tp) { return StrCat(tp.topic, ":", tp.partition); }

}  // namespace

absl::Status ParseRedisUrl(std::string_view url, RedisSinkOptions* options) {
  if (url.starts_with("redis://")) url.remove_prefix(8);
  while (!url.empty() && url.back() == '/') url.remove_suffix(1);
  const size_t colon = url.rfind(':');
  std::string_view host = colon == std::string_view::npos ? url : url.substr(0, colon);
  int port = 6379;
  if (colon != std::string_view::npos) {
    std::string_view p = url.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc() || end != p.data() + p.size() || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(StrCat("redis url '", url, "': bad port"));
    }
  }
  if (host.empty()) return absl::InvalidArgumentError(StrCat("redis url '", url, "': no host"));
  options->host = std::string(host);
  options->port = port;
  return absl::OkStatus();
}

struct RedisSink::Conn {
  redisContext* c = nullptr;
  std::string apply_sha, acquire_sha;
  ~Conn() {
    if (c != nullptr) redisFree(c);
  }
  bool broken() const { return c == nullptr || c->err != 0; }

  // The reply, or Unavailable when the connection failed (the caller reconnects).
  absl::StatusOr<Reply> Command(std::span<const std::string> args) {
    return Command(std::vector<std::string_view>(args.begin(), args.end()));
  }
  absl::StatusOr<Reply> Command(const std::vector<std::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (std::string_view a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (r == nullptr || c->err != 0) {
      return absl::UnavailableError(StrCat("redis: ", c->err != 0 ? c->errstr : "no reply"));
    }
    return r;
  }
};

RedisSink::RedisSink(RedisSinkOptions options) : options_(std::move(options)) {}
RedisSink::~RedisSink() = default;

absl::Status RedisSink::Connect() {
  if (conn_ != nullptr && !conn_->broken()) return absl::OkStatus();
  conn_.reset();
  auto conn = std::make_unique<Conn>();
  timeval tv{options_.timeout_ms / 1000, (options_.timeout_ms % 1000) * 1000};
  conn->c = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
  if (conn->c == nullptr || conn->c->err != 0) {
    return absl::UnavailableError(StrCat("redis: connect to ", options_.host, ":", options_.port, ": ",
                                         conn->c != nullptr ? conn->c->errstr : "out of memory"));
  }
  redisSetTimeout(conn->c, tv);
  for (auto [script, sha] : {std::pair{kApply, &conn->apply_sha}, std::pair{kAcquire, &conn->acquire_sha}}) {
    absl::StatusOr<Reply> r = conn->Command({"SCRIPT", "LOAD", std::string(script)});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_STRING) {
      return absl::UnavailableError(StrCat("redis: script load: ", (*r)->str != nullptr ? (*r)->str : "?"));
    }
    sha->assign((*r)->str, (*r)->len);
  }
  conn_ = std::move(conn);
  return absl::OkStatus();
}

absl::Status RedisSink::Open() { return Connect(); }

absl::StatusOr<std::vector<SinkPosition>> RedisSink::Acquire(std::span<const TopicPartition> partitions) {
  if (absl::Status s = Connect(); !s.ok()) return s;
  const std::string prefix = StrCat("streammetrics:sink:", options_.sink_name);
  std::vector<std::string> args = {"EVALSHA", conn_->acquire_sha, "0", prefix + ":epochs",
                                   prefix + ":positions"};
  for (const TopicPartition& tp : partitions) args.push_back(Field(tp));
  absl::StatusOr<Reply> r = conn_->Command(args);
  if (!r.ok()) {
    conn_.reset();
    return r.status();
  }
  if ((*r)->type != REDIS_REPLY_ARRAY || (*r)->elements != 2 * partitions.size()) {
    if ((*r)->type == REDIS_REPLY_ERROR && std::string_view((*r)->str).starts_with("NOSCRIPT")) conn_.reset();
    return absl::UnavailableError(StrCat("redis: acquire: ", (*r)->type == REDIS_REPLY_ERROR ? (*r)->str : "bad reply"));
  }
  std::vector<SinkPosition> out;
  for (size_t i = 0; i < partitions.size(); ++i) {
    const int64_t next = std::strtoll((*r)->element[2 * i]->str, nullptr, 10);
    const int64_t epoch = std::strtoll((*r)->element[2 * i + 1]->str, nullptr, 10);
    out.push_back({partitions[i], next, epoch});
    epochs_[partitions[i]] = epoch;
  }
  return out;
}

absl::StatusOr<std::vector<SinkPosition>> RedisSink::Positions() {
  if (absl::Status s = Connect(); !s.ok()) return s;
  std::vector<SinkPosition> out;
  if (epochs_.empty()) return out;
  std::vector<std::string> args = {"HMGET", StrCat("streammetrics:sink:", options_.sink_name, ":positions")};
  for (const auto& [tp, epoch] : epochs_) args.push_back(Field(tp));
  absl::StatusOr<Reply> r = conn_->Command(args);
  if (!r.ok()) {
    conn_.reset();
    return r.status();
  }
  if ((*r)->type != REDIS_REPLY_ARRAY) return absl::UnavailableError("redis: positions: bad reply");
  size_t i = 0;
  for (const auto& [tp, epoch] : epochs_) {
    const redisReply* e = (*r)->element[i++];
    out.push_back({tp, e->type == REDIS_REPLY_STRING ? std::strtoll(e->str, nullptr, 10) : 0, epoch});
  }
  return out;
}

absl::Status RedisSink::Apply(std::span<const SinkRecord> batch, const RejectHandler& on_rejected) {
  if (batch.empty()) return absl::OkStatus();
  if (absl::Status s = Connect(); !s.ok()) return s;
  const BatchPartitions parts(batch);
  if (absl::Status s = CheckOwned(parts); !s.ok()) return s;
  std::vector<std::string> fields;
  for (size_t i = 0; i < parts.size(); ++i) fields.push_back(Field(parts[i]));
  // Parse every record once: the refused ones, and per aggregate its key (the result's
  // tags, when it has any, end the key: results of one service and metric that differ in
  // their tags are different keys) and history key, built into one arena.
  struct Item {
    uint32_t record, part;
    uint32_t key_at, key_len;  // in `keys`; the history key follows the key
    int64_t window_start;
  };
  std::string keys;
  std::vector<Item> items;
  items.reserve(batch.size());
  std::vector<uint32_t> part_of(batch.size());
  std::vector<RejectedRecord> rejected;
  AggregateRow row;
  for (size_t i = 0; i < batch.size(); ++i) {
    const SinkRecord& r = batch[i];
    part_of[i] = static_cast<uint32_t>(parts.IndexOf(r));
    if (absl::Status parsed = ParseAggregateRow(r.value, &row); !parsed.ok()) {
      rejected.push_back({r, std::string(Message(parsed))});
      continue;
    }
    const size_t at = keys.size();
    StrAppend(&keys, "metrics:", row.service_id, ":", row.metric_name, ":", row.window);
    if (row.tags_json != "{}") StrAppend(&keys, ":", row.tags_json);
    const size_t len = keys.size() - at;
    keys.append(keys, at, len);
    keys.append(":history");
    items.push_back({static_cast<uint32_t>(i), part_of[i], static_cast<uint32_t>(at),
                     static_cast<uint32_t>(len), row.window_start_ms});
  }
  auto key_of = [&](const Item& it) { return std::string_view(keys).substr(it.key_at, it.key_len); };
  auto history_of = [&](const Item& it) {
    return std::string_view(keys).substr(it.key_at + it.key_len, it.key_len + 8);
  };
  // Group by key; within a key by window start, then offset (the last value of a window
  // wins; the key's newest window is its latest).
  absl::flat_hash_map<std::string_view, uint32_t> group_of;
  group_of.reserve(items.size());
  std::vector<uint32_t> group(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    group[i] = group_of.try_emplace(key_of(items[i]), static_cast<uint32_t>(group_of.size())).first->second;
  }
  std::vector<uint32_t> order(items.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    if (group[a] != group[b]) return group[a] < group[b];
    if (items[a].window_start != items[b].window_start) return items[a].window_start < items[b].window_start;
    return items[a].record < items[b].record;
  });
  // Dead letters are delivered before the batch is applied (at least once: a retried
  // batch sends them again).
  if (!rejected.empty() && on_rejected) {
    if (absl::Status s = on_rejected(rejected); !s.ok()) return s;
  }
  // Records below `skip_below` of their partition were applied already (BEHIND).
  std::vector<int64_t> skip_below(parts.size(), std::numeric_limits<int64_t>::min());
  const std::string prefix = StrCat("streammetrics:sink:", options_.sink_name);
  // Keys Redis refused (another type of value there): left out, their records dead letters.
  std::vector<char> refused(group_of.size(), 0);
  for (int attempt = 0; attempt < 2 + static_cast<int>(parts.size() + group_of.size()); ++attempt) {
    std::vector<uint32_t> sent;  // the groups in the script's order
    std::vector<int64_t> first(parts.size(), -1), end(parts.size(), -1);
    for (size_t i = 0; i < batch.size(); ++i) {
      const uint32_t p = part_of[i];
      if (batch[i].offset < skip_below[p]) continue;
      if (first[p] < 0) first[p] = batch[i].offset;
      end[p] = batch[i].offset + 1;
    }
    // The script's arguments: numbers go into one arena (no string per record); keys
    // and record values are passed as views.
    std::string numbers;
    std::vector<std::string_view> args = {"EVALSHA", conn_->apply_sha, "0"};
    struct NumberArg {
      size_t arg, at, len;  // the argument, its span in `numbers`
    };
    std::vector<NumberArg> number_arg;
    auto set_number = [&](size_t arg, int64_t v) {
      const size_t at = numbers.size();
      StrAppend(&numbers, v);
      number_arg.push_back({arg, at, numbers.size() - at});
    };
    auto add_number = [&](int64_t v) {
      set_number(args.size(), v);
      args.emplace_back();
    };
    const std::string pos_key = prefix + ":positions", ep_key = prefix + ":epochs";
    args.push_back(pos_key);
    args.push_back(ep_key);
    add_number(options_.ttl_s);
    add_number(options_.history_ms);
    const size_t n_at = args.size();
    args.emplace_back();
    int64_t n = 0;
    for (size_t p = 0; p < parts.size(); ++p) {
      if (first[p] < 0) continue;
      ++n;
      args.push_back(fields[p]);
      add_number(epochs_[parts[p]]);
      add_number(first[p]);
      add_number(end[p]);
    }
    if (n == 0) return absl::OkStatus();  // everything was applied already
    const std::string n_text = StrCat(n);
    args[n_at] = n_text;
    for (size_t g = 0; g < order.size();) {
      size_t stop = g;
      while (stop < order.size() && group[order[stop]] == group[order[g]]) ++stop;
      // The group's windows (skipped records left out, one value per window).
      std::vector<uint32_t>::const_iterator begin = order.begin() + g, finish = order.begin() + stop;
      g = stop;
      if (refused[group[*begin]]) continue;
      const size_t header = args.size();
      size_t m = 0;
      for (auto it = begin; it != finish; ++it) {
        const Item& item = items[*it];
        if (batch[item.record].offset < skip_below[item.part]) continue;
        const bool replaced = (it + 1 != finish) && items[*(it + 1)].window_start == item.window_start &&
                              batch[items[*(it + 1)].record].offset >= skip_below[items[*(it + 1)].part];
        if (replaced) continue;
        if (m == 0) {
          args.push_back(key_of(item));
          args.push_back(history_of(item));
          args.emplace_back();  // m: below
        }
        add_number(item.window_start);
        args.push_back(batch[item.record].value);
        ++m;
      }
      if (m == 0) continue;
      set_number(header + 2, static_cast<int64_t>(m));
      sent.push_back(group[*begin]);
    }
    for (const NumberArg& a : number_arg) {  // `numbers` no longer moves
      args[a.arg] = std::string_view(numbers.data() + a.at, a.len);
    }
    absl::StatusOr<Reply> r = conn_->Command(args);
    if (!r.ok()) {
      conn_.reset();
      return r.status();
    }
    if ((*r)->type != REDIS_REPLY_ERROR) return absl::OkStatus();
    std::string_view error((*r)->str, (*r)->len);
    if (error.starts_with("NOSCRIPT")) {
      // The server lost its script cache (a restart): load it again.
      conn_.reset();
      if (absl::Status s = Connect(); !s.ok()) return s;
      continue;
    }
    if (const size_t at = error.find("FENCED "); at != std::string_view::npos) {
      std::string_view rest = error.substr(at + 7);
      const std::string field(rest.substr(0, rest.find(' ')));
      for (auto it = epochs_.begin(); it != epochs_.end(); ++it) {
        if (Field(it->first) == field) {
          epochs_.erase(it);
          break;
        }
      }
      return absl::FailedPreconditionError(StrCat("redis: ", field, " was taken over by a newer runner"));
    }
    if (const size_t at = error.find("WRONGTYPE "); at != std::string_view::npos) {
      std::string_view rest = error.substr(at + 10);
      const size_t space = rest.find(' ');
      size_t g = 0;
      auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + std::min(space, rest.size()), g);
      if (ec != std::errc() || g < 1 || g > sent.size()) {
        return absl::InternalError(StrCat("redis: apply: unexpected reply ", error));
      }
      const uint32_t bad = sent[g - 1];
      refused[bad] = 1;
      std::string why = StrCat("redis: ", space == std::string_view::npos ? rest : rest.substr(space + 1));
      std::vector<RejectedRecord> refused_records;
      for (size_t i = 0; i < items.size(); ++i) {
        const Item& item = items[i];
        if (group[i] == bad && batch[item.record].offset >= skip_below[item.part]) {
          refused_records.push_back({batch[item.record], why});
        }
      }
      if (on_rejected) {
        if (absl::Status s = on_rejected(refused_records); !s.ok()) return s;
      }
      continue;
    }
    if (const size_t at = error.find("BEHIND "); at != std::string_view::npos) {
      std::string_view rest = error.substr(at + 7);
      const size_t space = rest.rfind(' ');
      const std::string_view field = rest.substr(0, space);
      int64_t position = 0;
      const std::string_view value = space == std::string_view::npos ? "" : rest.substr(space + 1);
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), position);
      const auto p = std::find(fields.begin(), fields.end(), field);
      if (ec != std::errc() || p == fields.end() || position <= skip_below[p - fields.begin()]) {
        return absl::InternalError(StrCat("redis: apply: unexpected reply ", error));
      }
      skip_below[p - fields.begin()] = position;
      continue;
    }
    return absl::UnavailableError(StrCat("redis: apply: ", error));
  }
  return absl::UnavailableError("redis: apply: the script kept failing");
}

}  // namespace streammetrics
