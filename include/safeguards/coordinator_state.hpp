// safeguards: a coordinator's books as plain values, to save them and to resume from them.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <safeguards/amount.hpp>
#include <safeguards/coordinator_types.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// Everything a coordinator's books hold, as values: pools, agents (removed ones too, so that
/// ids are never reused) and every agent's balance. `BasicBudgetCoordinator::snapshot()` takes
/// it and `restore(state)` rebuilds the books from it in a new coordinator, e.g. after a restart
/// (`sqlite_snapshot.hpp` keeps it in a file). Monitors, sinks, usage history, data slots and
/// budget periods are not in it: they are code, or belong to the process, and are set up again
/// after a restore.
///
/// **Example**
/// ```
/// const auto state = coord.snapshot();
/// BudgetCoordinator resumed;
/// resumed.restore(state);
/// ```
template <BudgetAmount Amount = Decimal>
struct BasicCoordinatorState {
  struct Pool {
    PoolId id;
    std::string name;
    int priority = 5;
    bool implicit = false; ///< the pool an agent created without `.pool` got for itself
    Amount initial{};
    Amount unallocated{};
    Metadata metadata{};
  };
  struct Agent {
    AgentId id;
    std::string name;
    PoolId pool;
    int priority = 5;
    bool removed = false;
    Amount allocated{}; ///< `remaining + used + reserved`
    Amount remaining{};
    Amount used{};
    Amount reserved{}; ///< held by reservations when the snapshot was taken
    Amount overspent{};
    std::uint64_t charges = 0;
    Metadata metadata{};
  };

  std::vector<Pool> pools;    ///< in id order
  std::vector<Agent> agents;  ///< in id order, ids 1, 2, 3, ... without gaps
  std::uint64_t sequence = 0; ///< the number of the last audit record
};

using CoordinatorState = BasicCoordinatorState<Decimal>;

} // namespace v1
} // namespace safeguards
