// Reviews without threads: the guide's three findings exactly at and just across their lines
// (90 % underused, 10 % nearly depleted, 20 % pool low), exactness where rounding would decide,
// zero allocations, reservations, implicit pools, order, validation, and the formatted text.
// PeriodicReview's own thread is tested in review_concurrency_test.cpp.
// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <safeguards/periodic_review.hpp>
#include <safeguards/review.hpp>
#include <stdexcept>
#include <string>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

using Coordinator = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using Findings = std::vector<ReviewFinding>;

Decimal d(const char* text) {
  return Decimal(text);
}

// One agent with its own (implicit) pool, having consumed `spent` of `budget`.
Findings review_one_agent(const char* budget, const char* spent, ReviewThresholds t = {}) {
  Coordinator coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = d(budget)});
  if (d(spent) > Decimal(0))
    REQUIRE(coord.try_consume(a, d(spent)).ok());
  return review(coord, t);
}

template <class Amount>
std::optional<ReviewFindingKind>
only_kind(const std::vector<BasicReviewFinding<Amount>>& findings) {
  REQUIRE(findings.size() <= 1);
  if (findings.empty())
    return std::nullopt;
  return findings.front().kind;
}

} // namespace

TEST_CASE("review: agents exactly at and just across the guide's 90 % and 10 % lines") {
  using K = ReviewFindingKind;
  // spent of 100.0 -> remaining; the guide compares strictly: remaining > 90 %, remaining < 10 %.
  auto [spent, expected] = GENERATE(table<const char*, std::optional<K>>({
      {"0", K::Underused},              // 100 % left
      {"9.999999", K::Underused},       // 90.000001 left: just above 90 %
      {"10.0", std::nullopt},           // exactly 90 % left: not underused
      {"10.000001", std::nullopt},      // just below 90 %
      {"50.0", std::nullopt},           // in between
      {"89.999999", std::nullopt},      // 10.000001 left: just above 10 %
      {"90.0", std::nullopt},           // exactly 10 % left: not nearly depleted
      {"90.000001", K::NearlyDepleted}, // 9.999999 left: just below 10 %
      {"100.0", K::NearlyDepleted},     // nothing left
  }));
  CAPTURE(spent);
  CHECK(only_kind(review_one_agent("100.0", spent)) == expected);
}

TEST_CASE("review: a pool exactly at and just across the guide's 20 % line") {
  Coordinator coord;
  PoolId p = coord.create_pool({.name = "shared", .initial_budget = d("100.0"), .priority = 7});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = d("40.0"), .pool = p});
  AgentId b = coord.create_agent({.name = "b", .initial_budget = d("10.0"), .pool = p});
  // Agent findings off: only the pool's line is under test here.
  const ReviewThresholds pools_only{.underused = 100, .nearly_depleted = 0};

  // The pool's remaining is its unallocated 50 plus what a and b have left.
  REQUIRE(coord.try_consume(a, d("40.0")).ok());
  REQUIRE(coord.try_consume(b, d("9.999999")).ok());
  CHECK(coord.pool_metrics(p).remaining_budget == d("50.000001"));
  CHECK(review(coord, pools_only).empty());

  // Unallocated money counts as remaining whether or not an agent holds it.
  AgentId c = coord.create_agent({.name = "c", .initial_budget = d("50.0"), .pool = p});
  CHECK(review(coord, pools_only).empty());
  REQUIRE(coord.try_consume(c, d("30.0")).ok());
  CHECK(coord.pool_metrics(p).remaining_budget == d("20.000001")); // just above 20 %
  CHECK(review(coord, pools_only).empty());

  REQUIRE(coord.try_consume(b, d("0.000001")).ok());
  CHECK(coord.pool_metrics(p).remaining_budget == d("20.0")); // exactly 20 %: not low
  CHECK(review(coord, pools_only).empty());

  REQUIRE(coord.try_consume(c, d("0.000001")).ok()); // 19.999999: just below
  Findings findings = review(coord, pools_only);
  REQUIRE(findings.size() == 1);
  const ReviewFinding& f = findings.front();
  CHECK(f.kind == ReviewFindingKind::PoolLow);
  CHECK(f.severity == AlertSeverity::Medium);
  CHECK_FALSE(f.is_agent_finding());
  CHECK(f.pool == p);
  CHECK(f.pool_name == "shared");
  CHECK_FALSE(f.agent);
  CHECK(f.agent_name.empty());
  CHECK(f.initial_budget == d("100.0"));
  CHECK(f.used_budget == d("80.000001"));
  CHECK(f.reserved_budget == Decimal(0));
  CHECK(f.remaining_budget == d("19.999999"));
  CHECK(f.threshold == Percent(20));
  CHECK(f.action == "rebalance pool \"shared\"");
  CHECK(fmt::format("{}", f) == "pool \"shared\" (pool-1) low: 19.999999 of 100.0 remaining, "
                                "below 20%; suggested: rebalance pool \"shared\"");
}

