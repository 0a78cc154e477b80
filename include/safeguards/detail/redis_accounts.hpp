// safeguards: accounts kept in Redis, each operation one Lua script. The raw layer under
// `RedisLedger`: amounts are integers in the amount type's raw units (micro-units for `Decimal`).
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <deque>
#include <map>
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
//                            number an integer in raw units, written as decimal text; and
//                            held:H, what holder H (one ledger object, one process) has reserved
//                            in it and not yet settled
//   prefix:names             hash: account name -> number (accounts opened by name)
//   prefix:clients           the last connection or holder number given out (INCR)
//   prefix:client:C          hash: seq, reply: the last request of connection C and its reply,
//                            so that a request retried after a lost reply is applied once;
//                            expires a week after its last request
//   prefix:holders           set: the holders that may hold reservations
//   prefix:holder:H          holder H's lease: exists while H is alive (PX, renewed)
//   prefix:holder:H:accounts set: the accounts where H holds reservations
//
// Lua numbers are doubles: every amount stays below 2^53 (`max_raw`), where they are exact, and
// is written back with `string.format('%d')` (Lua's own number-to-text keeps 14 digits).
inline constexpr std::int64_t redis_max_raw = (std::int64_t{1} << 53) - 1;

// What every account script starts with: the request's replay, and who is asking.
// KEYS[1] the account (the counter for `open`), KEYS[2] the client; ARGV[1] the request's number
// on that client, ARGV[2] the holder, ARGV[3] its lease in ms, ARGV[4] the key prefix; the
// operation's own arguments follow from ARGV[5].
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
local last, this = tonumber(seen[1] or '0'), tonumber(ARGV[1])
if last == this then
  local reply = {}
  for v in string.gmatch(seen[2], '[^,]+') do reply[#reply + 1] = tonumber(v) end
  return reply
end
-- An older request of this client: a copy that was on its way (in a stalled server's buffers)
-- after its client moved on. It was answered or fenced already: it must never run.
if last > this then return {9} end
local holder, prefix = ARGV[2], ARGV[4]
)lua";

// The account's fields, for every script but `open` (a missing account reads as closed), and
// the holder's share of its reservations.
inline constexpr std::string_view redis_script_account = R"lua(
local f = redis.call('HMGET', KEYS[1], 'remaining', 'used', 'reserved', 'charges', 'closed')
local remaining, used, reserved = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local charges = tonumber(f[4])
local closed = f[5] ~= '0'
-- Takes up to `held` from this holder's reservations here: less when its lease ran out and a
-- sweep gave them back meanwhile (they are in remaining again).
local function take_hold(held)
  local field = 'held:' .. holder
  local mine = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local avail = math.max(math.min(held, mine), 0)
  if avail >= mine then
    redis.call('HDEL', KEYS[1], field)
    redis.call('SREM', prefix .. ':holder:' .. holder .. ':accounts', KEYS[1])
  else
    redis.call('HINCRBY', KEYS[1], field, n(-avail))
  end
  return avail
end
)lua";

// Replies: a list of integers, the first a status (0 ok, 1 insufficient or not as expected,
// 2 closed or no such account, 3 overflow), then the operation's numbers.
enum class RedisOp : std::uint8_t {
  open,
  debit,
  reserve,
  settle,
  release,
  credit,
  swap,
  close,
  sweep, // the scripts from here on have no prologue: they are safe to run twice
  renew,
  fence
};
inline constexpr std::size_t redis_account_ops = 8;
inline constexpr std::size_t redis_op_count = 11;

inline constexpr std::array<std::string_view, redis_op_count> redis_script_bodies = {
    // open: ARGV[5] the initial balance, ARGV[6] a name ('' for none) -> {0, id, attached}
    R"lua(
local name = ARGV[6]
if name ~= '' then
  local existing = redis.call('HGET', prefix .. ':names', name)
  if existing and redis.call('HGET', prefix .. ':account:' .. existing, 'closed') == '0' then
    return done({0, tonumber(existing), 1})
  end
end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', prefix .. ':account:' .. id, 'remaining', ARGV[5], 'used', '0',
           'reserved', '0', 'charges', '0', 'closed', '0')
