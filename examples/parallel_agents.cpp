// Eight threads, four agents, one pool and one run budget: the agents make guarded model calls
// at the same time until their money or the run's tokens run out. Afterwards the books show that
// nothing was overspent, not by one token or one micro-dollar, whatever the interleaving was.
//
// Which calls win the race differs from run to run; the checks at the end hold for every one.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <random>
#include <safeguards/llm_guard.hpp>
#include <safeguards/safeguards.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

// What CTest requires of the output (see check_output.cmake):
// expect: ^== 8 threads, 4 agents, 480 attempts$
// expect: ^  calls made [0-9]+, refused [0-9]+ \(.*\)$
// expect: ^ok: no limit of the run budget is below zero and nothing is left held$
// expect: ^ok: the pools and agents balance \(check_invariants\)$
// expect: ^ok: the money charged is the sum of the calls' costs$
// expect: ^ok: no call was charged less than it cost \(no overspend\)$
// expect: ^ok: the run budget counted every token and call that was made$

namespace {

constexpr int thread_count = 8;
constexpr int agent_count = 4; // two threads per agent: an agent with parallel branches
constexpr int attempts_per_thread = 60;
const std::string model = "gpt-4o-mini";

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "parallel_agents: check failed: {}\n", what);
    std::exit(1);
  }
  fmt::print("ok: {}\n", what);
}

// Stands in for the model: answers of random length, but, like a real API given `max_tokens`,
// never longer than that. The guard's promise that concurrent calls cannot exceed a limit
// depends on it.
LlmUsage fake_model(std::mt19937& rng, std::int64_t prompt_tokens, std::int64_t max_tokens) {
  std::uniform_int_distribution<std::int64_t> length(1, 1000);
  return {.model = model,
          .prompt_tokens = prompt_tokens,
          .completion_tokens = std::min(length(rng), max_tokens)};
}

// What one thread saw. Each thread writes only its own, so no lock is needed.
struct ThreadBooks {
  std::vector<LlmCallRecord> records;
  std::array<int, 6> refused{}; // by LlmLimit
};

void work(int index, const LlmCallContext& ctx, ThreadBooks& books) {
  std::mt19937 rng(static_cast<std::mt19937::result_type>(index)); // reproducible per thread
  std::uniform_int_distribution<std::int64_t> prompt_size(200, 4000);
  for (int i = 0; i < attempts_per_thread; ++i) {
    const std::int64_t prompt = prompt_size(rng);
    try {
      books.records.push_back(guarded_call(
          ctx,
          {.prompt_tokens = prompt, .max_completion_tokens = 1000, .min_completion_tokens = 50},
          [&](LlmCallGuard& g) { return fake_model(rng, prompt, g.max_output_tokens()); }));
    } catch (const LlmCallRefused& e) {
      // Refused before the call was made: nothing was charged. Keep trying; another thread's
      // call may finish and give back what it had set aside.
      ++books.refused[static_cast<std::size_t>(e.refusal().what)];
    }
  }
}

} // namespace

int main() {
  // USD per million tokens.
  const PriceTable prices{{model, {.prompt = Decimal("0.15"), .completion = Decimal("0.6")}}};

  BudgetCoordinator coord;
  PoolId pool =
      coord.create_pool({.name = "workers", .initial_budget = Decimal("0.25"), .priority = 5});
  const std::array<const char*, agent_count> names{"analyst", "coder", "reviewer", "tester"};
  const std::array<const char*, agent_count> budgets{"0.02", "0.03", "0.05", "0.05"};
  std::array<AgentId, agent_count> agents{};
  for (std::size_t a = 0; a < agents.size(); ++a)
    agents[a] = coord.create_agent(
        {.name = names[a], .initial_budget = Decimal(budgets[a]), .priority = 5, .pool = pool});

  // One run budget for everyone, shared across threads: 300 calls and 500,000 tokens in all.
  SharedBudget run{Budget{std::chrono::minutes(5),
                          {Consumption::call(300, model),
                           Consumption::token(500'000, llm_kinds::total_tokens(model))}}};

  fmt::print("== {} threads, {} agents, {} attempts\n", thread_count, agent_count,
             thread_count * attempts_per_thread);
  std::array<ThreadBooks, thread_count> books;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < thread_count; ++t) {
      const auto i = static_cast<std::size_t>(t);
      const LlmCallContext ctx{.run = &run,
                               .coordinator = &coord,
                               .agent = agents[i % agents.size()],
                               .prices = &prices,
                               .model = model};
      threads.emplace_back([t, ctx, &books, i] { work(t, ctx, books[i]); });
    }
  } // the jthreads join here

  // ---- the books ------------------------------------------------------------------------------
  fmt::print("{:<10} {:>6} {:>8} {:>10} {:>10}\n", "agent", "calls", "refused", "used",
             "remaining");
  std::size_t made = 0;
  int refused = 0;
  std::array<int, 6> refused_by{};
  Decimal cost_of_calls;
  std::int64_t tokens_of_calls = 0;
  bool overspent = false;
  for (std::size_t a = 0; a < agents.size(); ++a) {
    std::size_t calls = 0;
    int agent_refused = 0;
    for (std::size_t t = a; t < books.size(); t += agents.size()) {
      calls += books[t].records.size();
      for (std::size_t why = 0; why < refused_by.size(); ++why) {
        agent_refused += books[t].refused[why];
        refused_by[why] += books[t].refused[why];
      }
      for (const LlmCallRecord& rec : books[t].records) {
        cost_of_calls += rec.cost;
        tokens_of_calls += rec.usage.total_tokens();
        overspent = overspent || rec.money.overspent != Decimal(0) || rec.money.charged != rec.cost;
      }
    }
    made += calls;
    refused += agent_refused;
    const auto m = coord.agent_metrics(agents[a]);
    fmt::print("{:<10} {:>6} {:>8} {:>10} {:>10}\n", m.name, calls, agent_refused, m.used_budget,
               m.remaining_budget);
  }
  std::string reasons;
  for (std::size_t why = 0; why < refused_by.size(); ++why)
    if (refused_by[why] != 0)
      reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : ", ", static_cast<LlmLimit>(why),
                             refused_by[why]);
  fmt::print("  calls made {}, refused {} ({})\n", made, refused, reasons.empty() ? "-" : reasons);
  const Budget left = run.snapshot();
  for (const Consumption& limit : left.remaining_limits())
    fmt::print("  run budget: {} left\n", limit);

  // ---- nothing was overspent --------------------------------------------------------------------
  bool limits_ok = true;
  for (const Consumption& limit : left.remaining_limits())
    limits_ok = limits_ok && limit.value() >= Decimal(0);
  for (const Decimal& held : left.held())
    limits_ok = limits_ok && held == Decimal(0);
  check(limits_ok, "no limit of the run budget is below zero and nothing is left held");
  check(coord.check_invariants().empty(), "the pools and agents balance (check_invariants)");
  check(coord.pool_metrics(pool).used_budget == cost_of_calls,
        "the money charged is the sum of the calls' costs");
  check(!overspent, "no call was charged less than it cost (no overspend)");
  check(*left.available("token", llm_kinds::total_tokens(model)) ==
                Decimal(500'000) - Decimal(tokens_of_calls) &&
            *left.available("call", model) == Decimal(300) - Decimal(made),
        "the run budget counted every token and call that was made");
  return 0;
}
