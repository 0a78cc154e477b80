// expect: deleted
// A token count is not money: passing an integer where the coordinator takes Decimal dollars must
// not compile, even though Decimal converts from integers elsewhere.
#include <cstdint>
#include <safeguards/coordinator.hpp>

int main() {
  using namespace safeguards;
  BudgetCoordinator coord;
  AgentId agent = coord.create_agent({.name = "a", .initial_budget = 100_d});
  std::int64_t completion_tokens = 1200;
  auto ok = coord.try_consume(agent, Decimal(completion_tokens)); // said on purpose: fine
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto charged = coord.try_consume(agent, completion_tokens);
  (void)charged;
#endif
  return ok.ok() ? 0 : 1;
}
