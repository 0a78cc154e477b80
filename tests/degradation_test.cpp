// Graceful degradation: the service-level table (validation, exact thresholds at and just below
// each line, zero allocations), and GracefulDegradation on a coordinator (one notification per
// crossing and none otherwise, in order; every kind of balance change moves levels; per-agent
// tables; re-entrant, throwing and unsubscribing subscribers; destruction).
// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <safeguards/degradation.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace safeguards;

namespace {

using Coordinator = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using Degradation = BasicGracefulDegradation<Coordinator>;

Decimal d(const char* text) {
  return Decimal(text);
}

// Every notification a degradation delivers while the log lives.
struct ChangeLog {
  std::vector<ServiceLevelChanged> seen;
  Subscription handle;

  explicit ChangeLog(Degradation& degradation)
      : handle(degradation.subscribe([this](const ServiceLevelChanged& c) { seen.push_back(c); })) {
  }
  ChangeLog(const ChangeLog&) = delete;
  ChangeLog& operator=(const ChangeLog&) = delete;

  std::vector<std::pair<std::string, std::string>> moves() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& c : seen)
      out.emplace_back(c.from, c.to);
    return out;
  }
};

using Moves = std::vector<std::pair<std::string, std::string>>;

struct Harness {
  ManualClock clock;
  Coordinator coord{CoordinatorOptions{}, FixedAllocation{}, clock};

  AgentId agent(std::string name, Decimal budget, std::optional<PoolId> pool = std::nullopt,
                int priority = 5) {
    return coord.create_agent(
        {.name = std::move(name), .initial_budget = budget, .priority = priority, .pool = pool});
  }
};

// The usage reset periods are built on (coordinator.hpp's `reset_usage`), when this coordinator
// has it; false when it does not.
template <class C>
bool reset_usage(C& coord, AgentId agent, std::string reason) {
  if constexpr (requires { coord.reset_usage(agent, std::move(reason)); }) {
    (void)coord.reset_usage(agent, std::move(reason));
    return true;
  } else {
    return false;
  }
}

ServiceLevels three_levels() {
  return ServiceLevels({{"large_model", 40, {"gpt-4o"}},
                        {"small_model", 10, {"gpt-4o-mini"}},
                        {"cached_only", 0, {"cache"}}});
}

} // namespace

// ---- the table ---------------------------------------------------------------------------------

TEST_CASE("guide_default is the guide's four levels with their features", "[degradation]") {
  const auto table = ServiceLevels::guide_default();
  const auto& l = table.levels();
  REQUIRE(l.size() == 4);
  CHECK(l[0] == ServiceLevel{"full", 50, {"high_quality", "all_capabilities"}});
  CHECK(l[1] == ServiceLevel{"standard", 20, {"medium_quality", "core_capabilities"}});
  CHECK(l[2] == ServiceLevel{"minimal", 5, {"low_quality", "basic_capabilities"}});
  CHECK(l[3] == ServiceLevel{"emergency", 0, {"text_only", "critical_only"}});
  CHECK(table.lowest().name == "emergency");
  CHECK(l[0].has("high_quality"));
  CHECK_FALSE(l[0].has("text_only"));
  REQUIRE(table.find("minimal") != nullptr);
  CHECK(table.find("minimal")->min_remaining == Percent(5));
  CHECK(table.find("nope") == nullptr);
}

TEST_CASE("index_for: exactly at each line is that level, one quantum below is the next",
          "[degradation]") {
  const auto table = ServiceLevels::guide_default();
  const Decimal allocated = d("100");
  struct Row {
    const char* remaining;
    std::size_t level;
  };
  const Row row =
      GENERATE(Row{"100", 0}, Row{"50", 0}, Row{"49.999999", 1}, Row{"20", 1}, Row{"19.999999", 2},
               Row{"5", 2}, Row{"4.999999", 3}, Row{"0.000001", 3}, Row{"0", 3});
  CAPTURE(row.remaining);
  CHECK(table.index_for(d(row.remaining), allocated) == row.level);
}

