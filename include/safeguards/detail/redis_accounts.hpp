// safeguards: accounts kept in Redis, each operation one Lua script. The raw layer under
// `RedisLedger`: amounts are integers in the amount type's raw units (micro-units for `Decimal`).
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/detail/redis_connection.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ledger.hpp>
#include <safeguards/redis_options.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// The data layout, under `prefix` (RedisOptions::key_prefix):
//
//   prefix:accounts          the last account number given out (INCR)
//   prefix:account:N         hash: remaining, used, reserved, charges, closed (0 or 1); every
//                            number an integer in raw units, written as decimal text
//   prefix:clients           the last client number given out (INCR)
//   prefix:client:C          hash: seq, reply: the last request of connection C and its reply,
//                            so that a request retried after a lost reply is applied once;
//                            expires a week after its last request
//
// Lua numbers are doubles: every amount stays below 2^53 (`max_raw`), where they are exact, and
// is written back with `string.format('%d')` (Lua's own number-to-text keeps 14 digits).
inline constexpr std::int64_t redis_max_raw = (std::int64_t{1} << 53) - 1;

// What every script starts with: the request's replay, and the account's fields.
// KEYS[1] the account, KEYS[2] the client; ARGV[1] the request's number on that client.
inline constexpr std::string_view redis_script_prologue = R"lua(
local function n(x) return string.format('%d', x) end
local function done(reply)
  local parts = {}
  for i = 1, #reply do parts[i] = n(reply[i]) end
  redis.call('HSET', KEYS[2], 'seq', ARGV[1], 'reply', table.concat(parts, ','))
  redis.call('PEXPIRE', KEYS[2], 604800000)
  return reply
end
local seen = redis.call('HMGET', KEYS[2], 'seq', 'reply')
if seen[1] == ARGV[1] then
  local reply = {}
  for v in string.gmatch(seen[2], '[^,]+') do reply[#reply + 1] = tonumber(v) end
  return reply
end
)lua";

// The account's fields, for every script but `open` (a missing account reads as closed).
inline constexpr std::string_view redis_script_account = R"lua(
local f = redis.call('HMGET', KEYS[1], 'remaining', 'used', 'reserved', 'charges', 'closed')
local remaining, used, reserved = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local charges = tonumber(f[4])
local closed = f[5] ~= '0'
)lua";

// Replies: a list of integers, the first a status (0 ok, 1 insufficient, 2 closed or no such
// account, 3 overflow), then the operation's numbers.
enum class RedisOp : std::uint8_t { open, debit, reserve, settle, release, credit, swap, close };
inline constexpr std::size_t redis_op_count = 8;

inline constexpr std::array<std::string_view, redis_op_count> redis_script_bodies = {
    // open: ARGV[2] the initial balance, ARGV[3] the accounts' key prefix; KEYS[1] the counter.
    R"lua(
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', ARGV[3] .. id, 'remaining', ARGV[2], 'used', '0', 'reserved', '0',
           'charges', '0', 'closed', '0')
return done({0, id})
)lua",
    // debit: ARGV[2] the amount
    R"lua(
local amount = tonumber(ARGV[2])
if closed then return done({2}) end
if remaining < amount then return done({1}) end
redis.call('HSET', KEYS[1], 'remaining', n(remaining - amount), 'used', n(used + amount),
           'charges', n(charges + 1))
return done({0})
)lua",
    // reserve: ARGV[2] the amount
    R"lua(
local amount = tonumber(ARGV[2])
if closed then return done({2}) end
if remaining < amount then return done({1}) end
redis.call('HSET', KEYS[1], 'remaining', n(remaining - amount), 'reserved', n(reserved + amount))
return done({0})
)lua",
    // settle: ARGV[2] held, ARGV[3] actual -> {status, charged, refunded, uncovered}
    R"lua(
local held, actual = tonumber(ARGV[2]), tonumber(ARGV[3])
if not remaining then return done({2, 0, held, math.max(actual, 0)}) end
local from_hold = math.min(actual, held)
local refund = held - from_hold
local overage = actual - from_hold
local extra = 0
if not closed then
  extra = math.min(overage, remaining)
  remaining = remaining + refund - extra
end
local charged = from_hold + extra
if charged > 0 then charges = charges + 1 end
redis.call('HSET', KEYS[1], 'remaining', n(remaining), 'used', n(used + charged),
           'reserved', n(reserved - held), 'charges', n(charges))
return done({closed and 2 or 0, charged, refund, overage - extra})
)lua",
    // release: ARGV[2] held -> {status}
    R"lua(
local held = tonumber(ARGV[2])
if not remaining then return done({2}) end
if closed then
  redis.call('HSET', KEYS[1], 'reserved', n(reserved - held))
  return done({2})
end
redis.call('HSET', KEYS[1], 'remaining', n(remaining + held), 'reserved', n(reserved - held))
return done({0})
)lua",
    // credit: ARGV[2] the amount, ARGV[3] the most an account may hold
    R"lua(
