// Allocation strategies as pure functions of a pool snapshot: the guide's examples worked out by
// hand, exact reference checks over 10,000 random pools per strategy, edge cases, bad inputs and
// the AllocationStrategy concept (with the user-written strategy docs/allocation.md shows).
// SPDX-License-Identifier: MIT
#include <algorithm>
// GCC 12 at -O1 with -fsanitize=thread sees Boost's cpp_int destructor read its inline limbs
// "maybe uninitialized" (a false positive inside Boost, where the warning is reported).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/multiprecision/cpp_int.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <safeguards/allocation.hpp>
#include <string>
#include <string_view>
#include <vector>

using namespace safeguards;
using boost::multiprecision::cpp_int;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t raw_max = std::numeric_limits<std::int64_t>::max();

template <class A>
std::int64_t raw(const A& a) {
  return amount_traits<A>::to_raw(a);
}

template <class A>
A from_raw(std::int64_t r) {
  return amount_traits<A>::from_raw(r);
}

template <class A>
std::vector<std::int64_t> raws(const std::vector<A>& amounts) {
  std::vector<std::int64_t> out;
  for (const auto& a : amounts)
    out.push_back(raw(a));
  return out;
}

AllocationAgent<> agent(std::uint64_t id, int priority) {
  return {.id = AgentId(id), .priority = priority};
}

AllocationAgent<> agent_with_usage(std::uint64_t id, int priority, std::uint64_t count,
                                   const char* sum) {
  return {.id = AgentId(id), .priority = priority, .usage_count = count, .usage_sum = Decimal(sum)};
}

template <class A>
PoolSnapshot<A> snapshot(const std::vector<AllocationAgent<A>>& agents, A distributable) {
  return {.pool = PoolId(1), .distributable = distributable, .agents = agents};
}

template <class A>
std::vector<AllocationAgent<A>> guide_priority_agents() {
  std::vector<AllocationAgent<A>> agents;
  std::uint64_t id = 1;
  for (int priority : {9, 8, 5, 3, 1})
    agents.push_back({.id = AgentId(id++), .priority = priority});
  return agents;
}

