// An agent's metadata and data slot are allocated on first use, under the coordinator's lock.
// Two threads set them on the same fresh agents at once while a third reads them and consumes:
// every write must land and nothing may race (CI runs this file under ThreadSanitizer).
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <latch>
#include <safeguards/safeguards.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

TEST_CASE("metadata and data slots set from two threads on fresh agents all land",
          "[agents][metadata][concurrency]") {
  constexpr int n = 2000;
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = Decimal(n * 10)});
  std::vector<AgentId> ids;
  for (int i = 0; i < n; ++i)
    ids.push_back(
        coord.create_agent({.name = "a" + std::to_string(i), .initial_budget = 10_d, .pool = p}));

  std::latch start(3);
  std::atomic<int> failures{0};
  auto writer = [&](int which) {
    start.arrive_and_wait();
    for (int i = 0; i < n; ++i) {
      const AgentId a = ids[static_cast<std::size_t>(i)];
      if ((i + which) % 2 == 0)
        coord.set_agent_data(a, which);
      coord.set_agent_metadata(a, "writer" + std::to_string(which), std::to_string(i));
    }
  };
  std::thread first(writer, 0);
  std::thread second(writer, 1);
  start.arrive_and_wait();
  for (int i = 0; i < n; ++i) {
    const AgentId a = ids[static_cast<std::size_t>(i)];
    const auto md = coord.agent_metadata(a);
    const auto data = coord.agent_data<int>(a);
    if (md.size() > 2 || (data && *data != 0 && *data != 1))
      failures.fetch_add(1);
    if (!coord.try_consume(a, 1_d).ok())
      failures.fetch_add(1);
  }
  first.join();
  second.join();

  CHECK(failures.load() == 0);
  for (int i = 0; i < n; ++i) {
    const AgentId a = ids[static_cast<std::size_t>(i)];
    const auto md = coord.agent_metadata(a);
    REQUIRE(md.size() == 2);
    REQUIRE(md.at("writer0") == std::to_string(i));
    REQUIRE(md.at("writer1") == std::to_string(i));
    REQUIRE(coord.agent_data<int>(a).has_value());
  }
  CHECK(coord.check_invariants().empty());
}
