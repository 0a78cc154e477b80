// The Safeguards "Budget Management Guide", start to finish, in C++: each section below is one
// of the guide's, in its order, with the guide's names and numbers where it has them. Where the
// guide's Python has a flaw (money that can go negative, a priority split that leaves money
// unassigned, priorities added to dollars) the library does the intended thing instead; the
// comments say where.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <safeguards/degradation.hpp>
#include <safeguards/llm_guard.hpp>
#include <safeguards/review.hpp>
#include <safeguards/safeguards.hpp>
#include <string>

using namespace safeguards;

// What CTest requires of the output (see check_output.cmake):
// expect: ^== pools$
// expect: ^  Critical agent budget: 200\.0$
// expect: ^  dynamic: 310\.0 to hand out, 138\.0 left unallocated$
// expect: ^    indexer +priority  8: +20\.0 -> +72\.0$
// expect: ^  standard_agent spends 50\.0 more: denied by monitor \(limit is 100\.0\)$
// expect: ^  violation: \[MEDIUM\] BUDGET_LIMIT_EXCEEDED standard_agent: .* limit of 100\.0$
// expect: ^  violation: \[MEDIUM\] LOW_BUDGET critical_agent: Agent budget below 15% threshold$
// expect: ^    WARNING: Budget usage high \(>80%\)$
// expect: ^  crawler asks 30\.0 \(more pages to crawl\): denied
// expect: ^  standard_agent asks 80\.0 .*; granted 40\.0 \(40\.0 from standard_services\)$
// expect: ^    standard_agent +priority  5: +280\.0 -> +1430\.75$
// expect: ^  gpt-4o: 200000 prompt \+ 40000 completion tokens: cost 0\.9, .* refunded 0\.6$
// expect: ^  refused: .* "critical_agent" has 69\.1 USD left, the call needs 75\.00001$
// expect: critical_agent .* Reason: emergency grant from critical_services: incident response$
// expect: ^  agent "support_agent" \(agent-3\) underused: 509\.25 of 509\.25 remaining, above 90%
// expect: ^  support_agent is at full \(high_quality, all_capabilities\)$
// expect: ^  support_agent: full -> standard$
// expect: ^  support_agent: standard -> minimal$
// expect: ^== money is conserved

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "budget_guide: check failed: {}\n", what);
    std::exit(1);
  }
}

// Stands in for a model API: it answers a long document with a summary a fifth its length, and
// never writes more than `max_tokens`.
LlmUsage fake_summarize(std::int64_t prompt_tokens, std::int64_t max_tokens) {
  return {.model = "gpt-4o",
          .prompt_tokens = prompt_tokens,
          .completion_tokens = std::min(prompt_tokens / 5, max_tokens)};
}

void print(const BudgetCoordinator& coord, const AllocationResult& result) {
  fmt::print("  {}: {} to hand out, {} left unallocated\n", result.strategy, result.distributable,
             result.unallocated_after);
  Decimal handed_out;
  for (const auto& c : result.changes) {
    fmt::print("    {:<18} priority {:>2}: {:>11} -> {:>11}\n", coord.agent_name(c.agent),
               coord.agent_priority(c.agent), c.old_remaining, c.new_remaining);
    handed_out += c.new_remaining;
  }
  check(handed_out + result.unallocated_after == result.distributable,
        "an allocation hands out exactly what it had, to the micro-dollar");
}

} // namespace

