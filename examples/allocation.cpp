// The Safeguards guide's allocation recipes, ported: priority-based allocation of a pool,
// dynamic allocation from recent usage, rebalancing, and an emergency grant taken from a
// lower-priority pool. Every split adds up to the micro-unit.
#include <fmt/format.h>
#include <safeguards/safeguards.hpp>

using namespace safeguards;

namespace {

void print(const BudgetCoordinator& coord, const AllocationResult& result) {
  fmt::print("{} allocation of {} ({} left unallocated):\n", result.strategy, result.distributable,
             result.unallocated_after);
  for (const auto& change : result.changes)
    fmt::print("  {:<10} priority {:>2}: {:>12} -> {:>12}\n", coord.agent_name(change.agent),
               coord.agent_priority(change.agent), change.old_remaining, change.new_remaining);
}

} // namespace

int main() {
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 100});
  PoolId services =
      coord.create_pool({.name = "services", .initial_budget = Decimal("1000.0"), .priority = 9});
  PoolId batch =
      coord.create_pool({.name = "batch", .initial_budget = Decimal("300.0"), .priority = 2});
  const int priorities[] = {9, 8, 5, 3, 1};
  AgentId agents[5];
  for (int i = 0; i < 5; ++i)
    agents[i] = coord.create_agent({.name = fmt::format("agent-{}", priorities[i]),
                                    .initial_budget = Decimal(0),
                                    .priority = priorities[i],
                                    .pool = services});

  // The guide's allocate_by_priority: critical agents (>= 8) get 50 first, then everything
  // is split by priority. Unlike the guide's code, nothing is left unassigned.
  print(coord, coord.allocate(services, PriorityAllocation{}));

  // Some usage, then the guide's dynamic rule: mean usage x 1.2, at least 50.
  for (int i = 0; i < 3; ++i)
    coord.consume(agents[0], Decimal("100.0"));
  coord.consume(agents[2], Decimal("10.0"));
  print(coord, coord.allocate(services, DynamicAllocation{}));

  // Rebalance: 70 % priority, 30 % usage, each as a share of the pool.
  print(coord, coord.allocate(services, RebalanceAllocation{}));

  // The guide's emergency allocation, with the money taken from the lower-priority pool.
  const EmergencyGrant grant =
      coord.emergency_allocation(agents[3], Decimal("80.0"), "critical: customer-facing outage");
  fmt::print("emergency: asked {}, approved {}, granted {} ({})\n", grant.requested, grant.approved,
             grant.granted, grant.decision);
  for (const auto& source : grant.sources)
    fmt::print("  {} from pool {}\n", source.amount, coord.pool_metrics(source.pool).name);
  fmt::print("batch pool now holds {}\n", coord.pool_metrics(batch).initial_budget);

  // The books still balance.
  return coord.check_invariants().empty() ? 0 : 1;
}
