// safeguards: a ledger in Redis, shared by every process that uses the same server and key
// prefix. Needs hiredis (Debian: libhiredis-dev; link -lhiredis).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/decimal.hpp>
#include <safeguards/detail/redis_accounts.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ledger.hpp>
#include <safeguards/redis_options.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>

namespace safeguards {
inline namespace v1 {

/// A `Ledger` whose accounts live in Redis, so that several processes share budgets and a
/// restart forgets nothing the server acknowledged. Every balance operation is one Lua script
/// run atomically on the server: one round trip, never overspent, whatever the number of
/// processes and threads. Amounts are integers in raw units (micro-units for `Decimal`), below
/// 2^53.
///
/// A coordinator over it opens each agent's account by the agent's name: a second process that
/// creates an agent of the same name attaches to the same account (see docs/distributed.md).
///
/// When the server cannot be reached, debits and reserves answer `LedgerStatus::unavailable` (a
/// coordinator's consume: `ConsumeStatus::ledger_unavailable`; nothing is taken, the call is not
/// made), or, under `RedisOptions::when_unreachable = FailOpenWithAllowance{amount}`, are
/// granted from the process's allowance and charged when the server is back; meanwhile settlements,
/// releases and credits are kept and sent, each exactly once, when the server answers again.
/// Reservations are leases: a process killed while holding some gives them back
/// `RedisOptions::lease` after its last renewal, through the sweep that every ledger runs.
///
/// **Example**
/// ```
/// using RedisCoordinator = BasicBudgetCoordinator<Decimal, FixedAllocation,
///                                                 std::chrono::system_clock, RedisLedger>;
/// RedisCoordinator coord(RedisOptions{.key_prefix = "support-bots"});
/// AgentId a = coord.create_agent({.name = "triage", .initial_budget = 50_d});
/// if (coord.try_consume(a, 1_d)) { /* call the model */ }
/// ```
template <BudgetAmount Amount = Decimal>
requires detail::RawAmount<Amount>
class BasicRedisLedger {
  using traits = amount_traits<Amount>;

public:
  using amount_type = Amount;
  using options_type = RedisOptions;

  /// One account as this process knows it.
  class Account {
  public:
    std::uint64_t id() const noexcept { return id_; }
    /// Opened by name where an open account of that name existed already.
    bool attached() const noexcept { return attached_; }

  private:
    friend class BasicRedisLedger;
    std::uint64_t id_ = 0;
    bool attached_ = false;
    std::atomic<bool> open_{true};
    // Raw units reserved from the fail-open allowance: held by no `held:H` on the server.
    std::atomic<std::int64_t> unbacked_{0};
    mutable std::mutex last_mutex_;
    detail::RawBalance last_; // the last balance read, for when the server cannot be reached
  };
  using handle_type = Account*;

  /// The most an account can be given (`remaining + used + reserved`): 2^53 - 1 raw units.
  static std::optional<Amount> max_balance() noexcept {
    return traits::from_raw(detail::redis_max_raw);
  }

  /// Connects lazily: nothing is sent until the first operation. With `options.background`, a
  /// thread renews this ledger's lease, sweeps dead processes' reservations and resends
  /// requests in doubt, every third of the lease.
  explicit BasicRedisLedger(RedisOptions options = {}) : accounts_(std::move(options)) {
    if (accounts_.options().lease <= std::chrono::milliseconds::zero())
      throw InvalidArgument("safeguards: a Redis ledger's lease must be positive");
    if (accounts_.options().background)
      maintainer_ = std::thread([this] { maintain_until_stopped(); });
  }
  BasicRedisLedger(const BasicRedisLedger&) = delete;
  BasicRedisLedger& operator=(const BasicRedisLedger&) = delete;
  /// Sends what is still in doubt if it can; what cannot be sent is lost with the process, and
  /// the lease gives its reservations back.
  ~BasicRedisLedger() {
    {
      std::lock_guard lock(stop_mutex_);
      stopping_ = true;
    }
    stop_.notify_all();
    if (maintainer_.joinable())
      maintainer_.join();
    (void)accounts_.flush();
  }

  const RedisOptions& options() const noexcept { return accounts_.options(); }

  /// Opens a new account holding `initial`. Throws `InvalidArgument` (negative),
  /// `AmountOverflow` (above `max_balance()`), `LedgerUnavailable` (the server cannot be reached
  /// or refused the request).
  handle_type open(const Amount& initial) { return open_account({}, initial); }
  /// Opens the open account called `name`, or a new one holding `initial` if there is none (or
  /// it was closed): how several processes share an agent's budget. `initial` is then ignored
  /// for an account that existed.
  handle_type open(std::string_view name, const Amount& initial) {
    return open_account(name, initial);
  }
  /// Undoes an `open` whose caller failed before using the account: closes an account it made,
  /// leaves alone one it attached to (another process uses it).
  void undo_open(handle_type h) noexcept {
    if (!h->attached_) {
      try {
        (void)close(h);
      } catch (...) { // out of reach: an unused account stays open, which loses no money
      }
    }
  }

  /// Closes the account and returns the remaining balance it swept, or nothing when it was
  /// closed already (by this process or another). Throws `LedgerUnavailable`: nothing changed.
  std::optional<Amount> close(handle_type h) {
    const auto [status, swept] = accounts_.close(h->id_);
    if (status == LedgerStatus::unavailable)
      throw LedgerUnavailable("safeguards: Redis could not be reached to close account " +
                              std::to_string(h->id_));
    h->open_.store(false, std::memory_order_release);
    if (status != LedgerStatus::ok)
      return std::nullopt;
    return traits::from_raw(swept);
  }

  /// Open as far as this process knows: closed here, or seen closed in a reply.
  bool is_open(handle_type h) const noexcept { return h->open_.load(std::memory_order_acquire); }

  /// Moves `amount` from remaining to used, unless remaining cannot cover it; `unavailable`
  /// when the server cannot be reached (under `FailOpenWithAllowance`, `ok` while this process's
  /// allowance lasts, and charged when the server is back).
  LedgerStatus debit(handle_type h, const Amount& amount) noexcept {
    if (auto refused = refusal(amount))
      return *refused;
    const std::int64_t raw = traits::to_raw(amount);
    const LedgerStatus s = reached(accounts_.debit(h->id_, raw));
    if (s == LedgerStatus::unavailable && take_allowance(raw)) {
      accounts_.defer_charge(h->id_, raw);
      return LedgerStatus::ok;
    }
    return seen(h, s);
  }

  /// Moves `amount` from remaining to reserved, as `debit` does. A reservation granted from the
  /// fail-open allowance holds nothing on the server: its settlement charges remaining there.
  LedgerStatus reserve(handle_type h, const Amount& amount) noexcept {
    if (auto refused = refusal(amount))
      return *refused;
    const std::int64_t raw = traits::to_raw(amount);
    const LedgerStatus s = reached(accounts_.reserve(h->id_, raw));
    if (s == LedgerStatus::unavailable && take_allowance(raw)) {
      h->unbacked_.fetch_add(raw, std::memory_order_relaxed);
      return LedgerStatus::ok;
    }
    return seen(h, s);
  }

  /// As `InMemoryLedger::settle`. When the server cannot be reached, the settlement is kept and
  /// sent when it can be; the hold pays what it can and the overage is reported uncovered (only
  /// the server knows whether remaining could have paid it).
  Settlement<Amount> settle(handle_type h, const Amount& held, const Amount& actual) noexcept {
    // The part of the hold the allowance granted is not on the server: remaining pays it there.
    const std::int64_t raw_held = traits::to_raw(held);
    const std::int64_t backed = raw_held - take_unbacked(h, raw_held);
    const std::int64_t raw_actual = traits::to_raw(actual);
    auto s = accounts_.settle(h->id_, backed, raw_actual);
    if (s.pending) { // as the whole hold will answer (remaining pays the unbacked part there)
      s.charged = std::min(raw_actual, raw_held);
      s.uncovered = raw_actual - s.charged;
    }
    if (s.account_closed)
      h->open_.store(false, std::memory_order_release);
    else if (backed != raw_held) // as the whole hold would have answered
      s.refunded = raw_held - std::min(raw_actual, raw_held);
    return {traits::from_raw(s.charged), traits::from_raw(s.refunded),
            traits::from_raw(s.uncovered), s.account_closed};
  }

  /// As `InMemoryLedger::release`; a release that cannot be sent now is kept and sent later
  /// (true).
  bool release(handle_type h, const Amount& held) noexcept {
    const std::int64_t raw_held = traits::to_raw(held);
    const std::int64_t backed = raw_held - take_unbacked(h, raw_held);
    if (backed == 0)
      return is_open(h); // granted by the allowance: nothing to give back on the server
    const bool back = accounts_.release(h->id_, backed);
    if (!back)
      h->open_.store(false, std::memory_order_release);
    return back;
  }

  /// As `InMemoryLedger::credit`; a credit that cannot be sent now is kept and sent later (ok).
  LedgerStatus credit(handle_type h, const Amount& amount) noexcept {
    if (amount < amount_zero<Amount>())
      return LedgerStatus::invalid_amount;
    if (traits::to_raw(amount) > detail::redis_max_raw)
      return LedgerStatus::overflow;
    return seen(h, accounts_.credit(h->id_, traits::to_raw(amount)));
  }

  /// As `InMemoryLedger::compare_exchange_remaining`, and `unavailable` when the server cannot
  /// be reached.
  LedgerStatus compare_exchange_remaining(handle_type h, Amount& expected,
                                          const Amount& desired) noexcept {
    if (desired < amount_zero<Amount>())
      return LedgerStatus::invalid_amount;
    if (traits::to_raw(desired) > detail::redis_max_raw)
      return LedgerStatus::overflow;
    std::int64_t raw = traits::to_raw(expected);
    const LedgerStatus s =
        accounts_.compare_exchange_remaining(h->id_, raw, traits::to_raw(desired));
    if (s == LedgerStatus::conflict)
      expected = traits::from_raw(raw);
    return seen(h, s);
  }

  /// The account's numbers of one instant, read from the server (one round trip); the last
  /// numbers this process read when the server cannot be reached.
  LedgerBalance<Amount> balance(handle_type h) const noexcept {
    const detail::RawBalance b = raw_balance(h);
    return {traits::from_raw(b.remaining), traits::from_raw(b.used), traits::from_raw(b.reserved)};
  }

  /// The account's numbers read from the server now, or nothing when it cannot be reached: what
  /// a coordinator's management calls start from (they throw `LedgerUnavailable` rather than
  /// work from old numbers).
  ///
  /// Requests of this ledger still in doubt are resolved first: a balance read before a kept
  /// settlement lands would be one that settlement is about to change.
  std::optional<LedgerBalance<Amount>> fresh_balance(handle_type h) const noexcept {
    if (!accounts_.flush(true))
      return std::nullopt;
    const auto b = accounts_.balance(h->id_);
    if (!b)
      return std::nullopt;
    remember(h, *b);
    return LedgerBalance<Amount>{traits::from_raw(b->remaining), traits::from_raw(b->used),
                                 traits::from_raw(b->reserved)};
  }

  /// How many debits and settles charged something, by every process.
  std::uint64_t charge_count(handle_type h) const noexcept { return raw_balance(h).charges; }

  // ---- upkeep ---------------------------------------------------------------------------------

  /// Renews this ledger's lease, resends what is in doubt and sweeps the reservations of
  /// processes whose lease ran out. The background thread runs it; without one
  /// (`RedisOptions::background = false`), call it more often than a third of the lease.
  void maintain() noexcept {
    (void)accounts_.renew();
    (void)accounts_.flush();
    (void)accounts_.sweep();
  }
  /// Resends the requests in doubt; true when none is left.
  bool flush() noexcept { return accounts_.flush(); }
  /// Gives back the reservations of dead processes (leases run out): what went back to
  /// remaining, or nothing when the server cannot be reached.
  std::optional<Amount> sweep() noexcept {
    if (auto raw = accounts_.sweep())
      return traits::from_raw(*raw);
    return std::nullopt;
  }
  /// Requests sent while the server could not be reached and not resolved yet.
  std::size_t in_doubt() const noexcept { return accounts_.in_doubt(); }
  /// What was charged while the server was away (commits sent later, fail-open spending) and
  /// the accounts could not pay when the server had it: the overshoot beyond the budgets, at
  /// most processes × the fail-open allowance plus the commits' overages.
  Amount overshoot() const noexcept { return traits::from_raw(accounts_.overshoot()); }
  /// Commands this ledger has sent to Redis (each a round trip), upkeep included.
  std::uint64_t round_trips() const noexcept { return accounts_.round_trips(); }
  /// What is left of this process's fail-open allowance for the current outage (zero under
  /// `FailClosed`).
  Amount allowance_left() const noexcept {
    return traits::from_raw(allowance_left_.load(std::memory_order_relaxed));
  }
  /// Compare-and-sets and closes answered `unavailable` (their callers threw
  /// `LedgerUnavailable`) that turned out to have run: each changed one account's remaining
  /// without its coordinator knowing. Zero unless the server went away mid-request.
  std::uint64_t applied_after_unavailable() const noexcept {
    return accounts_.applied_after_unavailable();
  }
  /// The number under which this ledger's reservations are held in Redis ('' before the first
  /// request).
  std::string holder() const { return accounts_.holder(); }

private:
  handle_type open_account(std::string_view name, const Amount& initial) {
    if (initial < amount_zero<Amount>())
      throw InvalidArgument("safeguards: an account cannot hold a negative amount");
    if (traits::to_raw(initial) > detail::redis_max_raw)
      throw AmountOverflow("safeguards: a Redis account holds at most " +
                           amount_to_string(*max_balance()) + ", not " + amount_to_string(initial));
    std::lock_guard lock(open_mutex_);
    auto& account = accounts_of_process_.emplace_back();
    const auto opened = accounts_.open(traits::to_raw(initial), name);
    if (!opened) {
      accounts_of_process_.pop_back();
      throw LedgerUnavailable("safeguards: Redis at " + options().host + ":" +
                              std::to_string(options().port) +
                              " could not be reached or refused to open an account");
    }
    account.id_ = opened->id;
    account.attached_ = opened->attached;
    return &account;
  }

  // Amounts above `max_balance()` go to the server all the same: it answers `closed` for a
  // closed account, as an in-memory ledger does, and `insufficient` for any other.
  static std::optional<LedgerStatus> refusal(const Amount& amount) noexcept {
    if (amount < amount_zero<Amount>())
      return LedgerStatus::invalid_amount;
    return std::nullopt;
  }

  // The fail-open allowance in raw units (0 under FailClosed).
  static std::int64_t allowance_of(const RedisOptions& o) {
    const auto* open = std::get_if<FailOpenWithAllowance>(&o.when_unreachable);
    if (!open)
      return 0;
    if (open->amount < Decimal(0))
      throw InvalidArgument("safeguards: a fail-open allowance cannot be negative");
    if constexpr (std::same_as<Amount, Decimal>)
      return open->amount.raw();
    else
      return open->amount.raw() / Decimal(1).raw(); // whole units of an integer amount
  }

  // Takes up to `held` from the account's allowance-granted holds: what of `held` they cover.
  // (Which reservation was granted by the allowance does not matter: the server's holds and
  // these add up to what this process's reservations hold.)
  static std::int64_t take_unbacked(handle_type h, std::int64_t held) noexcept {
    std::int64_t u = h->unbacked_.load(std::memory_order_relaxed);
    while (u > 0) {
      const std::int64_t take = std::min(u, held);
      if (h->unbacked_.compare_exchange_weak(u, u - take, std::memory_order_relaxed))
        return take;
    }
    return 0;
  }

  // Spends `raw` from this process's allowance for the outage, if it lasts.
  bool take_allowance(std::int64_t raw) noexcept {
    std::int64_t left = allowance_left_.load(std::memory_order_relaxed);
    while (left >= raw && raw > 0)
      if (allowance_left_.compare_exchange_weak(left, left - raw, std::memory_order_relaxed)) {
        outage_.store(true, std::memory_order_relaxed);
        return true;
      }
    return false;
  }

  // A reply from the server ends an outage: the allowance is whole again for the next one.
  LedgerStatus reached(LedgerStatus s) noexcept {
    if (s != LedgerStatus::unavailable && outage_.load(std::memory_order_relaxed) &&
        outage_.exchange(false, std::memory_order_relaxed))
      allowance_left_.store(allowance_, std::memory_order_relaxed);
    return s;
  }

  static LedgerStatus seen(handle_type h, LedgerStatus s) noexcept {
    if (s == LedgerStatus::closed)
      h->open_.store(false, std::memory_order_release);
    return s;
  }

  detail::RawBalance raw_balance(handle_type h) const noexcept {
    if (const auto b = accounts_.balance(h->id_)) {
      remember(h, *b);
      return *b;
    }
    std::lock_guard lock(h->last_mutex_);
    return h->last_;
  }
  static void remember(handle_type h, const detail::RawBalance& b) noexcept {
    if (b.closed)
      h->open_.store(false, std::memory_order_release);
    std::lock_guard lock(h->last_mutex_);
    h->last_ = b;
  }

  void maintain_until_stopped() noexcept {
    const auto period = std::max(options().lease / 3, std::chrono::milliseconds(1));
    std::unique_lock lock(stop_mutex_);
    while (!stopping_) {
      lock.unlock();
      maintain();
      lock.lock();
      stop_.wait_for(lock, period, [this] { return stopping_; });
    }
  }

  mutable detail::RedisAccounts accounts_;
  std::int64_t allowance_ = allowance_of(accounts_.options());
  std::atomic<std::int64_t> allowance_left_{allowance_};
  std::atomic<bool> outage_{false};
  std::mutex open_mutex_;
  std::deque<Account> accounts_of_process_; // stable addresses: handles point into it
  std::mutex stop_mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::thread maintainer_;
};

/// The Redis ledger for `Decimal` budgets.
using RedisLedger = BasicRedisLedger<Decimal>;

} // namespace v1
} // namespace safeguards
