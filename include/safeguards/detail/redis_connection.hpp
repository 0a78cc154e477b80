// safeguards: one connection to Redis (hiredis), and Lua scripts called by their SHA.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <hiredis/hiredis.h>
#include <memory>
#include <optional>
#include <safeguards/redis_options.hpp>
#include <string>
#include <string_view>
#include <sys/time.h>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

struct RedisReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyFree>;

inline bool is_error(const redisReply& r) noexcept {
  return r.type == REDIS_REPLY_ERROR;
}
inline std::string_view text_of(const redisReply& r) noexcept {
  return r.str ? std::string_view(r.str, r.len) : std::string_view();
}
// An error that says "not now" rather than "never": the server is loading its data after a
// restart, busy with a long script, out of memory for a moment, or a replica out of touch. The
// request did not run, and may when sent again.
inline bool is_transient_error(const redisReply& r) noexcept {
  if (!is_error(r))
    return false;
  const std::string_view t = text_of(r);
  for (std::string_view code :
       {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "OOM", "CLUSTERDOWN"})
    if (t.starts_with(code))
      return true;
  return false;
}

// A connection that is made (and authenticated) on first use and made again after it broke.
// Not thread-safe: one request at a time, which is also what makes a request's id enough to
// recognise its retry (see `RedisLedger`).
class RedisConnection {
public:
  /// `round_trips`, when given, counts every command sent (AUTH and SCRIPT LOAD included).
  explicit RedisConnection(RedisOptions options, std::atomic<std::uint64_t>* round_trips = nullptr)
      : options_(std::move(options)), round_trips_(round_trips) {}
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  ~RedisConnection() { drop(); }

  const RedisOptions& options() const noexcept { return options_; }
  /// Why the last command had no reply (empty after one that had).
  const std::string& last_error() const noexcept { return error_; }

  /// Sends one command and returns its reply (an error reply is a reply), or nothing when the
  /// server could not be reached or the connection broke: then it is dropped, and the next
  /// command connects again.
  std::optional<RedisReply> command(const std::vector<std::string_view>& argv) noexcept {
    sent_ = false;
    try {
      if (!context_ && !connect()) {
        sent_ = false; // an AUTH may have gone out, the command did not
        return std::nullopt;
      }
      return send(argv);
    } catch (...) { // out of memory building the request: nothing was sent
      error_ = "out of memory";
      return std::nullopt;
    }
  }

  /// Whether the last command may have reached the server: false when it failed before a byte
  /// of it was written (no connection could be made).
  bool last_command_sent() const noexcept { return sent_; }

  /// Whether a connection is open now (it may still have broken since its last reply).
  bool connected() const noexcept { return context_ != nullptr; }

  /// Closes the connection; the next command makes a new one.
  void drop() noexcept {
    if (context_)
      redisFree(context_);
    context_ = nullptr;
  }

private:
  // Sends on the open connection.
  std::optional<RedisReply> send(const std::vector<std::string_view>& argv) {
    std::vector<const char*> parts;
    std::vector<std::size_t> lengths;
    parts.reserve(argv.size());
    lengths.reserve(argv.size());
    for (const auto& a : argv) {
      parts.push_back(a.data());
      lengths.push_back(a.size());
    }
    sent_ = true;
    if (round_trips_)
      round_trips_->fetch_add(1, std::memory_order_relaxed);
    auto* raw = static_cast<redisReply*>(
        redisCommandArgv(context_, static_cast<int>(parts.size()), parts.data(), lengths.data()));
    if (!raw) {
      error_ = context_->errstr;
      drop();
      return std::nullopt;
    }
    error_.clear();
    return RedisReply(raw);
  }

  bool connect() {
    const auto ms = options_.timeout.count();
    const timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    context_ = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
    if (!context_ || context_->err) {
      error_ = context_ ? context_->errstr : "cannot allocate a Redis context";
      drop();
      return false;
    }
    redisSetTimeout(context_, tv);
    if (options_.password.empty())
      return true;
    std::vector<std::string_view> auth{"AUTH"};
    if (!options_.user.empty())
      auth.emplace_back(options_.user);
    auth.emplace_back(options_.password);
    auto reply = send(auth);
    if (!reply)
      return false;
    if (is_error(**reply)) {
      error_ = std::string(text_of(**reply));
      drop();
      return false;
    }
    return true;
  }

  RedisOptions options_;
  redisContext* context_ = nullptr;
  std::string error_;
  bool sent_ = false;
  std::atomic<std::uint64_t>* round_trips_;
};

// A Lua script run with EVALSHA: loaded on first use, and loaded again when the server answers
// NOSCRIPT (it restarted, or its scripts were flushed).
class RedisScript {
public:
  explicit RedisScript(std::string source) : source_(std::move(source)) {}

  std::optional<RedisReply> run(RedisConnection& c, const std::vector<std::string_view>& keys,
                                const std::vector<std::string_view>& args) noexcept {
    try {
      for (int attempt = 0; attempt < 2; ++attempt) {
        if (sha_.empty() && !load(c))
          return std::nullopt;
        std::vector<std::string_view> argv{"EVALSHA", sha_};
        const std::string count = std::to_string(keys.size());
        argv.emplace_back(count);
        argv.insert(argv.end(), keys.begin(), keys.end());
        argv.insert(argv.end(), args.begin(), args.end());
        auto reply = c.command(argv);
        if (reply && is_error(**reply) && text_of(**reply).starts_with("NOSCRIPT")) {
          sha_.clear();
          continue;
        }
        return reply;
      }
      return std::nullopt;
    } catch (...) {
      return std::nullopt;
    }
  }

private:
  bool load(RedisConnection& c) {
    auto reply = c.command({"SCRIPT", "LOAD", source_});
    if (!reply || (*reply)->type != REDIS_REPLY_STRING)
      return false;
    sha_ = std::string(text_of(**reply));
    return true;
  }

  std::string source_;
  std::string sha_;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
