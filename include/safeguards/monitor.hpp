// safeguards: monitors (veto checks and observers) and the built-in ones.
// SPDX-License-Identifier: MIT
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/violation.hpp>
#include <set>
#include <string>
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

/// Handed to monitors so they can report violations; agent and timestamp are filled in.
template <class TimePoint>
class BasicViolationReporter {
public:
  using Deliver = std::function<void(BasicViolation<TimePoint>&&)>;

  BasicViolationReporter(const Deliver& deliver, AgentId agent, TimePoint now)
      : deliver_(deliver), agent_(agent), now_(now) {}

  void report(ViolationType type, AlertSeverity severity, std::string message,
              std::map<std::string, std::string> details = {}) const {
    deliver_(BasicViolation<TimePoint>{agent_, type, severity, std::move(message),
                                       std::move(details), now_});
  }

private:
  const Deliver& deliver_;
  AgentId agent_;
  TimePoint now_;
};

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

template <class Event, class Reporter>
struct MonitorEntry {
  std::function<bool(const Event&, Reporter&)> check;
  std::function<void(const Event&, Reporter&)> observe;
};

template <class Event, class Reporter, class M>
auto make_monitor_entry(M monitor) {
  auto shared = std::make_shared<M>(std::move(monitor));
  MonitorEntry<Event, Reporter> entry;
  constexpr bool has_check = requires(M & m, const Event& e, Reporter& r) {
    m.check(e, r);
  };
  constexpr bool has_observe = requires(M & m, const Event& e, Reporter& r) {
    m.observe(e, r);
  };
  if constexpr (has_check || has_observe) {
    if constexpr (has_check)
      entry.check = [shared](const Event& e, Reporter& r) { return bool(shared->check(e, r)); };
    if constexpr (has_observe)
      entry.observe = [shared](const Event& e, Reporter& r) { shared->observe(e, r); };
  } else if constexpr (std::invocable<M&, const Event&, Reporter&>) {
    if constexpr (std::is_void_v<std::invoke_result_t<M&, const Event&, Reporter&>>)
      entry.observe = [shared](const Event& e, Reporter& r) { (*shared)(e, r); };
    else
      entry.check = [shared](const Event& e, Reporter& r) { return bool((*shared)(e, r)); };
  } else {
    if constexpr (std::is_void_v<std::invoke_result_t<M&, const Event&>>)
      entry.observe = [shared](const Event& e, Reporter&) { (*shared)(e); };
    else
      entry.check = [shared](const Event& e, Reporter&) { return bool((*shared)(e)); };
  }
  return entry;
}

// The line `percent` % of an allocation draws (exact for the exact amount types), or nothing
// for an agent with no allocation, which has no line to cross.
template <class Amount>
std::optional<Amount> threshold_line(const Amount& allocated, std::int64_t percent) {
  if (!(amount_zero<Amount>() < allocated))
    return std::nullopt;
  return amount_traits<Amount>::mul_div(allocated, percent, 100);
}

// The guide's threshold alerts share their details; only the name of the watched value differs.
template <class Amount, class Reporter>
void report_threshold(Reporter& reporter, ViolationType type, AlertSeverity severity,
                      std::string message, const char* value_key, const Amount& value,
                      const Amount& allocated, std::int64_t percent) {
  reporter.report(type, severity, std::move(message),
                  {{value_key, amount_to_string(value)},
                   {"initial_budget", amount_to_string(allocated)},
                   {"threshold_percent", std::to_string(percent)}});
}

} // namespace detail

/// The guide's `set_spending_limit`: vetoes any consume or reserve that would take the agent's
/// total spending (used and reserved, plus what is being asked) past `limit`, and reports
/// `BudgetLimitExceeded` once per episode (again only after a request has fitted again).
///
/// **Example**
/// ```
/// auto handle = coord.add_monitor(agent, SpendingLimit{Decimal("100.0")});
/// ```
template <BudgetAmount Amount>
class SpendingLimit {
public:
  explicit SpendingLimit(Amount limit, AlertSeverity severity = AlertSeverity::Medium)
      : limit_(std::move(limit)), severity_(severity), state_(std::make_shared<State>()) {}

  const Amount& limit() const noexcept { return limit_; }

  template <class TimePoint, class Reporter>
  bool check(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) {
    if (e.kind != UsageKind::consume && e.kind != UsageKind::reserve)
      return true;
    // Reserved money counts as spent: otherwise two reservations that each fit could commit
    // past the limit together.
    Amount committed = amount_traits<Amount>::sub(e.allocated, e.remaining_before);
    Amount spent = amount_traits<Amount>::add(committed, e.amount);
    std::lock_guard lock(state_->mutex);
    if (spent <= limit_) {
      state_->tripped.erase(e.agent);
      return true;
    }
    if (state_->tripped.insert(e.agent).second)
      reporter.report(ViolationType::BudgetLimitExceeded, severity_,
                      fmt::format("Agent exceeded spending limit of {}", amount_to_string(limit_)),
                      {{"limit", amount_to_string(limit_)},
                       {"spent", amount_to_string(spent)},
                       {"overage", amount_to_string(amount_traits<Amount>::sub(spent, limit_))}});
    return false;
  }

private:
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
  std::int64_t percent = 15;
  AlertSeverity severity = AlertSeverity::Medium;

  template <class Amount, class TimePoint, class Reporter>
  void observe(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) const {
    auto line = detail::threshold_line(e.allocated, percent);
    if (line && e.remaining_before > *line && e.remaining_after <= *line)
      detail::report_threshold(reporter, ViolationType::LowBudget, severity,
                               fmt::format("Agent budget below {}% threshold", percent),
                               "current_budget", e.remaining_after, e.allocated, percent);
  }
};

/// The guide's high-usage warning: reports `HighUsage` when an agent's used budget rises above
/// `percent` % of its allocation, on the crossing only.
struct HighUsageWarning {
  std::int64_t percent = 80;
  AlertSeverity severity = AlertSeverity::Low;

  template <class Amount, class TimePoint, class Reporter>
  void observe(const BasicUsageEvent<Amount, TimePoint>& e, Reporter& reporter) const {
    auto line = detail::threshold_line(e.allocated, percent);
    if (line && e.used_before <= *line && e.used_after > *line)
      detail::report_threshold(reporter, ViolationType::HighUsage, severity,
                               fmt::format("Agent budget usage above {}%", percent), "used_budget",
                               e.used_after, e.allocated, percent);
  }
};

} // namespace v1
} // namespace safeguards