TEST_CASE("index_for is exact where a share would need more decimals than Decimal has",
          "[degradation]") {
  const auto table = ServiceLevels::guide_default();
  // 50 % of 0.000001 is 0.0000005: no Decimal is that line, so rounding it either way would be
  // wrong for one of these two.
  CHECK(table.index_for(d("0.000001"), d("0.000001")) == 0);
  CHECK(table.index_for(d("0"), d("0.000001")) == 3);
  // 1/3 of an allocation: above 20 %, below 50 %.
  CHECK(table.index_for(d("0.000001"), d("0.000003")) == 1);
  // 7 of 140 is exactly 5 %; 6.999999 is not.
  CHECK(table.index_for(d("7"), d("140")) == 2);
  CHECK(table.index_for(d("6.999999"), d("140")) == 3);
}

TEST_CASE("index_for: zero, negative and extreme allocations never divide or overflow",
          "[degradation]") {
  const auto table = ServiceLevels::guide_default();
  CHECK(table.index_for(d("0"), d("0")) == 3);
  CHECK(table.index_for(d("10"), d("0")) == 3);  // nothing to take a share of
  CHECK(table.index_for(d("10"), d("-5")) == 3); // nonsense in, lowest out
  CHECK(table.index_for(d("-1"), d("100")) == 3);
  CHECK(table.index_for(d("150"), d("100")) == 0); // more left than allocated: the best level
  CHECK(table.index_for(Decimal::max(), Decimal::max()) == 0);
  const Decimal half_max = Decimal::from_raw(std::numeric_limits<std::int64_t>::max() / 2);
  CHECK(table.index_for(half_max, Decimal::max()) == 1); // just under 50 %
  CHECK(table.index_for(Decimal::epsilon(), Decimal::max()) == 3);
  CHECK(table.level_for(d("30"), d("100")).name == "standard");
}

TEST_CASE("index_for with whole-token amounts", "[degradation]") {
  const auto table = ServiceLevels::guide_default();
  CHECK(table.index_for<std::int64_t>(50, 100) == 0);
  CHECK(table.index_for<std::int64_t>(49, 100) == 1);
  CHECK(table.index_for<std::int64_t>(1, 20) == 2); // exactly 5 %
  CHECK(table.index_for<std::int64_t>(0, 20) == 3);
  CHECK(table.index_for<std::int64_t>(0, 0) == 3);
  const auto big = std::numeric_limits<std::int64_t>::max();
  CHECK(table.index_for<std::int64_t>(big, big) == 0);
}

TEST_CASE("a one-level table puts every balance at that level", "[degradation]") {
  const ServiceLevels only({{"only", 0, {}}});
  CHECK(only.index_for(d("0"), d("0")) == 0);
  CHECK(only.index_for(d("100"), d("100")) == 0);
}