int main() {
  // The guide's BudgetCoordinator(notification_manager). History feeds the usage-based
  // strategies (dynamic, rebalance) and the usage reports.
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 256});

  // "Implement comprehensive logging of budget changes": every change is kept here with its
  // reason, and printed at the end.
  MemoryAuditLog audit;
  auto audit_sink = coord.add_audit_sink(audit);
  // The guide's violation_reporter: violations go to any number of sinks. The timestamp is left
  // out so the output is the same every run.
  auto violation_sink = coord.add_violation_sink([](const Violation& v) {
    fmt::print("  violation: [{}] {} {}: {}\n", v.severity, v.type, v.agent_name, v.message);
  });

  // ---- Budget pools -------------------------------------------------------------------------
  fmt::print("== pools\n");
  PoolId critical_pool = coord.create_pool(
      {.name = "critical_services", .initial_budget = Decimal("1000.0"), .priority = 9});
  PoolId standard_pool = coord.create_pool(
      {.name = "standard_services", .initial_budget = Decimal("2000.0"), .priority = 5});
  PoolId background_pool = coord.create_pool(
      {.name = "background_tasks", .initial_budget = Decimal("500.0"), .priority = 2});
  for (const auto& m : coord.all_pool_metrics())
    fmt::print("  {:<18} priority {:>2}  budget {:>8}\n", m.name, m.priority, m.initial_budget);

  // ---- Agent budgets ------------------------------------------------------------------------
  // The guide's agents take no pool; here each draws from one, so the pool pays for it.
  fmt::print("== agents\n");
  AgentId critical_agent = coord.create_agent({.name = "critical_agent",
                                               .initial_budget = Decimal("200.0"),
                                               .priority = 8,
                                               .pool = critical_pool});
  AgentId standard_agent = coord.create_agent({.name = "standard_agent",
                                               .initial_budget = Decimal("300.0"),
                                               .priority = 5,
                                               .pool = standard_pool});
  // Not in the guide: a second agent in the standard pool, for the rebalancing section.
  AgentId support_agent = coord.create_agent({.name = "support_agent",
                                              .initial_budget = Decimal("200.0"),
                                              .priority = 3,
                                              .pool = standard_pool});
  fmt::print("  Critical agent budget: {}\n", coord.get_budget(critical_agent));
  fmt::print("  Standard agent budget: {}\n", coord.get_budget(standard_agent));
  check(coord.get_budget(critical_agent) == Decimal("200.0"), "critical agent starts at 200.0");
  check(coord.pool_metrics(critical_pool).unallocated_budget == Decimal("800.0"),
        "the pool paid for the agent");

  // ---- Budget allocation strategies ---------------------------------------------------------
  // The guide's recipes each set budgets agent by agent; here a strategy redistributes a whole
  // pool at once: its unallocated money plus its agents' remaining balances (what is spent stays
  // spent). All four run on the background pool, one after the other.
  fmt::print("== allocation strategies\n");
  AgentId fixed_agent = coord.create_agent({.name = "fixed_budget_agent",
                                            .initial_budget = Decimal("100.0"),
                                            .priority = 5,
                                            .pool = background_pool});
  AgentId indexer = coord.create_agent({.name = "indexer",
                                        .initial_budget = Decimal("200.0"),
                                        .priority = 8,
                                        .pool = background_pool});
  AgentId crawler = coord.create_agent({.name = "crawler",
                                        .initial_budget = Decimal("100.0"),
                                        .priority = 2,
                                        .pool = background_pool});

  // Fixed: budgets are what they were created with; the strategy moves nothing. It is the
  // coordinator's default policy.
  AllocationResult fixed = coord.allocate(background_pool, FixedAllocation{});
  print(coord, fixed);
  check(coord.get_budget(fixed_agent) == Decimal("100.0"), "fixed allocation moves nothing");

  // Some work, so that the usage-based strategies have a history to read.
  for (const char* amount : {"40.0", "60.0", "80.0"})
    coord.consume(indexer, Decimal(amount));
  coord.consume(crawler, Decimal("10.0"));

  // Dynamic: average recent usage x 1.2, never below a base of 50 (the guide's
  // allocate_dynamic_budget). The indexer averaged 60, so it gets 72; the others get the base.
  print(coord, coord.allocate(background_pool, DynamicAllocation{}));
  check(coord.get_budget(indexer) == Decimal("72.0"), "dynamic: mean usage x 1.2");

  // Priority: critical agents (priority >= 8) get 50.0 first, the rest is split by priority.
  // The guide's code leaves part of the money unassigned (critical agents count in the
  // denominator but get no share); here everything is handed out.
  print(coord, coord.allocate(background_pool, PriorityAllocation{}));

  // Rebalance: weight 0.7 x priority + 0.3 x usage. The guide adds priorities (1..10) to dollars;
  // here each is a share of the pool, so 70 % of the money follows priority whatever the
  // currency. The fixed_budget_agent has no usage, so it gets only its priority's share.
  print(coord, coord.allocate(background_pool, RebalanceAllocation{}));
  check(coord.check_invariants().empty(), "allocations conserve money");

  // ---- Setting spending limits --------------------------------------------------------------
  // The guide's set_spending_limit: a monitor that vetoes spending past the limit and reports a
  // BUDGET_LIMIT_EXCEEDED violation. A veto happens before any money moves.
  fmt::print("== spending limit\n");
  auto limit = coord.add_monitor(standard_agent, SpendingLimit{Decimal("100.0")});
  auto r = coord.try_consume(standard_agent, Decimal("60.0"));
  fmt::print("  standard_agent spends 60.0: {}\n", r);
  r = coord.try_consume(standard_agent, Decimal("50.0"));
  fmt::print("  standard_agent spends 50.0 more: {} (limit is 100.0)\n", r);
  check(r.status() == ConsumeStatus::denied_by_monitor, "the spending limit vetoes");
  check(coord.get_budget(standard_agent) == Decimal("240.0"), "a veto debits nothing");

  // ---- Budget alerts and tracking usage -----------------------------------------------------
  // The guide's setup_budget_alerts (15 % left) for every agent, and monitor_budget_usage's
  // warning (more than 80 % used). Both fire when the line is crossed, not on every later call.
  fmt::print("== low-budget alert\n");
  auto low = coord.add_monitor(all_agents, LowBudgetAlert{.percent = 15});
  auto high = coord.add_monitor(all_agents, HighUsageWarning{.percent = 80});
  for (int i = 0; i < 9; ++i)
    coord.consume(critical_agent, Decimal("20.0"));

  // The guide's monitor_budget_usage report.
  auto m = coord.agent_metrics(critical_agent);
  const Decimal used_percent = m.used_budget * Decimal(100) / m.initial_budget;
  fmt::print("  Agent {} budget usage:\n", m.name);
  fmt::print("    Initial: {}\n", m.initial_budget);
  fmt::print("    Used: {} ({}%)\n", m.used_budget, used_percent);
  fmt::print("    Remaining: {}\n", m.remaining_budget);
  if (used_percent > Decimal(80))
    fmt::print("    WARNING: Budget usage high (>80%)\n");
  check(m.remaining_budget == Decimal("20.0"), "nine charges of 20.0");

  // ---- Emergency budget allocation ----------------------------------------------------------
  // The guide's handle_emergency_allocation: priority >= 7 gets the full amount, a reason that
  // mentions "critical" gets half, anything else is denied. The money comes from the agent's own
  // pool first, then from pools of lower priority, never from more important ones.
  fmt::print("== emergency allocation\n");
  auto emergency = [&](AgentId agent, const char* amount, const char* reason) {
    EmergencyGrant g = coord.emergency_allocation(agent, Decimal(amount), reason);
    std::string from;
    for (const auto& s : g.sources)
      from += fmt::format("{}{} from {}", from.empty() ? " (" : ", ", s.amount,
                          coord.pool_metrics(s.pool).name);
    fmt::print("  {} asks {} ({}): {}; granted {}{}\n", coord.agent_name(agent), g.requested,
               reason, g.decision, g.granted, from.empty() ? from : from + ")");
    return g.granted;
  };
  check(emergency(critical_agent, "50.0", "incident response") == Decimal("50.0"),
        "a high-priority agent gets all it asks for");
  check(emergency(standard_agent, "80.0", "Critical: payment outage") == Decimal("40.0"),
        "a critical reason gets half");
  check(emergency(crawler, "30.0", "more pages to crawl") == Decimal(0), "anything else is denied");

  // ---- Budget rebalancing -------------------------------------------------------------------
  // The guide's rebalance_agent_budgets(pool_id): the pool's remaining money is redistributed by
  // priority (70 %) and recent usage (30 %). standard_agent has spent 60.0 and support_agent
  // nothing, so the usage share goes to standard_agent.
  fmt::print("== rebalancing\n");
  print(coord, coord.allocate(standard_pool, RebalanceAllocation{}));
  check(coord.get_budget(support_agent) == Decimal("509.25"), "0.7 x 3/8 of 1940.0");

  // ---- A guarded LLM call -------------------------------------------------------------------
  // Not in the guide, and what an agent runtime does most: the guard sets aside the most the call
  // can cost (the prompt plus the longest answer allowed, at the model's price) before the call,
  // and charges what it really cost after, giving the rest back. A call the agent cannot pay for
  // is refused before it is made.
  fmt::print("== guarded LLM call\n");
  const PriceTable prices{
      {"gpt-4o",
       {.prompt = Decimal("2.5"), .completion = Decimal("10"), .cached_prompt = Decimal("1.25")}}};
  const LlmCallContext ctx{
      .coordinator = &coord, .agent = critical_agent, .prices = &prices, .model = "gpt-4o"};
  const Decimal before = coord.get_budget(critical_agent);
  {
    LlmCallGuard guard(ctx, {.prompt_tokens = 200'000, .max_completion_tokens = 100'000});
    fmt::print("  set aside {} for {} prompt + up to {} completion tokens ({} left)\n",
               guard.reserved_cost(), guard.prompt_estimate(), guard.max_output_tokens(),
               coord.get_budget(critical_agent));
    LlmCallRecord rec = guard.commit(fake_summarize(200'000, guard.max_output_tokens()));
    fmt::print("  {}: cost {}, charged {}, refunded {}\n", rec.usage, rec.cost, rec.money.charged,
               rec.money.refunded);
    check(rec.cost == cost(*prices.find("gpt-4o"), rec.usage), "the cost is the usage's");
    check(rec.money.charged == rec.cost && rec.money.refunded == Decimal("0.6"),
          "the reservation settles exactly");
    check(coord.get_budget(critical_agent) == before - rec.cost, "only the cost is charged");
  }
  try {
    LlmCallGuard guard(ctx, {.prompt_tokens = 30'000'000, .max_completion_tokens = 1000});
    check(false, "a call the agent cannot pay for is refused");
  } catch (const LlmCallRefused& e) {
    fmt::print("  refused: {}\n", e.what());
  }

  // ---- Tracking and logging -----------------------------------------------------------------
  // The guide's log_budget_change, for every change made above: creations, allocations,
  // emergency grants (plain consumes and LLM calls are usage, not budget changes).
  fmt::print("== audit log\n");
  for (const auto& change : audit.records())
    fmt::print("  {}\n", change);
  fmt::print("  critical_agent made {} charges\n", coord.usage_history(critical_agent).size());

  // ---- Regular budget reviews ---------------------------------------------------------------
  // The guide's scheduled_budget_review: agents above 90 % remaining (underused), below 10 %
  // (nearly depleted), pools below 20 %. `coord.review()` returns the findings as values;
  // `PeriodicReview(coord, 24h, callback)` runs it on a thread every 24 hours (see
  // docs/lifecycle.md).
  fmt::print("== review\n");
  for (const ReviewFinding& finding : coord.review())
    fmt::print("  {}\n", finding);

  // ---- Graceful degradation -----------------------------------------------------------------
  // The guide's setup_graceful_degradation: full >= 50 %, standard >= 20 %, minimal >= 5 %,
  // emergency >= 0 % of the allocation left, each with its features; the agent's code switches
  // on them. A notification per change of level.
  fmt::print("== degradation\n");
  GracefulDegradation degradation(coord); // the guide's four levels, for every agent
  auto level_changes = degradation.subscribe([](const ServiceLevelChanged& c) {
    fmt::print("  {}: {} -> {}\n", c.agent_name, c.from, c.to);
  });
  for (AgentId agent : {critical_agent, standard_agent, support_agent}) {
    const ServiceLevel level = degradation.service_level(agent);
    fmt::print("  {} is at {} ({})\n", coord.agent_name(agent), level.name,
               fmt::join(level.features, ", "));
  }
  // The support agent works through most of what it has left, one step at a time.
  const Decimal step = coord.get_budget(support_agent) / Decimal(10);
  for (int i = 0; i < 9; ++i)
    coord.consume(support_agent, step);
  check(degradation.service_level(support_agent).name == "minimal", "support degraded");

  check(coord.check_invariants().empty(), "money is conserved");
  fmt::print("== money is conserved: every pool's budget is accounted for\n");
  return 0;
}
