// Callbacks that call back in: monitors and violation sinks that make management calls
// (update_budget, transfer, create_agent, remove_agent, allocate, metrics) on the coordinator that
// is running them, and the unknown ids those calls can meet. Each must finish without deadlock,
// with the books exact and `check_invariants()` empty. Found missing by the bad-input survey of
// docs/reliability.md.
// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <optional>
#include <safeguards/safeguards.hpp>
#include <string>
#include <vector>

using namespace safeguards;

namespace {
using Event = BudgetCoordinator::UsageEvent;
using ViolationT = BudgetCoordinator::Violation;
} // namespace

TEST_CASE("a monitor may make management calls on its own coordinator", "[monitor][reentrant]") {
  BudgetCoordinator coord;
  const PoolId pool = coord.create_pool({.name = "p", .initial_budget = 1'000_d});
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d, .pool = pool});
  const AgentId b = coord.create_agent({.name = "b", .initial_budget = 100_d, .pool = pool});
  std::vector<std::string> done;
  std::optional<AgentId> made;

  SECTION("an observer") {
    // Every call below takes the coordinator's writer lock; the observer runs holding only the
    // agent's turn, so none of them may wait for it.
    auto handle = coord.add_monitor(a, [&](const Event& e) {
      if (e.kind != UsageKind::consume)
        return;
      coord.update_budget(b, 150_d, "raised from a monitor");
      coord.transfer(b, a, 10_d, "moved from a monitor");
      made = coord.create_agent({.name = "c", .initial_budget = 5_d, .pool = pool});
      coord.remove_agent(*made, "removed from a monitor");
      (void)coord.allocate(pool, FixedAllocation{});
      done.push_back(fmt::format("{}", coord.agent_metrics(a).remaining_budget));
    });
    REQUIRE(coord.try_consume(a, 20_d).ok());
    REQUIRE(done.size() == 1);
    CHECK(done[0] == "90.0"); // 100 - 20 + 10, read from inside the monitor
    CHECK(coord.get_budget(a) == 90_d);
    CHECK(coord.get_budget(b) == 140_d);
    CHECK(coord.pool_metrics(pool).unallocated_budget == 750_d); // 1000 - 100 - 150; c's 5 back
  }

  SECTION("a veto check, before the change it judges") {
    auto handle = coord.add_monitor(a, [&](const Event& e) {
      coord.update_budget(b, 50_d, "lowered from a check");
      done.push_back("checked");
      return e.amount <= 30_d;
    });
    CHECK(coord.try_consume(a, 20_d).ok());
    CHECK(coord.try_consume(a, 40_d).status() == ConsumeStatus::denied_by_monitor);
    CHECK(done.size() == 2);
    CHECK(coord.get_budget(a) == 80_d);
    CHECK(coord.get_budget(b) == 50_d);
  }

  SECTION("a monitor that removes its own agent") {
    auto handle = coord.add_monitor(a, [&](const Event& e) {
      if (e.kind == UsageKind::consume)
        coord.remove_agent(a, "removed by its own monitor");
    });
    REQUIRE(coord.try_consume(a, 20_d).ok());
    CHECK(coord.try_consume(a, 1_d).status() == ConsumeStatus::unknown_agent);
    CHECK(coord.pool_metrics(pool).unallocated_budget == 880_d); // its 80 went back
  }

  CHECK(coord.check_invariants().empty());
}

TEST_CASE("a violation sink may spend and change budgets on the coordinator that reports to it",
          "[violation][reentrant]") {
  BudgetCoordinator coord;
  const PoolId pool = coord.create_pool({.name = "p", .initial_budget = 1'000_d});
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d, .pool = pool});
  const AgentId b = coord.create_agent({.name = "b", .initial_budget = 100_d, .pool = pool});
  std::vector<ConsumeStatus> spent;
  auto sink = coord.add_violation_sink([&](const ViolationT& v) {
    if (v.type != ViolationType::BudgetLimitExceeded)
      return;
    spent.push_back(coord.try_consume(a, 1_d).status()); // the agent whose check just reported
    spent.push_back(coord.try_consume(b, 1_d).status());
    coord.update_budget(b, 120_d, "raised from a violation sink");
  });
  auto limit = coord.add_monitor(a, SpendingLimit{30_d});

  CHECK(coord.try_consume(a, 50_d).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(spent.size() == 2);
  // The report is made while the check runs, inside the agent's turn: spending from that agent
  // there is re-entrant and refused; another agent pays as usual.
  CHECK(spent[0] == ConsumeStatus::reentrant_call);
  CHECK(spent[1] == ConsumeStatus::ok);
  CHECK(coord.get_budget(a) == 100_d);
  CHECK(coord.get_budget(b) == 120_d);
  CHECK(coord.sink_failures() == 0);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("management calls name unknown and removed ids and change nothing",
          "[coordinator][errors]") {
  BudgetCoordinator coord;
  const PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100_d, .priority = 5});
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = 40_d, .pool = pool});
  const AgentId gone = coord.create_agent({.name = "gone", .initial_budget = 10_d, .pool = pool});
  coord.remove_agent(gone);

  CHECK_THROWS_AS(coord.remove_agent(gone), UnknownAgent);
  CHECK_THROWS_AS(coord.remove_agent(AgentId(99)), UnknownAgent);
  CHECK_THROWS_AS(coord.set_priority(gone, 3), UnknownAgent);
  CHECK_THROWS_AS(coord.set_priority(AgentId(99), 3), UnknownAgent);
  CHECK_THROWS_AS(coord.update_budget(gone, 5_d, "x"), UnknownAgent);
  CHECK_THROWS_AS(coord.transfer(gone, a, 1_d, "x"), UnknownAgent);
  CHECK_THROWS_AS(coord.transfer(a, AgentId(99), 1_d, "x"), UnknownAgent);
  CHECK_THROWS_AS(coord.transfer(a, a, 1_d, "x"), InvalidArgument);
  CHECK_THROWS_AS(coord.transfer(a, gone, 0_d, "x"), InvalidArgument);
  CHECK_THROWS_AS(coord.transfer(a, gone, -1_d, "x"), InvalidArgument);
  CHECK_THROWS_AS(coord.emergency_allocation(gone, 5_d, "outage"), UnknownAgent);
  CHECK_THROWS_AS(coord.set_pool_priority(PoolId(99), 3), UnknownPool);
  CHECK_THROWS_AS(coord.set_pool_priority(pool, 0), InvalidPriority);
  CHECK_THROWS_AS(coord.set_pool_priority(pool, 11), InvalidPriority);
  CHECK_THROWS_AS(coord.create_pool({.name = "", .initial_budget = 1_d}), InvalidArgument);

  CHECK(coord.pool_priority(pool) == 5);
  CHECK(coord.agent_priority(a) == 5);
  CHECK(coord.get_budget(a) == 40_d);
  CHECK(coord.pool_metrics(pool).unallocated_budget == 60_d);
  CHECK(coord.pools().size() == 1);
  CHECK(coord.check_invariants().empty());
}
