// BudgetCoordinator::allocate and emergency_allocation: strategies applied to real pools, with
// conservation, audit records and every bad input. The strategies' arithmetic alone is tested in
// allocation_strategies_test.cpp.
#include <catch2/catch.hpp>
#include <safeguards/safeguards.hpp>
#include <string>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;

namespace {

struct Fixture {
  BudgetCoordinator coord;
  MemoryAuditLog audit{1000};
  SinkHandle sink = coord.add_audit_sink(audit);
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 1000_d, .priority = 5});
  std::vector<AgentId> agents;

  explicit Fixture(std::vector<int> priorities) {
    for (std::size_t i = 0; i < priorities.size(); ++i)
      agents.push_back(coord.create_agent({.name = "a" + std::to_string(i),
                                           .initial_budget = 0_d,
                                           .priority = priorities[i],
                                           .pool = pool}));
  }
  std::vector<Decimal> budgets() const {
    std::vector<Decimal> out;
    for (AgentId a : agents)
      out.push_back(coord.get_budget(a));
    return out;
  }
};

// Returns whatever it was built with, to attack the coordinator's checks.
struct Scripted {
  std::vector<Decimal> out;
  std::string_view name() const { return "scripted"; }
  std::vector<Decimal> allocate(const PoolSnapshot<Decimal>&) const { return out; }
};

} // namespace

TEST_CASE("allocate applies the guide's priority example to a pool, exactly", "[allocation]") {
  Fixture f({9, 8, 5, 3, 1});
  const auto result = f.coord.allocate(f.pool, PriorityAllocation{});
  // Critical agents (9, 8) get 50 each; the other 900 is split by priority over all (sum 26):
  // 9: 311.538461|538, 8: 276.923076|923, 5: 173.076923|077, 3: 103.846153|846, 1: 34.615384|615;
  // the 3 micro-units left over go to the largest remainders: 8, 3, 1.
  CHECK(f.budgets() ==
        std::vector<Decimal>{361.538461_d, 326.923077_d, 173.076923_d, 103.846154_d, 34.615385_d});
  CHECK(result.strategy == "priority");
  CHECK(result.distributable == 1000_d);
  CHECK(result.unallocated_before == 1000_d);
  CHECK(result.unallocated_after == 0_d);
  REQUIRE(result.changes.size() == 5);
  CHECK(result.changes[0].old_remaining == 0_d);
  CHECK(result.changes[0].new_remaining == 361.538461_d);
  CHECK(f.coord.pool_metrics(f.pool).unallocated_budget == 0_d);
  CHECK(f.coord.check_invariants().empty());
  // One audit record per changed agent, naming the strategy.
  const auto records = f.audit.records();
  REQUIRE(records.size() == 10); // 5 creations + 5 allocations
  CHECK(records.back().reason == "allocation: priority");
  CHECK(records.back().new_budget == 34.615385_d);
}

TEST_CASE("allocate(pool) uses the coordinator's policy - FixedAllocation moves nothing",
          "[allocation]") {
  Fixture f({9, 1});
  f.coord.update_budget(f.agents[0], 100_d, "by hand");
  const auto before = f.audit.records().size();
  const auto result = f.coord.allocate(f.pool);
  CHECK(result.strategy == "fixed");
  CHECK(f.budgets() == std::vector<Decimal>{100_d, 0_d});
  CHECK(result.unallocated_after == 900_d);
  CHECK(f.audit.records().size() == before); // nothing changed, nothing recorded
}

TEST_CASE("used and reserved money never moves, and open reservations still settle",
          "[allocation]") {
  Fixture f({5, 5});
  f.coord.update_budget(f.agents[0], 600_d, "setup");
  f.coord.update_budget(f.agents[1], 100_d, "setup");
  f.coord.consume(f.agents[0], 200_d);
  auto r = f.coord.reserve(f.agents[0], 50_d);
  // Distributable: unallocated 300 + remaining 350 + 100 = 750, split 375 / 375.
  const auto result = f.coord.allocate(f.pool, RebalanceAllocation{});
  CHECK(result.distributable == 750_d);
  CHECK(f.budgets() == std::vector<Decimal>{375_d, 375_d});
  auto m = f.coord.agent_metrics(f.agents[0]);
  CHECK(m.used_budget == 200_d);
  CHECK(m.reserved_budget == 50_d);
  CHECK(r.commit(20_d).refunded == 30_d);
  CHECK(f.coord.get_budget(f.agents[0]) == 405_d);
  CHECK(f.coord.check_invariants().empty());
}

