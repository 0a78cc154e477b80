// Consumes through a RedisLedger against a local redis-server (started by the benchmark on a
// free port of 127.0.0.1, AOF off), beside the in-memory ledger, from one thread, four threads
// and one and four processes; the round trips per operation (commands the ledger sent) and the
// commands the server ran for them (its INFO stats: a script's own calls count there). Needs
// hiredis and redis-server, like the Redis tests.
//
//   build/default/tests/bench/redis_bench --benchmark_repetitions=3
//   --benchmark_report_aggregates_only=true
// SPDX-License-Identifier: MIT
#include "../support/redis_server.hpp"

#include <benchmark/benchmark.h>
#include <chrono>
#include <cstdint>
#include <safeguards/coordinator.hpp>
#include <safeguards/redis_ledger.hpp>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;

namespace {

using RedisCoordinator =
    BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, RedisLedger>;

test::RedisServer& server() {
  static test::RedisServer s;
  return s;
}

RedisOptions options(const std::string& prefix) {
  RedisOptions o;
  o.port = server().port();
  o.key_prefix = prefix;
  return o;
}

// Commands the server has run so far (INFO stats: total_commands_processed).
std::int64_t commands_processed() {
  const std::string info = server().command({"INFO", "stats"});
  const std::string key = "total_commands_processed:";
  const auto at = info.find(key);
  return at == std::string::npos ? -1 : std::stoll(info.substr(at + key.size()));
}

std::string unique_prefix(const char* what) {
  static int n = 0;
  return std::string(what) + std::to_string(++n);
}

// The floor: the same consume through the in-memory ledger.
void in_memory_try_consume(benchmark::State& state) {
  static BudgetCoordinator coord;
  static const AgentId agent =
      coord.create_agent({.name = "bench", .initial_budget = 1'000'000'000_d});
  for (auto _ : state)
    benchmark::DoNotOptimize(coord.try_consume(agent, 0.000001_d));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(in_memory_try_consume)->Name("redis/in_memory/try_consume")->Threads(1)->Threads(4);

// One coordinator, its threads sharing one agent.
void redis_try_consume(benchmark::State& state) {
  static RedisCoordinator* coord = nullptr;
  static AgentId agent;
  if (state.thread_index() == 0) {
    coord = new RedisCoordinator(options(unique_prefix("threads")));
    agent = coord->create_agent({.name = "bench", .initial_budget = 1'000'000'000_d});
  }
  const std::int64_t before = state.thread_index() == 0 ? commands_processed() : 0;
  const std::uint64_t trips = state.thread_index() == 0 ? coord->ledger().round_trips() : 0;
  for (auto _ : state)
    benchmark::DoNotOptimize(coord->try_consume(agent, 0.000001_d));
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    const auto consumes = static_cast<double>(state.iterations() * state.threads());
    // Commands the ledger sent, and commands the server ran (a script's own calls count there).
    state.counters["round_trips_per_consume"] =
        benchmark::Counter(static_cast<double>(coord->ledger().round_trips() - trips) / consumes);
    state.counters["server_commands_per_consume"] =
        benchmark::Counter(static_cast<double>(commands_processed() - before - 1) / consumes);
    delete coord;
    coord = nullptr;
  }
}
BENCHMARK(redis_try_consume)
    ->Name("redis/ledger/try_consume")
    ->Threads(1)
    ->Threads(4)
    ->UseRealTime();

// A reservation and its commit: two scripts, two round trips.
void redis_reserve_commit(benchmark::State& state) {
  RedisCoordinator coord(options(unique_prefix("reserve")));
  const AgentId agent = coord.create_agent({.name = "bench", .initial_budget = 1'000'000'000_d});
  const std::uint64_t trips = coord.ledger().round_trips();
  for (auto _ : state) {
    auto r = coord.try_reserve(agent, 0.00001_d);
    benchmark::DoNotOptimize(r.commit(0.000007_d));
  }
  state.counters["round_trips_per_reserve_commit"] =
      benchmark::Counter(static_cast<double>(coord.ledger().round_trips() - trips) /
                         static_cast<double>(state.iterations()));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(redis_reserve_commit)->Name("redis/ledger/reserve_commit")->UseRealTime();

// N processes, each its own coordinator attached by name to one agent, each making the same
// number of consumes; the time is the slowest process's, from a common start.
void redis_processes(benchmark::State& state) {
  const int processes = static_cast<int>(state.range(0));
  constexpr int per_process = 2'000;
  const std::string prefix = unique_prefix("processes");
  for (auto _ : state) {
    std::vector<pid_t> children;
    std::vector<int> ready, go, report;
    for (int p = 0; p < processes; ++p) {
      int r[2], g[2], o[2];
      if (::pipe(r) != 0 || ::pipe(g) != 0 || ::pipe(o) != 0)
        std::abort();
      const pid_t pid = ::fork();
      if (pid == 0) {
        RedisOptions opts = options(prefix);
        opts.background = false;
        RedisCoordinator coord(opts);
        const AgentId agent =
            coord.create_agent({.name = "bench", .initial_budget = 1'000'000'000_d});
        char byte = 1;
        (void)!::write(r[1], &byte, 1);
        (void)!::read(g[0], &byte, 1);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < per_process; ++i)
          benchmark::DoNotOptimize(coord.try_consume(agent, 0.000001_d));
        const std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::steady_clock::now() - start)
                                    .count();
        (void)!::write(o[1], &ns, sizeof ns);
        ::_exit(0);
      }
      children.push_back(pid);
      ready.push_back(r[0]);
      go.push_back(g[1]);
      report.push_back(o[0]);
    }
    char byte = 0;
    for (int fd : ready)
      (void)!::read(fd, &byte, 1);
    for (int fd : go)
      (void)!::write(fd, &byte, 1);
    std::int64_t slowest = 0;
    for (int fd : report) {
      std::int64_t ns = 0;
      (void)!::read(fd, &ns, sizeof ns);
      slowest = std::max(slowest, ns);
    }
    for (pid_t pid : children)
      ::waitpid(pid, nullptr, 0);
    for (auto* fds : {&ready, &go, &report})
      for (int fd : *fds)
        ::close(fd);
    state.SetIterationTime(static_cast<double>(slowest) * 1e-9);
  }
  state.SetItemsProcessed(state.iterations() * processes * per_process);
}
BENCHMARK(redis_processes)->Name("redis/ledger/processes")->Arg(1)->Arg(4)->UseManualTime();

} // namespace

BENCHMARK_MAIN();
