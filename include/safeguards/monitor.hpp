// safeguards: monitors (veto checks and observers) and the built-in ones.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <boost/multiprecision/cpp_int.hpp>
#include <concepts>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/violation.hpp>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace safeguards {
inline namespace v1 {

/// What changed an agent's spendable balance.
enum class UsageKind : std::uint8_t {
  consume, ///< `try_consume` / `consume`
  reserve, ///< an estimate was set aside
  commit,  ///< a reservation (or part of it) was settled; `amount` is what was charged
  release  ///< a reservation was given back unused; `amount` is what was returned
};

constexpr std::string_view to_string(UsageKind k) noexcept {
  switch (k) {
  case UsageKind::consume:
    return "consume";
  case UsageKind::reserve:
    return "reserve";
  case UsageKind::commit:
    return "commit";
  case UsageKind::release:
    return "release";
  }
  return "unknown";
}

/// What a monitor sees. For a veto check the `_after` fields are what the change would leave;
/// for an observer they are what it left. `allocated` is remaining + used + reserved.
template <class Amount, class TimePoint>
struct BasicUsageEvent {
  AgentId agent;
  PoolId pool;
  UsageKind kind{};
  Amount amount;
  Amount allocated;
  Amount remaining_before;
  Amount remaining_after;
  Amount used_before;
  Amount used_after;
  TimePoint timestamp{};
};

/// Handed to monitors so they can report violations; agent, its name and the timestamp are
/// filled in.
template <class TimePoint>
class BasicViolationReporter {
public:
  using Deliver = std::function<void(BasicViolation<TimePoint>&&)>;
  /// Reads a clock (`clock` is what the reporter was given) when a violation is reported.
  using ReadClock = TimePoint (*)(const void* clock) noexcept;

  /// `agent_name` must outlive the reporter (the coordinator passes the agent's own name).
  BasicViolationReporter(const Deliver& deliver, AgentId agent, std::string_view agent_name,
                         TimePoint now)
      : deliver_(deliver), agent_(agent), agent_name_(agent_name), now_(now) {}

  /// A reporter for an event that carries no timestamp: a violation is stamped with
  /// `read_clock(clock)` when it is reported, so events nobody reports on read no clock.
  /// `clock` must outlive the reporter.
  BasicViolationReporter(const Deliver& deliver, AgentId agent, std::string_view agent_name,
                         ReadClock read_clock, const void* clock)
      : deliver_(deliver), agent_(agent), agent_name_(agent_name), read_clock_(read_clock),
        clock_(clock) {}

  void report(ViolationType type, AlertSeverity severity, std::string message,
              std::map<std::string, std::string> details = {}) const {
    deliver_(BasicViolation<TimePoint>{agent_, type, severity, std::move(message),
                                       std::move(details), read_clock_ ? read_clock_(clock_) : now_,
                                       std::string(agent_name_)});
  }

  AgentId agent() const noexcept { return agent_; }
  std::string_view agent_name() const noexcept { return agent_name_; }

private:
  const Deliver& deliver_;
  AgentId agent_;
  std::string_view agent_name_;
  TimePoint now_{};
  ReadClock read_clock_ = nullptr;
  const void* clock_ = nullptr;
};

/// How `add_monitor` registers a monitor. The defaults are what `add_monitor` without options
/// does.
///
/// **Example**
/// ```
/// // Counts spending; never looks at `e.timestamp`, so consumes on `agent` read no clock
/// // (unless another monitor of the agent, or the usage history, needs one).
/// auto tally = coord.add_monitor(
///     agent, [&](const BudgetCoordinator::UsageEvent& e) { spent += e.amount; },
///     MonitorOptions{.reads_timestamp = false});
/// ```
struct MonitorOptions {
  /// False for a monitor that never reads `UsageEvent::timestamp`. Reading the clock is most of
  /// what an observed consume costs (`system_clock::now()` is tens of nanoseconds on some
  /// machines), so a change is stamped only when some monitor of its agent reads the timestamp
  /// or the coordinator keeps usage history; otherwise its event carries `TimePoint{}` (the
  /// clock's epoch). Violations such a monitor reports are still stamped, with the time they
  /// are reported.
  ///
  /// A monitor type can say it once for every registration with a member
  /// `static constexpr bool reads_timestamp = false;` (the built-in `LowBudgetAlert`,
  /// `HighUsageWarning` and `SpendingLimit` do); a registration then never asks for timestamps,
  /// whatever its options say.
  bool reads_timestamp = true;
};

namespace detail {
// A monitor type's own `reads_timestamp`, when it declares one; true otherwise.
template <class M>
constexpr bool type_reads_timestamp() noexcept {
  if constexpr (requires { M::reads_timestamp; })
    return static_cast<bool>(M::reads_timestamp);
  else
    return true;
}
} // namespace detail

/// Something that can watch an agent's balance. Four shapes are accepted:
/// - a class with `bool check(const Event&, Reporter&)` (a veto: false stops the change before
///   anything is debited) and/or `void observe(const Event&, Reporter&)` (sees each change once,
///   after it happened, in order per agent);
/// - a callable `bool(const Event&[, Reporter&])`, used as a veto check;
/// - a callable `void(const Event&[, Reporter&])`, used as an observer.
///
/// A monitor registered for a pool or for all agents is shared by those agents and may be
/// called from several threads at once; the built-in monitors are safe for that.
template <class M, class Event, class Reporter>
concept Monitor = std::move_constructible<M> &&(
    requires(M& m, const Event& e, Reporter& r) {
      { m.check(e, r) } -> std::convertible_to<bool>;
    } ||
    requires(M & m, const Event& e, Reporter& r) { m.observe(e, r); } ||
    std::invocable<M&, const Event&, Reporter&> || std::invocable<M&, const Event&>);

namespace detail {
[[noreturn]] inline void throw_bad_percent(std::int64_t value) {
  throw InvalidArgument(
      fmt::format("safeguards: a percentage must be between 0 and 100, got {}", value));
}
} // namespace detail

/// A whole percentage, 0..100, for the threshold monitors. Anything else throws
/// `InvalidArgument` where the monitor is made (and does not compile in a constant expression),
/// so an alert at 150 % that can never fire does not get as far as a coordinator.
///
/// **Example**
/// ```
/// auto alert = coord.add_monitor(all_agents, LowBudgetAlert{.percent = 15});
/// LowBudgetAlert{.percent = 150};   // throws InvalidArgument
/// ```
class Percent {
public:
  constexpr Percent(std::int64_t value) : value_(value) { // NOLINT(google-explicit-constructor)
    if (value < 0 || value > 100)
      detail::throw_bad_percent(value);
  }
  /// Fractions would be rounded silently: not a percentage this type takes.
  template <std::floating_point F>
  Percent(F) = delete;

  constexpr std::int64_t value() const noexcept { return value_; }
  friend constexpr bool operator==(Percent, Percent) noexcept = default;
  // The 0 that `<` compares the result with is the language's, not ours: a false positive of
  // clang-tidy 14 (llvm-project#53961).
  // NOLINTNEXTLINE(modernize-use-nullptr)
  friend constexpr auto operator<=>(Percent, Percent) noexcept = default;

private:
  std::int64_t value_;
};

namespace detail {

// The sign of `value * 100 - total * percent`: where `value` stands against `percent` % of
// `total`. Exact for the raw amount types (a 128-bit product, no rounding, no division, so a
// zero total is just a zero line); the others compare with the line their own `mul_div` draws.
template <BudgetAmount Amount>
int compare_to_share(const Amount& value, const Amount& total, Percent percent) {
  if constexpr (RawAmount<Amount>) {
    using wide = boost::multiprecision::int128_t;
    const wide lhs = wide(amount_traits<Amount>::to_raw(value)) * 100;
    const wide rhs = wide(amount_traits<Amount>::to_raw(total)) * percent.value();
    return lhs < rhs ? -1 : (rhs < lhs ? 1 : 0);
  } else {
    using traits = amount_traits<Amount>;
    Amount line{};
    try {
      line = traits::mul_div(total, percent.value(), 100);
    } catch (const AmountOverflow&) {
      // `total * percent` left the type's range before the division (a `double` near its
      // maximum); a hundredth of it first cannot.
      line = traits::mul_div(traits::mul_div(total, 1, 100), percent.value(), 1);
    }
    return value < line ? -1 : (line < value ? 1 : 0);
  }
}

// A registered monitor. `active` is cleared first when it is unregistered, so that a monitor
// whose removal from the lists could not finish (no memory for the new list) never runs again.
//
// The monitor is called through plain function pointers on the one shared object rather than
// through `std::function`: delivering an event is then one indirect call, where `std::function`
// added an emptiness check and a second indirection through the pointer its lambda captured (a
// tenth of an observed consume).
template <class Event, class Reporter>
struct MonitorEntry {
  using reporter_type = std::remove_const_t<Reporter>;
  using CheckFn = bool (*)(void* monitor, const Event&, Reporter&);
  using ObserveFn = void (*)(void* monitor, const Event&, Reporter&);

  std::shared_ptr<void> monitor; // the user's monitor, as registered
  CheckFn check = nullptr;       // set when the monitor can veto
  ObserveFn observe = nullptr;   // set when it observes
  bool reads_timestamp = true;   // MonitorOptions::reads_timestamp
  mutable std::atomic<bool> active{true};

  bool call_check(const Event& e, Reporter& r) const { return check(monitor.get(), e, r); }
  void call_observe(const Event& e, Reporter& r) const { observe(monitor.get(), e, r); }
  bool is_active() const noexcept { return active.load(std::memory_order_acquire); }
  void deactivate() const noexcept { active.store(false, std::memory_order_release); }
};

template <class Event, class Reporter, class M>
std::shared_ptr<const MonitorEntry<Event, Reporter>>
make_monitor_entry(M monitor, MonitorOptions options = {}) {
  auto entry = std::make_shared<MonitorEntry<Event, Reporter>>();
  entry->monitor = std::make_shared<M>(std::move(monitor));
  entry->reads_timestamp = options.reads_timestamp && detail::type_reads_timestamp<M>();
  constexpr bool has_check = requires(M & m, const Event& e, Reporter& r) {
    m.check(e, r);
  };
  constexpr bool has_observe = requires(M & m, const Event& e, Reporter& r) {
    m.observe(e, r);
  };
  // Captureless lambdas: each converts to the entry's function pointer.
  if constexpr (has_check || has_observe) {
    if constexpr (has_check)
      entry->check = [](void* m, const Event& e, Reporter& r) {
        return bool(static_cast<M*>(m)->check(e, r));
      };
    if constexpr (has_observe)
      entry->observe = [](void* m, const Event& e, Reporter& r) {
        static_cast<M*>(m)->observe(e, r);
      };
  } else if constexpr (std::invocable<M&, const Event&, Reporter&>) {
    if constexpr (std::is_void_v<std::invoke_result_t<M&, const Event&, Reporter&>>)
      entry->observe = [](void* m, const Event& e, Reporter& r) { (*static_cast<M*>(m))(e, r); };
    else
      entry->check = [](void* m, const Event& e, Reporter& r) {
        return bool((*static_cast<M*>(m))(e, r));
      };
  } else {
    if constexpr (std::is_void_v<std::invoke_result_t<M&, const Event&>>)
      entry->observe = [](void* m, const Event& e, Reporter&) { (*static_cast<M*>(m))(e); };
    else
      entry->check = [](void* m, const Event& e, Reporter&) {
        return bool((*static_cast<M*>(m))(e));
      };
  }
  return entry;
}

// The line `percent` % of an allocation draws (exact for the exact amount types), or nothing
// for an agent with no allocation, which has no line to cross.
template <class Amount>
std::optional<Amount> threshold_line(const Amount& allocated, Percent percent) {
  if (!(amount_zero<Amount>() < allocated))
    return std::nullopt;
  return amount_traits<Amount>::mul_div(allocated, percent.value(), 100);
}

// The guide's threshold alerts share their details; only the name of the watched value differs.
template <class Amount, class Reporter>
void report_threshold(Reporter& reporter, ViolationType type, AlertSeverity severity,
                      std::string message, const char* value_key, const Amount& value,
                      const Amount& allocated, Percent percent) {
  reporter.report(type, severity, std::move(message),
                  {{value_key, amount_to_string(value)},
                   {"initial_budget", amount_to_string(allocated)},
                   {"threshold_percent", std::to_string(percent.value())}});
}

} // namespace detail

/// The guide's `set_spending_limit`: vetoes any consume or reserve that would take the agent's
/// total spending (used and reserved, plus what is being asked) past `limit`, and reports
/// `BudgetLimitExceeded` once per episode (again only after a request has fitted again).
///
/// A commit cannot be vetoed (the call has been made; its cost is what it is), so a commit whose
/// actual usage goes beyond its reservation and carries spending past the limit is reported as
/// `BudgetLimitExceeded` with the true figures, every time that happens.
///
/// **Example**
/// ```
/// auto handle = coord.add_monitor(agent, SpendingLimit{Decimal("100.0")});
/// ```
template <BudgetAmount Amount>
class SpendingLimit {
  using traits = amount_traits<Amount>;

public:
  /// Its checks read no timestamp (a violation is stamped when it is reported).
  static constexpr bool reads_timestamp = false;

  /// Throws `InvalidArgument` for a negative or non-finite limit.
  explicit SpendingLimit(Amount limit, AlertSeverity severity = AlertSeverity::Medium)
      : limit_(std::move(limit)), severity_(severity), state_(std::make_shared<State>()) {
    if (!amount_is_finite(limit_) || limit_ < amount_zero<Amount>())
      throw InvalidArgument(fmt::format("safeguards: a spending limit must be a finite amount of "
                                        "at least zero, got {}",
                                        amount_to_string(limit_)));
  }

  const Amount& limit() const noexcept { return limit_; }

  template <class TimePoint, class Reporter>
  bool check(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) {
    if (e.kind != UsageKind::consume && e.kind != UsageKind::reserve)
      return true;
    // Reserved money counts as spent: otherwise two reservations that each fit could commit
    // past the limit together.
    const Amount committed = traits::sub(e.allocated, e.remaining_before);
    // A request too large for the amount type to add up is past any limit.
    const std::optional<Amount> spent = checked_add(committed, e.amount);
    std::lock_guard lock(state_->mutex);
    if (spent && *spent <= limit_) {
      state_->tripped.erase(e.agent);
      return true;
    }
    if (state_->tripped.insert(e.agent).second)
      report(reporter, fmt::format("Agent exceeded spending limit of {}", amount_to_string(limit_)),
             spent, committed, e.amount, {});
    return false;
  }

  template <class TimePoint, class Reporter>
  void observe(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) {
    if (e.kind != UsageKind::commit)
      return;
    // Settling moves reserved money to used and refunds the rest, which leaves spending as it
    // was or lowers it; only an overage charged from the remaining budget raises it.
    const Amount spent_before = traits::sub(e.allocated, e.remaining_before);
    const Amount spent_after = traits::sub(e.allocated, e.remaining_after);
    if (!(limit_ < spent_after) || !(spent_before < spent_after))
      return;
    report(
        reporter,
        fmt::format("Agent's actual usage exceeded spending limit of {}", amount_to_string(limit_)),
        spent_after, spent_before, traits::sub(spent_after, spent_before),
        {{"charged", amount_to_string(e.amount)}, {"kind", "commit"}});
  }

private:
  template <class Reporter>
  void report(Reporter& reporter, std::string message, const std::optional<Amount>& spent,
              const Amount& before, const Amount& added,
              std::map<std::string, std::string> details) const {
    details.emplace("limit", amount_to_string(limit_));
    if (spent) {
      details.emplace("spent", amount_to_string(*spent));
      details.emplace("overage", amount_to_string(traits::sub(*spent, limit_)));
    } else {
      details.emplace("spent", fmt::format("{} + {} (beyond the amount type's range)",
                                           amount_to_string(before), amount_to_string(added)));
    }
    reporter.report(ViolationType::BudgetLimitExceeded, severity_, std::move(message),
                    std::move(details));
  }

  struct State {
    std::mutex mutex;
    std::set<AgentId> tripped; // agents whose current episode was already reported
  };
  Amount limit_;
  AlertSeverity severity_;
  std::shared_ptr<State> state_;
};

/// The guide's low-budget alert: reports `LowBudget` when an agent's remaining budget falls to
/// or below `percent` % of its allocation. It fires on the crossing only, so an agent that
/// stays low is reported once, and again only after its budget has recovered above the line.
struct LowBudgetAlert {
  static constexpr bool reads_timestamp = false; // a violation is stamped when reported
  Percent percent = 15;
  AlertSeverity severity = AlertSeverity::Medium;

  template <class Amount, class TimePoint, class Reporter>
  void observe(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) const {
    auto line = detail::threshold_line(e.allocated, percent);
    if (line && e.remaining_before > *line && e.remaining_after <= *line)
      detail::report_threshold(reporter, ViolationType::LowBudget, severity,
                               fmt::format("Agent budget below {}% threshold", percent.value()),
                               "current_budget", e.remaining_after, e.allocated, percent);
  }
};

/// The guide's high-usage warning: reports `HighUsage` when an agent's used budget rises above
/// `percent` % of its allocation, on the crossing only.
struct HighUsageWarning {
  static constexpr bool reads_timestamp = false; // a violation is stamped when reported
  Percent percent = 80;
  AlertSeverity severity = AlertSeverity::Low;

  template <class Amount, class TimePoint, class Reporter>
  void observe(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) const {
    auto line = detail::threshold_line(e.allocated, percent);
    if (line && e.used_before <= *line && e.used_after > *line)
      detail::report_threshold(reporter, ViolationType::HighUsage, severity,
                               fmt::format("Agent budget usage above {}%", percent.value()),
                               "used_budget", e.used_after, e.allocated, percent);
  }
};

} // namespace v1
} // namespace safeguards
