// safeguards: what describes pools and agents: specs to create them, metrics to read them, options.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/ids.hpp>
#include <string>

namespace safeguards {
inline namespace v1 {

/// Free-form string metadata of an agent or pool.
using Metadata = std::map<std::string, std::string>;

/// Lowest and highest priority; 10 is the most important.
inline constexpr int min_priority = 1;
inline constexpr int max_priority = 10;

/// What `create_pool` needs. Field order is fixed: designated initializers depend on it.
template <BudgetAmount Amount = Decimal>
struct BasicPoolSpec {
  std::string name;
  Amount initial_budget{};
  int priority = 5;
  Metadata metadata{};
};

/// What `create_agent` needs. Without `pool` the agent gets an implicit pool of its own holding
/// exactly its initial budget. Field order is fixed: designated initializers depend on it.
template <BudgetAmount Amount = Decimal>
struct BasicAgentSpec {
  std::string name;
  Amount initial_budget{};
  int priority = 5;
  std::optional<PoolId> pool{};
  Metadata metadata{};
};

using PoolSpec = BasicPoolSpec<Decimal>;
using AgentSpec = BasicAgentSpec<Decimal>;

/// An agent's numbers. `initial_budget` is everything the agent has been given (creation plus
/// updates and grants), so `initial == used + reserved + remaining` at quiescent points.
template <BudgetAmount Amount = Decimal>
struct BasicAgentMetrics {
  AgentId id;
  std::string name;
  PoolId pool;
  int priority = 0;
  Amount initial_budget{};
  Amount used_budget{};
  Amount reserved_budget{};
  Amount remaining_budget{};
  /// Usage that commits reported beyond what the account could pay (never charged).
  Amount overspent_budget{};
  std::uint64_t consumption_count = 0;
  /// Used budget per second since the agent was created (for display; not exact).
  double consumption_rate = 0;
};

/// A pool's numbers. `remaining = unallocated + Σ agent remaining`, so a pool is charged as its
/// agents spend, and `initial == unallocated + allocated` at quiescent points.
template <BudgetAmount Amount = Decimal>
struct BasicPoolMetrics {
  PoolId id;
  std::string name;
  int priority = 0;
  /// True for the pool an agent created without `.pool` got for itself.
  bool implicit = false;
  Amount initial_budget{};
  Amount unallocated_budget{};
  Amount allocated_budget{};
  Amount used_budget{};
  Amount reserved_budget{};
  Amount remaining_budget{};
  std::size_t agent_count = 0;
  /// Used budget per second since the pool was created (for display; not exact).
  double consumption_rate = 0;
};

using AgentMetrics = BasicAgentMetrics<Decimal>;
using PoolMetrics = BasicPoolMetrics<Decimal>;

/// Tag for `add_monitor(all_agents, ...)`: every agent, present and future.
struct AllAgents {};
inline constexpr AllAgents all_agents{};

/// Tuning that does not change semantics.
struct CoordinatorOptions {
  /// Usage events kept per agent for `usage_history`. Zero turns history off, and with it the
  /// clock read and short per-agent lock it costs each consume.
  std::size_t history_capacity = 0;
  /// The unit `usage_history` reports amounts in.
  std::string unit = std::string(units::usd);
};

} // namespace v1
} // namespace safeguards
