// What the coordinator accepts: amounts of its own type only, finite ones only, and creation that
// leaves nothing half-made behind when any step fails, a ledger's `open` included.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <safeguards/big_decimal.hpp>
#include <safeguards/safeguards.hpp>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

using namespace safeguards;

namespace {

// A ledger that refuses to open accounts when told to, as a remote ledger does when its server
// is down. Everything else is the in-memory ledger's.
inline std::atomic<bool> refuse_open{false};

struct FlakyLedger : InMemoryLedger<Decimal> {
  handle_type open(const Decimal& initial) {
    if (refuse_open.load())
      throw std::runtime_error("ledger server unreachable");
    return InMemoryLedger<Decimal>::open(initial);
  }
};
static_assert(Ledger<FlakyLedger>);

using FlakyCoordinator =
    BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, FlakyLedger>;

// What may be passed where the coordinator takes an amount: its own type (and for a token
// counter, any signed integer no wider than int64); a std::int64_t token count is not dollars.
template <class Coord, class T>
concept Consumable = requires(Coord& c, AgentId a, const T& t) {
  c.try_consume(a, t);
};
template <class Coord, class T>
concept Reservable = requires(Coord& c, AgentId a, const T& t) {
  c.try_reserve(a, t);
};
template <class Coord, class T>
concept Updatable = requires(Coord& c, AgentId a, const T& t) {
  c.update_budget(a, t, "r");
};
template <class Coord, class T>
concept Committable = requires(typename Coord::Reservation& r, const T& t) {
  r.commit(t);
};

static_assert(Consumable<BudgetCoordinator, Decimal>);
static_assert(!Consumable<BudgetCoordinator, std::int64_t>, "tokens are not dollars");
static_assert(!Consumable<BudgetCoordinator, int>);
static_assert(!Consumable<BudgetCoordinator, double>);
static_assert(!Consumable<BudgetCoordinator, const char*>);
static_assert(!Reservable<BudgetCoordinator, std::int64_t>);
static_assert(!Updatable<BudgetCoordinator, std::int64_t>);
static_assert(!Committable<BudgetCoordinator, std::int64_t>);
using TokenCoordinator = BasicBudgetCoordinator<std::int64_t>;
static_assert(Consumable<TokenCoordinator, std::int64_t>);
static_assert(Consumable<TokenCoordinator, int>, "a token counter takes an int literal");
static_assert(!Consumable<TokenCoordinator, Decimal>);
static_assert(!Consumable<TokenCoordinator, std::uint64_t>, "would wrap past int64");
static_assert(!Consumable<TokenCoordinator, bool>);
static_assert(!Consumable<TokenCoordinator, char>);
static_assert(!Consumable<BasicBudgetCoordinator<double>, int>);

} // namespace

TEST_CASE("an implicit pool is not left behind when the ledger cannot open the account",
          "[coordinator][create][ledger]") {
  FlakyCoordinator coord;
  refuse_open = true;
  CHECK_THROWS_WITH(coord.create_agent({.name = "a", .initial_budget = 10_d}),
                    "ledger server unreachable");
  // Nothing half-created: no agent, no pool, no name taken, no id burned.
  CHECK(coord.agents().empty());
  CHECK(coord.pools().empty());
  CHECK_FALSE(coord.find_pool("agent:a").has_value());
  refuse_open = false;
  // The retry used to fail with DuplicateName: the implicit pool had stayed.
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  CHECK(a == AgentId(1));
  CHECK(coord.agent_pool(a) == PoolId(1));
  CHECK(coord.pools().size() == 1);
  CHECK(coord.check_invariants().empty());

  SECTION("in an explicit pool too") {
    PoolId p = coord.create_pool({.name = "p", .initial_budget = 100_d});
    refuse_open = true;
    CHECK_THROWS(coord.create_agent({.name = "b", .initial_budget = 10_d, .pool = p}));
    refuse_open = false;
    CHECK(coord.pool_metrics(p).unallocated_budget == 100_d);
    CHECK(coord.pool_agents(p).empty());
    CHECK(coord.create_agent({.name = "b", .initial_budget = 10_d, .pool = p}) == AgentId(2));
    CHECK(coord.check_invariants().empty());
  }
}

TEST_CASE("a removed agent's name can be used again, with or without an explicit pool",
          "[coordinator][create][remove]") {
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId in_pool = coord.create_agent({.name = "x", .initial_budget = 10_d, .pool = p});
  AgentId alone = coord.create_agent({.name = "y", .initial_budget = 20_d});
  PoolId old_pool = coord.agent_pool(alone);
  REQUIRE(coord.try_consume(alone, 5_d).ok());
  coord.remove_agent(in_pool);
  coord.remove_agent(alone);
  AgentId x2 = coord.create_agent({.name = "x", .initial_budget = 10_d, .pool = p});
  // Used to throw DuplicateName: the implicit pool "agent:y" outlived its agent.
  AgentId y2 = coord.create_agent({.name = "y", .initial_budget = 20_d});
  CHECK(x2 != in_pool);
  CHECK(y2 != alone);
  CHECK(coord.find_agent("y") == y2);
  CHECK(coord.find_pool("agent:y") == coord.agent_pool(y2));
  CHECK(coord.agent_pool(y2) != old_pool);
  // The old implicit pool keeps its agent's usage under a name that says what happened.
  auto old = coord.pool_metrics(old_pool);
  CHECK(old.name == "agent:y (removed agent-2)");
  CHECK(old.used_budget == 5_d);
  CHECK(old.implicit);
  CHECK(coord.check_invariants().empty());
}

