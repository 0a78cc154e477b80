// safeguards: council-compatible run budgets (a deadline plus limits) and SharedBudget.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/clock.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/errors.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
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
  // Only a concurrent setenv makes getenv unsafe, and that is the program's to avoid.
  const char* raw = std::getenv("SAFEGUARDS_DEFAULT_BUDGET"); // NOLINT(concurrency-mt-unsafe)
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

/// Which limit refused a hold: the limit as it was given, and the total it would have reached
/// (consumed + held + asked).
template <BudgetAmount Amount = Decimal>
struct BasicLimitRefusal {
  BasicConsumption<Amount> limit;
  Amount would_be;
};

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
  using consumption_view = BasicConsumptionView<Amount>;
  /// The clock events are stamped with.
  using event_clock = timestamp_clock_t<C>;
  using event_type = BasicConsumptionEvent<Amount, event_clock>;
  using refusal_type = BasicLimitRefusal<Amount>;

  /// Deadline = now + `run_for` (the clock's last time point if that is beyond its range). Given
  /// `consumptions` are recorded and applied to the limits. A negative duration, a negative or
  /// non-finite limit, or a negative or non-finite consumption throws `InvalidArgument`.
  BasicBudget(duration run_for, std::vector<consumption_type> limits = {},
              std::vector<event_type> consumptions = {}, C clock = C{})
      : BasicBudget(unchecked, run_for, std::move(limits), std::move(clock)) {
    validate(run_for, limits_);
    auto each = [&](auto&& f) {
      for (const auto& event : consumptions)
        f(consumption_view(event.consumption()));
    };
    check(each);
    store(each);
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
  /// Money held by `try_hold` counts as taken.
  bool can_consume(const consumption_type& c) const {
    for (std::size_t i = 0; i < remaining_.size(); ++i)
      if (remaining_[i].matches(c))
        return fits(i, c.value());
    return true;
  }

  /// True when every matching limit can still take `c` (and when none matches):
  /// `add_consumption(c)` would then leave no limit below zero. Held amounts count as taken.
  bool can_consume_all(const consumption_type& c) const {
    for (std::size_t i = 0; i < remaining_.size(); ++i)
      if (remaining_[i].matches(c) && !fits(i, c.value()))
        return false;
    return true;
  }

  /// What the tightest limit of `unit` and `kind` can still take: its remaining value minus what
  /// is held on it (below zero when it is overdrawn); `std::nullopt` when no limit matches.
  std::optional<Amount> available(std::string_view unit, std::string_view kind) const {
    std::optional<Amount> least;
    for (std::size_t i = 0; i < remaining_.size(); ++i) {
      const auto& limit = remaining_[i];
      if (limit.unit() != unit || limit.kind() != kind)
        continue;
      Amount free = free_on(i);
      if (!least || free < *least)
        least = std::move(free);
    }
    return least;
  }

  /// Sets `cs` aside on every limit they match, without consuming it, if every matching limit
  /// can take all of it on top of what is already held; otherwise holds nothing and returns
  /// the first limit that refused. A hold is what a call may spend: `can_consume`,
  /// `can_consume_all`, `SharedBudget::try_consume` and other holds see it as taken, `is_expired`
  /// and `remaining_limits` do not. Give it back with `release_hold`, or turn it into
  /// consumption with `settle_hold`. A negative or non-finite amount throws `InvalidArgument`.
  /// Allocates nothing.
  ///
  /// **Example**
  /// ```
  /// std::array<ConsumptionView, 1> call{ConsumptionView(Decimal(1), units::call, "gpt-4o")};
  /// if (auto refused = run.try_hold(call))
  ///   fmt::print("{}\n", *refused);    // gpt-4o call limit 10.0 would reach 11.0
  /// ```
  std::optional<refusal_type> try_hold(std::span<const consumption_view> cs) {
    for (const auto& c : cs)
      validate_consumption(c);
    // What `cs` asks of limit i; recomputed rather than stored, so a hold allocates nothing.
    auto asked = [&](std::size_t i) -> std::optional<Amount> {
      std::optional<Amount> sum = amount_zero<Amount>();
      for (const auto& c : cs)
        if (sum && c.counts_against(remaining_[i]))
          sum = checked_add(*sum, c.value());
      return sum;
    };
    for (std::size_t i = 0; i < remaining_.size(); ++i) {
      auto a = asked(i);
      if (!a)
        return refusal(i, limits_[i].value()); // more than the type can count: no room
      if (amount_zero<Amount>() < *a && !fits(i, *a))
        return refusal(i, *a);
    }
    for (std::size_t i = 0; i < remaining_.size(); ++i)
      held_[i] = amount_traits<Amount>::add(held_[i], *asked(i)); // fits() checked the sum
    return std::nullopt;
  }

  /// Gives back a hold (or part of one). What is released never exceeds what is held on a limit,
  /// so a mismatched release cannot create room that was never there.
  void release_hold(std::span<const consumption_view> cs) noexcept {
    for (const auto& c : cs) {
      if (!(amount_zero<Amount>() < c.value()))
        continue;
      for (std::size_t i = 0; i < remaining_.size(); ++i)
        if (c.counts_against(remaining_[i]))
          held_[i] = c.value() < held_[i] ? amount_traits<Amount>::sub(held_[i], c.value())
                                          : amount_zero<Amount>();
    }
  }

  /// Records `actual` from `source` (as `add_consumptions`) and releases `held`, in one step:
  /// what a held call really used replaces what was set aside for it. All or nothing: if
  /// `actual` is refused, the hold stays too.
  void settle_hold(std::span<const consumption_view> held, std::span<const consumption_view> actual,
                   const std::string& source) {
    record(actual, source, [](const consumption_view& c) { return c.to_consumption(); });
    release_hold(held);
  }

  /// Calls `f(*this)` and returns its result: with `SharedBudget::atomically`, code that reads
  /// several limits and then holds what they allow is written once for both.
  template <class F>
  decltype(auto) atomically(F&& f) {
    return std::forward<F>(f)(*this);
  }

  /// What `try_hold` has set aside and not yet released, per limit (parallel to `limits()`).
  const std::vector<Amount>& held() const& noexcept { return held_; }
  std::vector<Amount> held() && noexcept { return std::move(held_); }

  /// Records `c` from `source` and subtracts it from every matching limit. A negative or
  /// non-finite value throws `InvalidArgument` (council would silently add budget back); a limit
  /// the amount type cannot hold throws `AmountOverflow`. Either way nothing changes.
  void add_consumption(const consumption_type& c, std::string source) {
    auto each = [&](auto&& f) { f(consumption_view(c)); };
    check(each);
    consumptions_.emplace_back(c, std::move(source), stamp_clock_.now());
    store(each); // nothing after the event was recorded can throw
  }

  /// `add_consumption` for each, all from `source`. All or nothing: when any of them is refused
  /// (negative, not finite, or overflowing a limit) none is recorded or applied.
  void add_consumptions(const std::vector<consumption_type>& cs, const std::string& source) {
    record(cs, source, [](const consumption_type& c) -> const consumption_type& { return c; });
  }

  /// `add_consumptions` that moves the consumptions into the recorded events instead of copying
  /// their strings.
  void add_consumptions(std::vector<consumption_type>&& cs, const std::string& source) {
    record(cs, source, [](consumption_type& c) -> consumption_type&& { return std::move(c); });
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
  const std::vector<consumption_type>& limits() const& noexcept { return limits_; }
  // On a temporary (`shared.snapshot().consumptions()`) the accessors return by value: a
  // reference into the temporary would dangle in a range-for.
  std::vector<consumption_type> limits() && noexcept { return std::move(limits_); }
  /// The limits as they stand now: given value minus what was consumed against each.
  const std::vector<consumption_type>& remaining_limits() const& noexcept { return remaining_; }
  std::vector<consumption_type> remaining_limits() && noexcept { return std::move(remaining_); }
  /// Every consumption recorded, oldest first.
  const std::vector<event_type>& consumptions() const& noexcept { return consumptions_; }
  std::vector<event_type> consumptions() && noexcept { return std::move(consumptions_); }
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
        remaining_(limits_), held_(limits_.size(), amount_zero<Amount>()) {}

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

  static void validate_consumption(const consumption_view& c) {
    if (c.value() < amount_zero<Amount>() || !amount_is_finite(c.value()))
      throw InvalidArgument(fmt::format(
          "safeguards: cannot consume a negative or non-finite amount: {}", c.to_consumption()));
  }

  // remaining - held - value >= 0, without an arithmetic step that could overflow.
  bool fits(std::size_t i, const Amount& value) const {
    auto need = checked_add(held_[i], value);
    return need && !(remaining_[i].value() < *need);
  }

  Amount free_on(std::size_t i) const {
    // remaining may be far below zero (council lets a limit be overdrawn): saturate, not throw.
    try {
      return amount_traits<Amount>::sub(remaining_[i].value(), held_[i]);
    } catch (const std::overflow_error&) {
      return remaining_[i].value();
    }
  }

  std::optional<refusal_type> refusal(std::size_t i, const Amount& asked) const {
    // used = given - remaining; the would-be total is used + held + asked (the largest value
    // the type can add up to, when even that overflows).
    Amount would_be = asked;
    try {
      would_be = amount_traits<Amount>::add(
          amount_traits<Amount>::add(
              amount_traits<Amount>::sub(limits_[i].value(), remaining_[i].value()), held_[i]),
          asked);
    } catch (const std::overflow_error&) {
    }
    return refusal_type{limits_[i], std::move(would_be)};
  }

  // `each(f)` calls `f` on every consumption to apply. The new value of each limit is computed
  // twice, once to check and once to store, so that applying a batch needs no scratch storage.
  template <class Each>
  Amount next_value(std::size_t i, const Each& each) const {
    Amount v = remaining_[i].value();
    each([&](const consumption_view& c) {
      if (c.counts_against(remaining_[i]))
        v = amount_traits<Amount>::sub(v, c.value());
    });
    return v;
  }

  // Throws, before anything changes, for a negative or non-finite consumption or a limit the
  // amount type cannot hold.
  template <class Each>
  void check(const Each& each) const {
    each([](const consumption_view& c) { validate_consumption(c); });
    for (std::size_t i = 0; i < remaining_.size(); ++i)
      std::ignore = next_value(i, each);
  }

  // Only after `check`: the same arithmetic cannot fail the second time.
  template <class Each>
  void store(const Each& each) noexcept {
    for (std::size_t i = 0; i < remaining_.size(); ++i)
      remaining_[i].set_value(next_value(i, each));
  }

  // Records `cs` as events (through `take`, which copies or moves each), then applies them.
  template <class Range, class Take>
  void record(Range& cs, const std::string& source, Take take) {
    check([&](auto&& f) {
      for (const auto& c : cs)
        f(consumption_view(c));
    });
    const std::size_t old_size = consumptions_.size();
    const auto now = stamp_clock_.now();
    // Grown geometrically: reserving exactly the new size would reallocate on every call and
    // make a long run's recording quadratic.
    if (consumptions_.capacity() < old_size + cs.size())
      consumptions_.reserve(std::max(old_size + cs.size(), 2 * consumptions_.capacity()));
    try { // only a string copy running out of memory can throw here
      for (auto& c : cs)
        consumptions_.emplace_back(take(c), source, now);
    } catch (...) {
      consumptions_.erase(consumptions_.begin() + static_cast<std::ptrdiff_t>(old_size),
                          consumptions_.end());
      throw;
    }
    // From the recorded events: a moved-from `cs` has no unit or kind left to match.
    store([&](auto&& f) {
      for (std::size_t k = old_size; k < consumptions_.size(); ++k)
        f(consumption_view(consumptions_[k].consumption()));
    });
  }

  C clock_;
  event_clock stamp_clock_;
  duration duration_;
  time_point deadline_;
  std::vector<consumption_type> limits_;
  std::vector<consumption_type> remaining_;
  std::vector<Amount> held_; // parallel to remaining_
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
  using amount_type = Amount;
  using clock_type = C;
  using consumption_type = typename budget_type::consumption_type;
  using consumption_view = typename budget_type::consumption_view;
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

  /// `Budget::available` on the shared limits.
  std::optional<Amount> available(std::string_view unit, std::string_view kind) const {
    std::lock_guard lock(state_->mutex);
    return state_->budget.available(unit, kind);
  }

  /// `Budget::try_hold` on the shared limits: checked and held in one critical section, so
  /// holds from several threads never add up to more than a limit has.
  std::optional<typename budget_type::refusal_type> try_hold(std::span<const consumption_view> cs) {
    std::lock_guard lock(state_->mutex);
    return state_->budget.try_hold(cs);
  }

  void release_hold(std::span<const consumption_view> cs) noexcept {
    std::lock_guard lock(state_->mutex);
    state_->budget.release_hold(cs);
  }

  void settle_hold(std::span<const consumption_view> held, std::span<const consumption_view> actual,
                   const std::string& source) {
    std::lock_guard lock(state_->mutex);
    state_->budget.settle_hold(held, actual, source);
  }

  /// Calls `f(budget)` on the shared budget with every other thread's call on it kept out, and
  /// returns its result: several reads and a hold that depends on them, as one step. `f` must not
  /// call this shared budget (or a copy or child of it) again: that would deadlock.
  ///
  /// **Example**
  /// ```
  /// bool held = run.atomically([&](Budget& b) {
  ///   auto left = b.available(units::token, "gpt-4o");
  ///   ... // hold what `left` allows
  /// });
  /// ```
  template <class F>
  decltype(auto) atomically(F&& f) {
    std::lock_guard lock(state_->mutex);
    return std::forward<F>(f)(state_->budget);
  }

  /// Time until this handle's deadline, zero once it has passed.
  duration time_left() const {
    auto left = detail::saturating_sub(deadline_, state_->budget.clock().now());
    return left < duration::zero() ? duration::zero() : left;
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
  const C& clock() const noexcept { return state_->budget.clock(); }

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

/// `gpt-4o call limit 10.0 would reach 11.0`.
template <safeguards::BudgetAmount A>
struct fmt::formatter<safeguards::BasicLimitRefusal<A>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicLimitRefusal<A>& r, FormatContext& ctx) const {
    auto text = fmt::format("{} {} limit {} would reach {}", r.limit.kind(), r.limit.unit(),
                            safeguards::amount_to_string(r.limit.value()),
                            safeguards::amount_to_string(r.would_be));
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};

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