local amount, max = tonumber(ARGV[2]), tonumber(ARGV[3])
if closed then return done({2}) end
if remaining + used + reserved > max - amount then return done({3}) end
redis.call('HSET', KEYS[1], 'remaining', n(remaining + amount))
return done({0})
)lua",
    // swap (compare-and-set remaining): ARGV[2] expected, ARGV[3] desired, ARGV[4] the most an
    // account may hold -> {0} | {1, remaining} (not as expected) | {2} | {3}
    R"lua(
local expected, desired, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if closed then return done({2}) end
if remaining ~= expected then return done({1, remaining}) end
if desired + used + reserved > max then return done({3}) end
redis.call('HSET', KEYS[1], 'remaining', n(desired))
return done({0})
)lua",
    // close -> {0, swept} | {2}
    R"lua(
if closed then return done({2}) end
redis.call('HSET', KEYS[1], 'remaining', '0', 'closed', '1')
return done({0, remaining})
)lua",
};

// One connection, its scripts and its requests' numbering.
struct RedisSession {
  explicit RedisSession(const RedisOptions& options) : connection(options) {
    for (std::size_t i = 0; i < redis_op_count; ++i)
      scripts[i].emplace(std::string(redis_script_prologue) +
                         std::string(i == static_cast<std::size_t>(RedisOp::open)
                                         ? std::string_view()
                                         : redis_script_account) +
                         std::string(redis_script_bodies[i]));
  }
  RedisConnection connection;
  std::array<std::optional<RedisScript>, redis_op_count> scripts;
  std::string client_key; // empty until the server gave this connection a number
  std::uint64_t seq = 0;
};

struct RawBalance {
  std::int64_t remaining = 0;
  std::int64_t used = 0;
  std::int64_t reserved = 0;
  std::uint64_t charges = 0;
  bool closed = true;
};

struct RawSettlement {
  std::int64_t charged = 0;
  std::int64_t refunded = 0;
  std::int64_t uncovered = 0;
  bool account_closed = false;
};

// The accounts of one key prefix, for any number of threads: each request takes a connection
// from a pool (a new one when all are busy) and gives it back.
//
// A request whose reply is lost (the connection broke after it was sent) is sent again at once,
// on a new connection, with the same number: the server replays the reply of one that had run
// instead of running it twice. When the server cannot be reached, the answer is `nothing`
// (`LedgerStatus::unavailable` for the operations that return a status).
class RedisAccounts {
public:
  explicit RedisAccounts(RedisOptions options)
      : options_(std::move(options)), accounts_key_(options_.key_prefix + ":accounts"),
        account_prefix_(options_.key_prefix + ":account:"),
        clients_key_(options_.key_prefix + ":clients") {}

  const RedisOptions& options() const noexcept { return options_; }
  std::string account_key(std::uint64_t id) const { return account_prefix_ + std::to_string(id); }

  /// A new account holding `initial` raw units; nothing when the server cannot be reached.
  std::optional<std::uint64_t> open(std::int64_t initial) noexcept {
    auto r = run(RedisOp::open, accounts_key_, {number(initial), account_prefix_});
    if (!r || r->size() != 2 || (*r)[0] != 0)
      return std::nullopt;
    return static_cast<std::uint64_t>((*r)[1]);
  }

  LedgerStatus debit(std::uint64_t id, std::int64_t amount) noexcept {
    return status_of(run(RedisOp::debit, account_key_or_empty(id), {number(amount)}));
  }
  LedgerStatus reserve(std::uint64_t id, std::int64_t amount) noexcept {
    return status_of(run(RedisOp::reserve, account_key_or_empty(id), {number(amount)}));
  }
  std::optional<RawSettlement> settle(std::uint64_t id, std::int64_t held,
                                      std::int64_t actual) noexcept {
    auto r = run(RedisOp::settle, account_key_or_empty(id), {number(held), number(actual)});
    if (!r || r->size() != 4)
      return std::nullopt;
    return RawSettlement{(*r)[1], (*r)[2], (*r)[3], (*r)[0] == 2};
  }
  /// True: back in remaining; false: the account is closed, the caller keeps the money.
  std::optional<bool> release(std::uint64_t id, std::int64_t held) noexcept {
    auto r = run(RedisOp::release, account_key_or_empty(id), {number(held)});
    if (!r || r->empty())
      return std::nullopt;
    return (*r)[0] == 0;
  }
  LedgerStatus credit(std::uint64_t id, std::int64_t amount) noexcept {
    return status_of(
        run(RedisOp::credit, account_key_or_empty(id), {number(amount), number(redis_max_raw)}));
  }
  /// `ok`; `insufficient` when remaining was not `expected` (`expected` is then what it was);
  /// `closed`; `overflow`; `unavailable`.
  LedgerStatus compare_exchange_remaining(std::uint64_t id, std::int64_t& expected,
                                          std::int64_t desired) noexcept {
    auto r = run(RedisOp::swap, account_key_or_empty(id),
                 {number(expected), number(desired), number(redis_max_raw)});
    if (r && r->size() == 2 && (*r)[0] == 1)
      expected = (*r)[1];
    return status_of(r);
  }
  /// The swept balance, `closed` (already closed or no such account), or `unavailable`.
  std::pair<LedgerStatus, std::int64_t> close(std::uint64_t id) noexcept {
    auto r = run(RedisOp::close, account_key_or_empty(id), {});
    const LedgerStatus s = status_of(r);
    return {s, s == LedgerStatus::ok && r->size() == 2 ? (*r)[1] : 0};
  }

