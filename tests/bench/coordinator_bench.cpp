// The hot path side by side with its floor and with the obvious alternative, in one binary so
// that ratios come from one run on one machine state. See docs/performance.md.
//
//   floor/atomic_fetch_add            bare std::atomic<int64_t>::fetch_add (1 and 2 threads)
//   floor/observer_three_locked       an observed consume's locked instructions and an empty
//   floor/observer_two_locked         std::function call, nothing else (the protocol before
//                                     520754b, and today's two)
//   coordinator/try_consume           uncontended, lock-free path
//   coordinator/try_consume_one_agent 2 threads on one agent
//   coordinator/try_consume_two_agents 2 threads, one agent each
//   coordinator/try_consume_observer  one observer monitor registered on the agent
//   coordinator/try_consume_observer_no_timestamp
//                                     the same, registered with
//                                     MonitorOptions{.reads_timestamp = false}: no clock read
//   coordinator/reserve_commit        try_reserve + commit (refunding part of the estimate);
//                                     also 2 threads, one agent each
//   coordinator/try_consume_history   CoordinatorOptions{.history_capacity = 64}
//   mutex_map/*                       std::mutex + std::unordered_map<std::string, Decimal>
//   scaling/*                         1, 2, 4, 8 and 16 threads on one agent (key) and on one
//                                     agent (key) each, for the coordinator and the mutex map:
//                                     the scaling curve of whatever machine runs the binary
//                                     (`--benchmark_filter=scaling`); past `nproc` threads it
//                                     measures oversubscription
//
// Budgets are 10^10 units per agent (within InMemoryLedger::max_balance()) and each operation
// spends at most 0.02, so no run can exhaust them; a refusal stops the benchmark with an error
// rather than timing a failure.
#include <atomic>
#include <benchmark/benchmark.h>
#include <cstdint>
#include <functional>
#include <mutex>
#include <safeguards/coordinator.hpp>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

using namespace safeguards;