TEST_CASE("review: an agent finding carries the numbers behind it and the guide's advice") {
  Coordinator coord;
  PoolId p = coord.create_pool({.name = "research", .initial_budget = d("1000.0")});
  AgentId idle = coord.create_agent({.name = "idle", .initial_budget = d("200.0"), .pool = p});
  AgentId busy = coord.create_agent({.name = "busy", .initial_budget = d("200.0"), .pool = p});
  REQUIRE(coord.try_consume(idle, d("1.5")).ok());
  REQUIRE(coord.try_consume(busy, d("150.0")).ok());
  // Reserved money is not remaining: 15 of 200 left is 7.5 %.
  auto held = coord.reserve(busy, d("35.0"));

  Findings findings = review(coord);
  REQUIRE(findings.size() == 2);

  const ReviewFinding& u = findings[0];
  CHECK(u.kind == ReviewFindingKind::Underused);
  CHECK(u.severity == AlertSeverity::Info);
  CHECK(u.is_agent_finding());
  CHECK(u.agent == idle);
  CHECK(u.agent_name == "idle");
  CHECK(u.pool == p);
  CHECK(u.pool_name == "research");
  CHECK(u.initial_budget == d("200.0"));
  CHECK(u.used_budget == d("1.5"));
  CHECK(u.reserved_budget == Decimal(0));
  CHECK(u.remaining_budget == d("198.5"));
  CHECK(u.threshold == Percent(90));
  CHECK(u.action == "reduce the budget of agent \"idle\"");
  CHECK(u.remaining_percent() == Approx(99.25));
  CHECK(fmt::format("{}", u) == "agent \"idle\" (agent-1) underused: 198.5 of 200.0 remaining, "
                                "above 90%; suggested: reduce the budget of agent \"idle\"");

  const ReviewFinding& n = findings[1];
  CHECK(n.kind == ReviewFindingKind::NearlyDepleted);
  CHECK(n.severity == AlertSeverity::Medium);
  CHECK(n.agent == busy);
  CHECK(n.agent_name == "busy");
  CHECK(n.pool == p);
  CHECK(n.used_budget == d("150.0"));
  CHECK(n.reserved_budget == d("35.0"));
  CHECK(n.remaining_budget == d("15.0"));
  CHECK(n.threshold == Percent(10));
  CHECK(n.action == "increase the budget of agent \"busy\"");
  CHECK(fmt::format("{}", n) == "agent \"busy\" (agent-2) nearly depleted: 15.0 of 200.0 "
                                "remaining, below 10%; suggested: increase the budget of agent "
                                "\"busy\"");
  // The pool: 600 unallocated + 198.5 + 15 of 1000 is far from low.
  CHECK(fmt::format("{}", ReviewFindingKind::PoolLow) == "pool_low");
  CHECK(fmt::format("{:>16}", ReviewFindingKind::Underused) == "       underused");
  CHECK(to_string(ReviewFindingKind::NearlyDepleted) == "nearly_depleted");

  // Committing part of the hold changes nothing about what is left to spend.
  CHECK(held.commit(d("35.0")).charged == d("35.0"));
  findings = review(coord);
  REQUIRE(findings.size() == 2);
  CHECK(findings[1].used_budget == d("185.0"));
  CHECK(findings[1].reserved_budget == Decimal(0));
  CHECK(findings[1].remaining_budget == d("15.0"));
}

TEST_CASE("review: nothing allocated is neither underused nor depleted, and nothing divides") {
  Coordinator coord;
  PoolId empty = coord.create_pool({.name = "empty", .initial_budget = Decimal(0)});
  coord.create_agent({.name = "zero", .initial_budget = Decimal(0), .pool = empty});
  coord.create_agent({.name = "zero-own", .initial_budget = Decimal(0)});
  ReviewThresholds everything{.include_implicit_pools = true};
  CHECK(review(coord, everything).empty());

  // Even with lines at the extremes.
  for (auto [u, n, p] : {std::tuple{0, 0, 100}, std::tuple{100, 100, 100}, std::tuple{100, 0, 0}})
    CHECK(review(
              coord,
              {.underused = u, .nearly_depleted = n, .pool_low = p, .include_implicit_pools = true})
              .empty());

  // A finding built by hand with nothing allocated has no share to show.
  ReviewFinding f;
  CHECK(f.remaining_percent() == 0);
}

