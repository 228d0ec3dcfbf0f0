#include "engine/redis/redis_sink.h"

#include <hiredis/hiredis.h>

#include <charconv>

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

// ARGV: positions key, epochs key, ttl s, history ms, n; n × (field, epoch); then
// records × (field, offset, key ('' = only move the position), window start, json).
constexpr std::string_view kApply = R"lua(
local pos_key, ep_key = ARGV[1], ARGV[2]
local ttl, span = ARGV[3], tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local i = 6
local pos = {}
for p = 1, n do
  local field, epoch = ARGV[i], ARGV[i + 1]
  local stored = redis.call('HGET', ep_key, field)
  if stored ~= epoch then
    return redis.error_reply('FENCED ' .. field .. ' ' .. tostring(stored))
  end
  pos[field] = tonumber(redis.call('HGET', pos_key, field) or '0')
  i = i + 2
end
local ends = {}
local tops, latest, order = {}, {}, {}
while i <= #ARGV do
  local field, offset, key, ws_s, json = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if offset >= pos[field] then
    ends[field] = offset + 1
    if key ~= '' then
      local ws = tonumber(ws_s)
      local hist = key .. ':history'
      local top = tops[key]
      if top == nil then
        local newest = redis.call('ZREVRANGE', hist, 0, 0, 'WITHSCORES')
        top = newest[2] ~= nil and tonumber(newest[2]) or -math.huge
        order[#order + 1] = key
      end
      if ws <= top then redis.call('ZREMRANGEBYSCORE', hist, ws_s, ws_s) end
      redis.call('ZADD', hist, ws_s, json)
      if ws >= top then
        top = ws
        latest[key] = json
      end
      tops[key] = top
    end
  end
end
for _, key in ipairs(order) do
  local hist = key .. ':history'
  redis.call('ZREMRANGEBYSCORE', hist, '-inf', string.format('%.0f', tops[key] - span))
  redis.call('EXPIRE', hist, ttl)
  if latest[key] ~= nil then redis.call('SET', key, latest[key], 'EX', ttl) end
end
for field, e in pairs(ends) do redis.call('HSET', pos_key, field, string.format('%.0f', e)) end
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

void RedisSink::Release(std::span<const TopicPartition> partitions) {
  for (const TopicPartition& tp : partitions) epochs_.erase(tp);
}

bool RedisSink::Owns(const TopicPartition& tp) const { return epochs_.contains(tp); }

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
  std::vector<std::string> fields;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto owned = epochs_.find(parts[i]);
    if (owned == epochs_.end()) {
      return absl::FailedPreconditionError(
          StrCat("redis: ", parts[i].topic, "[", parts[i].partition, "] is not this runner's"));
    }
    fields.push_back(Field(parts[i]));
  }
  // The script's arguments: what is built here goes into one arena (no string per
  // record); record values are passed as they are.
  const std::string prefix = StrCat("streammetrics:sink:", options_.sink_name);
  std::string arena;
  std::vector<std::pair<size_t, size_t>> built;  // arena spans, in argument order
  std::vector<std::string_view> args = {"EVALSHA", conn_->apply_sha, "0"};
  std::vector<int> arena_arg;  // per argument: index into `built`, or -1 (a view kept as is)
  auto add_built = [&](auto&&... pieces) {
    const size_t at = arena.size();
    (strings_internal::Append(&arena, pieces), ...);
    built.emplace_back(at, arena.size() - at);
    args.emplace_back();
    arena_arg.resize(args.size(), -1);
    arena_arg.back() = static_cast<int>(built.size() - 1);
  };
  auto add_view = [&](std::string_view v) {
    args.push_back(v);
    arena_arg.resize(args.size(), -1);
  };
  arena_arg.assign(args.size(), -1);
  add_built(prefix, ":positions");
  add_built(prefix, ":epochs");
  add_built(options_.ttl_s);
  add_built(options_.history_ms);
  add_built(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    add_view(fields[i]);
    add_built(epochs_[parts[i]]);
  }
  std::vector<RejectedRecord> rejected;
  AggregateRow row;
  for (const SinkRecord& r : batch) {
    add_view(fields[parts.IndexOf(r)]);
    add_built(r.offset);
    if (absl::Status parsed = ParseAggregateRow(r.value, &row); !parsed.ok()) {
      rejected.push_back({r, std::string(Message(parsed))});
      add_view("");  // only the position moves
      add_view("0");
      add_view("");
      continue;
    }
    add_built("metrics:", row.service_id, ":", row.metric_name, ":", row.window);
    add_built(row.window_start_ms);
    add_view(r.value);
  }
  for (size_t i = 0; i < args.size(); ++i) {  // the arena no longer moves
    if (arena_arg[i] >= 0) {
      const auto [at, len] = built[arena_arg[i]];
      args[i] = std::string_view(arena.data() + at, len);
    }
  }
  // Dead letters are delivered before the batch is applied (at least once: a retried
  // batch sends them again).
  if (!rejected.empty() && on_rejected) {
    if (absl::Status s = on_rejected(rejected); !s.ok()) return s;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::StatusOr<Reply> r = conn_->Command(args);
    if (!r.ok()) {
      conn_.reset();
      return r.status();
    }
    if ((*r)->type != REDIS_REPLY_ERROR) return absl::OkStatus();
    std::string_view error((*r)->str, (*r)->len);
    if (error.starts_with("NOSCRIPT") && attempt == 0) {
      // The server lost its script cache (a restart): load it again.
      conn_.reset();
      if (absl::Status s = Connect(); !s.ok()) return s;
      args[1] = conn_->apply_sha;  // a view of the new connection's
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
    return absl::UnavailableError(StrCat("redis: apply: ", error));
  }
  return absl::UnavailableError("redis: apply: script missing");
}

}  // namespace streammetrics
