// A Reservation that outlives its coordinator would settle into freed memory. Debug builds
// assert in the coordinator's destructor; this program passes only if that assert fires.
#undef NDEBUG
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <safeguards/coordinator.hpp>
#include <unistd.h>

namespace {
extern "C" void on_abort(int) {
  const char message[] = "reservation_outlives_coordinator: assert fired as expected\n";
  (void)!::write(STDOUT_FILENO, message, sizeof message - 1);
  std::_Exit(0);
}
} // namespace

int main() {
  using namespace safeguards;
  std::signal(SIGABRT, on_abort);
  auto coord = std::make_unique<BudgetCoordinator>();
  AgentId agent = coord->create_agent({.name = "a", .initial_budget = 10_d});
  // Deliberately leaked so that it outlives the coordinator without touching freed memory.
  auto* leaked = new BudgetCoordinator::Reservation(coord->reserve(agent, 1_d));
  (void)leaked;
  coord.reset();
  std::puts("reservation_outlives_coordinator: the assert did not fire");
  return 1;
}