TEST_CASE("ServiceLevels refuses tables that do not give every balance one level",
          "[degradation]") {
  auto message_of = [](std::vector<ServiceLevel> levels) -> std::string {
    try {
      ServiceLevels table(std::move(levels));
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "accepted";
  };
  SECTION("empty") {
    CHECK_THAT(message_of({}), Catch::Contains("at least one level"));
  }
  SECTION("not ending at 0 %") {
    auto m = message_of({{"full", 50, {}}, {"low", 5, {}}});
    CHECK_THAT(m, Catch::StartsWith("safeguards: ") && Catch::Contains("\"low\" starts at 5 %"));
  }
  SECTION("equal minimums") {
    auto m = message_of({{"a", 50, {}}, {"b", 50, {}}, {"c", 0, {}}});
    CHECK_THAT(m, Catch::Contains("strictly decreasing") && Catch::Contains("\"b\""));
  }
  SECTION("increasing minimums") {
    auto m = message_of({{"a", 20, {}}, {"b", 50, {}}, {"c", 0, {}}});
    CHECK_THAT(m, Catch::Contains("strictly decreasing") && Catch::Contains("50 %"));
  }
  SECTION("the guide's dict in ascending order is refused, not silently re-sorted") {
    auto m = message_of({{"emergency", 0, {}}, {"minimal", 5, {}}});
    CHECK_THAT(m, Catch::Contains("strictly decreasing"));
  }
  SECTION("duplicate names") {
    auto m = message_of({{"a", 50, {}}, {"a", 0, {}}});
    CHECK_THAT(m, Catch::Contains("\"a\" appears more than once"));
  }
  SECTION("empty name") {
    auto m = message_of({{"a", 50, {}}, {"", 0, {}}});
    CHECK_THAT(m, Catch::Contains("service level 2 (of 2) has an empty name"));
  }
  SECTION("a percentage out of range never gets as far as the table") {
    CHECK_THROWS_AS((ServiceLevel{"x", 101, {}}), InvalidArgument);
    CHECK_THROWS_AS((ServiceLevel{"x", -1, {}}), InvalidArgument);
  }
}

// ---- levels on a coordinator -------------------------------------------------------------------

TEST_CASE("consuming down through every line announces each crossing once, in order",
          "[degradation]") {
  Harness h;
  AgentId a = h.agent("worker", d("100"));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);

  CHECK(degradation.service_level(a).name == "full");
  h.coord.consume(a, d("50")); // exactly 50 % left: still full
  CHECK(log.seen.empty());
  CHECK(degradation.service_level(a).name == "full");
  h.coord.consume(a, d("0.000001"));
  CHECK(log.moves() == Moves{{"full", "standard"}});
  h.coord.consume(a, d("29.999999")); // exactly 20 %
  CHECK(log.seen.size() == 1);
  h.coord.consume(a, d("0.000001"));
  h.coord.consume(a, d("14.999999")); // exactly 5 %
  CHECK(degradation.service_level(a).name == "minimal");
  h.coord.consume(a, d("0.000001"));
  h.coord.consume(a, d("4.999999")); // nothing left
  CHECK(degradation.service_level(a).name == "emergency");
  CHECK(degradation.service_level(a).features ==
        std::vector<std::string>{"text_only", "critical_only"});
  CHECK(log.moves() ==
        Moves{{"full", "standard"}, {"standard", "minimal"}, {"minimal", "emergency"}});
  for (const auto& c : log.seen) {
    CHECK(c.agent == a);
    CHECK(c.agent_name == "worker");
  }
  CHECK(degradation.subscriber_failures() == 0);
}

TEST_CASE("no notification while the level stays, one for a jump over several levels",
          "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  for (int i = 0; i < 10; ++i)
    h.coord.consume(a, d("5")); // 95 .. 50: all full
  CHECK(log.seen.empty());
  h.coord.consume(a, d("48")); // 2 %: full -> emergency in one step
  CHECK(log.moves() == Moves{{"full", "emergency"}});
  CHECK_FALSE(h.coord.try_consume(a, d("10"))); // refused: nothing changed, nothing announced
  CHECK(log.seen.size() == 1);
}

TEST_CASE("notifications of several agents come in the order of the changes", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  AgentId b = h.agent("b", d("10"));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  h.coord.consume(b, d("6"));  // b: 40 % standard
  h.coord.consume(a, d("90")); // a: 10 % minimal
  h.coord.consume(b, d("4"));  // b: 0 % emergency
  REQUIRE(log.seen.size() == 3);
  CHECK(log.seen[0] == ServiceLevelChanged{b, "b", "full", "standard"});
  CHECK(log.seen[1] == ServiceLevelChanged{a, "a", "full", "minimal"});
  CHECK(log.seen[2] == ServiceLevelChanged{b, "b", "standard", "emergency"});
  CHECK(fmt::format("{}", log.seen[1]) == "agent-1 \"a\": full -> minimal");
}