if name ~= '' then redis.call('HSET', prefix .. ':names', name, id) end
return done({0, id, 0})
)lua",
    // debit: ARGV[5] the amount
    R"lua(
local amount = tonumber(ARGV[5])
if closed then return done({2}) end
if remaining < amount then return done({1}) end
redis.call('HSET', KEYS[1], 'remaining', n(remaining - amount), 'used', n(used + amount),
           'charges', n(charges + 1))
return done({0})
)lua",
    // reserve: ARGV[5] the amount, held under the holder's lease
    R"lua(
local amount = tonumber(ARGV[5])
if closed then return done({2}) end
if remaining < amount then return done({1}) end
redis.call('HSET', KEYS[1], 'remaining', n(remaining - amount), 'reserved', n(reserved + amount))
redis.call('HINCRBY', KEYS[1], 'held:' .. holder, ARGV[5])
redis.call('SADD', prefix .. ':holder:' .. holder .. ':accounts', KEYS[1])
redis.call('SADD', prefix .. ':holders', holder)
redis.call('SET', prefix .. ':holder:' .. holder, '1', 'PX', ARGV[3])
return done({0})
)lua",
    // settle: ARGV[5] held, ARGV[6] actual -> {status, charged, refunded, uncovered}
    R"lua(
local held, actual = tonumber(ARGV[5]), tonumber(ARGV[6])
if not remaining then return done({2, 0, held, math.max(actual, 0)}) end
if actual < 0 then actual = math.max(actual, -used) end -- never forgive more than was used
local avail = take_hold(held)
local from_hold = math.min(actual, avail)
local extra = 0
if not closed then
  extra = math.max(math.min(actual - from_hold, remaining), 0)
  remaining = remaining + avail - from_hold - extra
end
local charged = from_hold + extra
if charged > 0 then charges = charges + 1 end
redis.call('HSET', KEYS[1], 'remaining', n(remaining), 'used', n(used + charged),
           'reserved', n(reserved - avail), 'charges', n(charges))
local refunded = held - math.min(actual, held)
if closed then refunded = avail - from_hold end
return done({closed and 2 or 0, charged, refunded, actual - charged})
)lua",
    // release: ARGV[5] held -> {status}
    R"lua(
local held = tonumber(ARGV[5])
if not remaining then return done({2}) end
local avail = take_hold(held)
if closed then
  redis.call('HSET', KEYS[1], 'reserved', n(reserved - avail))
  return done({2})
end
redis.call('HSET', KEYS[1], 'remaining', n(remaining + avail), 'reserved', n(reserved - avail))
return done({0})
)lua",
    // credit: ARGV[5] the amount, ARGV[6] the most an account may hold
    R"lua(
local amount, max = tonumber(ARGV[5]), tonumber(ARGV[6])
if closed then return done({2}) end
if remaining + used + reserved > max - amount then return done({3}) end
redis.call('HSET', KEYS[1], 'remaining', n(remaining + amount))
return done({0})
)lua",
    // swap (compare-and-set remaining): ARGV[5] expected, ARGV[6] desired, ARGV[7] the most an
    // account may hold -> {0} | {1, remaining} (not as expected) | {2} | {3}
    R"lua(
local expected, desired, max = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
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
    // sweep: KEYS[1] the holders; ARGV[1] the key prefix -> what went back to remaining.
    // Every holder whose lease ran out gives its reservations back: to remaining, or, on a
    // closed account, to `released_after_close` (the pool they came from is gone with the
    // holder's process).
    R"lua(
