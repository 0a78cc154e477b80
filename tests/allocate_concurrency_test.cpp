// allocate racing with consumers and reservations: nothing is lost, nothing goes negative, and
// every consume that succeeded is in the books.
#include <atomic>
#include <catch2/catch.hpp>
#include <safeguards/safeguards.hpp>
#include <thread>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;

TEST_CASE("allocations racing with consumers keep the books exact", "[allocation][concurrency]") {
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 16});
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 10'000_d, .priority = 5});
  std::vector<AgentId> agents;
  for (int i = 0; i < 4; ++i)
    agents.push_back(coord.create_agent({.name = "a" + std::to_string(i),
                                         .initial_budget = 100_d,
                                         .priority = 1 + 3 * i,
                                         .pool = pool}));
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> spent_raw[4] = {};
  auto consumer = [&](int t) {
    std::uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const std::size_t i = (n + static_cast<std::uint64_t>(t)) % agents.size();
      if (n++ % 3 == 0) {
        auto r = coord.try_reserve(agents[i], 0.5_d);
        if (r.ok() && r.commit(0.25_d).ok())
          spent_raw[i].fetch_add((0.25_d).raw());
      } else if (coord.try_consume(agents[i], 0.01_d).ok()) {
        spent_raw[i].fetch_add((0.01_d).raw());
      }
    }
  };
  std::thread t1(consumer, 0), t2(consumer, 1);
  for (int round = 0; round < 300; ++round) {
    switch (round % 3) {
    case 0:
      (void)coord.allocate(pool, PriorityAllocation{});
      break;
    case 1:
      (void)coord.allocate(pool, RebalanceAllocation{});
      break;
    default:
      (void)coord.allocate(pool, DynamicAllocation{});
    }
  }
  stop = true;
  t1.join();
  t2.join();
  CHECK(coord.check_invariants().empty());
  Decimal used_total;
  for (std::size_t i = 0; i < agents.size(); ++i) {
    const auto m = coord.agent_metrics(agents[i]);
    CHECK(m.used_budget == Decimal::from_raw(spent_raw[i].load()));
    CHECK(m.reserved_budget == 0_d);
    CHECK(m.remaining_budget >= 0_d);
    used_total += m.used_budget;
  }
  const auto p = coord.pool_metrics(pool);
  CHECK(p.initial_budget == 10'000_d);
  CHECK(p.used_budget == used_total);
}