TEST_CASE("an agent with a zero allocation is at the lowest level", "[degradation]") {
  Harness h;
  PoolId pool = h.coord.create_pool({.name = "p", .initial_budget = d("100")});
  AgentId empty = h.agent("empty", d("0"), pool);
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  CHECK(degradation.service_level(empty).name == "emergency");
  AgentId later = h.agent("later", d("0"), pool); // created after: starts at the lowest too
  CHECK(degradation.service_level(later).name == "emergency");
  CHECK(log.seen.empty());
  h.coord.update_budget(empty, d("40"), "funded");
  CHECK(log.moves() == Moves{{"emergency", "full"}});
}

TEST_CASE("agents that exist when it is made start at their level without a notification",
          "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  h.coord.consume(a, d("70")); // 30 %: standard before anyone watches
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  CHECK(degradation.service_level(a).name == "standard");
  h.coord.consume(a, d("5")); // 25 %: still standard, nothing to announce
  CHECK(log.seen.empty());
  h.coord.consume(a, d("10"));
  CHECK(log.moves() == Moves{{"standard", "minimal"}});
}

TEST_CASE("update_budget, transfer, allocate and reservations move levels too", "[degradation]") {
  Harness h;
  PoolId pool = h.coord.create_pool({.name = "p", .initial_budget = d("300")});
  AgentId a = h.agent("a", d("100"), pool, 9);
  AgentId b = h.agent("b", d("100"), pool, 1);
  Degradation degradation(h.coord);
  ChangeLog log(degradation);

  SECTION("update_budget") {
    h.coord.consume(a, d("60")); // 40 of 100: standard
    CHECK(log.moves() == Moves{{"full", "standard"}});
    h.coord.update_budget(a, d("100"), "top up"); // 100 of 160: full
    CHECK(log.moves() == Moves{{"full", "standard"}, {"standard", "full"}});
    h.coord.update_budget(a, d("1"), "cut"); // 1 of 61: under 5 %
    CHECK(log.seen.back() == ServiceLevelChanged{a, "a", "full", "emergency"});
  }
  SECTION("transfer") {
    h.coord.consume(b, d("50"));             // b: 50 of 100, full
    h.coord.transfer(b, a, d("40"), "lend"); // b: 10 of 60 -> minimal; a: 140 of 140
    CHECK(log.moves() == Moves{{"full", "minimal"}});
    CHECK(log.seen[0].agent == b);
    h.coord.consume(a, d("130"));                 // a: 10 of 140 -> minimal
    h.coord.transfer(a, b, d("10"), "give back"); // a: 0 -> emergency; b: 20 of 70 -> standard
    CHECK(log.moves() == Moves{{"full", "minimal"},
                               {"full", "minimal"},
                               {"minimal", "emergency"},
                               {"minimal", "standard"}});
  }
  SECTION("allocate") {
    h.coord.consume(a, d("60")); // a: 40 of 100, standard
    h.coord.consume(b, d("50")); // b: 50 of 100, full
    log.seen.clear();
    h.coord.allocate(pool, PriorityAllocation{});
    // Redistributed: everything spendable (100 unallocated + 40 + 50) by priority.
    const auto table = ServiceLevels::guide_default();
    for (AgentId agent : {a, b}) {
      const auto m = h.coord.agent_metrics(agent);
      const ServiceLevel& expected = table.level_for(
          m.remaining_budget, m.remaining_budget + m.used_budget + m.reserved_budget);
      CHECK(degradation.service_level(agent) == expected);
    }
    CHECK(degradation.service_level(a).name == "full");
    CHECK(degradation.service_level(b).name != "full");
    REQUIRE(log.seen.size() == 2);
    for (const auto& c : log.seen)
      CHECK(c.to == degradation.service_level(c.agent).name);
  }
  SECTION("reservations: money set aside counts as gone until it is given back") {
    {
      auto r = h.coord.reserve(a, d("60")); // 40 left of 100: standard
      CHECK(log.moves() == Moves{{"full", "standard"}});
      CHECK(degradation.service_level(a).name == "standard");
    } // released
    CHECK(log.moves() == Moves{{"full", "standard"}, {"standard", "full"}});
    auto r = h.coord.reserve(a, d("90"));        // 10 left: minimal
    CHECK(r.commit(d("85")).charged == d("85")); // 5 refunded, 15 left: still minimal
    CHECK(log.moves() == Moves{{"full", "standard"}, {"standard", "full"}, {"full", "minimal"}});
    CHECK(log.seen.back().to == "minimal");
    CHECK(degradation.service_level(a).name == "minimal");
  }
}