TEST_CASE("review: the decision is exact where rounding the line would get it wrong") {
  SECTION("micro-amounts: 90 % of 0.000011 is 0.0000099, which Decimal would round to 0.00001") {
    // 0.000010 of 0.000011 left is 90.9 %: underused.
    CHECK(only_kind(review_one_agent("0.000011", "0.000001")) == ReviewFindingKind::Underused);
    // 0.000009 of 0.000010 left is exactly 90 %: not underused.
    CHECK(only_kind(review_one_agent("0.00001", "0.000001")) == std::nullopt);
    // 0.000001 of 0.000001 left is 100 %, though 90 % of it rounds up to all of it.
    CHECK(only_kind(review_one_agent("0.000001", "0")) == ReviewFindingKind::Underused);
    // 0.000001 of 0.000011 left is 9.09 %: nearly depleted, though 10 % rounds to 0.000001.
    CHECK(only_kind(review_one_agent("0.000011", "0.00001")) == ReviewFindingKind::NearlyDepleted);
  }
  SECTION("the largest budgets: exact where a double is not") {
    BasicBudgetCoordinator<std::int64_t> coord;
    // 2^55 - 1: the most an in-memory account holds, beyond a double's 53-bit mantissa.
    const std::int64_t max = *InMemoryLedger<std::int64_t>::max_balance();
    AgentId a = coord.create_agent({.name = "huge", .initial_budget = max});
    auto findings = review(coord);
    REQUIRE(findings.size() == 1);
    CHECK(findings[0].kind == ReviewFindingKind::Underused);
    CHECK(findings[0].remaining_budget == max);
    CHECK(findings[0].remaining_percent() == Approx(100.0));
    // max / 10 spent leaves just over 90 %; one more token leaves just under.
    REQUIRE(coord.try_consume(a, max / 10).ok());
    CHECK(only_kind(review(coord)) == ReviewFindingKind::Underused);
    REQUIRE(coord.try_consume(a, std::int64_t{1}).ok());
    CHECK(review(coord).empty());
    // Leave max / 10 = 3602879701896396, 0.7 below 10 % of max (...967): nearly depleted,
    // which no double comparison could tell.
    REQUIRE(coord.try_consume(a, max - max / 10 - 1 - max / 10).ok());
    CHECK(coord.agent_metrics(a).remaining_budget == max / 10);
    CHECK(only_kind(review(coord)) == ReviewFindingKind::NearlyDepleted);
  }
  SECTION("whole tokens: 9 of 10 left is exactly 90 %, 1 of 10 exactly 10 %") {
    BasicBudgetCoordinator<std::int64_t> coord;
    AgentId a = coord.create_agent({.name = "tokens", .initial_budget = std::int64_t{10}});
    REQUIRE(coord.try_consume(a, std::int64_t{1}).ok());
    CHECK(review(coord).empty());
    REQUIRE(coord.try_consume(a, std::int64_t{8}).ok());
    CHECK(review(coord).empty());
    REQUIRE(coord.try_consume(a, std::int64_t{1}).ok());
    CHECK(only_kind(review(coord)) == ReviewFindingKind::NearlyDepleted);
  }
  SECTION("double amounts (inexact by design) follow the same lines") {
    BasicBudgetCoordinator<double> coord;
    AgentId a = coord.create_agent({.name = "float", .initial_budget = 100.0});
    CHECK(only_kind(review(coord)) == ReviewFindingKind::Underused);
    REQUIRE(coord.try_consume(a, 50.0).ok());
    CHECK(review(coord).empty());
    REQUIRE(coord.try_consume(a, 45.0).ok());
    CHECK(only_kind(review(coord)) == ReviewFindingKind::NearlyDepleted);
    // A budget so large that budget * 90 is infinite is still compared.
    BasicBudgetCoordinator<double> big;
    big.create_agent({.name = "big", .initial_budget = std::numeric_limits<double>::max()});
    CHECK(only_kind(review(big)) == ReviewFindingKind::Underused);
  }
}

TEST_CASE("review: implicit pools are left out unless asked for") {
  Coordinator coord;
  AgentId solo = coord.create_agent({.name = "solo", .initial_budget = d("100.0")});
  REQUIRE(coord.try_consume(solo, d("85.0")).ok()); // 15 % left: low for a pool, not an agent
  CHECK(review(coord).empty());

  Findings findings = review(coord, {.include_implicit_pools = true});
  REQUIRE(findings.size() == 1);
  CHECK(findings[0].kind == ReviewFindingKind::PoolLow);
  CHECK(findings[0].pool == coord.agent_pool(solo));
  CHECK(findings[0].pool_name == "agent:solo");
  CHECK(findings[0].remaining_budget == d("15.0"));

  // The agent's own finding names its implicit pool.
  REQUIRE(coord.try_consume(solo, d("10.0")).ok());
  findings = review(coord);
  REQUIRE(findings.size() == 1);
  CHECK(findings[0].kind == ReviewFindingKind::NearlyDepleted);
  CHECK(findings[0].pool_name == "agent:solo");
}