local prefix, returned = ARGV[1], 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', prefix .. ':holder:' .. h) == 0 then
    local set = prefix .. ':holder:' .. h .. ':accounts'
    for _, account in ipairs(redis.call('SMEMBERS', set)) do
      local f = redis.call('HMGET', account, 'held:' .. h, 'remaining', 'reserved', 'closed')
      local amount = tonumber(f[1] or '0')
      if amount > 0 and f[2] then
        local reserved = string.format('%d', tonumber(f[3]) - amount)
        if f[4] == '0' then
          redis.call('HSET', account, 'reserved', reserved, 'remaining',
                     string.format('%d', tonumber(f[2]) + amount))
          returned = returned + amount
        else
          redis.call('HSET', account, 'reserved', reserved)
          redis.call('HINCRBY', account, 'released_after_close', f[1])
        end
      end
      redis.call('HDEL', account, 'held:' .. h)
    end
    redis.call('DEL', set)
    redis.call('SREM', KEYS[1], h)
  end
end
return returned
)lua",
    // renew: KEYS[1] the holder's lease, KEYS[2] the holders; ARGV[1] the lease in ms, ARGV[2]
    // the holder
    R"lua(
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
)lua",
    // fence: KEYS[1] a client, ARGV[1] its request in doubt -> that request's reply if it ran;
    // else '9', and the request is marked as answered, so that it can no longer run (a copy of
    // it still on its way, in a stalled server's buffers, gets '9' too)
    R"lua(
local seen = redis.call('HMGET', KEYS[1], 'seq', 'reply')
if seen[1] == ARGV[1] then return seen[2] end
if tonumber(seen[1] or '0') > tonumber(ARGV[1]) then return '9' end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'reply', '9')
redis.call('PEXPIRE', KEYS[1], 604800000)
return '9'
)lua",
};

// One connection, its scripts and its requests' numbering.
struct RedisSession {
  RedisSession(const RedisOptions& options, std::atomic<std::uint64_t>& round_trips)
      : connection(options, &round_trips) {
    for (std::size_t i = 0; i < redis_op_count; ++i) {
      std::string source;
      if (i < redis_account_ops) {
        source = redis_script_prologue;
        if (i != static_cast<std::size_t>(RedisOp::open))
          source += redis_script_account;
      }
      source += redis_script_bodies[i];
      scripts[i].emplace(std::move(source));
    }
  }
  RedisScript& script(RedisOp op) noexcept { return *scripts[static_cast<std::size_t>(op)]; }

  RedisConnection connection;
  std::array<std::optional<RedisScript>, redis_op_count> scripts;
  std::string client_key; // empty until the server gave this connection a number
  std::uint64_t seq = 0;
  bool maybe_sent = false; // the current request may have reached the server
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
  bool pending = false; ///< the server could not be reached: kept, and sent when it can be
};

struct OpenedAccount {
  std::uint64_t id = 0;
  bool attached = false; ///< an account of that name was open already
};

// Its requests are `noinline`: each is a network round trip, and inlining them into a
// coordinator's dozens of call sites made one small test file take 40 s to compile instead of 8.
//
// The accounts of one key prefix, for any number of threads: each request takes a connection
// from a pool (a new one when all are busy) and gives it back.
//
// A request whose reply is lost (the connection broke after it was sent) is sent again at once,
// on a new connection, with the same number: the server replays the reply of one that had run
// instead of running it twice. When that fails too, the request is *in doubt*: its connection is
// set aside with it, and resolved as soon as the server answers again (`flush`, which every
// request runs first while anything is in doubt):
// - what gives money back or records a call already made (settle, release, credit) is sent
//   again with its number until the server has it: applied exactly once;
// - what takes money (debit, reserve) was answered `unavailable`, so the caller did not make its
//   call: if the server had run it after all, it is undone (a reservation released, a debit
//   given back), so that nothing stays taken for a call that was never made;
// - a compare-and-set or a close found to have run after all is counted
//   (`applied_after_unavailable`): its caller threw `LedgerUnavailable`. The next close of that
//   account answers what the one that ran swept, so that a retried `remove_agent` returns it
//   to the pool.
class RedisAccounts {
public:
  explicit RedisAccounts(RedisOptions options)
      : options_(std::move(options)), accounts_key_(options_.key_prefix + ":accounts"),
        account_prefix_(options_.key_prefix + ":account:"),
        clients_key_(options_.key_prefix + ":clients"),
        holders_key_(options_.key_prefix + ":holders"),
        lease_ms_(std::to_string(options_.lease.count())) {}