TEST_CASE("a period reset by hand brings an agent back to its best level", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  h.coord.consume(a, d("97"));
  if (!reset_usage(h.coord, a, "new day"))
    return; // no reset_usage in this coordinator

  CHECK(log.moves() == Moves{{"full", "emergency"}, {"emergency", "full"}});
  CHECK(degradation.service_level(a).name == "full");
}

TEST_CASE("a per-agent table overrides the one for all agents", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  AgentId b = h.agent("b", d("100"));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  h.coord.consume(a, d("55")); // 45 %
  h.coord.consume(b, d("55"));
  CHECK(log.moves() == Moves{{"full", "standard"}, {"full", "standard"}});
  log.seen.clear();

  degradation.set_levels(a, three_levels()); // 45 % is large_model in a's table
  CHECK(log.seen == std::vector{ServiceLevelChanged{a, "a", "standard", "large_model"}});
  CHECK(degradation.levels_for(a) == three_levels());
  CHECK(degradation.levels_for(b) == ServiceLevels::guide_default());
  CHECK(degradation.service_level(a).features == std::vector<std::string>{"gpt-4o"});
  CHECK(degradation.service_level(b).name == "standard");

  h.coord.consume(a, d("36")); // 9 %: under a's 10 % line
  h.coord.consume(b, d("36")); // 9 %: minimal for b
  CHECK(log.seen[1] == ServiceLevelChanged{a, "a", "large_model", "cached_only"});
  CHECK(log.seen[2] == ServiceLevelChanged{b, "b", "standard", "minimal"});

  SECTION("the table for all does not touch an agent with its own") {
    log.seen.clear();
    degradation.set_levels_for_all(ServiceLevels({{"up", 8, {}}, {"down", 0, {}}}));
    CHECK(log.seen == std::vector{ServiceLevelChanged{b, "b", "minimal", "up"}});
    CHECK(degradation.levels_for(a) == three_levels());
    CHECK(degradation.service_level(b).name == "up");
  }
  SECTION("a table that gives the same level name announces nothing") {
    log.seen.clear();
    degradation.set_levels(a, three_levels());
    CHECK(log.seen.empty());
  }
  SECTION("levels_for's reference outlives a replacement") {
    const ServiceLevels& old = degradation.levels_for(a);
    degradation.set_levels(a, ServiceLevels::guide_default());
    CHECK(old == three_levels());
    CHECK(degradation.service_level(a).name == "minimal");
  }
  SECTION("unknown agents") {
    CHECK_THROWS_AS(degradation.set_levels(AgentId(99), three_levels()), UnknownAgent);
    CHECK_THROWS_AS(degradation.service_level(AgentId(99)), UnknownAgent);
  }
}

TEST_CASE("the table given at construction applies to everyone", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  Degradation degradation(h.coord, three_levels());
  ChangeLog log(degradation);
  h.coord.consume(a, d("61"));
  CHECK(log.moves() == Moves{{"large_model", "small_model"}});
}

TEST_CASE("a removed agent is forgotten without a notification", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  h.coord.remove_agent(a);
  CHECK(log.seen.empty());
  CHECK_THROWS_AS(degradation.service_level(a), UnknownAgent);
  CHECK_THROWS_AS(degradation.set_levels(a, three_levels()), UnknownAgent);
}

