// expect: AllocationStrategy
// The coordinator's allocation policy must model AllocationStrategy: `int` names no strategy.
#include <safeguards/coordinator.hpp>

int main() {
  using namespace safeguards;
  BasicBudgetCoordinator<Decimal, PriorityAllocation> fine;
#ifdef SAFEGUARDS_COMPILE_FAIL
  BasicBudgetCoordinator<Decimal, int> bad;
  (void)bad;
#endif
  return fine.agents().empty() ? 0 : 1;
}
