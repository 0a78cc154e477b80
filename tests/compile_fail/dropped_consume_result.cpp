// expect: nodiscard
// A refusal that nobody reads is a refusal ignored: dropping a ConsumeResult, a Reservation (which
// would be released at once) or a CommitResult is a warning, made an error here.
#pragma GCC diagnostic error "-Wunused-result"
#include <safeguards/coordinator.hpp>

int main() {
  using namespace safeguards;
  BudgetCoordinator coord;
  AgentId agent = coord.create_agent({.name = "a", .initial_budget = 100_d});
  auto used = coord.try_consume(agent, 1_d);
  auto held = coord.reserve(agent, 2_d);
  auto settled = held.commit(1_d);
#ifdef SAFEGUARDS_COMPILE_FAIL
  coord.try_consume(agent, 1_d);
  coord.reserve(agent, 2_d);
  coord.reserve(agent, 2_d).commit(1_d);
#endif
  return used.ok() && settled.ok() ? 0 : 1;
}