// ---- subscribers -------------------------------------------------------------------------------

TEST_CASE("a subscriber may call back into the degradation and the coordinator", "[degradation]") {
  Harness h;
  PoolId pool = h.coord.create_pool({.name = "p", .initial_budget = d("300")});
  AgentId a = h.agent("a", d("100"), pool);
  AgentId b = h.agent("b", d("100"), pool);
  Degradation degradation(h.coord);
  std::vector<std::string> seen_inside;
  std::vector<ConsumeStatus> same_agent;
  Moves moves;
  auto sub = degradation.subscribe([&](const ServiceLevelChanged& c) {
    moves.emplace_back(c.from, c.to);
    seen_inside.push_back(degradation.service_level(c.agent).name);
    CHECK(degradation.levels_for(c.agent) == ServiceLevels::guide_default());
    if (c.agent == a && c.to == "standard") {
      // Called from a's consume, so inside a's monitors: spending from a itself is refused
      // there, as from any monitor of a; other agents and management calls are fine, and
      // what they change is announced after this notification, not in the middle of it.
      same_agent.push_back(h.coord.try_consume(a, d("1")).status());
      h.coord.consume(b, d("90"));                   // b: 10 %, minimal
      h.coord.update_budget(a, d("10"), "cut back"); // a: 10 of 70, minimal
    }
  });
  h.coord.consume(a, d("60"));
  CHECK(moves == Moves{{"full", "standard"}, {"full", "minimal"}, {"standard", "minimal"}});
  // Asked first thing in the first call, the level is that call's; the changes it made come next.
  CHECK(seen_inside == std::vector<std::string>{"standard", "minimal", "minimal"});
  CHECK(same_agent == std::vector<ConsumeStatus>{ConsumeStatus::reentrant_call});
  CHECK(h.coord.get_budget(a) == d("10"));
  CHECK(degradation.subscriber_failures() == 0);

  SECTION("outside a's monitors (a management call) the subscriber may spend from a") {
    moves.clear();
    auto spend = degradation.subscribe([&](const ServiceLevelChanged& c) {
      if (c.agent == a && c.to == "full")
        h.coord.consume(a, d("75")); // runs from update_budget's audit delivery
    });
    h.coord.update_budget(a, d("100"), "refill"); // 100 of 160: full, then 25 of 160: minimal
    CHECK(moves == Moves{{"minimal", "full"}, {"full", "minimal"}});
    CHECK(degradation.subscriber_failures() == 0);
  }
}

TEST_CASE("a subscriber that throws is counted and does not stop the others", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  Degradation degradation(h.coord);
  auto bad = degradation.subscribe(
      [](const ServiceLevelChanged&) { throw std::runtime_error("subscriber failed"); });
  ChangeLog log(degradation);
  h.coord.consume(a, d("60"));
  h.coord.consume(a, d("30"));
  CHECK(log.moves() == Moves{{"full", "standard"}, {"standard", "minimal"}});
  CHECK(degradation.subscriber_failures() == 2);
  CHECK(h.coord.sink_failures() == 0); // the degradation's own monitor did not fail
  CHECK(degradation.service_level(a).name == "minimal");
}

TEST_CASE("unsubscribing stops the calls, also from inside a call", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  Degradation degradation(h.coord);
  int calls = 0;
  Subscription sub;
  sub = degradation.subscribe([&](const ServiceLevelChanged&) {
    ++calls;
    sub.reset();
  });
  CHECK(sub.active());
  h.coord.consume(a, d("60"));
  CHECK_FALSE(sub.active());
  h.coord.consume(a, d("30"));
  CHECK(calls == 1);

  ChangeLog log(degradation);
  log.handle.reset();
  h.coord.consume(a, d("9"));
  CHECK(log.seen.empty());
  CHECK_THROWS_AS(degradation.subscribe(nullptr), InvalidArgument);
}