TEST_CASE("a strategy that returns the impossible changes nothing", "[allocation][errors]") {
  Fixture f({5, 5});
  f.coord.update_budget(f.agents[0], 100_d, "setup");
  const auto before = f.budgets();
  auto bad = GENERATE(std::vector<Decimal>{1_d},                // wrong length
                      std::vector<Decimal>{-1_d, 1_d},          // negative
                      std::vector<Decimal>{600_d, 400.000001_d} // more than 1000
  );
  CHECK_THROWS_AS(f.coord.allocate(f.pool, Scripted{bad}), InvalidArgument);
  CHECK(f.budgets() == before);
  CHECK(f.coord.check_invariants().empty());
}

TEST_CASE("allocate refuses an unknown pool", "[allocation][errors]") {
  Fixture f({5});
  CHECK_THROWS_AS(f.coord.allocate(PoolId(99), PriorityAllocation{}), UnknownPool);
  CHECK_THROWS_AS(f.coord.allocate(PoolId(99)), UnknownPool);
}

TEST_CASE("removed agents take no part in an allocation", "[allocation]") {
  Fixture f({5, 5});
  f.coord.update_budget(f.agents[1], 100_d, "setup");
  f.coord.remove_agent(f.agents[1]);
  const auto result = f.coord.allocate(f.pool, PriorityAllocation{});
  REQUIRE(result.changes.size() == 1);
  CHECK(f.coord.get_budget(f.agents[0]) == 1000_d);
  CHECK(f.coord.check_invariants().empty());
}

// ---- emergency grants -----------------------------------------------------------------------

namespace {

struct Pools {
  BudgetCoordinator coord;
  MemoryAuditLog audit{100};
  SinkHandle sink = coord.add_audit_sink(audit);
  PoolId high = coord.create_pool({.name = "high", .initial_budget = 100_d, .priority = 8});
  PoolId low = coord.create_pool({.name = "low", .initial_budget = 30_d, .priority = 2});
  PoolId lower = coord.create_pool({.name = "lower", .initial_budget = 40_d, .priority = 1});
  PoolId peer = coord.create_pool({.name = "peer", .initial_budget = 500_d, .priority = 8});
  PoolId top = coord.create_pool({.name = "top", .initial_budget = 500_d, .priority = 10});

  Decimal total_initial() const {
    Decimal sum;
    for (PoolId p : coord.pools())
      sum += coord.pool_metrics(p).initial_budget;
    return sum;
  }
};

} // namespace

TEST_CASE("a high-priority agent gets all it asks, from its own pool first", "[emergency]") {
  Pools w;
  AgentId a =
      w.coord.create_agent({.name = "a", .initial_budget = 90_d, .priority = 8, .pool = w.high});
  const Decimal total = w.total_initial();
  const auto g = w.coord.emergency_allocation(a, 5_d, "disk full");
  CHECK(g.requested == 5_d);
  CHECK(g.approved == 5_d);
  CHECK(g.granted == 5_d);
  REQUIRE(g.sources.size() == 1);
  CHECK(g.sources[0].pool == w.high);
  CHECK(w.coord.get_budget(a) == 95_d);
  CHECK(w.total_initial() == total);
  CHECK(w.coord.check_invariants().empty());
}

TEST_CASE("the rest comes from lower-priority pools, lowest first, never from equal or higher",
          "[emergency]") {
  Pools w;
  AgentId a =
      w.coord.create_agent({.name = "a", .initial_budget = 90_d, .priority = 9, .pool = w.high});
  const Decimal total = w.total_initial();
  // Own pool has 10; then "lower" (priority 1) gives 40 and "low" (priority 2) 30; "peer"
  // (equal priority) and "top" are never touched. 100 asked, 80 available.
  const auto g = w.coord.emergency_allocation(a, 100_d, "outage");
  CHECK(g.approved == 100_d);
  CHECK(g.granted == 80_d);
  REQUIRE(g.sources.size() == 3);
  CHECK(g.sources[0].pool == w.high);
  CHECK(g.sources[0].amount == 10_d);
  CHECK(g.sources[1].pool == w.lower);
  CHECK(g.sources[1].amount == 40_d);
  CHECK(g.sources[2].pool == w.low);
  CHECK(g.sources[2].amount == 30_d);
  CHECK(w.coord.get_budget(a) == 170_d);
  CHECK(w.coord.pool_metrics(w.high).initial_budget == 170_d);
  CHECK(w.coord.pool_metrics(w.low).initial_budget == 0_d);
  CHECK(w.coord.pool_metrics(w.peer).initial_budget == 500_d);
  CHECK(w.total_initial() == total);
  CHECK(w.coord.check_invariants().empty());
  const auto records = w.audit.records();
  REQUIRE(records.size() >= 3);
  CHECK(records[records.size() - 3].reason == "emergency grant from high: outage");
  CHECK(records.back().reason == "emergency grant from low: outage");
  CHECK(records.back().new_budget == 170_d);
}