  const RedisOptions& options() const noexcept { return options_; }
  std::string account_key(std::uint64_t id) const { return account_prefix_ + std::to_string(id); }

  /// A new account holding `initial` raw units, or the open account called `name` (when not
  /// empty) if there is one; nothing when the server cannot be reached.
  [[gnu::noinline]] std::optional<OpenedAccount> open(std::int64_t initial,
                                                      std::string_view name = {}) noexcept {
    try {
      auto r = run(RedisOp::open, accounts_key_, {number(initial), std::string(name)});
      if (!r.reply || r.reply->size() != 3 || (*r.reply)[0] != 0) {
        // In doubt: an account may have been made, which nobody will use (it holds money no
        // agent was given, and the pool never lent it): nothing to undo.
        set_aside(std::move(r), Resolution::forget);
        return std::nullopt;
      }
      return OpenedAccount{static_cast<std::uint64_t>((*r.reply)[1]), (*r.reply)[2] == 1};
    } catch (...) {
      return std::nullopt;
    }
  }

  [[gnu::noinline]] LedgerStatus debit(std::uint64_t id, std::int64_t amount) noexcept {
    return take(RedisOp::debit, id, amount);
  }
  [[gnu::noinline]] LedgerStatus reserve(std::uint64_t id, std::int64_t amount) noexcept {
    return take(RedisOp::reserve, id, amount);
  }

  /// Never fails: when the server cannot be reached the settlement is kept and sent when it can
  /// be (`pending`), and its answer is what the server will then do, with the overage (if any)
  /// uncovered, since only the server knows whether remaining could pay it.
  [[gnu::noinline]] RawSettlement settle(std::uint64_t id, std::int64_t held,
                                         std::int64_t actual) noexcept {
    try {
      auto r = run(RedisOp::settle, account_key(id), {number(held), number(actual)});
      if (r.reply && r.reply->size() == 4)
        return {(*r.reply)[1], (*r.reply)[2], (*r.reply)[3], (*r.reply)[0] == 2, false};
      const std::int64_t charged = std::min(actual, held);
      // Sent again, whole, with the same number: if the first one ran, its own answer stands;
      // an overage remaining cannot pay then is counted in `overshoot`.
      set_aside(std::move(r), Resolution::resend);
      return {charged, held - charged, actual - charged, false, true};
    } catch (...) {
      return {std::min(actual, held), held - std::min(actual, held), 0, false, true};
    }
  }
  /// True: back in remaining (or kept, to be sent when the server can be reached); false: the
  /// account is closed, the caller keeps the money.
  [[gnu::noinline]] bool release(std::uint64_t id, std::int64_t held) noexcept {
    try {
      auto r = run(RedisOp::release, account_key(id), {number(held)});
      if (r.reply && !r.reply->empty())
        return (*r.reply)[0] == 0;
      set_aside(std::move(r), Resolution::resend);
    } catch (...) {
    }
    return true;
  }
  /// `ok` also when the server cannot be reached: the credit is kept and sent when it can be.
  [[gnu::noinline]] LedgerStatus credit(std::uint64_t id, std::int64_t amount) noexcept {
    try {
      auto r = run(RedisOp::credit, account_key(id), {number(amount), number(redis_max_raw)});
      if (r.reply && !r.reply->empty())
        return status_of(*r.reply);
      set_aside(std::move(r), Resolution::resend);
    } catch (...) {
    }
    return LedgerStatus::ok;
  }
  /// `ok`; `conflict` when remaining was not `expected` (`expected` is then what it was);
  /// `closed`; `overflow`; `unavailable`.
  [[gnu::noinline]] LedgerStatus compare_exchange_remaining(std::uint64_t id,
                                                            std::int64_t& expected,
                                                            std::int64_t desired) noexcept {
    try {
      auto r = run(RedisOp::swap, account_key(id),
                   {number(expected), number(desired), number(redis_max_raw)});
      if (!r.reply || r.reply->empty()) {
        set_aside(std::move(r), Resolution::count);
        return LedgerStatus::unavailable;
      }
      if ((*r.reply)[0] == 1 && r.reply->size() == 2) {
        expected = (*r.reply)[1];
        return LedgerStatus::conflict;
      }
      return status_of(*r.reply);
    } catch (...) {
      return LedgerStatus::unavailable;
    }
  }
  /// The swept balance, `closed` (already closed or no such account), or `unavailable`.
  [[gnu::noinline]] std::pair<LedgerStatus, std::int64_t> close(std::uint64_t id) noexcept {
    try {
      (void)flush(true); // a close of ours in doubt is resolved first (see `swept_unseen_`)
      auto r = run(RedisOp::close, account_key(id), {});
      if (!r.reply || r.reply->empty()) {
        set_aside(std::move(r), Resolution::count);
        return {LedgerStatus::unavailable, 0};
      }
      const LedgerStatus s = status_of(*r.reply);
      if (s == LedgerStatus::closed) { // closed by a request of ours answered `unavailable`?
        std::lock_guard lock(mutex_);
        if (const auto it = swept_unseen_.find(r.key); it != swept_unseen_.end()) {
          const std::int64_t swept = it->second;
          swept_unseen_.erase(it);
          return {LedgerStatus::ok, swept};
        }
      }
      return {s, s == LedgerStatus::ok && r.reply->size() == 2 ? (*r.reply)[1] : 0};
    } catch (...) {
      return {LedgerStatus::unavailable, 0};
    }
  }