TEST_CASE("destruction unregisters: later changes reach nothing", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  int calls = 0;
  Subscription outliving;
  {
    Degradation degradation(h.coord);
    outliving = degradation.subscribe([&](const ServiceLevelChanged&) { ++calls; });
    h.coord.consume(a, d("60"));
    CHECK(calls == 1);
  }
  CHECK_FALSE(outliving.active());
  h.coord.consume(a, d("30"));
  h.coord.update_budget(a, d("1"), "cut");
  CHECK(calls == 1);
  outliving.reset(); // a handle that outlives its degradation does nothing
  CHECK(h.coord.sink_failures() == 0);
}

TEST_CASE("a subscriber may destroy the degradation it is called by", "[degradation]") {
  Harness h;
  AgentId a = h.agent("a", d("100"));
  auto degradation = std::make_unique<Degradation>(h.coord);
  int calls = 0;
  auto sub = degradation->subscribe([&](const ServiceLevelChanged&) {
    ++calls;
    h.coord.update_budget(a, d("1"), "cut"); // queues a second change...
    degradation.reset();                     // ...that is never delivered
  });
  h.coord.consume(a, d("60"));
  CHECK(calls == 1);
  CHECK(degradation == nullptr);
  h.coord.consume(a, d("0.5"));
  CHECK(calls == 1);
}

TEST_CASE("a coordinator of token counts", "[degradation]") {
  using TokenCoordinator = BasicBudgetCoordinator<std::int64_t, FixedAllocation, ManualClock>;
  ManualClock clock;
  TokenCoordinator coord{CoordinatorOptions{}, FixedAllocation{}, clock};
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 1000});
  BasicGracefulDegradation<TokenCoordinator> degradation(coord);
  std::vector<ServiceLevelChanged> seen;
  auto sub = degradation.subscribe([&](const ServiceLevelChanged& c) { seen.push_back(c); });
  coord.consume(a, 500);
  CHECK(seen.empty());
  coord.consume(a, 1);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].to == "standard");
}

TEST_CASE("property: announcements chain and match a reference, random spending (seed 20251)",
          "[degradation]") {
  Harness h;
  PoolId pool = h.coord.create_pool({.name = "p", .initial_budget = d("1000")});
  std::vector<AgentId> agents;
  for (int i = 0; i < 3; ++i)
    agents.push_back(h.agent(fmt::format("agent{}", i), d("100"), pool));
  Degradation degradation(h.coord);
  ChangeLog log(degradation);
  std::map<AgentId, std::string> expected;
  for (AgentId agent : agents)
    expected[agent] = "full";
  std::vector<ServiceLevelChanged> reference;

  std::mt19937_64 rng(20251);
  auto level_now = [&](AgentId agent) {
    auto m = h.coord.agent_metrics(agent);
    // Reference: integers in millionths, remaining * 100 >= percent * allocated.
    const std::int64_t rem = m.remaining_budget.raw();
    const std::int64_t all = (m.remaining_budget + m.used_budget + m.reserved_budget).raw();
    if (all <= 0)
      return std::string("emergency");
    for (const auto& [name, pct] :
         std::vector<std::pair<std::string, int>>{{"full", 50}, {"standard", 20}, {"minimal", 5}})
      if (rem * 100 >= all * pct)
        return name;
    return std::string("emergency");
  };
  for (int step = 0; step < 2000; ++step) {
    AgentId agent = agents[rng() % agents.size()];
    const auto op = rng() % 10;
    const Decimal amount = Decimal::from_raw(static_cast<std::int64_t>(rng() % 8'000'000));
    if (op < 7)
      (void)h.coord.try_consume(agent, amount);
    else if (op < 9)
      h.coord.update_budget(agent, Decimal::from_raw(static_cast<std::int64_t>(rng() % 60'000'000)),
                            "random");
    else
      (void)reset_usage(h.coord, agent, "random reset");
    const std::string now = level_now(agent);
    if (now != expected[agent]) {
      reference.push_back({agent, h.coord.agent_name(agent), expected[agent], now});
      expected[agent] = now;
    }
  }
  CHECK(log.seen.size() > 20);
  CHECK(log.seen == reference);
  for (AgentId agent : agents)
    CHECK(degradation.service_level(agent).name == expected[agent]);
}