  /// One read of the account's fields (HMGET is atomic); nothing when unreachable.
  std::optional<RawBalance> balance(std::uint64_t id) noexcept {
    try {
      const std::string key = account_key(id);
      Lease lease(*this);
      for (int attempt = 0; attempt < 2; ++attempt) {
        auto reply = lease->connection.command(
            {"HMGET", key, "remaining", "used", "reserved", "charges", "closed"});
        if (!reply)
          continue; // a read is safe to send again
        const redisReply& r = **reply;
        if (r.type != REDIS_REPLY_ARRAY || r.elements != 5)
          return std::nullopt;
        RawBalance b;
        if (r.element[0]->type != REDIS_REPLY_STRING)
          return b; // no such account: closed, empty
        b.remaining = integer_of(*r.element[0]);
        b.used = integer_of(*r.element[1]);
        b.reserved = integer_of(*r.element[2]);
        b.charges = static_cast<std::uint64_t>(integer_of(*r.element[3]));
        b.closed = text_of(*r.element[4]) != "0";
        return b;
      }
      return std::nullopt;
    } catch (...) {
      return std::nullopt;
    }
  }

private:
  // A connection taken from the pool for one request, and given back.
  class Lease {
  public:
    explicit Lease(RedisAccounts& owner) : owner_(owner) {
      std::lock_guard lock(owner_.mutex_);
      if (!owner_.idle_.empty()) {
        session_ = std::move(owner_.idle_.back());
        owner_.idle_.pop_back();
      }
      if (!session_)
        session_ = std::make_unique<RedisSession>(owner_.options_);
    }
    ~Lease() {
      std::lock_guard lock(owner_.mutex_);
      try {
        owner_.idle_.push_back(std::move(session_));
      } catch (...) { // out of memory: the connection is closed instead of kept
      }
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    RedisSession& operator*() noexcept { return *session_; }
    RedisSession* operator->() noexcept { return session_.get(); }

  private:
    RedisAccounts& owner_;
    std::unique_ptr<RedisSession> session_;
  };

  std::string account_key_or_empty(std::uint64_t id) const noexcept {
    try {
      return account_key(id);
    } catch (...) {
      return {};
    }
  }
  static std::string number(std::int64_t v) { return std::to_string(v); }
  static std::int64_t integer_of(const redisReply& r) noexcept {
    if (r.type == REDIS_REPLY_INTEGER)
      return r.integer;
    std::int64_t v = 0;
    bool negative = false;
    for (char c : text_of(r)) {
      if (c == '-')
        negative = true;
      else if (c >= '0' && c <= '9')
        v = v * 10 + (c - '0');
    }
    return negative ? -v : v;
  }

  static LedgerStatus status_of(const std::optional<std::vector<std::int64_t>>& r) noexcept {
    if (!r || r->empty())
      return LedgerStatus::unavailable;
    switch ((*r)[0]) {
    case 0:
      return LedgerStatus::ok;
    case 1:
      return LedgerStatus::insufficient;
    case 2:
      return LedgerStatus::closed;
    default:
      return LedgerStatus::overflow;
    }
  }

  // Runs a script on `key` with `args` after the request's number; its integer reply, or
  // nothing when the server could not be reached (or answered with an error).
  std::optional<std::vector<std::int64_t>> run(RedisOp op, const std::string& key,
                                               const std::vector<std::string>& args) noexcept {
    try {
      if (key.empty())
        return std::nullopt;
      Lease lease(*this);
      RedisSession& s = *lease;
      if (s.client_key.empty() && !number_client(s))
        return std::nullopt;
      const std::string seq = std::to_string(++s.seq);
      std::vector<std::string_view> argv{seq};
      for (const auto& a : args)
        argv.emplace_back(a);
      // Sent again once after a lost reply, with the same number: applied at most once.
      for (int attempt = 0; attempt < 2; ++attempt) {
        auto reply =
            s.scripts[static_cast<std::size_t>(op)]->run(s.connection, {key, s.client_key}, argv);
        if (!reply)
          continue;
        const redisReply& r = **reply;
        if (r.type != REDIS_REPLY_ARRAY)
          return std::nullopt;
        std::vector<std::int64_t> out;
        out.reserve(r.elements);
        for (std::size_t i = 0; i < r.elements; ++i)
          out.push_back(integer_of(*r.element[i]));
        return out;
      }
      return std::nullopt;
    } catch (...) {
      return std::nullopt;
    }
  }

  bool number_client(RedisSession& s) {
    auto reply = s.connection.command({"INCR", clients_key_});
    if (!reply || (*reply)->type != REDIS_REPLY_INTEGER)
      return false;
    s.client_key = options_.key_prefix + ":client:" + std::to_string((*reply)->integer);
    return true;
  }

  RedisOptions options_;
  std::string accounts_key_;
  std::string account_prefix_;
  std::string clients_key_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<RedisSession>> idle_;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