  /// One read of the account's fields (HMGET is atomic); nothing when unreachable.
  [[gnu::noinline]] std::optional<RawBalance> balance(std::uint64_t id) noexcept {
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

  /// Keeps this object's reservations alive for another lease (see `RedisOptions::lease`).
  [[gnu::noinline]] bool renew() noexcept {
    try {
      const std::string holder = holder_id();
      if (holder.empty())
        return false;
      Lease lease(*this);
      const std::string lease_key = options_.key_prefix + ":holder:" + holder;
      auto reply = lease->script(RedisOp::renew)
                       .run(lease->connection, {lease_key, holders_key_}, {lease_ms_, holder});
      return reply && !is_error(**reply);
    } catch (...) {
      return false;
    }
  }

  /// Gives back the reservations of every holder whose lease ran out (a process that died
  /// holding them): what went back to remaining, or nothing when the server cannot be reached.
  /// Any client may run it, any number of times.
  [[gnu::noinline]] std::optional<std::int64_t> sweep() noexcept {
    try {
      Lease lease(*this);
      auto reply = lease->script(RedisOp::sweep)
                       .run(lease->connection, {holders_key_}, {options_.key_prefix});
      if (!reply || (*reply)->type != REDIS_REPLY_INTEGER)
        return std::nullopt;
      return (*reply)->integer;
    } catch (...) {
      return std::nullopt;
    }
  }

  /// Resolves the requests in doubt (see the class comment), oldest first; true when none is
  /// left. Another thread already resolving them makes this return false at once, unless `wait`.
  [[gnu::noinline]] bool flush(bool wait = false) noexcept {
    std::unique_lock flushing(flush_mutex_, std::defer_lock);
    if (wait)
      flushing.lock();
    else if (!flushing.try_lock())
      return false;
    for (;;) {
      InDoubt item;
      {
        std::lock_guard lock(mutex_);
        if (in_doubt_.empty()) {
          has_doubt_.store(false, std::memory_order_release);
          return true;
        }
        item = std::move(in_doubt_.front());
        in_doubt_.pop_front();
      }
      if (!resolve(item)) {
        std::lock_guard lock(mutex_);
        try {
          in_doubt_.push_front(std::move(item));
        } catch (...) { // out of memory: nothing more can be done for it
        }
        return false;
      }
      give_back(std::move(item.session));
    }
  }

  /// Charges `amount` that was spent without the server's approval (a fail-open allowance):
  /// kept and sent as soon as the server can be reached, once; remaining pays what it can, the
  /// rest is counted in `overshoot`.
  [[gnu::noinline]] void defer_charge(std::uint64_t id, std::int64_t amount) noexcept {
    try {
      Request r;
      r.op = RedisOp::settle;
      r.key = account_key(id);
      r.args = {"0", number(amount)};
      set_aside(std::move(r), Resolution::resend); // a connection is taken when it is sent
    } catch (...) { // out of memory: the charge is lost (the allowance bounds it)
    }
  }
  /// Commands sent to the server so far, by every connection of this object: its round trips.
  std::uint64_t round_trips() const noexcept {
    return round_trips_.load(std::memory_order_relaxed);
  }
  /// Raw units charged while the server was away (settlements sent later, fail-open spending)
  /// that the accounts' remaining could not pay when the server had them.
  std::int64_t overshoot() const noexcept { return overshoot_.load(std::memory_order_relaxed); }

  /// How many requests are in doubt now.
  std::size_t in_doubt() const noexcept {
    std::lock_guard lock(mutex_);
    return in_doubt_.size();
  }
  /// Compare-and-sets and closes that were answered `unavailable` and turned out to have run.
  std::uint64_t applied_after_unavailable() const noexcept {
    return applied_after_unavailable_.load(std::memory_order_relaxed);
  }
  /// Requests in doubt that the server refused with an error when they were sent again
  /// (permissions taken away meanwhile, say): they never ran.
  std::uint64_t refused_in_doubt() const noexcept {
    return refused_in_doubt_.load(std::memory_order_relaxed);
  }
  /// This object's holder number ('' until it first talked to the server).
  std::string holder() const {
    std::lock_guard lock(mutex_);
    return holder_;
  }

private:
  enum class Resolution : std::uint8_t {
    resend, // send again with its number until the server has it
    undo,   // find out whether it ran; if it did, undo what it took
    count,  // find out whether it ran; if it did, count it
    forget  // nothing to resolve
  };

  // A request and the connection it was numbered on.
  struct Request {
    std::unique_ptr<RedisSession> session;
    RedisOp op = RedisOp::debit;
    std::string key;
    std::string seq;
    std::vector<std::string> args;
    std::optional<std::vector<std::int64_t>> reply; // nothing: in doubt
  };
  struct InDoubt : Request {
    Resolution resolution = Resolution::forget;
  };

  // A connection taken from the pool for one request, and given back unless it is kept with a
  // request in doubt.
  class Lease {
  public:
    explicit Lease(RedisAccounts& owner) : owner_(owner), session_(owner.take_session()) {}
    ~Lease() { owner_.give_back(std::move(session_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    RedisSession& operator*() noexcept { return *session_; }
    RedisSession* operator->() noexcept { return session_.get(); }
    std::unique_ptr<RedisSession> keep() noexcept { return std::move(session_); }

  private:
    RedisAccounts& owner_;
    std::unique_ptr<RedisSession> session_;
  };

  // An idle connection, or a new one.
  std::unique_ptr<RedisSession> take_session() {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        auto session = std::move(idle_.back());
        idle_.pop_back();
        return session;
      }
    }
    return std::make_unique<RedisSession>(options_, round_trips_);
  }

  // Kept for the next request, up to `max_idle`: a burst of threads leaves no more connections
  // open than that.
  static constexpr std::size_t max_idle = 64;
  void give_back(std::unique_ptr<RedisSession> session) noexcept {
    if (!session)
      return;
    std::lock_guard lock(mutex_);
    try {
      if (idle_.size() < max_idle)
        idle_.push_back(std::move(session));
    } catch (...) { // out of memory: the connection is closed instead of kept
    }
  }

  [[gnu::noinline]] LedgerStatus take(RedisOp op, std::uint64_t id, std::int64_t amount) noexcept {
    try {
      auto r = run(op, account_key(id), {number(amount)});
      if (r.reply && !r.reply->empty())
        return status_of(*r.reply);
      set_aside(std::move(r), Resolution::undo);
    } catch (...) {
    }
    return LedgerStatus::unavailable;
  }

  [[gnu::noinline]] void set_aside(Request&& r, Resolution resolution) noexcept {
    // A request that never left is in doubt only when it must still be sent (what gives back).
    const bool never_sent = r.seq.empty() && resolution != Resolution::resend;
    if ((!r.session && resolution != Resolution::resend) || resolution == Resolution::forget ||
        never_sent) {
      give_back(std::move(r.session));
      return;
    }
    try {
      InDoubt item;
      static_cast<Request&>(item) = std::move(r);
      item.resolution = resolution;
      std::lock_guard lock(mutex_);
      in_doubt_.push_back(std::move(item));
      has_doubt_.store(true, std::memory_order_release);
    } catch (...) { // out of memory: nothing more can be done for it
    }
  }

  // One step towards resolving `item`: true when it is resolved.
  [[gnu::noinline]] bool resolve(InDoubt& item) noexcept {
    try {
      if (!item.session)
        item.session = take_session();
      RedisSession& s = *item.session;
      if (item.resolution == Resolution::resend) {
        if (s.client_key.empty() && !number_client(s))
          return false;
        if (item.seq.empty()) // never sent: numbered now
          item.seq = std::to_string(++s.seq);
        return resent(s, item);
      }
      if (item.seq.empty())
        return true; // never sent: nothing to find out
      // Did it run? The fence answers, and keeps it from running later if it has not: a server
      // that stalled may still hold it in a buffer (nothing newer was sent on this client).
      auto reply = s.script(RedisOp::fence).run(s.connection, {s.client_key}, {item.seq});
      if (!reply || is_transient_error(**reply))
        return false;
      const redisReply& r = **reply;
      if (r.type != REDIS_REPLY_STRING) {
        refused_in_doubt_.fetch_add(1, std::memory_order_relaxed);
        return true; // an error reply: the server refuses our scripts (it refused this one too)
      }
      if (!text_of(r).starts_with("0"))
        return true; // it did not run (and never will), or ran and refused: nothing was taken
      if (item.resolution == Resolution::count) {
        applied_after_unavailable_.fetch_add(1, std::memory_order_relaxed);
        if (item.op == RedisOp::close) { // the next close of it answers what this one swept
          const std::string_view ran = text_of(r); // "0,<swept>"
          std::int64_t swept = 0;
          if (const auto comma = ran.find(','); comma != std::string_view::npos)
            std::from_chars(ran.data() + comma + 1, ran.data() + ran.size(), swept);
          std::lock_guard lock(mutex_);
          swept_unseen_[item.key] += swept;
        }
        return true;
      }
      // It took money for a call that was never made: give it back, as a request of its own.
      const std::string amount = item.args.at(0);
      if (item.op == RedisOp::reserve) {
        item.op = RedisOp::release;
        item.args = {amount};
      } else {
        item.op = RedisOp::settle;
        item.args = {"0", "-" + amount}; // the inverse of a charge
      }
      item.seq = std::to_string(++s.seq);
      item.resolution = Resolution::resend;
      return resent(s, item);
    } catch (...) {
      return false;
    }
  }

  // Whether the server has `item` now: it ran (or had run), or refused it for good.
  bool resent(RedisSession& s, const InDoubt& item) {
    bool refused = false;
    if (const auto reply = send(s, item.op, item.key, item.seq, item.args, &refused)) {
      if (item.op == RedisOp::settle && reply->size() == 4 && (*reply)[3] > 0)
        overshoot_.fetch_add((*reply)[3], std::memory_order_relaxed);
      return true;
    }
    if (refused)
      refused_in_doubt_.fetch_add(1, std::memory_order_relaxed);
    return refused;
  }

  static std::string number(std::int64_t v) { return std::to_string(v); }
  static std::int64_t integer_of(const redisReply& r) noexcept {
    if (r.type == REDIS_REPLY_INTEGER)
      return r.integer;
    const std::string_view t = text_of(r);
    std::int64_t v = 0;
    std::from_chars(t.data(), t.data() + t.size(), v);
    return v;
  }

  static LedgerStatus status_of(const std::vector<std::int64_t>& r) noexcept {
    switch (r.at(0)) {
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

  // Runs an account script on `key`: the request with its reply, or in doubt (no reply) with
  // the connection it was numbered on. Requests in doubt are resolved first, so that what gives
  // money back lands before new requests take more.
  [[gnu::noinline]] Request run(RedisOp op, const std::string& key, std::vector<std::string> args) {
    if (has_doubt_.load(std::memory_order_acquire))
      (void)flush();
    Request r;
    r.op = op;
    r.key = key;
    r.args = std::move(args);
    Lease lease(*this);
    RedisSession& s = *lease;
    s.maybe_sent = false;
    if (!s.client_key.empty() || number_client(s)) {
      r.seq = std::to_string(++s.seq);
      r.reply = send(s, op, key, r.seq, r.args);
    }
    if (!r.reply && !s.maybe_sent)
      r.seq.clear(); // it never left: nothing can have run
    if (!r.reply)
      r.session = lease.keep(); // numbered or not (then `seq` is empty: nothing was sent)
    return r;
  }

  // Sends a request, and once more after a lost reply with the same number (applied at most
  // once); its integer reply, or nothing when the server could not be reached.
  [[gnu::noinline]] std::optional<std::vector<std::int64_t>>
  send(RedisSession& s, RedisOp op, const std::string& key, const std::string& seq,
       const std::vector<std::string>& args, bool* refused = nullptr) {
    const std::string holder = holder_id();
    std::vector<std::string_view> argv{seq, holder, lease_ms_, options_.key_prefix};
    for (const auto& a : args)
      argv.emplace_back(a);
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto reply = s.script(op).run(s.connection, {key, s.client_key}, argv);
      if (s.connection.last_command_sent())
        s.maybe_sent = true;
      if (!reply || is_transient_error(**reply))
        continue; // safe to send again: a reply lost, or a "not now"
      const redisReply& r = **reply;
      if (r.type != REDIS_REPLY_ARRAY || r.elements == 0) {
        if (refused) // an error reply (NOPERM, say): the script did not run, and will not
          *refused = true;
        return std::nullopt;
      }
      std::vector<std::int64_t> out;
      out.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i)
        out.push_back(integer_of(*r.element[i]));
      return out;
    }
    return std::nullopt;
  }

  bool number_client(RedisSession& s) {
    auto reply = s.connection.command({"INCR", clients_key_});
    if (!reply || (*reply)->type != REDIS_REPLY_INTEGER)
      return false;
    const std::string n = std::to_string((*reply)->integer);
    s.client_key = options_.key_prefix + ":client:" + n;
    std::lock_guard lock(mutex_);
    if (holder_.empty())
      holder_ = n; // the first connection's number names this object's reservations
    return true;
  }

  // Set once, by the first connection numbered, before any script that reads it is sent.
  std::string holder_id() const {
    std::lock_guard lock(mutex_);
    return holder_;
  }

  RedisOptions options_;
  std::string accounts_key_;
  std::string account_prefix_;
  std::string clients_key_;
  std::string holders_key_;
  std::string lease_ms_;
  mutable std::mutex mutex_; // idle_, in_doubt_, holder_
  std::mutex flush_mutex_;
  std::vector<std::unique_ptr<RedisSession>> idle_;
  std::deque<InDoubt> in_doubt_;
  std::map<std::string, std::int64_t> swept_unseen_; // closes that ran after `unavailable`
  std::atomic<bool> has_doubt_{false};
  std::atomic<std::uint64_t> applied_after_unavailable_{0};
  std::atomic<std::uint64_t> refused_in_doubt_{0};
  std::atomic<std::int64_t> overshoot_{0};
  std::atomic<std::uint64_t> round_trips_{0};
  std::string holder_;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
