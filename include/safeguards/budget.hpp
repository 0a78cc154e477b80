// safeguards: council-compatible run budgets (a deadline plus limits) and SharedBudget.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <limits>
#include <memory>
#include <mutex>
#include <safeguards/amount.hpp>
#include <safeguards/clock.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/errors.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// Seconds a `default_budget()` lasts unless `SAFEGUARDS_DEFAULT_BUDGET` says otherwise.
inline constexpr std::int64_t default_budget_seconds = 30;

namespace detail {

// The environment variable as whole seconds; absent means the default, anything else that is
// not a non-negative integer is an error rather than a silent fallback.
inline std::int64_t default_budget_seconds_from_env() {
  const char* raw = std::getenv("SAFEGUARDS_DEFAULT_BUDGET");
  if (raw == nullptr)
    return default_budget_seconds;
  std::string_view text(raw);
  std::int64_t seconds = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  // A budget must fit in nanoseconds of int64: about 292 years.
  constexpr std::int64_t max_seconds = std::numeric_limits<std::int64_t>::max() / 1'000'000'000;
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || seconds < 0 ||
      seconds > max_seconds)
    throw ConfigError(fmt::format("safeguards: SAFEGUARDS_DEFAULT_BUDGET=\"{}\" is not a whole "
                                  "number of seconds between 0 and {}",
                                  text, max_seconds));
  return seconds;
}

template <class Duration>
std::string seconds_to_string(Duration d) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return Decimal::from_raw(us).to_string() + "s";
}

// Whole seconds as the clock's duration, clamped to its range.
template <class Duration>
Duration saturating_seconds(std::int64_t seconds) noexcept {
  using limit = std::chrono::duration<long double>;
  if (limit(std::chrono::seconds(seconds)) >= limit(Duration::max()))
    return Duration::max();
  return std::chrono::duration_cast<Duration>(std::chrono::seconds(seconds));
}

} // namespace detail

/// A run budget with council's semantics: a deadline plus a list of limits, each a
/// `Consumption(value, unit, kind)`.
///
/// - `add_consumption` subtracts from **every** limit whose unit and kind match and records a
///   `ConsumptionEvent`;
/// - `can_consume` is true when no limit matches, else when the **first** matching limit still
///   has room (`remaining - value >= 0`); it ignores the deadline. `can_consume_all` asks every
///   matching limit, which is what `add_consumption` charges;
/// - `is_expired` is true past the deadline or when any limit is below zero (a limit used up to
///   exactly zero is not expired).
///
/// Every change is all or nothing: a consumption that is negative, not finite, or would leave a
/// limit outside the amount type's range throws and changes nothing. A deadline beyond the
/// clock's range is the clock's last time point ("never"), not an overflow.
///
/// Deadlines run on `C` (`steady_clock` by default); events are stamped by `timestamp_clock_t<C>`
/// (wall time for `steady_clock`), so `Budget::event_type` is `ConsumptionEvent`.
///
/// Not thread-safe; share one run budget between threads through `SharedBudget`.
///
/// **Example**
/// ```
/// Budget run{std::chrono::seconds(30), {Consumption::token(1000, "gpt-4o")}};
/// run.add_consumption(Consumption::token(200, "gpt-4o"), "agent-a");
/// run.can_consume(Consumption::token(900, "gpt-4o"));   // false: 800 left
/// ```
template <BudgetAmount Amount = Decimal, Clock C = std::chrono::steady_clock>
class BasicBudget {
public:
  using amount_type = Amount;
  using clock_type = C;
  using duration = typename C::duration;
  using time_point = typename C::time_point;
  using consumption_type = BasicConsumption<Amount>;
  /// The clock events are stamped with.
  using event_clock = timestamp_clock_t<C>;
  using event_type = BasicConsumptionEvent<Amount, event_clock>;