template <class A>
A sum_of(const std::vector<A>& amounts) {
  A total = amount_zero<A>();
  for (const auto& a : amounts)
    total = amount_traits<A>::add(total, a);
  return total;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// The guide's examples, worked out by hand. Amounts in Decimal are counted in micro-units (µ).

TEST_CASE("allocation: fixed keeps every balance and the unallocated rest", "[allocation]") {
  std::vector<AllocationAgent<>> agents{agent(1, 9), agent(2, 2)};
  agents[0].remaining = Decimal("120.5");
  agents[1].remaining = Decimal("0.0");
  agents[1].used = Decimal("30.0");
  auto balances = FixedAllocation{}.allocate(snapshot(agents, Decimal("1000.0")));
  CHECK(balances == std::vector<Decimal>{Decimal("120.5"), Decimal("0.0")});
  CHECK(FixedAllocation{}.name() == "fixed");
}

TEST_CASE("allocation: priority, the guide's 1000 over priorities 9, 8, 5, 3, 1", "[allocation]") {
  auto agents = guide_priority_agents<Decimal>();
  auto pool = snapshot(agents, Decimal("1000.0"));

  SECTION("default: critical agents get 50 first, then everyone shares the rest by priority") {
    // Critical (>= 8): the agents of priority 9 and 8 get 50 each; 900 is left.
    // 900 split by 9:8:5:3:1 (Σ 26), in µ: 900e6 × p / 26
    //   p=9: 8'100'000'000 / 26 = 311'538'461 remainder 14
    //   p=8: 7'200'000'000 / 26 = 276'923'076 remainder 24
    //   p=5: 4'500'000'000 / 26 = 173'076'923 remainder  2
    //   p=3: 2'700'000'000 / 26 = 103'846'153 remainder 22
    //   p=1:   900'000'000 / 26 =  34'615'384 remainder 16
    // The floors add up to 899'999'997 µ; the 3 µ left go to the largest remainders: 24 (p=8),
    // 22 (p=3), 16 (p=1).
    auto balances = PriorityAllocation{}.allocate(pool);
    CHECK(balances == std::vector<Decimal>{Decimal("361.538461"), Decimal("326.923077"),
                                           Decimal("173.076923"), Decimal("103.846154"),
                                           Decimal("34.615385")});
    CHECK(sum_of(balances) == Decimal("1000.0"));
  }
  SECTION("critical agents get only the minimum: the guide's intent, all of it handed out") {
    // 50 + 50; the 900 left go to priorities 5, 3, 1 (Σ 9): 500, 300, 100. The guide's code
    // divides by Σ of all priorities (26) instead and hands out 173.08 + 103.85 + 34.62, leaving
    // 588.46 unassigned.
    auto balances = PriorityAllocation{.critical_get_minimum_only = true}.allocate(pool);
    CHECK(balances == std::vector<Decimal>{Decimal("50.0"), Decimal("50.0"), Decimal("500.0"),
                                           Decimal("300.0"), Decimal("100.0")});
  }
  SECTION("not enough for every minimum: the critical agents share it by priority") {
    // 70 < 2 × 50: 70 split by 9:8 (Σ 17), in µ: 630'000'000 / 17 = 37'058'823 remainder 9,
    // 560'000'000 / 17 = 32'941'176 remainder 8; the 1 µ left goes to remainder 9.
    // The guide would hand out 100 it does not have.
    auto balances = PriorityAllocation{}.allocate(snapshot(agents, Decimal("70.0")));
    CHECK(balances == std::vector<Decimal>{Decimal("37.058824"), Decimal("32.941176"),
                                           Decimal("0.0"), Decimal("0.0"), Decimal("0.0")});
    auto guide = PriorityAllocation{.critical_get_minimum_only = true};
    CHECK(guide.allocate(snapshot(agents, Decimal("70.0"))) == balances);
  }
}

TEST_CASE("allocation: priority in whole tokens (int64)", "[allocation]") {
  auto agents = guide_priority_agents<std::int64_t>();
  // 50 + 50 tokens, then 900 by 9:8:5:3:1: 8100/26 = 311 r 14, 7200/26 = 276 r 24,
  // 4500/26 = 173 r 2, 2700/26 = 103 r 22, 900/26 = 34 r 16; 3 tokens left for r 24, 22, 16.
  auto balances = PriorityAllocation{}.allocate(snapshot<std::int64_t>(agents, 1000));
  CHECK(balances == std::vector<std::int64_t>{361, 327, 173, 104, 35});
  auto guide = PriorityAllocation{.critical_get_minimum_only = true};
  CHECK(guide.allocate(snapshot<std::int64_t>(agents, 1000)) ==
        std::vector<std::int64_t>{50, 50, 500, 300, 100});
  // A minimum of half a token is a mistake in the setting, not a rounding question.
  CHECK_THROWS_WITH(PriorityAllocation{.critical_minimum = Decimal("50.5")}.allocate(
                        snapshot<std::int64_t>(agents, 1000)),
                    Contains("critical_minimum = 50.5 is not a whole number"));
}

TEST_CASE("allocation: priority, every agent critical in guide mode leaves the rest in the pool",
          "[allocation]") {
  std::vector<AllocationAgent<>> agents{agent(1, 9), agent(2, 10)};
  auto guide = PriorityAllocation{.critical_get_minimum_only = true};
  CHECK(guide.allocate(snapshot(agents, Decimal("1000.0"))) ==
        std::vector<Decimal>{Decimal("50.0"), Decimal("50.0")});
  // The default lets them share it: 900 by 9:10 (Σ 19), in µ: 8'100'000'000 / 19 = 426'315'789
  // r 9 and 9'000'000'000 / 19 = 473'684'210 r 10; the µ left goes to remainder 10.
  CHECK(PriorityAllocation{}.allocate(snapshot(agents, Decimal("1000.0"))) ==
        std::vector<Decimal>{Decimal("476.315789"), Decimal("523.684211")});
}

TEST_CASE("allocation: dynamic, the guide's usage × 1.2 never below 50", "[allocation]") {
  // Agent 1: 4 entries totalling 400, mean 100 -> 120.
  // Agent 2: 2 entries totalling 50, mean 25 -> 30, raised to the base 50.
  // Agent 3: no history -> the base 50.
  std::vector<AllocationAgent<>> agents{agent_with_usage(1, 5, 4, "400.0"),
                                        agent_with_usage(2, 3, 2, "50.0"), agent(3, 7)};
  SECTION("the pool covers every wish: each gets it, the rest stays unallocated") {
    auto balances = DynamicAllocation{}.allocate(snapshot(agents, Decimal("1000.0")));
    CHECK(balances == std::vector<Decimal>{Decimal("120.0"), Decimal("50.0"), Decimal("50.0")});
  }
  SECTION("wishes of 220 from a pool of 200 are scaled down in proportion") {
    // In µ, W = 220e6: 200e6 × 120e6 / W = 109'090'909 r 20e6; 200e6 × 50e6 / W = 45'454'545
    // r 100e6 (twice). 1 µ is left; agents 2 and 3 tie on the remainder, 3 has the higher
    // priority (7 > 3).
    auto balances = DynamicAllocation{}.allocate(snapshot(agents, Decimal("200.0")));
    CHECK(balances ==
          std::vector<Decimal>{Decimal("109.090909"), Decimal("45.454545"), Decimal("45.454546")});
  }
  SECTION("the mean is not rounded before it is multiplied") {
    // 100 over 3 entries × 1.2 = 40 exactly; rounding the mean to µ first gives 39.999999(6).
    std::vector<AllocationAgent<>> one{agent_with_usage(1, 5, 3, "100.0")};
    CHECK(DynamicAllocation{.base = Decimal(0)}.allocate(snapshot(one, Decimal("1000.0"))) ==
          std::vector<Decimal>{Decimal("40.0")});
  }
  SECTION("settings") {
    auto strategy = DynamicAllocation{.multiplier = Decimal("2.0"), .base = Decimal(10)};
    CHECK(strategy.allocate(snapshot(agents, Decimal("1000.0"))) ==
          std::vector<Decimal>{Decimal("200.0"), Decimal("50.0"), Decimal("10.0")});
    CHECK(strategy.name() == "dynamic");
    CHECK(usage_window_of(strategy) == std::chrono::hours(24));
    CHECK(usage_window_of(DynamicAllocation{.window = std::chrono::minutes(5)}) ==
          std::chrono::minutes(5));
  }
}

TEST_CASE("allocation: dynamic in whole tokens rounds each wish half-even once", "[allocation]") {
  // 7 tokens over 2 entries × 1.2 = 4.2 -> 4; 5 over 2 × 1.5 = 3.75 -> 4; 1 over 4 × 2 = 0.5 -> 0.
  std::vector<AllocationAgent<std::int64_t>> agents{
      {.id = AgentId(1), .priority = 1, .usage_count = 2, .usage_sum = 7}};
  auto at = [&](const char* multiplier) {
    return DynamicAllocation{.multiplier = Decimal(multiplier), .base = Decimal(0)}
        .allocate(snapshot<std::int64_t>(agents, 100))
        .at(0);
  };
  CHECK(at("1.2") == 4);
  agents[0].usage_sum = 5;
  CHECK(at("1.5") == 4);
  agents[0].usage_count = 4;
  agents[0].usage_sum = 1;
  CHECK(at("2.0") == 0);
  CHECK(at("6.0") == 2); // 1.5 -> 2 (half to even)
}

TEST_CASE("allocation: rebalance, normalized shares and the guide's formula", "[allocation]") {
  // Agent 1: priority 9, 3 entries totalling 90 (mean 30); agent 2: priority 5, one entry of 10;
  // agent 3: priority 1, no history. 1000 to distribute.
  std::vector<AllocationAgent<>> agents{agent_with_usage(1, 9, 3, "90.0"),
                                        agent_with_usage(2, 5, 1, "10.0"), agent(3, 1)};
  auto pool = snapshot(agents, Decimal("1000.0"));
  SECTION("normalize: 0.7 × priority share + 0.3 × usage share") {
    // Σp = 15, Σmean = 40 (agent 3 has no usage):
    //   1: 0.7 × 9/15 + 0.3 × 30/40 = 0.42 + 0.225 = 0.645      -> 645.0
    //   2: 0.7 × 5/15 + 0.3 × 10/40 = 0.2333.. + 0.075 = 0.3083.. -> 308.333333 + 1/3 µ
    //   3: 0.7 × 1/15               = 0.04666..                -> 46.666666 + 2/3 µ
    // The µ left goes to the largest remainder, agent 3.
    auto balances = RebalanceAllocation{}.allocate(pool);
    CHECK(balances ==
          std::vector<Decimal>{Decimal("645.0"), Decimal("308.333333"), Decimal("46.666667")});
  }
  SECTION("normalize = false: the guide's 0.7 × priority + 0.3 × mean usage, 1.0 without history") {
    // Weights 6.3 + 9 = 15.3, 3.5 + 3 = 6.5, 0.7 + 0.3 = 1.0; Σ 22.8.
    //   1000 × 15.3 / 22.8 = 671.052631 + 0.578947 µ
    //   1000 ×  6.5 / 22.8 = 285.087719 + 0.298245 µ
    //   1000 ×  1.0 / 22.8 =  43.859649 + 0.122807 µ
    // The µ left goes to agent 1.
    auto balances = RebalanceAllocation{.normalize = false}.allocate(pool);
    CHECK(balances ==
          std::vector<Decimal>{Decimal("671.052632"), Decimal("285.087719"), Decimal("43.859649")});
  }
  SECTION("no usage anywhere: priority alone") {
    std::vector<AllocationAgent<>> quiet{agent(1, 9), agent(2, 5), agent(3, 1)};
    // 1000 by 9:5:1 (Σ 15): 600, 333.333333 r 5/15, 66.666666 r 10/15 -> the µ to agent 3.
    CHECK(RebalanceAllocation{}.allocate(snapshot(quiet, Decimal("1000.0"))) ==
          std::vector<Decimal>{Decimal("600.0"), Decimal("333.333333"), Decimal("66.666667")});
  }
  SECTION("usage alone") {
    auto strategy = RebalanceAllocation{.priority_weight = Decimal(0), .usage_weight = Decimal(1)};
    // 30 : 10 : 0 -> 750, 250, 0.
    CHECK(strategy.allocate(pool) ==
          std::vector<Decimal>{Decimal("750.0"), Decimal("250.0"), Decimal("0.0")});
    CHECK(strategy.name() == "rebalance");
  }
}

TEST_CASE("allocation: rebalance in whole tokens keeps fractional means", "[allocation]") {
  // Means 1.5 and 0.5 tokens (not rounded to 2 and 0 or 1): usage shares 3/4 and 1/4.
  std::vector<AllocationAgent<std::int64_t>> agents{
      {.id = AgentId(1), .priority = 5, .usage_count = 2, .usage_sum = 3},
      {.id = AgentId(2), .priority = 5, .usage_count = 2, .usage_sum = 1}};
  auto usage_only = RebalanceAllocation{.priority_weight = Decimal(0), .usage_weight = Decimal(1)};
  CHECK(usage_only.allocate(snapshot<std::int64_t>(agents, 1000)) ==
        std::vector<std::int64_t>{750, 250});
  // Equal priority shares (1/2 each): 0.7/2 + 0.3 × 3/4 = 0.575 and 0.425.
  CHECK(RebalanceAllocation{}.allocate(snapshot<std::int64_t>(agents, 1000)) ==
        std::vector<std::int64_t>{575, 425});
}

TEST_CASE("allocation: leftover quanta go to the higher priority, then the lower id",
          "[allocation]") {
  // 100 µ over three equal weights: 33 µ each, 1 µ left.
  std::vector<AllocationAgent<>> same{agent(4, 5), agent(7, 5), agent(9, 5)};
  auto balances = PriorityAllocation{}.allocate(snapshot(same, Decimal::from_raw(100)));
  CHECK(raws(balances) == std::vector<std::int64_t>{34, 33, 33});
  // Positions do not matter, ids do.
  std::vector<AllocationAgent<>> reversed{agent(9, 5), agent(7, 5), agent(4, 5)};
  CHECK(raws(PriorityAllocation{}.allocate(snapshot(reversed, Decimal::from_raw(100)))) ==
        std::vector<std::int64_t>{33, 33, 34});
  // Equal usage, so equal weights whatever the priorities: 5 µ is 1 µ each and 2 µ left, for
  // priority 6 (agent 2), then priority 4 (agent 3).
  std::vector<AllocationAgent<>> mixed{agent_with_usage(1, 2, 1, "10.0"),
                                       agent_with_usage(2, 6, 1, "10.0"),
                                       agent_with_usage(3, 4, 1, "10.0")};
  auto usage_only = RebalanceAllocation{.priority_weight = Decimal(0), .usage_weight = Decimal(1)};
  CHECK(raws(usage_only.allocate(snapshot(mixed, Decimal::from_raw(5)))) ==
        std::vector<std::int64_t>{1, 2, 2});
}

TEST_CASE("allocation: the one exact split every strategy uses", "[allocation]") {
  std::vector<AllocationAgent<>> agents{agent(1, 2), agent(2, 7), agent(3, 7)};
  std::vector<std::uint64_t> weights{1, 1, 1}, out(3);
  // 10 µ: 3 each, the µ left to the higher priority, then the lower id.
  CHECK(detail::split_by_weights<Decimal>(10, weights, agents, out) == 10);
  CHECK(out == std::vector<std::uint64_t>{3, 4, 3});
  // Shares are added to what is there.
  CHECK(detail::split_by_weights<Decimal>(2, weights, agents, out) == 2);
  CHECK(out == std::vector<std::uint64_t>{3, 5, 4});
  // Nobody has a claim: nothing is handed out.
  std::vector<std::uint64_t> zero(3, 0), untouched(3, 0);
  CHECK(detail::split_by_weights<Decimal>(10, zero, agents, untouched) == 0);
  CHECK(untouched == std::vector<std::uint64_t>{0, 0, 0});
  // The largest total and weights: products up to 2^128 - 2^65 + 1, no overflow.
  constexpr auto top = std::numeric_limits<std::uint64_t>::max();
  std::vector<std::uint64_t> heavy{top, top, top - 1}, big(3, 0);
  CHECK(detail::split_by_weights<Decimal>(top, heavy, agents, big) == top);
  cpp_int handed = cpp_int(big[0]) + big[1] + big[2];
  CHECK(handed == top);
  CHECK(big[0] >= big[2]);
}

// ---------------------------------------------------------------------------------------------
// Edge cases.

TEMPLATE_TEST_CASE("allocation: empty pools, one agent, zero to distribute", "[allocation]",
                   Decimal, std::int64_t) {
  using A = TestType;
  const A hundred = amount_traits<A>::from_integer(100);
  const A zero = amount_zero<A>();
  std::vector<AllocationAgent<A>> none;
  CHECK(FixedAllocation{}.allocate(snapshot(none, hundred)).empty());
  CHECK(DynamicAllocation{}.allocate(snapshot(none, hundred)).empty());
  CHECK(PriorityAllocation{}.allocate(snapshot(none, hundred)).empty());
  CHECK(RebalanceAllocation{}.allocate(snapshot(none, hundred)).empty());
  CHECK(RebalanceAllocation{.normalize = false}.allocate(snapshot(none, hundred)).empty());

  std::vector<AllocationAgent<A>> one{{.id = AgentId(3), .priority = 2, .remaining = hundred}};
  CHECK(PriorityAllocation{}.allocate(snapshot(one, hundred)) == std::vector<A>{hundred});
  CHECK(RebalanceAllocation{}.allocate(snapshot(one, hundred)) == std::vector<A>{hundred});
  CHECK(RebalanceAllocation{.normalize = false}.allocate(snapshot(one, hundred)) ==
        std::vector<A>{hundred});
  CHECK(DynamicAllocation{}.allocate(snapshot(one, hundred)) ==
        std::vector<A>{amount_traits<A>::from_integer(50)});
  one[0].priority = 9; // critical, minimum 50: then the other 50 too
  CHECK(PriorityAllocation{}.allocate(snapshot(one, hundred)) == std::vector<A>{hundred});

  std::vector<AllocationAgent<A>> three{{.id = AgentId(1), .priority = 9},
                                        {.id = AgentId(2), .priority = 1, .usage_count = 3},
                                        {.id = AgentId(3), .priority = 5}};
  std::vector<A> zeros(3, zero);
  CHECK(DynamicAllocation{}.allocate(snapshot(three, zero)) == zeros);
  CHECK(PriorityAllocation{}.allocate(snapshot(three, zero)) == zeros);
  CHECK(PriorityAllocation{.critical_get_minimum_only = true}.allocate(snapshot(three, zero)) ==
        zeros);
  CHECK(RebalanceAllocation{}.allocate(snapshot(three, zero)) == zeros);
  CHECK(RebalanceAllocation{.normalize = false}.allocate(snapshot(three, zero)) == zeros);
}

TEMPLATE_TEST_CASE("allocation: all-zero usage and all-zero weights", "[allocation]", Decimal,
                   std::int64_t) {
  using A = TestType;
  const A zero = amount_zero<A>();
  // Every agent has history, all of it zero: no usage anywhere.
  std::vector<AllocationAgent<A>> agents{{.id = AgentId(1), .priority = 3, .usage_count = 2},
                                         {.id = AgentId(2), .priority = 1, .usage_count = 5}};
  auto pool = snapshot(agents, amount_traits<A>::from_integer(40));
  auto by_priority =
      std::vector<A>{amount_traits<A>::from_integer(30), amount_traits<A>::from_integer(10)};
  CHECK(RebalanceAllocation{}.allocate(pool) == by_priority);
  auto usage_only = RebalanceAllocation{.priority_weight = Decimal(0), .usage_weight = Decimal(1)};
  CHECK(usage_only.allocate(pool) == by_priority);
  // The guide's formula with usage alone: every weight is 0; equal split instead of nothing.
  auto guide_usage_only = usage_only;
  guide_usage_only.normalize = false;
  CHECK(guide_usage_only.allocate(pool) ==
        std::vector<A>{amount_traits<A>::from_integer(20), amount_traits<A>::from_integer(20)});
  // Dynamic: a zero mean is below the base.
  CHECK(DynamicAllocation{}.allocate(pool) ==
        std::vector<A>{amount_traits<A>::from_integer(20), amount_traits<A>::from_integer(20)});
  CHECK(DynamicAllocation{.base = Decimal(0)}.allocate(pool) == std::vector<A>{zero, zero});
  // Priority with a zero minimum is a plain split by priority.
  CHECK(PriorityAllocation{.critical_minimum = Decimal(0)}.allocate(pool) == by_priority);
}

TEMPLATE_TEST_CASE("allocation: values near the largest amount", "[allocation]", Decimal,
                   std::int64_t) {
  using A = TestType;
  const A max = from_raw<A>(raw_max);
  std::vector<AllocationAgent<A>> agents{
      {.id = AgentId(1), .priority = 10, .usage_count = 1, .usage_sum = max},
      {.id = AgentId(2), .priority = 1, .usage_count = 1, .usage_sum = max},
      {.id = AgentId(3),
       .priority = 7,
       .usage_count = std::numeric_limits<std::uint64_t>::max(),
       .usage_sum = max},
      {.id = AgentId(4), .priority = 8}};
  auto pool = snapshot(agents, max);
  auto check_exact = [&](const std::vector<A>& balances, bool everything) {
    REQUIRE(balances.size() == agents.size());
    cpp_int total = 0;
    for (const auto& b : balances) {
      CHECK(raw(b) >= 0);
      total += raw(b);
    }
    CHECK(total <= raw_max);
    if (everything)
      CHECK(total == raw_max);
  };
  // Wishes of 1000 × max are capped at max, then scaled down to the pool.
  check_exact(DynamicAllocation{.multiplier = Decimal(1000)}.allocate(pool), true);
  check_exact(DynamicAllocation{.multiplier = Decimal::max(), .base = Decimal(0)}.allocate(pool),
              true);
  check_exact(PriorityAllocation{}.allocate(pool), true);
  const Decimal whole_max(raw_max / Decimal::scale); // a minimum std::int64_t can hold too
  check_exact(PriorityAllocation{.critical_minimum = whole_max}.allocate(pool), true);
  check_exact(
      PriorityAllocation{.critical_minimum = whole_max, .critical_get_minimum_only = true}.allocate(
          pool),
      true);
  check_exact(RebalanceAllocation{}.allocate(pool), true);
  check_exact(RebalanceAllocation{.normalize = false}.allocate(pool), true);
  check_exact(RebalanceAllocation{.priority_weight = Decimal::max(),
                                  .usage_weight = Decimal::from_raw(raw_max - 1)}
                  .allocate(pool),
              true);
  check_exact(RebalanceAllocation{.priority_weight = Decimal::max(),
                                  .usage_weight = Decimal::from_raw(1),
                                  .normalize = false}
                  .allocate(pool),
              true);
  // Agents 1 and 2 have the same usage: the usage-only split gives them the same share.
  auto usage_only = RebalanceAllocation{.priority_weight = Decimal(0), .usage_weight = Decimal(1)};
  auto balances = usage_only.allocate(pool);
  check_exact(balances, true);
  CHECK(raw(balances[0]) - raw(balances[1]) <= 1);
}

// ---------------------------------------------------------------------------------------------
// Bad settings and bad snapshots.

TEST_CASE("allocation: bad settings and snapshots are refused with their reason", "[allocation]") {
  std::vector<AllocationAgent<>> agents{agent(1, 5), agent(2, 9)};
  auto pool = snapshot(agents, Decimal("100.0"));
  CHECK_THROWS_AS(DynamicAllocation{.multiplier = Decimal("-1.2")}.allocate(pool), InvalidArgument);
  CHECK_THROWS_WITH(DynamicAllocation{.base = Decimal(-50)}.allocate(pool),
                    Contains("base = -50.0 is negative"));
  CHECK_THROWS_WITH(DynamicAllocation{.window = std::chrono::seconds(-1)}.allocate(pool),
                    Contains("window = -1 s is negative"));
  CHECK_THROWS_WITH(PriorityAllocation{.critical_minimum = Decimal(-1)}.allocate(pool),
                    Contains("critical_minimum = -1.0 is negative"));
  CHECK_THROWS_WITH(
      (RebalanceAllocation{.priority_weight = Decimal(0), .usage_weight = Decimal(0)}.allocate(
          pool)),
      Contains("both zero"));
  CHECK_THROWS_WITH(RebalanceAllocation{.usage_weight = Decimal("-0.3")}.allocate(pool),
                    Contains("usage_weight = -0.3 is negative"));

  auto bad = agents;
  bad[1].priority = 11;
  CHECK_THROWS_AS(PriorityAllocation{}.allocate(snapshot(bad, Decimal("100.0"))), InvalidPriority);
  CHECK_THROWS_WITH(RebalanceAllocation{}.allocate(snapshot(bad, Decimal("100.0"))),
                    Contains("agent-2 has priority 11"));
  bad[1].priority = 0;
  CHECK_THROWS_AS(DynamicAllocation{}.allocate(snapshot(bad, Decimal("100.0"))), InvalidPriority);
  CHECK_THROWS_WITH(PriorityAllocation{}.allocate(snapshot(agents, Decimal("-1.0"))),
                    Contains("negative distributable amount -1.0"));
  bad = agents;
  bad[0].usage_sum = Decimal("-3.0");
  bad[0].usage_count = 1;
  CHECK_THROWS_WITH(DynamicAllocation{}.allocate(snapshot(bad, Decimal("100.0"))),
                    Contains("agent-1 has usage_sum -3.0 over 1 entries"));
  bad[0].usage_sum = Decimal("3.0");
  bad[0].usage_count = 0;
  CHECK_THROWS_AS(RebalanceAllocation{}.allocate(snapshot(bad, Decimal("100.0"))), InvalidArgument);
  // Fixed moves nothing and so checks nothing.
  CHECK(FixedAllocation{}.allocate(snapshot(bad, Decimal("-1.0"))).size() == 2);
}

// ---------------------------------------------------------------------------------------------
// Properties over random pools, each checked against an independent reference written with
// Boost's arbitrary-precision integers and rationals.

namespace {

template <class A>
struct RandomPool {
  std::vector<AllocationAgent<A>> agents;
  A distributable{};
  PoolSnapshot<A> snapshot() const {
    return {.pool = PoolId(1), .distributable = distributable, .agents = agents};
  }
};

// A Decimal setting of up to `max_quanta` quanta of A: micro-units for Decimal, whole tokens
// (as many as a Decimal holds) for std::int64_t.
template <class A>
Decimal random_setting(std::mt19937_64& rng, std::int64_t max_quanta) {
  auto r = static_cast<std::int64_t>(rng() % (static_cast<std::uint64_t>(max_quanta) + 1));
  if constexpr (std::is_same_v<A, std::int64_t>)
    return Decimal(std::min<std::int64_t>(r, raw_max / Decimal::scale));
  else
    return Decimal::from_raw(r);
}

template <class A>
RandomPool<A> random_pool(std::mt19937_64& rng) {
  auto below = [&](std::uint64_t bound) { return bound == 0 ? 0 : rng() % bound; };
  RandomPool<A> pool;
  const std::size_t n = 1 + below(200);
  // Magnitudes from a few quanta to the whole int64 range, so that totals rarely divide evenly
  // and some pools sit at the largest amount.
  static constexpr std::int64_t magnitudes[] = {
      10, 1'000, 1'000'000, 1'000'000'000, 1'000'000'000'000, raw_max};
  const std::int64_t magnitude = magnitudes[below(std::size(magnitudes))];
  const auto cap = static_cast<std::uint64_t>(magnitude / static_cast<std::int64_t>(n + 1));
  const bool same_priority = below(10) == 0;
  const int shared_priority = 1 + static_cast<int>(below(10));
  std::uint64_t id = 0;
  std::int64_t remaining_total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    AllocationAgent<A> a;
    id += 1 + below(3);
    a.id = AgentId(id);
    a.priority = same_priority ? shared_priority : 1 + static_cast<int>(below(10));
    a.used = from_raw<A>(static_cast<std::int64_t>(below(cap + 1)));
    a.reserved = from_raw<A>(static_cast<std::int64_t>(below(cap / 4 + 1)));
    a.remaining = from_raw<A>(static_cast<std::int64_t>(below(cap + 1)));
    remaining_total += raw(a.remaining);
    switch (below(5)) {
    case 0: // no history
      break;
    case 1: // history of zero usage
      a.usage_count = 1 + below(10);
      break;
    case 2: // huge counts
      a.usage_count = 1 + below(std::uint64_t{1} << 40);
      a.usage_sum =
          from_raw<A>(static_cast<std::int64_t>(below(static_cast<std::uint64_t>(raw_max))));
      break;
    default:
      a.usage_count = 1 + below(1000);
      a.usage_sum = from_raw<A>(static_cast<std::int64_t>(
          below(std::min<std::uint64_t>(cap * 3, static_cast<std::uint64_t>(raw_max)) + 1)));
    }
    pool.agents.push_back(a);
  }
  switch (below(20)) {
  case 0: // nothing to distribute: no unallocated budget, every balance spent
    for (auto& agent : pool.agents)
      agent.remaining = amount_zero<A>();
    pool.distributable = amount_zero<A>();
    break;
  case 1: // the largest amount
    pool.distributable = from_raw<A>(raw_max);
    break;
  default:
    pool.distributable = from_raw<A>(remaining_total + static_cast<std::int64_t>(below(cap + 1)));
  }
  return pool;
}

cpp_int div_half_even(const cpp_int& n, const cpp_int& d) {
  cpp_int q = n / d; // n, d >= 0
  cpp_int r = n - q * d;
  if (2 * r > d || (2 * r == d && (q & 1) != 0))
    ++q;
  return q;
}

// floor(total × w_i / W), then one quantum each to the largest remainders, ties to the higher
// priority, then the lower id. Zeros when every weight is zero.
template <class A>
std::vector<cpp_int> reference_split(const cpp_int& total, const std::vector<cpp_int>& weights,
                                     const std::vector<AllocationAgent<A>>& agents) {
  const std::size_t n = weights.size();
  std::vector<cpp_int> out(n, 0);
  cpp_int sum = 0;
  for (const auto& w : weights)
    sum += w;
  if (sum == 0)
    return out;
  std::vector<cpp_int> remainder(n);
  cpp_int handed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = total * weights[i] / sum;
    remainder[i] = total * weights[i] - out[i] * sum;
    handed += out[i];
  }
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (remainder[a] != remainder[b])
      return remainder[a] > remainder[b];
    if (agents[a].priority != agents[b].priority)
      return agents[a].priority > agents[b].priority;
    return agents[a].id < agents[b].id;
  });
  const auto left = static_cast<std::size_t>(total - handed);
  for (std::size_t k = 0; k < left; ++k)
    ++out[order[k]];
  return out;
}

