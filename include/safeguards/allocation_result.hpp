// safeguards: what `BudgetCoordinator::allocate` did to a pool.
// SPDX-License-Identifier: MIT
#pragma once

#include <safeguards/amount.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// One agent's remaining balance before and after an allocation.
template <BudgetAmount Amount = Decimal>
struct BasicAllocationChange {
  AgentId agent;
  Amount old_remaining{};
  Amount new_remaining{};
};

/// What an allocation run did: the strategy's name, what it could hand out, what stayed in the
/// pool, and every agent's balance before and after (unchanged agents too, in ascending id
/// order). `old_remaining` is the balance the strategy saw; a consume that landed between the
/// snapshot and the apply is charged on top of `new_remaining` (see `allocate`).
template <BudgetAmount Amount = Decimal>
struct BasicAllocationResult {
  PoolId pool;
  std::string strategy;
  Amount distributable{};      ///< the pool's unallocated budget plus its agents' remaining
  Amount unallocated_before{}; ///< the pool's unallocated budget before
  Amount unallocated_after{};  ///< and after: distributable minus what was handed out
  std::vector<BasicAllocationChange<Amount>> changes;
};

using AllocationChange = BasicAllocationChange<Decimal>;
using AllocationResult = BasicAllocationResult<Decimal>;

} // namespace v1
} // namespace safeguards
