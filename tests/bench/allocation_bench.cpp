// Benchmarks of BudgetCoordinator::allocate: one pool of many agents (1,000,000 by default;
// SAFEGUARDS_BENCH_AGENTS overrides it, and CTest's smoke run uses a small pool), each built-in
// strategy. One iteration is a whole allocate call: snapshot, strategy, checks, apply, audit.
//
//   build/default/tests/bench/allocation_bench --benchmark_repetitions=3
//   (add --benchmark_report_aggregates_only=true for medians only)
#include <benchmark/benchmark.h>
#include <cstdlib>
#include <safeguards/safeguards.hpp>
#include <string>

using namespace safeguards;

namespace {

std::size_t agent_count() {
  const char* text = std::getenv("SAFEGUARDS_BENCH_AGENTS");
  return text ? std::stoul(text) : 1'000'000;
}

struct Setup {
  BudgetCoordinator coord{CoordinatorOptions{.history_capacity = 4}};
  PoolId pool;
  Setup() {
    const std::size_t n = agent_count();
    pool = coord.create_pool(
        {.name = "bench", .initial_budget = Decimal(1'000'000'000), .priority = 5});
    for (std::size_t i = 0; i < n; ++i) {
      AgentId a = coord.create_agent({.name = "agent-" + std::to_string(i),
                                      .initial_budget = Decimal(100),
                                      .priority = static_cast<int>(1 + i % 10),
                                      .pool = pool});
      if (i % 3 == 0)
        coord.consume(a, Decimal(static_cast<std::int64_t>(1 + i % 7)));
    }
  }
};

Setup& setup() {
  static Setup s; // built once, outside the timed loops
  return s;
}

template <class Strategy>
void allocate(benchmark::State& state) {
  auto& s = setup();
  for (auto _ : state) {
    auto result = s.coord.allocate(s.pool, Strategy{});
    benchmark::DoNotOptimize(result);
  }
  state.counters["agents"] = static_cast<double>(agent_count());
}

BENCHMARK(allocate<FixedAllocation>)->Name("allocate/fixed")->Unit(benchmark::kMillisecond);
BENCHMARK(allocate<DynamicAllocation>)->Name("allocate/dynamic")->Unit(benchmark::kMillisecond);
BENCHMARK(allocate<PriorityAllocation>)->Name("allocate/priority")->Unit(benchmark::kMillisecond);
BENCHMARK(allocate<RebalanceAllocation>)->Name("allocate/rebalance")->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
