// The Safeguards "Budget Management Guide" walk-through, ported to safeguards in C++:
// pools with priorities, agents drawing from them, a spending limit and low-budget alert,
// a guarded LLM call (reserve the estimate, commit the real usage) and the audit trail.
#include <cstdlib>
#include <fmt/format.h>
#include <safeguards/safeguards.hpp>

using namespace safeguards;

namespace {

// Stands in for a model API: what one call really cost.
struct LlmUsage {
  std::int64_t prompt_tokens;
  std::int64_t completion_tokens;
};

LlmUsage fake_llm_call(std::int64_t prompt_tokens) {
  return {prompt_tokens, prompt_tokens / 2};
}

// USD per 1000 tokens, exact.
const Decimal price_per_1k_prompt("0.0025");
const Decimal price_per_1k_completion("0.01");

Decimal cost_of(const LlmUsage& usage) {
  return Decimal::mul_div(price_per_1k_prompt, usage.prompt_tokens, 1000) +
         Decimal::mul_div(price_per_1k_completion, usage.completion_tokens, 1000);
}

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "walkthrough: check failed: {}\n", what);
    std::exit(1);
  }
}

} // namespace

int main() {
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 256});

  // Every budget change is audited; violations go to whatever sinks you register.
  MemoryAuditLog audit;
  auto audit_sink = coord.add_audit_sink(audit);
  auto violation_sink =
      coord.add_violation_sink([](const Violation& v) { fmt::print("  violation: {}\n", v); });

  // Pools with different priorities.
  fmt::print("== pools\n");
  PoolId critical = coord.create_pool(
      {.name = "critical_services", .initial_budget = Decimal("1000.0"), .priority = 9});
  PoolId standard = coord.create_pool(
      {.name = "standard_services", .initial_budget = Decimal("2000.0"), .priority = 5});
  coord.create_pool(
      {.name = "background_tasks", .initial_budget = Decimal("500.0"), .priority = 2});
  for (const auto& m : coord.all_pool_metrics())
    fmt::print("  {:<18} priority {:>2}  budget {:>8}\n", m.name, m.priority, m.initial_budget);

  // Agents draw their budgets from their pools.
  fmt::print("== agents\n");
  AgentId critical_agent = coord.create_agent({.name = "critical_agent",
                                               .initial_budget = Decimal("200.0"),
                                               .priority = 8,
                                               .pool = critical});
  AgentId standard_agent = coord.create_agent({.name = "standard_agent",
                                               .initial_budget = Decimal("300.0"),
                                               .priority = 5,
                                               .pool = standard});
  fmt::print("  Critical agent budget: {}\n", coord.get_budget(critical_agent));
  fmt::print("  Standard agent budget: {}\n", coord.get_budget(standard_agent));
  check(coord.get_budget(critical_agent) == Decimal("200.0"), "critical agent starts at 200.0");
  check(coord.pool_metrics(critical).unallocated_budget == Decimal("800.0"),
        "the pool paid for the agent");

  // Spending limit and alerts.
  fmt::print("== monitors\n");
  auto limit = coord.add_monitor(standard_agent, SpendingLimit{Decimal("100.0")});
  auto low = coord.add_monitor(all_agents, LowBudgetAlert{.percent = 15});
  auto high = coord.add_monitor(all_agents, HighUsageWarning{.percent = 80});

  auto r = coord.try_consume(standard_agent, Decimal("60.0"));
  fmt::print("  standard_agent spends 60.0: {}\n", r);
  r = coord.try_consume(standard_agent, Decimal("50.0"));
  fmt::print("  standard_agent spends 50.0 more: {} (limit is 100.0)\n", r);
  check(r.status() == ConsumeStatus::denied_by_monitor, "the spending limit vetoes");
  check(coord.get_budget(standard_agent) == Decimal("240.0"), "a veto debits nothing");

  // A guarded LLM call: reserve the estimate first, commit the real cost after.
  fmt::print("== guarded LLM call\n");
  {
    Decimal estimate("25.0");
    auto reservation = coord.reserve(critical_agent, estimate);
    fmt::print("  reserved {} (remaining {})\n", estimate, coord.get_budget(critical_agent));
    LlmUsage usage = fake_llm_call(1'200'000);
    Decimal cost = cost_of(usage);
    auto settled = reservation.commit(cost);
    fmt::print("  actual cost {}: charged {}, refunded {}\n", cost, settled.charged,
               settled.refunded);
    check(settled.charged == Decimal("9.0") && settled.refunded == Decimal("16.0"),
          "the reservation settles exactly");
  }

  // The critical agent keeps spending until the low-budget alert and high-usage warning fire.
  while (coord.try_consume(critical_agent, Decimal("20.0")))
    ;
  auto m = coord.agent_metrics(critical_agent);
  fmt::print("  critical_agent: initial {}, used {}, remaining {}\n", m.initial_budget,
             m.used_budget, m.remaining_budget);
  check(m.remaining_budget >= Decimal(0), "never negative");

  // Budget updates are drawn from (or returned to) the pool and audited.
  fmt::print("== budget changes\n");
  coord.update_budget(critical_agent, m.remaining_budget + Decimal("50.0"),
                      "emergency top-up for incident response");
  coord.update_budget(standard_agent, Decimal("150.0"), "quarterly review");
  for (const auto& change : audit.records())
    fmt::print("  {}\n", change);

  // Usage history and pool metrics: pools are charged as their agents spend.
  fmt::print("== usage\n");
  auto history = coord.usage_history(critical_agent);
  fmt::print("  critical_agent made {} charges; first: {}\n", history.size(),
             history.empty() ? std::string("none") : fmt::format("{}", history.front()));
  for (const auto& pm : coord.all_pool_metrics())
    fmt::print("  {:<18} used {:>6}  remaining {:>7}  unallocated {:>7}\n", pm.name, pm.used_budget,
               pm.remaining_budget, pm.unallocated_budget);

  check(coord.check_invariants().empty(), "money is conserved");
  fmt::print("== money is conserved: every pool's budget is accounted for\n");
  return 0;
}
