// safeguards: violations, their types and severities.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <fmt/format.h>
#include <map>
#include <safeguards/consumption.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>

namespace safeguards {
inline namespace v1 {

/// What went wrong. The first two are the guide's `BUDGET_LIMIT_EXCEEDED` and `LOW_BUDGET`.
enum class ViolationType : std::uint8_t {
  BudgetLimitExceeded, ///< a spending limit would have been passed (the consume was vetoed)
  LowBudget,           ///< remaining fell to or below the alert threshold
  HighUsage,           ///< used rose above the warning threshold
  Overspend,           ///< a commit's actual usage exceeded what the account could pay
  PoolBreach,          ///< a pool could not cover what was asked of it
  RateLimit,           ///< too much, too fast
  Unauthorized,        ///< an operation the caller may not perform
  PolicyBreach,        ///< a user policy refused the operation
  MonitorFailure       ///< a monitor threw; the exception's message is in the details
};

/// How urgent a violation is, from `Info` to `Critical`.
enum class AlertSeverity : std::uint8_t { Info, Low, Medium, High, Critical };

constexpr std::string_view to_string(ViolationType t) noexcept {
  switch (t) {
  case ViolationType::BudgetLimitExceeded:
    return "BUDGET_LIMIT_EXCEEDED";
  case ViolationType::LowBudget:
    return "LOW_BUDGET";
  case ViolationType::HighUsage:
    return "HIGH_USAGE";
  case ViolationType::Overspend:
    return "OVERSPEND";
  case ViolationType::PoolBreach:
    return "POOL_BREACH";
  case ViolationType::RateLimit:
    return "RATE_LIMIT";
  case ViolationType::Unauthorized:
    return "UNAUTHORIZED";
  case ViolationType::PolicyBreach:
    return "POLICY_BREACH";
  case ViolationType::MonitorFailure:
    return "MONITOR_FAILURE";
  }
  return "UNKNOWN";
}

constexpr std::string_view to_string(AlertSeverity s) noexcept {
  switch (s) {
  case AlertSeverity::Info:
    return "INFO";
  case AlertSeverity::Low:
    return "LOW";
  case AlertSeverity::Medium:
    return "MEDIUM";
  case AlertSeverity::High:
    return "HIGH";
  case AlertSeverity::Critical:
    return "CRITICAL";
  }
  return "UNKNOWN";
}

/// One violation, as monitors report it and sinks receive it. `details` is ordered so that
/// logs are reproducible.
template <class TimePoint = std::chrono::system_clock::time_point>
struct BasicViolation {
  AgentId agent;
  ViolationType type{};
  AlertSeverity severity{};
  std::string message;
  std::map<std::string, std::string> details;
  TimePoint timestamp{};
  /// The agent's name, for people reading logs; `agent` stays the key.
  std::string agent_name{};
};

using Violation = BasicViolation<>;

} // namespace v1
} // namespace safeguards

template <>
struct fmt::formatter<safeguards::ViolationType> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::ViolationType t, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(t), ctx);
  }
};

template <>
struct fmt::formatter<safeguards::AlertSeverity> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::AlertSeverity s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(s), ctx);
  }
};

/// `[MEDIUM] BUDGET_LIMIT_EXCEEDED critical_agent (agent-1) at 2026-…Z: message {key=value, …}`
/// (just `agent-1` when the name is not known).
template <class TimePoint>
struct fmt::formatter<safeguards::BasicViolation<TimePoint>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicViolation<TimePoint>& v, FormatContext& ctx) const {
    std::string details;
    for (const auto& [key, value] : v.details)
      details += fmt::format("{}{}={}", details.empty() ? "" : ", ", key, value);
    auto who = v.agent_name.empty() ? fmt::format("{}", v.agent)
                                    : fmt::format("{} ({})", v.agent_name, v.agent);
    auto text = fmt::format("[{}] {} {} at {}: {}{}", v.severity, v.type, who,
                            safeguards::detail::timestamp_to_string(v.timestamp), v.message,
                            details.empty() ? "" : " {" + details + "}");
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
