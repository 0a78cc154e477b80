// safeguards: budget periods: an agent's or a pool's usage forgiven once at every boundary.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fmt/format.h>
#include <map>
#include <mutex>
#include <optional>
#include <safeguards/coordinator.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// One period: `start <= t < end`.
template <class TimePoint = std::chrono::system_clock::time_point>
struct PeriodWindow {
  TimePoint start{};
  TimePoint end{};

  bool contains(TimePoint t) const noexcept { return start <= t && t < end; }
  friend bool operator==(const PeriodWindow&, const PeriodWindow&) = default;
};

/// How often a budget starts afresh: every fixed length from an anchor time, or at calendar
/// boundaries in UTC (each day at 00:00, each week on a chosen weekday, each month on the 1st).
/// A value type; it only computes windows, `BudgetPeriods` applies them.
///
/// Time points of any clock are read as time since 1970-01-01 00:00 UTC, which is what
/// `std::chrono::system_clock` counts (C++20) and what a test sets a `ManualClock` to. Calendar
/// periods mean nothing on `std::chrono::steady_clock` (its epoch is the last boot); use
/// `every` there. Arithmetic is in nanoseconds (years 1677 to 2262); a window reaching past
/// that ends at the clock's last time point.
///
/// **Example**
/// ```
/// auto p = BudgetPeriod::monthly();
/// auto w = p.period_containing(std::chrono::sys_days{2024y / 2 / 29} + 13h);
/// // w.start == sys_days{2024y / 2 / 1}, w.end == sys_days{2024y / 3 / 1}
/// auto shift = BudgetPeriod::every(8h, std::chrono::sys_days{2024y / 1 / 1} + 6h);
/// ```
class BudgetPeriod {
public:
  enum class Kind : std::uint8_t { every, daily, weekly, monthly };

  /// Periods of `length` starting at `anchor` (and every `length` before and after it).
  /// Throws `InvalidArgument` for a length that is not positive, not finite or beyond
  /// `std::chrono::nanoseconds`, or an anchor outside it.
  template <class Rep, class Period, class TimePoint = std::chrono::sys_time<std::chrono::seconds>>
  static BudgetPeriod every(std::chrono::duration<Rep, Period> length, TimePoint anchor = {}) {
    BudgetPeriod p(Kind::every);
    p.length_ = checked_ns(length, "length");
    if (p.length_ <= std::chrono::nanoseconds::zero())
      throw InvalidArgument(fmt::format(
          "safeguards: a budget period's length must be positive, got {}ns", p.length_.count()));
    p.anchor_ = checked_ns(anchor.time_since_epoch(), "anchor");
    return p;
  }

  /// Each UTC day, from 00:00.
  static BudgetPeriod daily() noexcept { return BudgetPeriod(Kind::daily); }

  /// Each week, starting at 00:00 UTC on `first` (Monday unless said otherwise). Throws
  /// `InvalidArgument` for a weekday that is not one (`std::chrono::weekday{9}`).
  static BudgetPeriod weekly(std::chrono::weekday first = std::chrono::Monday) {
    if (!first.ok())
      throw InvalidArgument(fmt::format(
          "safeguards: a weekly budget period needs a weekday 0..6 (Sunday..Saturday), got {}",
          first.c_encoding()));
    BudgetPeriod p(Kind::weekly);
    p.first_day_ = first;
    return p;
  }

  /// Each calendar month, from the 1st at 00:00 UTC; months are as long as the calendar says
  /// (28, 29, 30 or 31 days).
  static BudgetPeriod monthly() noexcept { return BudgetPeriod(Kind::monthly); }

  Kind kind() const noexcept { return kind_; }
  /// The length of an `every` period; zero for calendar periods.
  std::chrono::nanoseconds length() const noexcept { return length_; }
  /// The anchor of an `every` period, as time since the epoch.
  std::chrono::nanoseconds anchor() const noexcept { return anchor_; }
  /// The first day of a weekly period.
  std::chrono::weekday first_day() const noexcept { return first_day_; }

  /// The period `t` falls in. A boundary instant starts the next period.
  template <class TimePoint>
  PeriodWindow<TimePoint> period_containing(TimePoint t) const {
    const auto [start, end] = window_ns(saturating_ns(t.time_since_epoch()));
    return {to_time_point<TimePoint>(start), to_time_point<TimePoint>(end)};
  }

  /// For people and audit reasons: `every 8h`, `every 90min from 2024-01-01T06:00:00Z`,
  /// `daily (UTC)`, `weekly from Monday (UTC)`, `monthly (UTC)`.
  std::string name() const {
    switch (kind_) {
    case Kind::every:
      if (anchor_ == std::chrono::nanoseconds::zero())
        return "every " + duration_name(length_);
      return fmt::format("every {} from {}", duration_name(length_), format_utc(anchor_));
    case Kind::daily:
      return "daily (UTC)";
    case Kind::weekly:
      return fmt::format("weekly from {} (UTC)", weekday_name(first_day_));
    case Kind::monthly:
      return "monthly (UTC)";
    }
    return "unknown period";
  }