  /// Deadline = now + `run_for` (the clock's last time point if that is beyond its range). Given
  /// `consumptions` are recorded and applied to the limits. A negative duration, a negative or
  /// non-finite limit, or a negative or non-finite consumption throws `InvalidArgument`.
  BasicBudget(duration run_for, std::vector<consumption_type> limits = {},
              std::vector<event_type> consumptions = {}, C clock = C{})
      : BasicBudget(unchecked, run_for, std::move(limits), std::move(clock)) {
    validate(run_for, limits_);
    auto next = remaining_;
    for (const auto& event : consumptions) {
      validate_consumption(event.consumption());
      apply(next, event.consumption());
    }
    remaining_.swap(next);
    consumptions_ = std::move(consumptions);
  }

  /// 30 seconds and no limits; `SAFEGUARDS_DEFAULT_BUDGET` (whole seconds) overrides the 30.
  /// A malformed value throws `ConfigError` naming it.
  static BasicBudget default_budget(C clock = C{}) {
    return BasicBudget(
        detail::saturating_seconds<duration>(detail::default_budget_seconds_from_env()), {}, {},
        std::move(clock));
  }

  /// Past the deadline, or some limit below zero.
  bool is_expired() const {
    if (deadline_ < clock_.now())
      return true;
    return std::any_of(remaining_.begin(), remaining_.end(),
                       [](const auto& l) { return l.value() < amount_zero<Amount>(); });
  }

  /// council's rule: true when no limit matches, else when the first matching limit can still
  /// take `c`.
  bool can_consume(const consumption_type& c) const {
    for (const auto& limit : remaining_)
      if (limit.matches(c))
        return fits(limit, c);
    return true;
  }

  /// True when every matching limit can still take `c` (and when none matches):
  /// `add_consumption(c)` would then leave no limit below zero.
  bool can_consume_all(const consumption_type& c) const {
    return std::all_of(remaining_.begin(), remaining_.end(), [&](const consumption_type& limit) {
      return !limit.matches(c) || fits(limit, c);
    });
  }

  /// Records `c` from `source` and subtracts it from every matching limit. A negative or
  /// non-finite value throws `InvalidArgument` (council would silently add budget back); a limit
  /// the amount type cannot hold throws `AmountOverflow`. Either way nothing changes.
  void add_consumption(const consumption_type& c, std::string source) {
    validate_consumption(c);
    auto next = remaining_;
    apply(next, c);
    consumptions_.emplace_back(c, std::move(source), stamp_clock_.now());
    remaining_.swap(next); // nothing after the event was recorded can throw
  }

  /// `add_consumption` for each, all from `source`. All or nothing: when any of them is refused
  /// (negative, not finite, or overflowing a limit) none is recorded or applied.
  void add_consumptions(const std::vector<consumption_type>& cs, const std::string& source) {
    auto next = remaining_;
    std::vector<event_type> events;
    events.reserve(cs.size());
    const auto now = stamp_clock_.now();
    for (const auto& c : cs) {
      validate_consumption(c);
      apply(next, c);
      events.emplace_back(c, source, now);
    }
    consumptions_.reserve(consumptions_.size() + events.size());
    // Nothing below throws: the capacity is there and events move without allocating.
    consumptions_.insert(consumptions_.end(), std::make_move_iterator(events.begin()),
                         std::make_move_iterator(events.end()));
    remaining_.swap(next);
  }

  /// A new budget with the time left (never negative) and the remaining limits, as council's
  /// `remaining()`: a limit already below zero stays below zero, so the result is expired too.
  BasicBudget remaining() const { return BasicBudget(unchecked, time_left(), remaining_, clock_); }

  /// Time until the deadline, zero once it has passed.
  duration time_left() const {
    auto left = detail::saturating_sub(deadline_, clock_.now());
    return left < duration::zero() ? duration::zero() : left;
  }

