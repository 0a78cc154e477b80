// council-style run budgets: a deadline plus limits, shared by two parallel branches.
#include <fmt/format.h>
#include <safeguards/budget.hpp>
#include <thread>

using namespace safeguards;

int main() {
  Budget run{std::chrono::seconds(30),
             {Consumption::token(1000, "gpt-4o"), Consumption::call(10, "gpt-4o")}};
  run.add_consumption(Consumption::token(200, "gpt-4o"), "planner");
  run.add_consumption(Consumption::call(1, "gpt-4o"), "planner");
  fmt::print("can consume 900 more tokens? {}\n",
             run.can_consume(Consumption::token(900, "gpt-4o")));
  fmt::print("{}\n", run.remaining());
  for (const auto& event : run.consumptions())
    fmt::print("  {}\n", event);

  // Two branches of the agent share the remaining limits; neither can overspend them.
  SharedBudget shared{run.remaining()};
  auto branch = [](SharedBudget budget, const char* name) {
    int calls = 0;
    while (budget.try_consume(Consumption::call(1, "gpt-4o"), name))
      ++calls;
    return calls;
  };
  int a = 0;
  int b = 0;
  std::thread ta([&] { a = branch(shared.child(std::chrono::seconds(10)), "branch-a"); });
  std::thread tb([&] { b = branch(shared.child(std::chrono::seconds(10)), "branch-b"); });
  ta.join();
  tb.join();
  fmt::print("branches made {} + {} = {} calls out of 9 left\n", a, b, a + b);
  return a + b == 9 && !shared.is_expired() ? 0 : 1;
}