  /// `2024-02-29T13:00:00Z`, with a fraction of a second only when there is one.
  static std::string format_utc(std::chrono::nanoseconds since_epoch) {
    using namespace std::chrono;
    const auto day = floor<days>(since_epoch);
    const year_month_day ymd{sys_days(day)};
    const hh_mm_ss<nanoseconds> tod(since_epoch - day);
    auto text = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", static_cast<int>(ymd.year()),
                            static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                            tod.hours().count(), tod.minutes().count(), tod.seconds().count());
    if (const auto ns = tod.subseconds().count(); ns != 0) {
      auto fraction = fmt::format("{:09}", ns);
      fraction.erase(fraction.find_last_not_of('0') + 1);
      text += "." + fraction;
    }
    return text + "Z";
  }

  friend bool operator==(const BudgetPeriod&, const BudgetPeriod&) = default;

private:
  using ns = std::chrono::nanoseconds;
  __extension__ using int128 = __int128; // t - anchor of two nanosecond counts needs 65 bits

  explicit BudgetPeriod(Kind kind) noexcept : kind_(kind) {}

  template <class Rep, class Period>
  static ns checked_ns(std::chrono::duration<Rep, Period> d, std::string_view what) {
    // Compared in long double nanoseconds: a length of a billion hours must not wrap into a
    // small (or negative) one on its way to nanoseconds.
    const long double value = std::chrono::duration<long double, std::nano>(d).count();
    if (!std::isfinite(value) || value > static_cast<long double>(ns::max().count()) ||
        value < static_cast<long double>(ns::min().count()))
      throw InvalidArgument(fmt::format(
          "safeguards: a budget period's {} must be a finite number of nanoseconds within "
          "+-292 years, got {}ns",
          what, static_cast<double>(value)));
    return std::chrono::duration_cast<ns>(d);
  }

  // A time since the epoch in nanoseconds, clamped to their range.
  template <class Rep, class Period>
  static ns saturating_ns(std::chrono::duration<Rep, Period> d) noexcept {
    const long double value = std::chrono::duration<long double, std::nano>(d).count();
    if (!(value < static_cast<long double>(ns::max().count())))
      return ns::max();
    if (!(value > static_cast<long double>(ns::min().count())))
      return ns::min();
    return std::chrono::floor<ns>(d);
  }

  static ns clamp(int128 v) noexcept {
    if (v > static_cast<int128>(ns::max().count()))
      return ns::max();
    if (v < static_cast<int128>(ns::min().count()))
      return ns::min();
    return ns(static_cast<std::int64_t>(v));
  }

  static ns days_to_ns(std::chrono::sys_days d) noexcept {
    return clamp(static_cast<int128>(d.time_since_epoch().count()) * 86'400'000'000'000);
  }

  std::pair<ns, ns> window_ns(ns t) const noexcept {
    using namespace std::chrono;
    switch (kind_) {
    case Kind::every: {
      const int128 offset = static_cast<int128>(t.count()) - anchor_.count();
      int128 k = offset / length_.count(); // floor division: times before the anchor too
      if (offset % length_.count() < 0)
        --k;
      const int128 start = static_cast<int128>(anchor_.count()) + k * length_.count();
      return {clamp(start), clamp(start + length_.count())};
    }
    case Kind::daily: {
      const sys_days day{floor<days>(t)};
      return {days_to_ns(day), days_to_ns(day + days(1))};
    }
    case Kind::weekly: {
      const sys_days day{floor<days>(t)};
      const sys_days start = day - (weekday(day) - first_day_); // 0..6 days back
      return {days_to_ns(start), days_to_ns(start + days(7))};
    }
    case Kind::monthly: {
      const year_month_day ymd{sys_days(floor<days>(t))};
      const year_month month = ymd.year() / ymd.month();
      const year_month next = month + months(1); // December -> January of the next year
      return {days_to_ns(sys_days(month / 1)), days_to_ns(sys_days(next / 1))};
    }
    }
    return {t, t};
  }

  // Rounded up to the time point's resolution: for a representable `t`, start <= t < end
  // still holds.
  template <class TimePoint>
  static TimePoint to_time_point(ns v) noexcept {
    using D = typename TimePoint::duration;
    if constexpr (std::is_floating_point_v<typename D::rep>)
      return TimePoint(std::chrono::duration_cast<D>(v));
    else {
      // A clock coarser than nanoseconds holds every nanosecond count; a finer one may not.
      const long double value = std::chrono::duration<long double, std::nano>(v).count();
      if (value >= std::chrono::duration<long double, std::nano>(D::max()).count())
        return TimePoint::max();
      if (value <= std::chrono::duration<long double, std::nano>(D::min()).count())
        return TimePoint::min();
      return TimePoint(std::chrono::ceil<D>(v));
    }
  }

  static std::string duration_name(ns d) {
    using namespace std::chrono;
    struct Unit {
      std::int64_t nanos;
      const char* name;
    };
    static constexpr std::array<Unit, 6> units{{{86'400'000'000'000, "d"},
                                                {3'600'000'000'000, "h"},
                                                {60'000'000'000, "min"},
                                                {1'000'000'000, "s"},
                                                {1'000'000, "ms"},
                                                {1'000, "us"}}};
    for (const auto& u : units)
      if (d.count() % u.nanos == 0)
        return fmt::format("{}{}", d.count() / u.nanos, u.name);
    return fmt::format("{}ns", d.count());
  }

  static std::string_view weekday_name(std::chrono::weekday d) noexcept {
    static constexpr std::array<std::string_view, 7> names{
        "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
    return names[d.c_encoding() % 7];
  }

  Kind kind_;
  ns length_{0};
  ns anchor_{0};
  std::chrono::weekday first_day_{std::chrono::Monday};
};

/// Budget periods of one coordinator's agents and pools. At each boundary an agent's used money
/// is forgiven and its remaining balance restored to its allocation (`reset_usage`); a pool's
/// boundary does that for all its agents at once and returns its removed agents' usage to its
/// unallocated budget. Reservations open across a boundary stay reserved and settle against the
/// new period, so the books stay exact.
///
/// Resets happen in `tick()`, driven by the coordinator's clock: call it from a timer (once a
/// second is plenty for daily periods) or before work that must see the new period. The hot
/// path is untouched: `try_consume` knows nothing of periods. A consume made after a boundary
/// but before the tick that notices it counts in the period that the tick ends (it is forgiven
/// with the rest): within any two resets an agent never spends more than its allocation.
///
/// Each period is reset **exactly once**: `tick()` may run on many threads at once, and a
/// clock that jumped over several boundaries (a process idle for a week with a daily period)
/// gives one reset, into the period that contains now. A clock going back resets nothing
/// until it passes the current period's end again. Each reset is one audit `BudgetChange` per
/// agent whose reason names the period: `period reset: daily (UTC), period
/// 2024-03-01T00:00:00Z to 2024-03-02T00:00:00Z`.
///
/// Setting a period starts its window at the period containing now, with no reset. An agent
/// with its own period in a pool with one is reset at both. Keep one `BudgetPeriods` per
/// coordinator (two would each reset), and destroy it before the coordinator. Thread-safe;
/// audit sinks may call back into it.
///
/// **Example**
/// ```
/// ManualClock clock(ManualClock::time_point(std::chrono::sys_days{2024y / 3 / 1}
///                                               .time_since_epoch()));
/// BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock> coord({}, {}, clock);
/// BasicBudgetPeriods periods(coord);
/// AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
/// periods.set_period(a, BudgetPeriod::daily());
/// coord.consume(a, 100_d);
/// clock.advance(std::chrono::hours(24));
/// periods.tick();                      // 1 reset: coord.get_budget(a) == 100_d again
/// ```
template <class Coordinator>
class BasicBudgetPeriods {
public:
  using coordinator_type = Coordinator;
  using time_point = typename Coordinator::time_point;
  using Window = PeriodWindow<time_point>;

  explicit BasicBudgetPeriods(Coordinator& coord) noexcept : coord_(coord) {}
  BasicBudgetPeriods(const BasicBudgetPeriods&) = delete;
  BasicBudgetPeriods& operator=(const BasicBudgetPeriods&) = delete;

  /// Gives the agent a period (replacing any it had); the current period is the one containing
  /// now and nothing is reset. Throws `UnknownAgent`.
  void set_period(AgentId agent, BudgetPeriod period) {
    (void)coord_.agent_priority(agent); // throws UnknownAgent, for a removed agent too
    std::lock_guard lock(mutex_);
    agents_.insert_or_assign(agent.value(), make_entry(period));
  }

  /// Gives the pool a period (replacing any it had). Throws `UnknownPool`.
  void set_period(PoolId pool, BudgetPeriod period) {
    (void)coord_.pool_priority(pool); // throws UnknownPool
    std::lock_guard lock(mutex_);
    pools_.insert_or_assign(pool.value(), make_entry(period));
  }

  /// Takes the period away; false when there was none.
  bool clear_period(AgentId agent) {
    std::lock_guard lock(mutex_);
    return agents_.erase(agent.value()) != 0;
  }
  bool clear_period(PoolId pool) {
    std::lock_guard lock(mutex_);
    return pools_.erase(pool.value()) != 0;
  }

  std::optional<BudgetPeriod> period(AgentId agent) const {
    std::lock_guard lock(mutex_);
    auto it = agents_.find(agent.value());
    return it == agents_.end() ? std::nullopt : std::optional(it->second.period);
  }
  std::optional<BudgetPeriod> period(PoolId pool) const {
    std::lock_guard lock(mutex_);
    auto it = pools_.find(pool.value());
    return it == pools_.end() ? std::nullopt : std::optional(it->second.period);
  }

  /// The period the agent's books belong to (shown next to `agent_metrics`): its own period's,
  /// else its pool's; nothing when neither has one. It moves on when `tick()` resets it, so
  /// after a boundary and before the tick it is still the previous period.
  std::optional<Window> current_period(AgentId agent) const {
    {
      std::lock_guard lock(mutex_);
      if (auto it = agents_.find(agent.value()); it != agents_.end())
        return it->second.window;
    }
    return current_period(coord_.agent_pool(agent));
  }
  std::optional<Window> current_period(PoolId pool) const {
    std::lock_guard lock(mutex_);
    auto it = pools_.find(pool.value());
    return it == pools_.end() ? std::nullopt : std::optional(it->second.window);
  }

  /// Resets every agent and pool whose period has ended, once each, into the period containing
  /// now; returns how many were reset (a pool counts once). An agent removed meanwhile loses
  /// its period. A failing reset (out of memory) leaves that period due and throws.
  std::size_t tick() {
    std::lock_guard lock(mutex_);
    const time_point now = coord_.clock().now();
    std::size_t resets = 0;
    // Keys are collected first: an audit sink called back from a reset may change the maps.
    for (std::uint64_t key : due(pools_, now))
      resets += reset_one(pools_, key, PoolId(key), now);
    for (std::uint64_t key : due(agents_, now))
      resets += reset_one(agents_, key, AgentId(key), now);
    return resets;
  }

private:
  struct Entry {
    BudgetPeriod period;
    Window window;
  };
  using Map = std::map<std::uint64_t, Entry>;

  Entry make_entry(BudgetPeriod period) const {
    Window window = period.period_containing(coord_.clock().now());
    return {period, window};
  }

  static std::vector<std::uint64_t> due(const Map& map, time_point now) {
    std::vector<std::uint64_t> keys;
    for (const auto& [key, entry] : map)
      if (entry.window.end <= now)
        keys.push_back(key);
    return keys;
  }

  // The period index is the window's start: a reset moves it strictly forward, under the lock,
  // before the reset is made, so a re-entrant call (an audit sink calling `tick`) finds nothing
  // due and a clock that went back finds an earlier start and does nothing.
  template <class Id>
  std::size_t reset_one(Map& map, std::uint64_t key, Id id, time_point now) {
    auto it = map.find(key);
    if (it == map.end())
      return 0;
    const Window next = it->second.period.period_containing(now);
    if (!(it->second.window.start < next.start))
      return 0;
    const Window previous = std::exchange(it->second.window, next);
    try {
      coord_.reset_usage(id,
                         fmt::format("period reset: {}, period {} to {}", it->second.period.name(),
                                     format(next.start), format(next.end)));
    } catch (const UnknownId&) { // removed agent: no books to reset any more
      map.erase(key);
      return 0;
    } catch (...) {
      if (auto again = map.find(key); again != map.end() && again->second.window == next)
        again->second.window = previous;
      throw;
    }
    return 1;
  }

  static std::string format(time_point t) {
    const auto since = t.time_since_epoch();
    const long double value = std::chrono::duration<long double, std::nano>(since).count();
    if (value >= static_cast<long double>(std::chrono::nanoseconds::max().count()))
      return BudgetPeriod::format_utc(std::chrono::nanoseconds::max());
    if (value <= static_cast<long double>(std::chrono::nanoseconds::min().count()))
      return BudgetPeriod::format_utc(std::chrono::nanoseconds::min());
    return BudgetPeriod::format_utc(std::chrono::floor<std::chrono::nanoseconds>(since));
  }

  Coordinator& coord_;
  // Held across the decision and the reset, so each period is reset once; recursive because
  // the reset delivers audit records, and a sink may call back in on this thread.
  mutable std::recursive_mutex mutex_;
  Map agents_;
  Map pools_;
};

/// Periods of the default `BudgetCoordinator` (wall-clock time, so calendar periods are UTC).
using BudgetPeriods = BasicBudgetPeriods<BudgetCoordinator>;

} // namespace v1
} // namespace safeguards

template <>
struct fmt::formatter<safeguards::BudgetPeriod> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BudgetPeriod& p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(p.name(), ctx);
  }
};