TEST_CASE("a critical reason gets half, rounded down - anything else is denied", "[emergency]") {
  Pools w;
  AgentId a =
      w.coord.create_agent({.name = "a", .initial_budget = 0_d, .priority = 3, .pool = w.high});
  const auto half = w.coord.emergency_allocation(a, 0.000003_d, "a CRITICAL bug");
  CHECK(half.approved == 0.000001_d); // 1.5 micro-units, rounded down
  CHECK(half.granted == 0.000001_d);
  const auto denied = w.coord.emergency_allocation(a, 10_d, "would be nice");
  CHECK(denied.approved == 0_d);
  CHECK(denied.granted == 0_d);
  CHECK(denied.sources.empty());
  CHECK(denied.decision.find("denied") == 0);
  CHECK(w.coord.get_budget(a) == 0.000001_d);
  const auto custom = w.coord.emergency_allocation(
      a, 10_d, "urgent", EmergencyPolicy{.high_priority = 3, .keyword = "x", .partial = 0.5_d});
  CHECK(custom.granted == 10_d);
}

TEST_CASE("emergency requests are checked before anything moves", "[emergency][errors]") {
  Pools w;
  AgentId a =
      w.coord.create_agent({.name = "a", .initial_budget = 0_d, .priority = 9, .pool = w.high});
  CHECK_THROWS_AS(w.coord.emergency_allocation(a, 0_d, "critical"), InvalidArgument);
  CHECK_THROWS_AS(w.coord.emergency_allocation(a, -1_d, "critical"), InvalidArgument);
  CHECK_THROWS_AS(w.coord.emergency_allocation(a, 1_d, ""), InvalidArgument);
  CHECK_THROWS_AS(w.coord.emergency_allocation(AgentId(99), 1_d, "critical"), UnknownAgent);
  CHECK_THROWS_AS(
      w.coord.emergency_allocation(a, 1_d, "critical", EmergencyPolicy{.partial = 1.5_d}),
      InvalidArgument);
  CHECK(w.coord.get_budget(a) == 0_d);
  CHECK(w.coord.check_invariants().empty());
}

TEST_CASE("the strategy sees the usage inside its window only", "[allocation][history]") {
  ManualClock clock;
  BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock> coord(
      CoordinatorOptions{.history_capacity = 8}, {}, clock);
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 1000_d, .priority = 5});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 500_d, .pool = pool});
  coord.consume(a, 400_d); // two hours ago
  clock.advance(std::chrono::hours(2));
  coord.consume(a, 10_d);
  coord.consume(a, 30_d);
  // Within the last hour: mean 20 × 1.2 = 24; the 400 is outside and no longer counts.
  const DynamicAllocation hour{.multiplier = 1.2_d, .base = 1_d, .window = std::chrono::hours(1)};
  coord.allocate(pool, hour);
  CHECK(coord.get_budget(a) == 24_d);
  // A window reaching back past the clock's beginning counts everything: mean 440 / 3 × 1.2.
  const DynamicAllocation all{
      .multiplier = 1.2_d, .base = 1_d, .window = std::chrono::seconds::max()};
  coord.allocate(pool, all);
  CHECK(coord.get_budget(a) == 176_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("emergency sources: own pool, then lower priorities lowest first, ties by id",
          "[emergency]") {
  using P = GrantPool<Decimal>;
  const P own{PoolId(5), 6, 10_d};
  const std::vector<P> others{{PoolId(4), 3, 5_d},  {PoolId(2), 3, 5_d},  {PoolId(3), 1, 1_d},
                              {PoolId(6), 6, 99_d}, {PoolId(7), 9, 99_d}, {PoolId(8), 2, 0_d}};
  const auto sources = plan_emergency_sources(own, others, 18_d);
  REQUIRE(sources.size() == 4);
  CHECK(sources[0].pool == PoolId(5)); // own: 10
  CHECK(sources[1].pool == PoolId(3)); // priority 1: 1
  CHECK(sources[2].pool == PoolId(2)); // priority 3, lower id first: 5
  CHECK(sources[3].pool == PoolId(4)); // then 2 of its 5
  CHECK(sources[3].amount == 2_d);
  // Equal (6) and higher (9) priorities never give, even when nothing else can.
  CHECK(plan_emergency_sources(P{PoolId(1), 6, 0_d}, {{PoolId(6), 6, 99_d}}, 1_d).empty());
}