template <class A>
cpp_int setting_in_quanta(Decimal d) {
  cpp_int scaled = cpp_int(d.raw()) * raw(amount_traits<A>::from_integer(1));
  return scaled / Decimal::scale;
}

template <class A>
std::vector<cpp_int> reference(const PriorityAllocation& s, const RandomPool<A>& pool) {
  const auto& agents = pool.agents;
  const cpp_int minimum = setting_in_quanta<A>(s.critical_minimum);
  const cpp_int total = raw(pool.distributable);
  std::vector<cpp_int> weights(agents.size(), 0);
  cpp_int needed = 0;
  for (const auto& a : agents)
    if (a.priority >= s.critical_threshold)
      needed += minimum;
  if (needed > total) {
    for (std::size_t i = 0; i < agents.size(); ++i)
      if (agents[i].priority >= s.critical_threshold)
        weights[i] = agents[i].priority;
    return reference_split(total, weights, agents);
  }
  for (std::size_t i = 0; i < agents.size(); ++i)
    if (!(s.critical_get_minimum_only && agents[i].priority >= s.critical_threshold))
      weights[i] = agents[i].priority;
  auto out = reference_split(total - needed, weights, agents);
  for (std::size_t i = 0; i < agents.size(); ++i)
    if (agents[i].priority >= s.critical_threshold)
      out[i] += minimum;
  return out;
}

