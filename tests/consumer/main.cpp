// Uses the library as an outside project would: umbrella header, public names only.
#include <fmt/format.h>
#include <safeguards/safeguards.hpp>

int main() {
  using namespace safeguards;
  Budget run{std::chrono::seconds(30), {Consumption::token(1000, "gpt-4o")}};
  run.add_consumption(Consumption::token(200, "gpt-4o"), "consumer");
  bool ok = !run.can_consume(Consumption::token(900, "gpt-4o")) && !run.is_expired() &&
            fmt::format("{}", Decimal("1000.0")) == "1000.0";

  BudgetCoordinator coord;
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100_d, .priority = 5});
  AgentId agent = coord.create_agent({.name = "a", .initial_budget = 10_d, .pool = pool});
  ok = ok && coord.try_consume(agent, 4_d).ok() && !coord.try_consume(agent, 7_d).ok() &&
       coord.get_budget(agent) == 6_d && coord.check_invariants().empty();

  fmt::print("consumer: {}\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
