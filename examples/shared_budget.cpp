// Several workers of one runtime sharing budgets through Redis. Each worker builds the same
// coordinator over a RedisLedger; agents are opened by name, so "researcher" is one account
// however many workers create it, and no interleaving of their calls can spend more than it
// holds. Needs hiredis (Debian: libhiredis-dev) and a Redis server: SAFEGUARDS_REDIS_PORT says
// where on 127.0.0.1 (6379 when unset). Its CTest test starts a server of its own.
//
// expect: ^worker 2 attached to the researcher's account: 5\.0 remaining$
// expect: ^worker 1 committed 0\.35 for a call reserved at 0\.5; worker 2 sees 4\.65 remaining$
// expect: ^8 threads in 2 workers spent 4\.65 of 4\.65 in 93 calls: never more$
// expect: ^unreachable: safeguards: Redis at 127\.0\.0\.1:1 could not be reached
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fmt/format.h>
#include <safeguards/redis_ledger.hpp>
#include <safeguards/safeguards.hpp>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;

using RedisCoordinator =
    BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, RedisLedger>;

int main() {
  RedisOptions options;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
  if (const char* port = std::getenv("SAFEGUARDS_REDIS_PORT"))
    options.port = std::atoi(port);
  // One prefix per deployment; this run's own, so that a second run starts from nothing.
  options.key_prefix = fmt::format("example-{}", ::getpid());

  // Two workers, as two processes of one runtime would be: each its own coordinator, ledger and
  // connections. The second creates the same agent and attaches to its account.
  RedisCoordinator worker1(options);
  RedisCoordinator worker2(options);
  const AgentId researcher1 = worker1.create_agent({.name = "researcher", .initial_budget = 5_d});
  const AgentId researcher2 = worker2.create_agent({.name = "researcher", .initial_budget = 5_d});
  fmt::print("worker 2 attached to the researcher's account: {} remaining\n",
             worker2.get_budget(researcher2));

  // A guarded LLM call: the estimate is reserved before the call, the real cost committed after.
  {
    auto call = worker1.reserve(researcher1, 0.5_d);
    // ... the model answers; its usage is priced at 0.35 ...
    const auto result = call.commit(0.35_d);
    fmt::print("worker 1 committed {} for a call reserved at 0.5; worker 2 sees {} remaining\n",
               result.charged, worker2.get_budget(researcher2));
  }

  // Threads of both workers race for the rest, 0.05 a call: exactly what is left is spent.
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      auto& worker = t % 2 == 0 ? worker1 : worker2;
      const AgentId agent = t % 2 == 0 ? researcher1 : researcher2;
      while (worker.try_consume(agent, 0.05_d))
        ++calls;
    });
  for (auto& t : threads)
    t.join();
  fmt::print("8 threads in 2 workers spent {} of 4.65 in {} calls: never more\n",
             worker1.agent_metrics(researcher1).used_budget - 0.35_d, calls.load());

  // When Redis cannot be reached nothing is spent (fail closed): consumes answer
  // `ledger_unavailable`, management calls throw `LedgerUnavailable`, and a call already made is
  // settled when the server is back. Here, a worker pointed at a port where nothing listens.
  RedisOptions nowhere = options;
  nowhere.port = 1;
  RedisCoordinator offline(nowhere);
  try {
    (void)offline.create_agent({.name = "researcher", .initial_budget = 5_d});
  } catch (const LedgerUnavailable& e) {
    fmt::print("unreachable: {}\n", e.what());
  }
  return 0;
}