template <class A>
std::vector<cpp_int> reference(const DynamicAllocation& s, const RandomPool<A>& pool) {
  const cpp_int base = setting_in_quanta<A>(s.base);
  std::vector<cpp_int> wishes;
  cpp_int wanted = 0;
  for (const auto& a : pool.agents) {
    cpp_int wish = base;
    if (a.usage_count != 0)
      wish = std::max(base, div_half_even(cpp_int(raw(a.usage_sum)) * s.multiplier.raw(),
                                          cpp_int(a.usage_count) * Decimal::scale));
    wish = std::min(wish, cpp_int(raw_max));
    wishes.push_back(wish);
    wanted += wish;
  }
  if (wanted <= raw(pool.distributable))
    return wishes;
  return reference_split(cpp_int(raw(pool.distributable)), wishes, pool.agents);
}

// The rebalance formula's balances × 2^64, computed with 192 fractional bits throughout (so
// within far less than 2^-64 quanta of exact; exact rationals make this test 100 times slower).
template <class A>
std::vector<cpp_int> rebalance_times_2_64(const RebalanceAllocation& s, const RandomPool<A>& pool) {
  constexpr unsigned bits = 192;
  const auto& agents = pool.agents;
  const std::size_t n = agents.size();
  const cpp_int pw = s.priority_weight.raw(), uw = s.usage_weight.raw();
  const cpp_int unit = cpp_int(raw(amount_traits<A>::from_integer(1))) << bits;
  std::vector<cpp_int> mean(n), weight(n);
  cpp_int priorities = 0, means = 0, total_weight = 0;
  for (std::size_t i = 0; i < n; ++i) {
    mean[i] = agents[i].usage_count != 0
                  ? (cpp_int(raw(agents[i].usage_sum)) << bits) / agents[i].usage_count
                  : (s.normalize ? cpp_int(0) : unit);
    priorities += agents[i].priority;
    means += mean[i];
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!s.normalize)
      weight[i] = pw * agents[i].priority * unit + uw * mean[i];
    else if (means == 0 || uw == 0)
      weight[i] = agents[i].priority;
    else // the common factor 1 / (pw + uw) does not change the proportions
      weight[i] = pw * ((cpp_int(agents[i].priority) << bits) / priorities) +
                  uw * ((mean[i] << bits) / means);
    total_weight += weight[i];
  }
  const cpp_int total = cpp_int(raw(pool.distributable)) << 64;
  std::vector<cpp_int> out(n);
  for (std::size_t i = 0; i < n; ++i)
    out[i] = total_weight == 0 ? cpp_int(total / n) : cpp_int(total * weight[i] / total_weight);
  return out;
}