namespace {

const Decimal big_budget(10'000'000'000);
constexpr int max_threads = 16;
const Decimal amount("0.01");

// A coordinator with `n` agents of their own implicit pools, built once per process.
struct Setup {
  Setup(CoordinatorOptions options, int n) : coord(std::move(options)) {
    for (int i = 0; i < n; ++i)
      agents.push_back(
          coord.create_agent({.name = "agent-" + std::to_string(i), .initial_budget = big_budget}));
  }
  BudgetCoordinator coord;
  std::vector<AgentId> agents;
};

Setup& plain() {
  static Setup s({}, 2);
  return s;
}

// ---- floor -----------------------------------------------------------------------------------

std::atomic<std::int64_t> counter{0};

void floor_atomic_fetch_add(benchmark::State& state) {
  for (auto _ : state)
    benchmark::DoNotOptimize(counter.fetch_add(1));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(floor_atomic_fetch_add)->Name("floor/atomic_fetch_add");
BENCHMARK(floor_atomic_fetch_add)->Name("floor/atomic_fetch_add")->Threads(2)->UseRealTime();

// The floor of delivering one event in order, on one thread, with nothing else done: the locked
// instructions of the monitored path and an empty observer called through `std::function`.
// `three_locked` is the protocol before 520754b (take the gate and the turn; the debit; give the
// turn up), `two_locked` today's count (the gate with the debit and the turn; give the turn up).
// The observer's ratio to `try_consume` cannot fall below the second row's. See
// docs/performance.md.
struct alignas(64) FloorLine {
  std::atomic<std::uint64_t> word{std::uint64_t{1} << 40};
};
FloorLine floor_balance;
FloorLine floor_turn;
std::uint64_t floor_seen = 0;
const std::function<void(std::uint64_t)> floor_observer = [](std::uint64_t w) { floor_seen += w; };

std::uint64_t floor_debit(std::uint64_t extra_bits) {
  std::uint64_t w = floor_balance.word.load(std::memory_order_relaxed);
  while (!floor_balance.word.compare_exchange_weak(
      w, (w | extra_bits) - 63, std::memory_order_acq_rel, std::memory_order_relaxed)) {
  }
  return (w | extra_bits) - 63;
}

void floor_observer_three_locked(benchmark::State& state) {
  for (auto _ : state) {
    std::uint64_t t = 0;
    floor_turn.word.compare_exchange_strong(t, 3, std::memory_order_acquire); // gate + turn
    const std::uint64_t w = floor_debit(0);
    floor_turn.word.store(2, std::memory_order_release); // the gate given up, the turn kept
    floor_observer(w);
    t = 2;
    floor_turn.word.compare_exchange_strong(t, 0, std::memory_order_release); // nothing queued
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(floor_observer_three_locked)->Name("floor/observer_three_locked");

void floor_observer_two_locked(benchmark::State& state) {
  constexpr std::uint64_t turn_bit = std::uint64_t{1} << 60;
  for (auto _ : state) {
    std::uint64_t w = floor_debit(turn_bit); // the debit takes the turn
    floor_observer(w);
    floor_balance.word.compare_exchange_strong(w, w & ~turn_bit, std::memory_order_release);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(floor_observer_two_locked)->Name("floor/observer_two_locked");

// ---- the coordinator -------------------------------------------------------------------------

void consume_loop(benchmark::State& state, BudgetCoordinator& coord, AgentId agent) {
  for (auto _ : state) {
    auto r = coord.try_consume(agent, amount);
    benchmark::DoNotOptimize(r);
    if (!r.ok()) {
      state.SkipWithError("try_consume refused: the budget ran out");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void try_consume(benchmark::State& state) {
  consume_loop(state, plain().coord, plain().agents[0]);
}
BENCHMARK(try_consume)->Name("coordinator/try_consume");

void try_consume_one_agent(benchmark::State& state) {
  consume_loop(state, plain().coord, plain().agents[0]);
}
BENCHMARK(try_consume_one_agent)
    ->Name("coordinator/try_consume_one_agent")
    ->Threads(2)
    ->UseRealTime();

void try_consume_two_agents(benchmark::State& state) {
  consume_loop(state, plain().coord,
               plain().agents[static_cast<std::size_t>(state.thread_index()) % 2]);
}
BENCHMARK(try_consume_two_agents)
    ->Name("coordinator/try_consume_two_agents")
    ->Threads(2)
    ->UseRealTime();

void try_consume_observer(benchmark::State& state) {
  static Setup s({}, 1);
  static std::uint64_t seen = 0; // observers of one agent run one at a time
  static MonitorHandle handle =
      s.coord.add_monitor(s.agents[0], [](const BudgetCoordinator::UsageEvent&) { ++seen; });
  consume_loop(state, s.coord, s.agents[0]);
  benchmark::DoNotOptimize(seen);
}
BENCHMARK(try_consume_observer)->Name("coordinator/try_consume_observer");

// The same observer registered with `MonitorOptions{.reads_timestamp = false}`: no clock read.
void try_consume_observer_no_timestamp(benchmark::State& state) {
  static Setup s({}, 1);
  static std::uint64_t seen = 0; // observers of one agent run one at a time
  static MonitorHandle handle = s.coord.add_monitor(
      s.agents[0], [](const BudgetCoordinator::UsageEvent&) { ++seen; },
      MonitorOptions{.reads_timestamp = false});
  consume_loop(state, s.coord, s.agents[0]);
  benchmark::DoNotOptimize(seen);
}
BENCHMARK(try_consume_observer_no_timestamp)->Name("coordinator/try_consume_observer_no_timestamp");

void reserve_commit(benchmark::State& state) {
  auto& s = plain();
  const Decimal estimate("0.02");
  const AgentId agent = s.agents[static_cast<std::size_t>(state.thread_index()) % 2];
  for (auto _ : state) {
    auto r = s.coord.try_reserve(agent, estimate);
    if (!r.ok()) {
      state.SkipWithError("try_reserve refused: the budget ran out");
      break;
    }
    auto c = r.commit(amount);
    benchmark::DoNotOptimize(c);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(reserve_commit)->Name("coordinator/reserve_commit");
BENCHMARK(reserve_commit)->Name("coordinator/reserve_commit_two_agents")->Threads(2)->UseRealTime();

void try_consume_history(benchmark::State& state) {
  static Setup s({.history_capacity = 64}, 1);
  consume_loop(state, s.coord, s.agents[0]);
}
BENCHMARK(try_consume_history)->Name("coordinator/try_consume_history");

// ---- the straightforward alternative ---------------------------------------------------------

// What a first version usually looks like: one lock around a map of balances by name.
class MutexMapLedger {
public:
  void open(std::string name, Decimal budget) {
    std::lock_guard lock(mutex_);
    balances_.insert_or_assign(std::move(name), budget);
  }
  bool try_consume(const std::string& name, Decimal value) {
    std::lock_guard lock(mutex_);
    auto it = balances_.find(name);
    if (it == balances_.end() || it->second < value)
      return false;
    it->second -= value;
    return true;
  }

private:
  std::mutex mutex_;
  std::unordered_map<std::string, Decimal> balances_;
};

MutexMapLedger& mutex_map() {
  static MutexMapLedger* ledger = [] {
    auto* l = new MutexMapLedger; // lives for the process, like the coordinator statics
    l->open("agent-0", big_budget);
    l->open("agent-1", big_budget);
    return l;
  }();
  return *ledger;
}

void mutex_map_loop(benchmark::State& state, const std::string& name) {
  auto& ledger = mutex_map();
  for (auto _ : state) {
    bool ok = ledger.try_consume(name, amount);
    benchmark::DoNotOptimize(ok);
    if (!ok) {
      state.SkipWithError("mutex map refused: the budget ran out");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void mutex_map_one_key(benchmark::State& state) {
  mutex_map_loop(state, "agent-0");
}
BENCHMARK(mutex_map_one_key)->Name("mutex_map/try_consume");
BENCHMARK(mutex_map_one_key)->Name("mutex_map/try_consume_one_key")->Threads(2)->UseRealTime();

void mutex_map_two_keys(benchmark::State& state) {
  mutex_map_loop(state, state.thread_index() % 2 == 0 ? "agent-0" : "agent-1");
}
BENCHMARK(mutex_map_two_keys)->Name("mutex_map/try_consume_two_keys")->Threads(2)->UseRealTime();

// ---- scaling ---------------------------------------------------------------------------------

Setup& scaling() {
  static Setup s({}, max_threads);
  return s;
}

void scaling_one_agent(benchmark::State& state) {
  consume_loop(state, scaling().coord, scaling().agents[0]);
}
BENCHMARK(scaling_one_agent)
    ->Name("scaling/coordinator_one_agent")
    ->ThreadRange(1, max_threads)
    ->UseRealTime();

void scaling_own_agent(benchmark::State& state) {
  consume_loop(state, scaling().coord,
               scaling().agents[static_cast<std::size_t>(state.thread_index())]);
}
BENCHMARK(scaling_own_agent)
    ->Name("scaling/coordinator_own_agent")
    ->ThreadRange(1, max_threads)
    ->UseRealTime();

const std::vector<std::string>& scaling_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (int i = 0; i < max_threads; ++i) {
      k.push_back("scaling-" + std::to_string(i));
      mutex_map().open(k.back(), big_budget);
    }
    return k;
  }();
  return keys;
}

void scaling_map_one_key(benchmark::State& state) {
  mutex_map_loop(state, scaling_keys()[0]);
}
BENCHMARK(scaling_map_one_key)
    ->Name("scaling/mutex_map_one_key")
    ->ThreadRange(1, max_threads)
    ->UseRealTime();

void scaling_map_own_key(benchmark::State& state) {
  mutex_map_loop(state, scaling_keys()[static_cast<std::size_t>(state.thread_index())]);
}
BENCHMARK(scaling_map_own_key)
    ->Name("scaling/mutex_map_own_key")
    ->ThreadRange(1, max_threads)
    ->UseRealTime();

} // namespace

BENCHMARK_MAIN();