TEMPLATE_TEST_CASE("non-finite amounts are refused wherever an amount enters",
                   "[coordinator][double]", double, BigDecimal) {
  using Coord = BasicBudgetCoordinator<TestType>;
  using limits = std::numeric_limits<TestType>;
  const TestType bad = GENERATE(limits::infinity(), -limits::infinity(), limits::quiet_NaN());
  INFO("amount " << bad);
  Coord coord;
  CHECK_THROWS_AS(coord.create_pool({.name = "p", .initial_budget = bad}), InvalidArgument);
  CHECK(coord.pools().empty());
  CHECK_THROWS_AS(coord.create_agent({.name = "a", .initial_budget = bad}), InvalidArgument);
  CHECK(coord.agents().empty());
  // A pool of +inf used to be accepted, and an agent in it then threw after it was published:
  // an agent that could spend, in no pool, with no name.
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 100.0});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10.0, .pool = p});
  AgentId b = coord.create_agent({.name = "b", .initial_budget = 10.0, .pool = p});
  CHECK_THROWS_AS(coord.update_budget(a, bad, "r"), InvalidArgument);
  CHECK_THROWS_AS(coord.transfer(a, b, bad, "r"), InvalidArgument);
  CHECK(coord.try_consume(a, bad).status() == ConsumeStatus::invalid_amount);
  CHECK_THROWS_AS(coord.consume(a, bad), InvalidArgument);
  CHECK(coord.try_reserve(a, bad).status() == ConsumeStatus::invalid_amount);
  CHECK_THROWS_AS(std::ignore = coord.reserve(a, bad), InvalidArgument);
  CHECK(coord.get_budget(a) == 10.0);
  CHECK(coord.pool_metrics(p).unallocated_budget == 80.0);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("dropping a result is a compiler warning", "[coordinator][nodiscard]") {
  // The negative compile test tests/compile_fail/dropped_consume_result.cpp checks that
  // `coord.try_consume(a, x);` warns; here, the opt-out a caller writes when it means it.
  BudgetCoordinator coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  std::ignore = coord.try_consume(a, 1_d);
  auto r = coord.reserve(a, 2_d);
  std::ignore = r.commit(1_d);
  CHECK(coord.get_budget(a) == 8_d);
}

TEST_CASE("an agent is never given more than its account can hold", "[coordinator][inputs]") {
  // The lock-free ledger packs a balance into 55 bits: 36,028,797,018.963967 as a Decimal.
  const Decimal cap = *InMemoryLedger<Decimal>::max_balance();
  const Decimal micro = Decimal::from_raw(1);
  BudgetCoordinator coord;
  const Decimal pool_budget = cap + cap + cap + cap;
  const PoolId p = coord.create_pool({.name = "p", .initial_budget = pool_budget});

  SECTION("creating one above it fails and creates nothing") {
    CHECK_THROWS_AS(coord.create_agent({.name = "a", .initial_budget = cap + micro, .pool = p}),
                    AmountOverflow);
    CHECK(coord.agents().empty());
    CHECK(coord.pool_metrics(p).unallocated_budget == pool_budget);
  }
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = cap, .pool = p});
  const AgentId b = coord.create_agent({.name = "b", .initial_budget = 10_d, .pool = p});
  SECTION("raising a budget past it fails and changes nothing") {
    coord.consume(a, 1_d); // spent money still counts: the bound is on what was given
    CHECK_THROWS_WITH(coord.update_budget(a, cap, "raise"),
                      Catch::Contains("cannot be given 1.0 more") &&
                          Catch::Contains("holds at most 36028797018.963967"));
    CHECK(coord.get_budget(a) == cap - 1_d);
    coord.update_budget(a, cap - 2_d, "lower"); // decreases always fit
    CHECK(coord.get_budget(a) == cap - 2_d);
  }
  SECTION("a transfer into a full account fails and moves nothing") {
    CHECK_THROWS_AS(coord.transfer(b, a, 1_d, "move"), AmountOverflow);
    CHECK(coord.get_budget(b) == 10_d);
    coord.transfer(a, b, 1_d, "back"); // and out of it works
    CHECK(coord.get_budget(b) == 11_d);
  }
  SECTION("an allocation that would overfill an account fails and changes nothing") {
    CHECK_THROWS_AS(coord.allocate(p, PriorityAllocation{}), AmountOverflow);
    CHECK(coord.get_budget(a) == cap);
    CHECK(coord.get_budget(b) == 10_d);
  }
  SECTION("an emergency grant that would overfill it fails and moves nothing") {
    CHECK_THROWS_AS(coord.emergency_allocation(a, 10_d, "critical outage"), AmountOverflow);
    CHECK(coord.get_budget(a) == cap);
    CHECK(coord.pool_metrics(p).unallocated_budget == pool_budget - cap - 10_d);
  }
  CHECK(coord.check_invariants().empty());
}
