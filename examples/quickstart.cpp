// Quick start: two pools of money, three agents drawing from them, a spending limit, and model
// calls guarded so that no agent can spend what it does not have. The model is a fake, so this
// runs offline and prints the same numbers every time.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <safeguards/llm_guard.hpp>
#include <safeguards/safeguards.hpp>
#include <string>

using namespace safeguards;

// What CTest requires of the output (see check_output.cmake):
// expect: ^  explorer +refused: safeguards: LLM call refused: a monitor of agent "explorer" vetoed
// expect: ^  violation: BUDGET_LIMIT_EXCEEDED explorer: .* limit of 0\.03 \(.*spent=0\.037\)$
// expect: ^planner +production +1\.0 +0\.0229 +0\.9771$
// expect: ^research +3 +1\.0 +0\.022 +0\.978 +0\.75$

namespace {

// Stands in for a chat-completion API. Like a real one it never writes more than `max_tokens`,
// which is why the guard's max_output_tokens() is passed as that.
LlmUsage fake_model(std::int64_t prompt_tokens, std::int64_t max_tokens) {
  const std::int64_t answer = 200 + prompt_tokens / 5; // longer questions, longer answers
  return {.model = "gpt-4o",
          .prompt_tokens = prompt_tokens,
          .completion_tokens = std::min(answer, max_tokens)};
}

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "quickstart: check failed: {}\n", what);
    std::exit(1);
  }
}

} // namespace

int main() {
  BudgetCoordinator coord;
  // Violations go to whatever sinks you register: a log, a pager, a dashboard.
  auto sink = coord.add_violation_sink([](const Violation& v) {
    std::string details;
    for (const auto& [key, value] : v.details)
      details += fmt::format("{}{}={}", details.empty() ? "" : ", ", key, value);
    fmt::print("  violation: {} {}: {} ({})\n", v.type, v.agent_name, v.message, details);
  });

  // A pool is money set aside for a purpose; agents draw their budgets from it, so giving an
  // agent 1.0 leaves the pool 1.0 less to give to others.
  PoolId production =
      coord.create_pool({.name = "production", .initial_budget = Decimal("5.0"), .priority = 8});
  PoolId research =
      coord.create_pool({.name = "research", .initial_budget = Decimal("1.0"), .priority = 3});
  AgentId planner = coord.create_agent(
      {.name = "planner", .initial_budget = Decimal("1.0"), .priority = 8, .pool = production});
  AgentId writer = coord.create_agent(
      {.name = "writer", .initial_budget = Decimal("0.5"), .priority = 6, .pool = production});
  AgentId explorer = coord.create_agent(
      {.name = "explorer", .initial_budget = Decimal("0.25"), .priority = 3, .pool = research});

  // However much it has, the explorer may spend 0.03 in all: an experiment must stay cheap.
  auto limit = coord.add_monitor(explorer, SpendingLimit{Decimal("0.03")});

  // USD per million tokens. A call is charged exactly, rounded up once to the micro-dollar.
  const PriceTable prices{
      {"gpt-4o",
       {.prompt = Decimal("2.5"), .completion = Decimal("10"), .cached_prompt = Decimal("1.25")}}};

  // One guarded call: the agent's money for the prompt and the longest answer allowed is set
  // aside first (or the call is refused, and not made); what the call really cost is charged
  // after, and the rest given back.
  auto ask = [&](AgentId agent, std::int64_t prompt_tokens) {
    const LlmCallContext ctx{
        .coordinator = &coord, .agent = agent, .prices = &prices, .model = "gpt-4o"};
    const std::string name = coord.agent_name(agent);
    try {
      LlmCallRecord r = guarded_call(
          ctx, {.prompt_tokens = prompt_tokens, .max_completion_tokens = 1000},
          [&](LlmCallGuard& g) { return fake_model(prompt_tokens, g.max_output_tokens()); });
      fmt::print("  {:<8} {}, cost {}\n", name, r.usage, r.cost);
      check(r.cost == cost(*prices.find("gpt-4o"), r.usage), "a call costs its usage");
      return true;
    } catch (const LlmCallRefused& e) {
      fmt::print("  {:<8} refused: {}\n", name, e.what());
      return false;
    }
  };

  fmt::print("== calls\n");
  check(ask(planner, 3000) && ask(planner, 1200), "the planner can afford its calls");
  check(ask(writer, 2500), "the writer can afford its call");
  check(ask(explorer, 2000) && ask(explorer, 2000), "the explorer's first calls fit its limit");
  // The third would set aside 0.015 on top of 0.022 spent: past the 0.03 limit, so the monitor
  // vetoes it before any money moves and before the model is called.
  check(!ask(explorer, 2000), "the spending limit refuses the third call");

  fmt::print("== agents\n");
  fmt::print("{:<10} {:<12} {:>8} {:>10} {:>10}\n", "agent", "pool", "budget", "used", "remaining");
  for (const auto& m : coord.all_agent_metrics()) {
    fmt::print("{:<10} {:<12} {:>8} {:>10} {:>10}\n", m.name, coord.pool_metrics(m.pool).name,
               m.initial_budget, m.used_budget, m.remaining_budget);
    check(m.initial_budget == m.used_budget + m.remaining_budget,
          "every micro-dollar is accounted for");
  }

  fmt::print("== pools\n");
  fmt::print("{:<12} {:>8} {:>8} {:>10} {:>10} {:>12}\n", "pool", "priority", "budget", "used",
             "remaining", "unallocated");
  for (const auto& m : coord.all_pool_metrics())
    fmt::print("{:<12} {:>8} {:>8} {:>10} {:>10} {:>12}\n", m.name, m.priority, m.initial_budget,
               m.used_budget, m.remaining_budget, m.unallocated_budget);

  check(coord.agent_metrics(explorer).used_budget == Decimal("0.022"), "the veto charged nothing");
  check(coord.check_invariants().empty(), "money is conserved");
  return 0;
}
