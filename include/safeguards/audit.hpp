// safeguards: the audit trail of budget changes, and a sink that keeps them in memory. The
// JSON-lines file sink and its reader are in audit_file.hpp (they need POSIX file calls).
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <fmt/format.h>
#include <memory>
#include <mutex>
#include <safeguards/amount.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// One change of an agent's budget that was not a plain consume: creation, update, transfer,
/// allocation, emergency grant, removal. `old_budget`/`new_budget` are the agent's remaining
/// budget before and after; `delta` is their difference.
///
/// `sequence` numbers a coordinator's changes 1, 2, 3, ... in the order they were made (it is
/// stamped under the coordinator's lock), and sinks receive them in that order.
template <class Amount = Decimal, class TimePoint = std::chrono::system_clock::time_point>
struct BasicBudgetChange {
  AgentId agent;
  int priority = 0;
  Amount old_budget;
  Amount new_budget;
  Amount delta;
  std::string reason;
  TimePoint timestamp{};
  /// The agent's name, for people reading logs; `agent` stays the key.
  std::string agent_name{};
  std::uint64_t sequence = 0;

  friend bool operator==(const BasicBudgetChange&, const BasicBudgetChange&) = default;
};

using BudgetChange = BasicBudgetChange<>;

/// Keeps the last `capacity` changes in memory, for tests, dashboards and debugging.
/// Thread-safe; copies of the log share one buffer, so a copy can be handed to a coordinator.
template <class Change = BudgetChange>
class BasicMemoryAuditLog {
public:
  explicit BasicMemoryAuditLog(std::size_t capacity = 10'000) : state_(std::make_shared<State>()) {
    state_->capacity = capacity;
  }

  void operator()(const Change& change) const {
    std::lock_guard lock(state_->mutex);
    if (state_->capacity == 0)
      return;
    if (state_->records.size() == state_->capacity)
      state_->records.pop_front();
    state_->records.push_back(change);
  }

  std::vector<Change> records() const {
    std::lock_guard lock(state_->mutex);
    return {state_->records.begin(), state_->records.end()};
  }

private:
  struct State {
    std::mutex mutex;
    std::size_t capacity = 0;
    std::deque<Change> records;
  };
  std::shared_ptr<State> state_;
};

using MemoryAuditLog = BasicMemoryAuditLog<>;

} // namespace v1
} // namespace safeguards

/// The guide's log line, with the agent's name where it is known: `Budget change for agent
/// critical_agent (agent-1, priority 8): 200.0 → 150.0 (-50.0). Reason: ...`
template <class Amount, class TimePoint>
struct fmt::formatter<safeguards::BasicBudgetChange<Amount, TimePoint>>
    : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicBudgetChange<Amount, TimePoint>& c, FormatContext& ctx) const {
    using safeguards::amount_to_string;
    std::string delta = amount_to_string(c.delta);
    if (!delta.empty() && delta.front() != '-')
      delta.insert(0, "+");
    auto who = c.agent_name.empty()
                   ? fmt::format("{} (priority {})", c.agent, c.priority)
                   : fmt::format("{} ({}, priority {})", c.agent_name, c.agent, c.priority);
    auto text = fmt::format("Budget change for agent {}: {} \u2192 {} ({}). Reason: {}", who,
                            amount_to_string(c.old_budget), amount_to_string(c.new_budget), delta,
                            c.reason);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