  /// The limits as given.
  const std::vector<consumption_type>& limits() const noexcept { return limits_; }
  /// The limits as they stand now: given value minus what was consumed against each.
  const std::vector<consumption_type>& remaining_limits() const noexcept { return remaining_; }
  /// Every consumption recorded, oldest first.
  const std::vector<event_type>& consumptions() const noexcept { return consumptions_; }
  time_point deadline() const noexcept { return deadline_; }
  /// The duration the budget was created with.
  duration run_duration() const noexcept { return duration_; }
  const C& clock() const noexcept { return clock_; }

private:
  template <BudgetAmount, Clock>
  friend class BasicSharedBudget;

  // Limits are taken as they are: `remaining()` hands on limits that may be below zero.
  struct Unchecked {};
  static constexpr Unchecked unchecked{};
  BasicBudget(Unchecked, duration run_for, std::vector<consumption_type> limits, C clock)
      : clock_(std::move(clock)), stamp_clock_(make_stamp_clock(clock_)), duration_(run_for),
        deadline_(detail::saturating_add(clock_.now(), run_for)), limits_(std::move(limits)),
        remaining_(limits_) {}

  static void validate(duration run_for, const std::vector<consumption_type>& limits) {
    if (run_for < duration::zero())
      throw InvalidArgument(fmt::format("safeguards: budget duration must not be negative, got {}",
                                        detail::seconds_to_string(run_for)));
    for (const auto& limit : limits)
      if (limit.value() < amount_zero<Amount>() || !amount_is_finite(limit.value()))
        throw InvalidArgument(fmt::format(
            "safeguards: a budget limit must be a finite amount of at least zero, got {}", limit));
  }

  static event_clock make_stamp_clock(const C& clock) {
    if constexpr (std::is_same_v<event_clock, C>)
      return clock;
    else
      return event_clock{};
  }

  static void validate_consumption(const consumption_type& c) {
    if (c.value() < amount_zero<Amount>() || !amount_is_finite(c.value()))
      throw InvalidArgument(
          fmt::format("safeguards: cannot consume a negative or non-finite amount: {}", c));
  }

  static bool fits(const consumption_type& limit, const consumption_type& c) {
    // limit - value >= 0, without the subtraction that could overflow.
    return !(limit.value() < c.value());
  }

  static void apply(std::vector<consumption_type>& limits, const consumption_type& c) {
    for (auto& limit : limits)
      if (limit.matches(c))
        limit = limit.with_value(amount_traits<Amount>::sub(limit.value(), c.value()));
  }

  C clock_;
  event_clock stamp_clock_;
  duration duration_;
  time_point deadline_;
  std::vector<consumption_type> limits_;
  std::vector<consumption_type> remaining_;
  std::vector<event_type> consumptions_;
};

using Budget = BasicBudget<Decimal>;

/// One run budget shared by the parallel branches of an agent (council's forks share limits).
/// Copies share the same state; `child(d)` shares it too, with a deadline no later than the
/// parent's. Every call is atomic, and `try_consume` checks and consumes in one step, so no
/// update is lost and no branch can take a limit below zero through it.
///
/// A mutex guards the shared state: a run budget is touched a few times per model call, far
/// from the coordinator's hot path, and limits are matched by strings, which no single atomic
/// could cover.
///
/// **Example**
/// ```
/// SharedBudget run{Budget{std::chrono::minutes(2), {Consumption::call(10, "search")}}};
/// auto branch = run.child(std::chrono::seconds(30));
/// std::thread t([branch]() mutable { branch.try_consume(Consumption::call(1, "search"), "fork");
/// });
/// ```
template <BudgetAmount Amount = Decimal, Clock C = std::chrono::steady_clock>
class BasicSharedBudget {
public:
  using budget_type = BasicBudget<Amount, C>;
  using consumption_type = typename budget_type::consumption_type;
  using duration = typename budget_type::duration;
  using time_point = typename budget_type::time_point;

  explicit BasicSharedBudget(budget_type budget)
      : deadline_(budget.deadline()), state_(std::make_shared<State>(std::move(budget))) {}

