// What one agent costs: creating 1,000,000 agents (SAFEGUARDS_BENCH_AGENTS overrides it; CTest's
// smoke run uses 1,000) named like `agent-123456` in one pool, no history, no monitor. One
// iteration builds a coordinator, creates the agents (timed, names built in the loop as a
// runtime would) and destroys the coordinator (not timed). Counters:
//   create_s             seconds to create all agents (also the row's time)
//   heap_B_per_agent     mallinfo2() heap growth (in use, arena + mmap) / agents: sizeof of the
//                        agent records is included, they live on the heap
//   rss_B_per_agent      resident set growth (/proc/self/statm) / agents: what the OS sees,
//                        including allocator slack; malloc_trim runs before each measurement
//   page_faults          minor page faults while creating (on this VM each costs microseconds);
//                        a transparent huge page (the coordinator advises its large arrays to
//                        them, detail/huge_pages.hpp) is one fault for 2 MB. What remains is
//                        mostly the ledger's cells (InMemoryLedger::open, ≈ 20,000 faults)
//   sizeof_agent_state   sizeof(detail::AgentState) of BudgetCoordinator
//
//   build/default/tests/bench/agent_memory_bench --benchmark_repetitions=3
#include <benchmark/benchmark.h>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <malloc.h>
#include <memory>
#include <safeguards/safeguards.hpp>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

using namespace safeguards;

namespace {

std::size_t agent_count() {
  const char* text = std::getenv("SAFEGUARDS_BENCH_AGENTS");
  return text ? std::stoul(text) : 1'000'000;
}

// Bytes the allocator has handed out and not taken back.
double heap_in_use() {
  struct mallinfo2 info = mallinfo2();
  return static_cast<double>(info.uordblks + info.hblkhd);
}

double minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_minflt);
}

double resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

// The record BudgetCoordinator keeps per agent (the same template arguments it uses).
using Coordinator = BudgetCoordinator;
using State = detail::AgentState<
    Decimal, InMemoryLedger<Decimal>, Coordinator::time_point, Coordinator::UsageEvent,
    detail::MonitorEntry<Coordinator::UsageEvent, const Coordinator::ViolationReporter>>;

void create_agents(benchmark::State& state) {
  const std::size_t n = agent_count();
  double heap = 0;
  double rss = 0;
  double seconds = 0;
  double faults = 0;
  for (auto _ : state) {
    malloc_trim(0);
    const double heap_before = heap_in_use();
    const double rss_before = resident_bytes();
    const double faults_before = minor_faults();
    auto coord = std::make_unique<Coordinator>();
    const PoolId pool =
        coord->create_pool({.name = "bench", .initial_budget = Decimal(1'000'000'000)});
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < n; ++i)
      benchmark::DoNotOptimize(coord->create_agent(
          {.name = "agent-" + std::to_string(i), .initial_budget = Decimal(100), .pool = pool}));
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(took.count());
    seconds = took.count();
    faults = minor_faults() - faults_before;
    malloc_trim(0);
    heap = heap_in_use() - heap_before;
    rss = resident_bytes() - rss_before;
    coord.reset();
  }
  const auto per_agent = [&](double bytes) { return bytes / static_cast<double>(n); };
  state.counters["agents"] = static_cast<double>(n);
  state.counters["create_s"] = seconds;
  state.counters["heap_B_per_agent"] = per_agent(heap);
  state.counters["rss_B_per_agent"] = per_agent(rss);
  state.counters["page_faults"] = faults;
  state.counters["sizeof_agent_state"] = sizeof(State);
}

BENCHMARK(create_agents)
    ->Name("agents/create_1M_one_pool")
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