template <class A>
PriorityAllocation random_priority(std::mt19937_64& rng, const RandomPool<A>& pool) {
  // Minimums around each agent's fair share, so that both branches are taken.
  std::int64_t fair = raw(pool.distributable) / static_cast<std::int64_t>(pool.agents.size());
  return {.critical_threshold = 1 + static_cast<int>(rng() % 11),
          .critical_minimum = random_setting<A>(rng, std::min<std::int64_t>(fair, raw_max / 2) *
                                                         (rng() % 2 == 0 ? 1 : 2)),
          .critical_get_minimum_only = rng() % 2 == 0};
}

template <class A>
DynamicAllocation random_dynamic(std::mt19937_64& rng, const RandomPool<A>& pool) {
  std::int64_t fair = raw(pool.distributable) / static_cast<std::int64_t>(pool.agents.size());
  return {.multiplier = Decimal::from_raw(static_cast<std::int64_t>(rng() % 3'000'001)),
          .base = random_setting<A>(rng, fair),
          .window = std::chrono::seconds(rng() % 100'000)};
}

RebalanceAllocation random_rebalance(std::mt19937_64& rng) {
  auto weight = [&] {
    switch (rng() % 4) {
    case 0:
      return Decimal(0);
    case 1:
      return Decimal::from_raw(static_cast<std::int64_t>(rng() % 10'000'000));
    default:
      return Decimal::from_raw(static_cast<std::int64_t>(1 + rng() % 1'000'000));
    }
  };
  RebalanceAllocation s{
      .priority_weight = weight(), .usage_weight = weight(), .normalize = rng() % 2 == 0};
  if (s.priority_weight == Decimal(0) && s.usage_weight == Decimal(0))
    s.usage_weight = Decimal("0.3");
  return s;
}

// What every strategy promises, whatever its formula: one balance per agent, none negative, no
// more than the distributable in total, the same balances when asked twice, and the same balance
// for each agent whatever the agents' order.
template <class S, class A>
std::string broken_promise(const S& strategy, const RandomPool<A>& pool,
                           const std::vector<A>& balances, std::mt19937_64& rng) {
  if (balances.size() != pool.agents.size())
    return "wrong size";
  cpp_int total = 0;
  for (const auto& b : balances) {
    if (raw(b) < 0)
      return "negative balance";
    total += raw(b);
  }
  if (total > raw(pool.distributable))
    return "more than distributable";
  if (strategy.allocate(pool.snapshot()) != balances)
    return "not deterministic";
  RandomPool<A> shuffled = pool;
  std::shuffle(shuffled.agents.begin(), shuffled.agents.end(), rng);
  auto again = strategy.allocate(shuffled.snapshot());
  std::map<std::uint64_t, std::int64_t> by_id;
  for (std::size_t i = 0; i < shuffled.agents.size(); ++i)
    by_id[shuffled.agents[i].id.value()] = raw(again[i]);
  for (std::size_t i = 0; i < pool.agents.size(); ++i)
    if (by_id[pool.agents[i].id.value()] != raw(balances[i]))
      return "depends on the agents' order";
  return "";
}

template <class A>
bool equals(const std::vector<A>& balances, const std::vector<cpp_int>& expected) {
  for (std::size_t i = 0; i < balances.size(); ++i)
    if (cpp_int(raw(balances[i])) != expected[i])
      return false;
  return true;
}

template <class A>
cpp_int sum_raw(const std::vector<A>& balances) {
  cpp_int total = 0;
  for (const auto& b : balances)
    total += raw(b);
  return total;
}

constexpr int random_pools = 10'000;

} // namespace

TEMPLATE_TEST_CASE("allocation: fixed over 10,000 random pools", "[allocation][property]", Decimal,
                   std::int64_t) {
  std::mt19937_64 rng(20240901);
  for (int round = 0; round < random_pools; ++round) {
    auto pool = random_pool<TestType>(rng);
    auto balances = FixedAllocation{}.allocate(pool.snapshot());
    INFO("pool " << round);
    std::string broken = broken_promise(FixedAllocation{}, pool, balances, rng);
    REQUIRE(broken == "");
    for (std::size_t i = 0; i < balances.size(); ++i)
      REQUIRE(balances[i] == pool.agents[i].remaining);
  }
}

TEMPLATE_TEST_CASE("allocation: priority over 10,000 random pools matches the reference",
                   "[allocation][property]", Decimal, std::int64_t) {
  std::mt19937_64 rng(20240902);
  for (int round = 0; round < random_pools; ++round) {
    auto pool = random_pool<TestType>(rng);
    auto strategy = random_priority(rng, pool);
    auto balances = strategy.allocate(pool.snapshot());
    INFO("pool " << round << ": threshold " << strategy.critical_threshold << ", minimum "
                 << strategy.critical_minimum << ", minimum only "
                 << strategy.critical_get_minimum_only);
    REQUIRE(broken_promise(strategy, pool, balances, rng) == "");
    REQUIRE(equals(balances, reference(strategy, pool)));
    // Everything is handed out, except the rest nobody may take in guide mode.
    bool all_critical = std::all_of(pool.agents.begin(), pool.agents.end(), [&](const auto& a) {
      return a.priority >= strategy.critical_threshold;
    });
    if (!(strategy.critical_get_minimum_only && all_critical))
      REQUIRE(sum_raw(balances) == raw(pool.distributable));
  }
}

TEMPLATE_TEST_CASE("allocation: dynamic over 10,000 random pools matches the reference",
                   "[allocation][property]", Decimal, std::int64_t) {
  std::mt19937_64 rng(20240903);
  for (int round = 0; round < random_pools; ++round) {
    auto pool = random_pool<TestType>(rng);
    auto strategy = random_dynamic(rng, pool);
    auto balances = strategy.allocate(pool.snapshot());
    INFO("pool " << round << ": multiplier " << strategy.multiplier << ", base " << strategy.base);
    REQUIRE(broken_promise(strategy, pool, balances, rng) == "");
    auto expected = reference(strategy, pool);
    REQUIRE(equals(balances, expected));
    // Σ = min(Σ wishes, distributable): what it says it distributes, exactly.
    cpp_int wanted = 0;
    for (const auto& a : pool.agents) {
      cpp_int wish = setting_in_quanta<TestType>(strategy.base);
      if (a.usage_count != 0)
        wish = std::max(wish, div_half_even(cpp_int(raw(a.usage_sum)) * strategy.multiplier.raw(),
                                            cpp_int(a.usage_count) * Decimal::scale));
      wanted += std::min(wish, cpp_int(raw_max));
    }
    REQUIRE(sum_raw(balances) == std::min(wanted, cpp_int(raw(pool.distributable))));
  }
}

TEMPLATE_TEST_CASE("allocation: rebalance over 10,000 random pools is within its stated bound",
                   "[allocation][property]", Decimal, std::int64_t) {
  std::mt19937_64 rng(20240904);
  for (int round = 0; round < random_pools; ++round) {
    auto pool = random_pool<TestType>(rng);
    auto strategy = random_rebalance(rng);
    auto balances = strategy.allocate(pool.snapshot());
    INFO("pool " << round << ": priority_weight " << strategy.priority_weight << ", usage_weight "
                 << strategy.usage_weight << ", normalize " << strategy.normalize);
    REQUIRE(broken_promise(strategy, pool, balances, rng) == "");
    REQUIRE(sum_raw(balances) == raw(pool.distributable));
    // The documented bound: within 1 + 3 × n × D / 2^62 quanta of the exact formula (in units
    // of 2^-64 quanta, plus a little for the reference's own rounding). The worst case seen
    // here is about a third of it.
    auto exact = rebalance_times_2_64(strategy, pool);
    const cpp_int bound =
        (cpp_int(1) << 64) + cpp_int(pool.agents.size()) * raw(pool.distributable) * 12 + (1 << 20);
    for (std::size_t i = 0; i < balances.size(); ++i) {
      const cpp_int scaled = cpp_int(raw(balances[i])) << 64;
      const cpp_int error =
          scaled > exact[i] ? cpp_int(scaled - exact[i]) : cpp_int(exact[i] - scaled);
      INFO("agent " << i << ": " << raw(balances[i]) << " vs exact " << (exact[i] >> 64) << " + "
                    << (exact[i] & ((cpp_int(1) << 64) - 1)) << " / 2^64");
      REQUIRE(error <= bound);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The concept, the usage window and the check the coordinator runs on what a strategy returns.

namespace user_strategies {

// --- docs/allocation.md, "Writing your own strategy" ---
// Every agent gets the same share of the pool; the micro-units that do not divide evenly go
// to the lowest ids (the snapshot lists agents in ascending id order).
struct EqualSplit {
  std::string_view name() const { return "equal"; }

  std::vector<Decimal> allocate(const PoolSnapshot<Decimal>& pool) const {
    std::vector<Decimal> out;
    auto n = static_cast<std::int64_t>(pool.agents.size());
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t extra = i < pool.distributable.raw() % n ? 1 : 0;
      out.push_back(Decimal::from_raw(pool.distributable.raw() / n + extra));
    }
    return out;
  }
};
static_assert(AllocationStrategy<EqualSplit>);
// --- end of the docs example ---

struct NoName {
  std::vector<Decimal> allocate(const PoolSnapshot<Decimal>&) const { return {}; }
};
struct StringName {
  std::string name() const { return "owned"; }
  std::vector<Decimal> allocate(const PoolSnapshot<Decimal>&) const { return {}; }
};
struct WrongResult {
  std::string_view name() const { return "wrong"; }
  std::vector<double> allocate(const PoolSnapshot<Decimal>&) const { return {}; }
};
struct Mutating {
  std::string_view name() const { return "mutating"; }
  std::vector<Decimal> allocate(const PoolSnapshot<Decimal>&) { return {}; }
};
struct NotCopyable {
  NotCopyable() = default;
  NotCopyable(const NotCopyable&) = delete;
  std::string_view name() const { return "pinned"; }
  std::vector<Decimal> allocate(const PoolSnapshot<Decimal>&) const { return {}; }
};
struct WindowInSeconds : EqualSplit {
  int usage_window() const { return 60; }
};
struct HourWindow : EqualSplit {
  std::chrono::hours usage_window() const { return std::chrono::hours(1); }
};
struct HugeWindow : EqualSplit {
  std::chrono::hours usage_window() const { return std::chrono::hours::max(); }
};
struct NegativeWindow : EqualSplit {
  std::chrono::duration<double> usage_window() const { return std::chrono::duration<double>(-1); }
};

} // namespace user_strategies

TEST_CASE("allocation: which types are strategies", "[allocation][concept]") {
  using namespace user_strategies;
  STATIC_REQUIRE(AllocationStrategy<FixedAllocation>);
  STATIC_REQUIRE(AllocationStrategy<FixedAllocation, std::int64_t>);
  STATIC_REQUIRE(AllocationStrategy<FixedAllocation, double>);
  STATIC_REQUIRE(AllocationStrategy<DynamicAllocation>);
  STATIC_REQUIRE(AllocationStrategy<DynamicAllocation, std::int64_t>);
  STATIC_REQUIRE(AllocationStrategy<PriorityAllocation, std::int64_t>);
  STATIC_REQUIRE(AllocationStrategy<RebalanceAllocation, std::int64_t>);
  // The built-in splits need an exact amount made of int64 quanta.
  STATIC_REQUIRE_FALSE(AllocationStrategy<DynamicAllocation, double>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<PriorityAllocation, double>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<RebalanceAllocation, double>);
  STATIC_REQUIRE(SplittableAmount<Decimal>);
  STATIC_REQUIRE(SplittableAmount<std::int64_t>);
  STATIC_REQUIRE_FALSE(SplittableAmount<double>);
  // A strategy for Decimal is not one for tokens.
  STATIC_REQUIRE(AllocationStrategy<EqualSplit>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<EqualSplit, std::int64_t>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<int>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<NoName>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<StringName>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<WrongResult>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<Mutating>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<NotCopyable>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<WindowInSeconds>);
  STATIC_REQUIRE(AllocationStrategy<HourWindow>);
  STATIC_REQUIRE_FALSE(AllocationStrategy<FixedAllocation, std::string>);
}

TEST_CASE("allocation: a user-written equal split", "[allocation][concept]") {
  std::vector<AllocationAgent<>> agents{agent(2, 9), agent(5, 1), agent(6, 4)};
  auto pool = snapshot(agents, Decimal("100.0"));
  auto balances = user_strategies::EqualSplit{}.allocate(pool);
  CHECK(balances ==
        std::vector<Decimal>{Decimal("33.333334"), Decimal("33.333333"), Decimal("33.333333")});
  CHECK_NOTHROW(validate_allocation(pool, balances, "equal"));
  CHECK(user_strategies::EqualSplit{}
            .allocate(snapshot(std::vector<AllocationAgent<>>{}, Decimal("100.0")))
            .empty());
}

TEST_CASE("allocation: usage windows", "[allocation][concept]") {
  using namespace std::chrono;
  CHECK(usage_window_of(DynamicAllocation{}) == hours(24));
  CHECK(usage_window_of(RebalanceAllocation{.window = minutes(90)}) == minutes(90));
  CHECK(usage_window_of(PriorityAllocation{}) == nanoseconds::zero());
  CHECK(usage_window_of(FixedAllocation{}) == nanoseconds::zero());
  CHECK(usage_window_of(user_strategies::HourWindow{}) == hours(1));
  // Longer than nanoseconds can count: every entry is inside it.
  CHECK(usage_window_of(user_strategies::HugeWindow{}) == nanoseconds::zero());
  CHECK_THROWS_WITH(usage_window_of(user_strategies::NegativeWindow{}),
                    Contains("\"equal\" asks for a negative usage window"));
}

TEST_CASE("allocation: validate_allocation checks what a strategy returned", "[allocation]") {
  std::vector<AllocationAgent<>> agents{agent(1, 9), agent(2, 1)};
  auto pool = snapshot(agents, Decimal("100.0"));
  CHECK_NOTHROW(validate_allocation(pool, {Decimal("60.0"), Decimal("40.0")}, "mine"));
  CHECK_NOTHROW(validate_allocation(pool, {Decimal("10.0"), Decimal("0.0")}, "mine"));
  CHECK_THROWS_WITH(validate_allocation(pool, {Decimal("60.0")}, "mine"),
                    Contains("\"mine\" returned 1 balances for 2 agents"));
  CHECK_THROWS_WITH((validate_allocation(pool, {Decimal("60.0"), Decimal("-1.0")}, "mine")),
                    Contains("\"mine\" gave agent-2 the balance -1.0"));
  CHECK_THROWS_WITH((validate_allocation(pool, {Decimal("60.0"), Decimal("40.000001")}, "mine")),
                    Contains("handed out 100.000001, more than pool-1 can distribute (100.0)"));
  CHECK_THROWS_AS((validate_allocation(pool, {Decimal::max(), Decimal::max()}, "mine")),
                  InvalidArgument);
  // Inexact amounts: only the per-agent checks.
  std::vector<AllocationAgent<double>> loose{{.id = AgentId(1)}};
  PoolSnapshot<double> loose_pool{.pool = PoolId(1), .distributable = 0.3, .agents = loose};
  CHECK_NOTHROW(validate_allocation(loose_pool, {0.1 + 0.2}, "fixed"));
  CHECK_THROWS_AS(
      validate_allocation(loose_pool, {std::numeric_limits<double>::quiet_NaN()}, "fixed"),
      InvalidArgument);
}

TEST_CASE("allocation: strategies are values", "[allocation][concept]") {
  CHECK(PriorityAllocation{} == PriorityAllocation{.critical_threshold = 8});
  CHECK(PriorityAllocation{} != PriorityAllocation{.critical_get_minimum_only = true});
  CHECK(DynamicAllocation{} == DynamicAllocation{.multiplier = Decimal("1.2")});
  CHECK(RebalanceAllocation{} != RebalanceAllocation{.normalize = false});
  CHECK(FixedAllocation{} == FixedAllocation{});
}