  /// Consumes `c` only if every matching limit can take it (`can_consume_all`), checked and
  /// consumed in one critical section, so no branch can take any limit below zero through it.
  ///
  /// This is deliberately not council's `can_consume`, which looks at the first matching limit
  /// only: `add_consumption` charges every matching limit, so with limits of 1000 and 500 tokens
  /// of one kind, the first-match check would let ten consumes of 100 through and leave the
  /// second limit at -500. `can_consume` keeps council's rule for code that asks it directly.
  bool try_consume(const consumption_type& c, std::string source) {
    std::lock_guard lock(state_->mutex);
    if (!state_->budget.can_consume_all(c))
      return false;
    state_->budget.add_consumption(c, std::move(source));
    return true;
  }

  void add_consumption(const consumption_type& c, std::string source) {
    std::lock_guard lock(state_->mutex);
    state_->budget.add_consumption(c, std::move(source));
  }

  void add_consumptions(const std::vector<consumption_type>& cs, const std::string& source) {
    std::lock_guard lock(state_->mutex);
    state_->budget.add_consumptions(cs, source);
  }

  /// council's first-match rule; see `try_consume` for why that one asks every limit.
  bool can_consume(const consumption_type& c) const {
    std::lock_guard lock(state_->mutex);
    return state_->budget.can_consume(c);
  }

  bool can_consume_all(const consumption_type& c) const {
    std::lock_guard lock(state_->mutex);
    return state_->budget.can_consume_all(c);
  }

  /// Past this handle's deadline, or some shared limit below zero.
  bool is_expired() const {
    std::lock_guard lock(state_->mutex);
    return deadline_ < state_->budget.clock().now() || state_->budget.is_expired();
  }

  /// A plain budget with this handle's time left and the shared limits as they stand (below
  /// zero, if one is: the result is then expired, as council's `remaining()` is).
  budget_type remaining() const {
    std::lock_guard lock(state_->mutex);
    const auto& b = state_->budget;
    auto left = detail::saturating_sub(deadline_, b.clock().now());
    return budget_type(budget_type::unchecked, left < duration::zero() ? duration::zero() : left,
                       b.remaining_limits(), b.clock());
  }

  /// A copy of the shared budget as it stands (limits, events, the parent's deadline).
  budget_type snapshot() const {
    std::lock_guard lock(state_->mutex);
    return state_->budget;
  }

  /// A handle on the same limits whose deadline is `now + d`, or this one's if that is earlier.
  /// A negative `d` throws `InvalidArgument`, as it does for a `Budget`.
  BasicSharedBudget child(duration d) const {
    if (d < duration::zero())
      throw InvalidArgument(fmt::format("safeguards: budget duration must not be negative, got {}",
                                        detail::seconds_to_string(d)));
    BasicSharedBudget c(*this);
    auto proposed = detail::saturating_add(state_->budget.clock().now(), d);
    c.deadline_ = std::min(deadline_, proposed);
    return c;
  }

  time_point deadline() const noexcept { return deadline_; }

private:
  struct State {
    explicit State(budget_type b) : budget(std::move(b)) {}
    mutable std::mutex mutex;
    budget_type budget;
  };

  time_point deadline_;
  std::shared_ptr<State> state_;
};

using SharedBudget = BasicSharedBudget<Decimal>;

} // namespace v1
} // namespace safeguards

/// `Budget(expires in 12.5s, limits: [gpt-4o consumption: 800.0 token])`: time left and the
/// remaining limits.
template <safeguards::BudgetAmount A, safeguards::Clock C>
struct fmt::formatter<safeguards::BasicBudget<A, C>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicBudget<A, C>& b, FormatContext& ctx) const {
    std::string limits;
    for (const auto& l : b.remaining_limits())
      limits += fmt::format("{}{}", limits.empty() ? "" : ", ", l);
    auto text = fmt::format(
        "Budget({}, limits: [{}])",
        b.is_expired() ? std::string("expired")
                       : "expires in " + safeguards::detail::seconds_to_string(b.time_left()),
        limits);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
