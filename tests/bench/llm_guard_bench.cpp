// The guard's overhead around a no-op model call, beside the hot path it wraps, in one binary so
// that ratios come from one run on one machine state. See docs/performance.md.
//
//   floor/atomic_fetch_add          bare std::atomic<int64_t>::fetch_add
//   coordinator/try_consume         the coordinator's lock-free debit
//   coordinator/reserve_commit      try_reserve + commit, what the guard does with the money
//   guard/coordinator               guarded_call charging an agent, no run budget
//   guard/budget_and_coordinator    + a plain Budget with token, call and USD limits
//   guard/shared_and_coordinator    + a SharedBudget instead (what threads share)
//
// A guarded call is: price lookup, allowance from the limits and the balance, holds on the run
// budget, a reservation, the no-op call, six council consumptions recorded, the reservation
// settled. Run budgets keep every event, so they are replaced every 4096 calls (untimed).
#include <atomic>
#include <benchmark/benchmark.h>
#include <cstdint>
#include <optional>
#include <safeguards/llm_guard.hpp>

using namespace safeguards;

namespace {

const PriceTable prices{{"gpt-4o", {.prompt = Decimal("2.5"), .completion = Decimal("10")}}};
const Decimal big(10'000'000'000); // within InMemoryLedger::max_balance()
const LlmRequest request{.prompt_tokens = 500, .max_completion_tokens = 200};
const LlmUsage usage{.model = "gpt-4o", .prompt_tokens = 480, .completion_tokens = 150};

struct Money {
  Money() {
    auto pool = coord.create_pool({.name = "p", .initial_budget = big, .priority = 5});
    agent =
        coord.create_agent({.name = "agent-1", .initial_budget = big, .priority = 5, .pool = pool});
  }
  BudgetCoordinator coord;
  AgentId agent;
};

std::vector<Consumption> limits() {
  return {Consumption::token(big, "gpt-4o:total_tokens"), Consumption::call(big, "gpt-4o"),
          Consumption::cost(big, "gpt-4o")};
}

std::atomic<std::int64_t> counter{0};

void floor_atomic_fetch_add(benchmark::State& state) {
  for (auto _ : state)
    benchmark::DoNotOptimize(counter.fetch_add(1));
}
BENCHMARK(floor_atomic_fetch_add)->Name("floor/atomic_fetch_add");

void try_consume(benchmark::State& state) {
  Money m;
  const Decimal amount("0.000001");
  for (auto _ : state)
    if (!m.coord.try_consume(m.agent, amount))
      state.SkipWithError("refused");
}
BENCHMARK(try_consume)->Name("coordinator/try_consume");

void reserve_commit(benchmark::State& state) {
  Money m;
  const Decimal estimate("0.0045"), actual("0.0027");
  for (auto _ : state) {
    auto r = m.coord.try_reserve(m.agent, estimate);
    benchmark::DoNotOptimize(r.commit(actual));
  }
}
BENCHMARK(reserve_commit)->Name("coordinator/reserve_commit");

void guard_coordinator(benchmark::State& state) {
  Money m;
  const LlmCallContext ctx{
      .coordinator = &m.coord, .agent = m.agent, .prices = &prices, .model = "gpt-4o"};
  for (auto _ : state)
    benchmark::DoNotOptimize(guarded_call(ctx, request, [] { return usage; }));
}
BENCHMARK(guard_coordinator)->Name("guard/coordinator");

template <class Run>
void guard_with_run(benchmark::State& state) {
  Money m;
  auto fresh = [] { return Run(BasicBudget<Decimal>(std::chrono::hours(1), limits())); };
  std::optional<Run> run(fresh());
  BasicLlmCallContext<Run> ctx{.run = &*run,
                               .coordinator = &m.coord,
                               .agent = m.agent,
                               .prices = &prices,
                               .model = "gpt-4o"};
  std::int64_t n = 0;
  for (auto _ : state) {
    if (++n % 4096 == 0) {
      state.PauseTiming();
      run.emplace(fresh());
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(guarded_call(ctx, request, [] { return usage; }));
  }
}
BENCHMARK(guard_with_run<BasicBudget<Decimal>>)->Name("guard/budget_and_coordinator");
BENCHMARK(guard_with_run<SharedBudget>)->Name("guard/shared_and_coordinator");

} // namespace

BENCHMARK_MAIN();