TEST_CASE("the worked example: a cheaper model as the level drops over a day", "[degradation]") {
  Harness h;
  AgentId support = h.agent("support", d("10.00"));
  Degradation degradation(h.coord);
  degradation.set_levels(support, ServiceLevels({{"large_model", 40, {"gpt-4o"}},
                                                 {"small_model", 10, {"gpt-4o-mini"}},
                                                 {"cached_only", 0, {"cache"}}}));
  ChangeLog log(degradation);
  auto answer = [&] {
    const ServiceLevel level = degradation.service_level(support);
    if (level.has("cache"))
      return level.name; // cached answers cost nothing
    auto r = h.coord.reserve(support, level.has("gpt-4o") ? d("0.20") : d("0.01"));
    CHECK(r.commit(level.has("gpt-4o") ? d("0.20") : d("0.01")).ok());
    return level.name;
  };
  for (int i = 0; i < 30; ++i)
    CHECK(answer() == "large_model");
  CHECK(h.coord.get_budget(support) == d("4.00")); // exactly on the 40 % line
  CHECK(log.seen.empty());
  CHECK(answer() == "large_model"); // reserving its 0.20 already drops the level
  CHECK(h.coord.get_budget(support) == d("3.80"));
  CHECK(log.moves() == Moves{{"large_model", "small_model"}});
  for (int i = 0; i < 280; ++i)
    CHECK(answer() == "small_model");
  CHECK(h.coord.get_budget(support) == d("1.00"));
  CHECK(log.seen.size() == 1);
  CHECK(answer() == "small_model");
  CHECK(log.seen.back().to == "cached_only");
  CHECK(answer() == "cached_only");
  CHECK(h.coord.get_budget(support) == d("0.99"));
  if (reset_usage(h.coord, support, "midnight"))
    CHECK(log.moves() == Moves{{"large_model", "small_model"},
                               {"small_model", "cached_only"},
                               {"cached_only", "large_model"}});
}

TEST_CASE("coord.service_level: the guide's table by default, or one given, from the coordinator") {
  BudgetCoordinator coord;
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = Decimal(100)});
  CHECK(coord.service_level(a).name == "full");
  coord.consume(a, Decimal(50)); // exactly 50 % left: still full
  CHECK(coord.service_level(a).name == "full");
  coord.consume(a, Decimal("0.000001"));
  CHECK(coord.service_level(a).name == "standard");
  CHECK(coord.service_level(a).has("core_capabilities"));
  {
    auto r = coord.reserve(a, Decimal(45)); // reserved money counts as gone: 4.999999 % left
    CHECK(coord.service_level(a).name == "emergency");
  } // released
  CHECK(coord.service_level(a).name == "standard");
  const ServiceLevels two(
      {{.name = "on", .min_remaining = 60}, {.name = "off", .min_remaining = 0}});
  CHECK(coord.service_level(a, two).name == "off");
  // The coordinator and GracefulDegradation agree.
  GracefulDegradation degradation(coord);
  CHECK(degradation.service_level(a) == coord.service_level(a));
  const AgentId empty = coord.create_agent({.name = "empty", .initial_budget = Decimal(0)});
  CHECK(coord.service_level(empty).name == "emergency"); // nothing allocated, no division
  CHECK_THROWS_AS(coord.service_level(AgentId(9999)), UnknownAgent);
  // The guide's table is one shared constant, not rebuilt per call.
  CHECK(&ServiceLevels::guide_default() == &ServiceLevels::guide_default());
}