TEST_CASE("review: agents oldest first, then pools highest priority first") {
  Coordinator coord;
  PoolId low = coord.create_pool({.name = "low", .initial_budget = d("10.0"), .priority = 2});
  PoolId high = coord.create_pool({.name = "high", .initial_budget = d("10.0"), .priority = 9});
  AgentId first = coord.create_agent({.name = "first", .initial_budget = d("10.0"), .pool = low});
  AgentId second =
      coord.create_agent({.name = "second", .initial_budget = d("10.0"), .pool = high});
  AgentId third = coord.create_agent({.name = "third", .initial_budget = d("1.0")});
  REQUIRE(coord.try_consume(first, d("10.0")).ok());
  REQUIRE(coord.try_consume(second, d("9.5")).ok());

  Findings findings = review(coord);
  std::vector<std::string> seen;
  for (const auto& f : findings)
    seen.push_back(fmt::format("{} {}", f.kind, f.is_agent_finding() ? f.agent_name : f.pool_name));
  CHECK(seen == std::vector<std::string>{"nearly_depleted first", "nearly_depleted second",
                                         "underused third", "pool_low high", "pool_low low"});
  CHECK(findings[2].agent == third);
}

TEST_CASE("review: thresholds are validated") {
  Coordinator coord;
  coord.create_agent({.name = "a", .initial_budget = d("1.0")});
  CHECK_THROWS_AS(ReviewThresholds{.underused = 101}, InvalidArgument);
  CHECK_THROWS_AS(ReviewThresholds{.pool_low = -1}, InvalidArgument);
  // An agent cannot be both underused and nearly depleted.
  CHECK_THROWS_WITH(review(coord, {.underused = 40, .nearly_depleted = 50}),
                    "safeguards: review thresholds overlap: nearly_depleted 50% is above "
                    "underused 40%, so an agent could be both at once");
  // Equal lines cannot both be crossed (both comparisons are strict).
  CHECK(review(coord, {.underused = 50, .nearly_depleted = 50}).size() == 1);
  // Custom lines move the decision: 100 % left is not above 100 %.
  CHECK(review(coord, {.underused = 100}).empty());
}

TEST_CASE("PeriodicReview: bad arguments are refused before any thread starts") {
  Coordinator coord;
  auto ignore = [](const Findings&) {};
  CHECK_THROWS_WITH(BasicPeriodicReview(coord, 0ns, ignore),
                    "safeguards: a PeriodicReview interval must be positive, got 0 clock ticks");
  CHECK_THROWS_AS(BasicPeriodicReview(coord, -1h, ignore), InvalidArgument);
  CHECK_THROWS_WITH(BasicPeriodicReview(coord, 1h, std::function<void(const Findings&)>{}),
                    "safeguards: a PeriodicReview needs a callback, got an empty one");
  void (*no_function)(const Findings&) = nullptr;
  CHECK_THROWS_AS(BasicPeriodicReview(coord, 1h, no_function), InvalidArgument);
  CHECK_THROWS_AS(BasicPeriodicReview(coord, 1h, ignore, {.underused = 1, .nearly_depleted = 2}),
                  InvalidArgument);
  using R = BasicPeriodicReview<Coordinator>;
  static_assert(std::is_same_v<R::duration, std::chrono::nanoseconds>);
  static_assert(!std::is_copy_constructible_v<R>);
  static_assert(std::is_same_v<PeriodicReview::Finding, ReviewFinding>);
}

TEST_CASE("coord.review() is review(coord)") {
  BudgetCoordinator coord;
  const AgentId idle = coord.create_agent({.name = "idle", .initial_budget = Decimal(100)});
  const AgentId busy = coord.create_agent({.name = "busy", .initial_budget = Decimal(100)});
  coord.consume(busy, Decimal(95));
  const auto findings = coord.review();
  CHECK(findings == review(coord));
  REQUIRE(findings.size() == 2);
  CHECK(findings[0].agent == idle);
  CHECK(findings[0].kind == ReviewFindingKind::Underused);
  CHECK(findings[1].agent == busy);
  CHECK(findings[1].kind == ReviewFindingKind::NearlyDepleted);
  CHECK(coord.review({.underused = 100, .nearly_depleted = 0}).empty());
}
