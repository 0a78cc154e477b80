// Monitors, violations and the audit trail, driven by a ManualClock so every timestamp is exact:
// the built-in monitors' crossing semantics, monitor scopes and handles, failure handling
// (throwing checks, observers and sinks, reentrant spending), violation sinks and formatting,
// and the BudgetChange records each management call emits.
// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <safeguards/audit_file.hpp>
#include <safeguards/safeguards.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

using Coordinator = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using TimePoint = Coordinator::time_point;
using Event = Coordinator::UsageEvent;
using Reporter = Coordinator::ViolationReporter;
using ManualViolation = Coordinator::Violation;
using ManualChange = Coordinator::BudgetChange;
using ManualAuditLog = BasicMemoryAuditLog<ManualChange>;
using Details = std::map<std::string, std::string>;

TimePoint at(std::chrono::nanoseconds since_start) {
  return TimePoint(since_start);
}

// Records every violation a coordinator reports while it lives.
struct ViolationLog {
  std::vector<ManualViolation> seen;
  SinkHandle handle;

  explicit ViolationLog(Coordinator& coord)
      : handle(coord.add_violation_sink([this](const ManualViolation& v) { seen.push_back(v); })) {}
  ViolationLog(const ViolationLog&) = delete;
  ViolationLog& operator=(const ViolationLog&) = delete;
};

// A coordinator on a clock the test moves, with a violation log.
struct Harness {
  ManualClock clock;
  Coordinator coord{CoordinatorOptions{}, FixedAllocation{}, clock};
  ViolationLog violations{coord};

  AgentId agent(std::string name, Decimal budget, std::optional<PoolId> pool = std::nullopt) {
    return coord.create_agent(
        {.name = std::move(name), .initial_budget = budget, .priority = 5, .pool = pool});
  }
};

// An observer that reports one PolicyBreach per change it sees.
void report_every_change(const Event& e, const Reporter& r) {
  r.report(ViolationType::PolicyBreach, AlertSeverity::Info,
           fmt::format("saw {} of {}", to_string(e.kind), amount_to_string(e.amount)),
           {{"kind", std::string(to_string(e.kind))}});
}

} // namespace

namespace Catch {
template <>
struct StringMaker<AgentId> {
  static std::string convert(AgentId id) { return fmt::format("{}", id); }
};
template <>
struct StringMaker<PoolId> {
  static std::string convert(PoolId id) { return fmt::format("{}", id); }
};
template <>
struct StringMaker<ConsumeStatus> {
  static std::string convert(ConsumeStatus s) { return std::string(to_string(s)); }
};
template <>
struct StringMaker<UsageKind> {
  static std::string convert(UsageKind k) { return std::string(to_string(k)); }
};
template <>
struct StringMaker<ViolationType> {
  static std::string convert(ViolationType t) { return std::string(to_string(t)); }
};
template <>
struct StringMaker<AlertSeverity> {
  static std::string convert(AlertSeverity s) { return std::string(to_string(s)); }
};
template <>
struct StringMaker<ManualChange> {
  static std::string convert(const ManualChange& c) {
    return fmt::format("{} at {}", c, safeguards::detail::timestamp_to_string(c.timestamp));
  }
};
} // namespace Catch

// ---- built-in monitors ---------------------------------------------------------------------

TEST_CASE("LowBudgetAlert fires once on the crossing and again only after recovery",
          "[monitor][builtin]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  // A pool with room to spare, so that update_budget can raise the agent again.
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  AgentId a = h.agent("a", 100_d, p);
  auto alert = coord.add_monitor(a, LowBudgetAlert{.percent = 15});

  h.clock.advance(1s);
  REQUIRE(coord.try_consume(a, 80_d).ok()); // 20 left: above the line of 15
  CHECK(seen.empty());

  h.clock.advance(2s);
  REQUIRE(coord.try_consume(a, 5_d).ok()); // 15 left: "to or below" the line
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].agent == a);
  CHECK(seen[0].type == ViolationType::LowBudget);
  CHECK(seen[0].severity == AlertSeverity::Medium);
  CHECK(seen[0].message == "Agent budget below 15% threshold");
  CHECK(seen[0].details == Details{{"current_budget", "15.0"},
                                   {"initial_budget", "100.0"},
                                   {"threshold_percent", "15"}});
  CHECK(seen[0].timestamp == at(3s));
  CHECK(fmt::format("{}", seen[0]) ==
        "[MEDIUM] LOW_BUDGET a (agent-1) at 3.0s: Agent budget below 15% threshold "
        "{current_budget=15.0, initial_budget=100.0, threshold_percent=15}");

  // Staying below the line is not a new crossing, whatever kind of change it is.
  REQUIRE(coord.try_consume(a, 10_d).ok());
  {
    auto r = coord.try_reserve(a, 2_d);
    REQUIRE(r.ok());
    CHECK(r.commit(1_d).ok());
  }
  REQUIRE(coord.try_consume(a, Decimal("0.5")).ok());
  CHECK(seen.size() == 1);
  CHECK(coord.get_budget(a) == Decimal("3.5"));

  // An update is not a usage event: recovering above the line reports nothing by itself.
  coord.update_budget(a, 50_d, "top up"); // used 96.5, allocation 146.5, line 21.975
  CHECK(seen.size() == 1);
  REQUIRE(coord.try_consume(a, 28_d).ok()); // 22 left: still above
  CHECK(seen.size() == 1);
  h.clock.advance(1s);
  REQUIRE(coord.try_consume(a, Decimal("0.025")).ok()); // 21.975 left: on the new line
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].type == ViolationType::LowBudget);
  CHECK(seen[1].details == Details{{"current_budget", "21.975"},
                                   {"initial_budget", "146.5"},
                                   {"threshold_percent", "15"}});
  CHECK(seen[1].timestamp == at(4s));
  REQUIRE(coord.try_consume(a, 1_d).ok());
  CHECK(seen.size() == 2);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("LowBudgetAlert: a reservation crosses the line, its release is a recovery",
          "[monitor][builtin]") {
  Harness h;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  auto alert = h.coord.add_monitor(a, LowBudgetAlert{.percent = 15});
  {
    auto r = h.coord.try_reserve(a, 90_d);
    REQUIRE(r.ok());
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].details.at("current_budget") == "10.0");
  } // released: 100 left, above the line again
  CHECK(h.coord.get_budget(a) == 100_d);
  CHECK(seen.size() == 1);
  REQUIRE(h.coord.try_consume(a, 86_d).ok()); // 14 left
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].details.at("current_budget") == "14.0");
}

TEST_CASE("LowBudgetAlert reports exactly on the line for any percentage", "[monitor][builtin]") {
  const std::int64_t percent = GENERATE(1, 15, 50, 99);
  Harness h;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 200_d);
  auto alert = h.coord.add_monitor(a, LowBudgetAlert{.percent = percent});
  const Decimal line = Decimal(2 * percent);
  REQUIRE(h.coord.try_consume(a, 200_d - line - Decimal("0.000001")).ok());
  CHECK(seen.empty()); // one millionth above the line
  REQUIRE(h.coord.try_consume(a, Decimal("0.000001")).ok());
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].message == fmt::format("Agent budget below {}% threshold", percent));
  CHECK(seen[0].details.at("current_budget") == amount_to_string(line));
  CHECK(seen[0].details.at("threshold_percent") == std::to_string(percent));
}

TEST_CASE("HighUsageWarning fires once on the crossing and again only after recovery",
          "[monitor][builtin]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  // A pool with room to spare, so that update_budget can raise the agent again.
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  AgentId a = h.agent("a", 100_d, p);
  auto warning = coord.add_monitor(a, HighUsageWarning{.percent = 80});

  REQUIRE(coord.try_consume(a, 80_d).ok()); // used 80: not above 80 %
  CHECK(seen.empty());
  h.clock.advance(7s);
  REQUIRE(coord.try_consume(a, 1_d).ok()); // used 81
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].agent == a);
  CHECK(seen[0].type == ViolationType::HighUsage);
  CHECK(seen[0].severity == AlertSeverity::Low);
  CHECK(seen[0].message == "Agent budget usage above 80%");
  CHECK(seen[0].details ==
        Details{{"initial_budget", "100.0"}, {"threshold_percent", "80"}, {"used_budget", "81.0"}});
  CHECK(seen[0].timestamp == at(7s));
  CHECK(fmt::format("{}", seen[0]) ==
        "[LOW] HIGH_USAGE a (agent-1) at 7.0s: Agent budget usage above 80% "
        "{initial_budget=100.0, threshold_percent=80, used_budget=81.0}");

  REQUIRE(coord.try_consume(a, 4_d).ok()); // used 85: still above
  {
    auto r = coord.try_reserve(a, 5_d);
    REQUIRE(r.ok());
    CHECK(r.commit(5_d).ok()); // used 90
  }
  CHECK(seen.size() == 1);

  coord.update_budget(a, 410_d, "raise"); // used 90, allocation 500, line 400
  CHECK(seen.size() == 1);
  REQUIRE(coord.try_consume(a, 310_d).ok()); // used 400: on the line, not above
  CHECK(seen.size() == 1);
  REQUIRE(coord.try_consume(a, Decimal("0.000001")).ok());
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].details == Details{{"initial_budget", "500.0"},
                                   {"threshold_percent", "80"},
                                   {"used_budget", "400.000001"}});
  REQUIRE(coord.try_consume(a, 1_d).ok());
  CHECK(seen.size() == 2);
}

TEST_CASE("HighUsageWarning: a commit that charges past the line reports it",
          "[monitor][builtin]") {
  Harness h;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  auto warning = h.coord.add_monitor(a, HighUsageWarning{.percent = 80});
  auto r = h.coord.try_reserve(a, 90_d);
  REQUIRE(r.ok());
  CHECK(seen.empty()); // reserving uses nothing
  auto settled = r.commit(85_d);
  CHECK(settled.charged == 85_d);
  CHECK(settled.refunded == 5_d);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].details.at("used_budget") == "85.0");
  CHECK(seen[0].details.at("initial_budget") == "100.0");
}

TEST_CASE("built-in monitors report at the severity they are given", "[monitor][builtin]") {
  const AlertSeverity severity = GENERATE(AlertSeverity::Info, AlertSeverity::Critical);
  Harness h;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  auto low = h.coord.add_monitor(a, LowBudgetAlert{.percent = 15, .severity = severity});
  auto high = h.coord.add_monitor(a, HighUsageWarning{.percent = 80, .severity = severity});
  auto limit = h.coord.add_monitor(a, SpendingLimit{90_d, severity});
  REQUIRE(h.coord.try_consume(a, 90_d).ok());
  CHECK(h.coord.try_consume(a, 1_d).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].type == ViolationType::LowBudget);
  CHECK(seen[1].type == ViolationType::HighUsage);
  CHECK(seen[2].type == ViolationType::BudgetLimitExceeded);
  for (const auto& v : seen)
    CHECK(v.severity == severity);
}

TEST_CASE("SpendingLimit vetoes, reports once per episode and re-arms when a request fits",
          "[monitor][builtin]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  SpendingLimit<Decimal> limit{30_d};
  CHECK(limit.limit() == 30_d);
  auto handle = coord.add_monitor(a, limit);

  REQUIRE(coord.try_consume(a, 20_d).ok());
  h.clock.advance(2s);
  CHECK(coord.try_consume(a, 15_d).status() == ConsumeStatus::denied_by_monitor);
  auto m = coord.agent_metrics(a);
  CHECK(m.remaining_budget == 80_d);
  CHECK(m.used_budget == 20_d);
  CHECK(m.reserved_budget == 0_d);
  CHECK(m.consumption_count == 1);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].agent == a);
  CHECK(seen[0].type == ViolationType::BudgetLimitExceeded);
  CHECK(seen[0].severity == AlertSeverity::Medium);
  CHECK(seen[0].message == "Agent exceeded spending limit of 30.0");
  CHECK(seen[0].details == Details{{"limit", "30.0"}, {"overage", "5.0"}, {"spent", "35.0"}});
  CHECK(seen[0].timestamp == at(2s));

  // The same episode: more vetoes, no more reports.
  CHECK(coord.try_consume(a, 15_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_reserve(a, 11_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK_THROWS_AS(coord.consume(a, 20_d), BudgetExceeded);
  CHECK(seen.size() == 1);
  CHECK(coord.get_budget(a) == 80_d);

  // A request that fits ends the episode; the next one over the limit is reported again.
  REQUIRE(coord.try_consume(a, 10_d).ok()); // spent exactly 30
  CHECK(coord.try_consume(a, Decimal("0.5")).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].details == Details{{"limit", "30.0"}, {"overage", "0.5"}, {"spent", "30.5"}});
  CHECK(coord.try_consume(a, 1_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(seen.size() == 2);
  CHECK(coord.agent_metrics(a).used_budget == 30_d);
  CHECK(coord.check_invariants().empty());

  SECTION("without its handle the limit no longer applies") {
    handle.reset();
    CHECK(coord.try_consume(a, 40_d).ok());
    CHECK(seen.size() == 2);
  }
  SECTION("the ledger refuses what the balance cannot cover before any check runs") {
    CHECK(coord.try_consume(a, 71_d).status() == ConsumeStatus::insufficient);
    CHECK(seen.size() == 2);
  }
}

TEST_CASE("SpendingLimit counts reserved money as spent", "[monitor][builtin]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  auto handle = coord.add_monitor(a, SpendingLimit{30_d});
  auto first = coord.try_reserve(a, 25_d);
  REQUIRE(first.ok());
  CHECK(coord.try_consume(a, 6_d).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].details == Details{{"limit", "30.0"}, {"overage", "1.0"}, {"spent", "31.0"}});
  CHECK(coord.try_reserve(a, 6_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(seen.size() == 1);
  auto m = coord.agent_metrics(a);
  CHECK(m.reserved_budget == 25_d);
  CHECK(m.used_budget == 0_d);
  CHECK(m.remaining_budget == 75_d);

  CHECK(first.commit(20_d).charged == 20_d); // 20 used, nothing reserved
  CHECK(coord.try_consume(a, 6_d).ok());     // 26: fits, and ends the episode
  CHECK(coord.try_reserve(a, 5_d).status() == ConsumeStatus::denied_by_monitor); // 31
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].details.at("spent") == "31.0");
  CHECK(coord.agent_metrics(a).used_budget == 26_d);
}

TEST_CASE("a SpendingLimit shared by a pool keeps one episode per agent", "[monitor][builtin]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  AgentId x = h.agent("x", 100_d, p);
  auto handle = coord.add_monitor(p, SpendingLimit{10_d});
  AgentId y = h.agent("y", 100_d, p);
  CHECK(coord.try_consume(x, 11_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_consume(y, 11_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_consume(x, 12_d).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].agent == x);
  CHECK(seen[1].agent == y);
  // y fitting again does not re-arm x.
  CHECK(coord.try_consume(y, 5_d).ok());
  CHECK(coord.try_consume(x, 12_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_consume(y, 6_d).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(seen.size() == 3);
  CHECK(seen[2].agent == y);
  CHECK(seen[2].details.at("spent") == "11.0");
}

// ---- what a monitor sees -------------------------------------------------------------------

TEST_CASE("a check sees what the change would leave, an observer what it left",
          "[monitor][event]") {
  Harness h;
  auto& coord = h.coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 500_d});
  AgentId a = h.agent("a", 100_d, p);
  std::vector<Event> checked;
  std::vector<Event> observed;
  struct Recorder {
    std::vector<Event>* checks;
    std::vector<Event>* observations;
    bool check(const Event& e, const Reporter&) {
      checks->push_back(e);
      return true;
    }
    void observe(const Event& e, const Reporter&) { observations->push_back(e); }
  };
  auto handle = coord.add_monitor(a, Recorder{&checked, &observed});

  h.clock.advance(1s);
  REQUIRE(coord.try_consume(a, 10_d).ok());
  h.clock.advance(1s);
  {
    auto r = coord.try_reserve(a, 30_d);
    REQUIRE(r.ok());
    h.clock.advance(1s);
    CHECK(r.commit(12_d).ok());
    h.clock.advance(1s);
    auto unused = coord.try_reserve(a, 5_d);
    REQUIRE(unused.ok());
    h.clock.advance(1s);
  } // `unused` is released here

  REQUIRE(checked.size() == 3); // consume, reserve, reserve: commits and releases cannot be vetoed
  REQUIRE(observed.size() == 5);
  const std::vector<UsageKind> kinds{UsageKind::consume, UsageKind::reserve, UsageKind::commit,
                                     UsageKind::reserve, UsageKind::release};
  for (std::size_t i = 0; i < observed.size(); ++i) {
    CHECK(observed[i].kind == kinds[i]);
    CHECK(observed[i].agent == a);
    CHECK(observed[i].pool == p);
    CHECK(observed[i].allocated == 100_d);
  }
  // The checks saw the same numbers as the observers of the changes they allowed.
  const std::size_t allowed[] = {0, 1, 3};
  for (std::size_t i = 0; i < checked.size(); ++i) {
    const auto& c = checked[i];
    const auto& o = observed[allowed[i]];
    CHECK(c.kind == o.kind);
    CHECK(c.amount == o.amount);
    CHECK(c.remaining_before == o.remaining_before);
    CHECK(c.remaining_after == o.remaining_after);
    CHECK(c.used_before == o.used_before);
    CHECK(c.used_after == o.used_after);
    CHECK(c.timestamp == o.timestamp);
  }

  const auto& consume = observed[0];
  CHECK(consume.amount == 10_d);
  CHECK(consume.remaining_before == 100_d);
  CHECK(consume.remaining_after == 90_d);
  CHECK(consume.used_before == 0_d);
  CHECK(consume.used_after == 10_d);
  CHECK(consume.timestamp == at(1s));

  const auto& reserve = observed[1];
  CHECK(reserve.amount == 30_d);
  CHECK(reserve.remaining_before == 90_d);
  CHECK(reserve.remaining_after == 60_d);
  CHECK(reserve.used_before == 10_d);
  CHECK(reserve.used_after == 10_d);
  CHECK(reserve.timestamp == at(2s));

  const auto& commit = observed[2]; // charges 12, refunds 18
  CHECK(commit.amount == 12_d);
  CHECK(commit.remaining_before == 60_d);
  CHECK(commit.remaining_after == 78_d);
  CHECK(commit.used_before == 10_d);
  CHECK(commit.used_after == 22_d);
  CHECK(commit.timestamp == at(3s));

  const auto& release = observed[4];
  CHECK(release.amount == 5_d);
  CHECK(release.remaining_before == 73_d);
  CHECK(release.remaining_after == 78_d);
  CHECK(release.used_before == 22_d);
  CHECK(release.used_after == 22_d);
  CHECK(release.timestamp == at(5s));

  SECTION("a vetoed change is never observed") {
    auto veto = coord.add_monitor(a, [](const Event& e) { return e.amount < 50_d; });
    CHECK(coord.try_consume(a, 50_d).status() == ConsumeStatus::denied_by_monitor);
    CHECK(checked.size() == 4); // the recorder's check ran before the veto
    CHECK(observed.size() == 5);
    CHECK(coord.try_consume(a, 49_d).ok());
    CHECK(observed.size() == 6);
    CHECK(coord.get_budget(a) == 29_d);
  }
}

// ---- scopes and handles --------------------------------------------------------------------

TEST_CASE("a monitor watches one agent, a pool's agents or all agents, present and future",
          "[monitor][scope]") {
  Harness h;
  auto& coord = h.coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  PoolId q = coord.create_pool({.name = "q", .initial_budget = 1000_d});
  AgentId p1 = h.agent("p1", 100_d, p);
  AgentId q1 = h.agent("q1", 100_d, q);
  std::vector<AgentId> seen;
  auto record = [&seen](const Event& e) { seen.push_back(e.agent); };
  auto spend_from = [&](const std::vector<AgentId>& agents) {
    for (AgentId id : agents)
      REQUIRE(coord.try_consume(id, 1_d).ok());
  };

  SECTION("one agent") {
    auto m = coord.add_monitor(p1, record);
    AgentId p2 = h.agent("p2", 100_d, p);
    AgentId solo = h.agent("solo", 100_d);
    spend_from({p1, q1, p2, solo});
    CHECK(seen == std::vector<AgentId>{p1});
    m.reset();
    spend_from({p1});
    CHECK(seen.size() == 1);
  }
  SECTION("a pool, including agents created in it later") {
    auto m = coord.add_monitor(p, record);
    AgentId p2 = h.agent("p2", 100_d, p);
    AgentId q2 = h.agent("q2", 100_d, q);
    AgentId solo = h.agent("solo", 100_d);
    spend_from({p1, q1, p2, q2, solo});
    CHECK(seen == std::vector<AgentId>{p1, p2});
    m.reset();
    AgentId p3 = h.agent("p3", 100_d, p);
    spend_from({p1, p2, p3});
    CHECK(seen.size() == 2);
  }
  SECTION("only live agents and existing pools can be watched") {
    AgentId gone = h.agent("gone", 10_d, p);
    coord.remove_agent(gone);
    CHECK_THROWS_AS(coord.add_monitor(gone, record), UnknownAgent);
    CHECK_THROWS_AS(coord.add_monitor(AgentId(99), record), UnknownAgent);
    CHECK_THROWS_AS(coord.add_monitor(PoolId(99), record), UnknownPool);
  }
  SECTION("an agent's implicit pool") {
    AgentId solo = h.agent("solo", 100_d);
    auto m = coord.add_monitor(coord.agent_pool(solo), record);
    spend_from({p1, solo});
    CHECK(seen == std::vector<AgentId>{solo});
  }
  SECTION("all agents, including agents created later") {
    auto m = coord.add_monitor(all_agents, record);
    AgentId p2 = h.agent("p2", 100_d, p);
    AgentId solo = h.agent("solo", 100_d);
    spend_from({p1, q1, p2, solo});
    CHECK(seen == std::vector<AgentId>{p1, q1, p2, solo});
    m.reset();
    AgentId late = h.agent("late", 100_d);
    spend_from({p1, q1, p2, solo, late});
    CHECK(seen.size() == 4);
  }
  SECTION("all agents with one shared LowBudgetAlert: each agent's own crossing") {
    auto alert = coord.add_monitor(all_agents, LowBudgetAlert{.percent = 15});
    AgentId later = h.agent("later", 10_d);
    REQUIRE(coord.try_consume(q1, 90_d).ok());
    REQUIRE(coord.try_consume(later, Decimal("8.5")).ok());
    REQUIRE(coord.try_consume(p1, 80_d).ok());
    auto& v = h.violations.seen;
    REQUIRE(v.size() == 2);
    CHECK(v[0].agent == q1);
    CHECK(v[0].details.at("current_budget") == "10.0");
    CHECK(v[1].agent == later);
    CHECK(v[1].details.at("current_budget") == "1.5");
    CHECK(v[1].details.at("initial_budget") == "10.0");
  }
}

TEST_CASE("MonitorHandle: destroying or resetting unregisters, detach keeps, moves transfer",
          "[monitor][handle]") {
  Harness h;
  auto& coord = h.coord;
  AgentId a = h.agent("a", 100_d);
  int calls = 0;
  auto count = [&calls](const Event&) { ++calls; };
  auto spend = [&] { REQUIRE(coord.try_consume(a, 1_d).ok()); };

  SECTION("destroying the handle unregisters") {
    {
      auto handle = coord.add_monitor(a, count);
      CHECK(handle.active());
      spend();
      CHECK(calls == 1);
    }
    spend();
    CHECK(calls == 1);
  }
  SECTION("reset unregisters at once and is idempotent") {
    auto handle = coord.add_monitor(a, count);
    handle.reset();
    CHECK_FALSE(handle.active());
    handle.reset();
    spend();
    CHECK(calls == 0);
  }
  SECTION("unregistering one monitor leaves the others of the agent") {
    int other_calls = 0;
    auto first = coord.add_monitor(a, count);
    auto second = coord.add_monitor(a, [&other_calls](const Event&) { ++other_calls; });
    spend();
    first.reset();
    spend();
    CHECK(calls == 1);
    CHECK(other_calls == 2);
  }
  SECTION("detach keeps the monitor for the coordinator's lifetime") {
    {
      auto handle = coord.add_monitor(a, count);
      handle.detach();
      CHECK_FALSE(handle.active());
      handle.reset(); // controls nothing any more
    }
    spend();
    spend();
    CHECK(calls == 2);
  }
  SECTION("a move hands the registration over") {
    auto first = coord.add_monitor(a, count);
    MonitorHandle moved = std::move(first);
    CHECK_FALSE(first.active()); // NOLINT(bugprone-use-after-move): a moved-from handle is empty
    CHECK(moved.active());
    first.reset(); // the moved-from handle unregisters nothing
    spend();
    CHECK(calls == 1);

    int other_calls = 0;
    MonitorHandle target = coord.add_monitor(a, [&other_calls](const Event&) { ++other_calls; });
    target = std::move(moved); // drops the other monitor, takes over the counter
    CHECK(target.active());
    spend();
    CHECK(calls == 2);
    CHECK(other_calls == 0);
    target.reset();
    spend();
    CHECK(calls == 2);
  }
  SECTION("a handle that outlives its coordinator does nothing when destroyed") {
    MonitorHandle late;
    CHECK_FALSE(late.active());
    {
      Coordinator other;
      AgentId b = other.create_agent({.name = "b", .initial_budget = 10_d});
      late = other.add_monitor(b, count);
      CHECK(late.active());
      REQUIRE(other.try_consume(b, 1_d).ok());
      CHECK(calls == 1);
    }
    CHECK_FALSE(late.active());
    late.reset();
  }
}

// ---- failures ------------------------------------------------------------------------------

TEST_CASE("a check that throws is a veto and a MonitorFailure", "[monitor][failure]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);

  SECTION("a std::exception: its message is in the details") {
    auto handle = coord.add_monitor(
        a, [](const Event&) -> bool { throw std::runtime_error("limit service down"); });
    h.clock.advance(5s);
    CHECK(coord.try_consume(a, 10_d).status() == ConsumeStatus::denied_by_monitor);
    CHECK(coord.try_reserve(a, 10_d).status() == ConsumeStatus::denied_by_monitor);
    CHECK_THROWS_WITH(coord.consume(a, 10_d),
                      "safeguards: agent-1 cannot consume 10.0: denied by monitor");
    auto m = coord.agent_metrics(a);
    CHECK(m.remaining_budget == 100_d);
    CHECK(m.used_budget == 0_d);
    CHECK(m.reserved_budget == 0_d);
    CHECK(m.consumption_count == 0);
    REQUIRE(seen.size() == 3); // one per failure: failures are not episodes
    CHECK(seen[0].agent == a);
    CHECK(seen[0].type == ViolationType::MonitorFailure);
    CHECK(seen[0].severity == AlertSeverity::High);
    CHECK(seen[0].message == "a monitor threw; balances are unaffected");
    CHECK(seen[0].details == Details{{"exception", "limit service down"}, {"usage", "consume"}});
    CHECK(seen[0].timestamp == at(5s));
    CHECK(seen[1].details == Details{{"exception", "limit service down"}, {"usage", "reserve"}});
    CHECK(fmt::format("{}", seen[0]) ==
          "[HIGH] MONITOR_FAILURE a (agent-1) at 5.0s: a monitor threw; balances are unaffected "
          "{exception=limit service down, usage=consume}");
  }
  SECTION("anything else: an unknown exception") {
    auto handle = coord.add_monitor(a, [](const Event&) -> bool { throw 42; });
    CHECK(coord.try_consume(a, 10_d).status() == ConsumeStatus::denied_by_monitor);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].details.at("exception") == "unknown exception");
  }
  SECTION("a later check does not run, an observer sees nothing") {
    int later_checks = 0;
    int observed = 0;
    auto first = coord.add_monitor(
        a, [](const Event&) -> bool { throw std::runtime_error("limit service down"); });
    auto second = coord.add_monitor(a, [&later_checks](const Event&) {
      ++later_checks;
      return true;
    });
    auto third = coord.add_monitor(a, [&observed](const Event&) { ++observed; });
    CHECK(coord.try_consume(a, 10_d).status() == ConsumeStatus::denied_by_monitor);
    CHECK(later_checks == 0);
    CHECK(observed == 0);
    first.reset();
    CHECK(coord.try_consume(a, 10_d).ok());
    CHECK(later_checks == 1);
    CHECK(observed == 1);
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an observer that throws: the change happens once and the failure is reported",
          "[monitor][failure]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  auto thrower =
      coord.add_monitor(a, [](const Event&) { throw std::runtime_error("dashboard offline"); });
  std::vector<UsageKind> later;
  auto after = coord.add_monitor(a, [&later](const Event& e) { later.push_back(e.kind); });

  CHECK(coord.try_consume(a, 10_d).ok());
  CHECK(coord.get_budget(a) == 90_d);
  auto m = coord.agent_metrics(a);
  CHECK(m.used_budget == 10_d);
  CHECK(m.consumption_count == 1);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].type == ViolationType::MonitorFailure);
  CHECK(seen[0].severity == AlertSeverity::High);
  CHECK(seen[0].message == "a monitor threw; balances are unaffected");
  CHECK(seen[0].details == Details{{"exception", "dashboard offline"}, {"usage", "consume"}});

  {
    auto r = coord.try_reserve(a, 20_d);
    REQUIRE(r.ok());
    auto settled = r.commit(5_d);
    CHECK(settled.ok());
    CHECK(settled.charged == 5_d);
    CHECK(settled.refunded == 15_d);
    auto unused = coord.try_reserve(a, 10_d);
    REQUIRE(unused.ok());
  }
  REQUIRE(seen.size() == 5);
  CHECK(seen[1].details.at("usage") == "reserve");
  CHECK(seen[2].details.at("usage") == "commit");
  CHECK(seen[3].details.at("usage") == "reserve");
  CHECK(seen[4].details.at("usage") == "release");
  // The observer registered after the thrower still saw every change, once.
  CHECK(later == std::vector<UsageKind>{UsageKind::consume, UsageKind::reserve, UsageKind::commit,
                                        UsageKind::reserve, UsageKind::release});
  m = coord.agent_metrics(a);
  CHECK(m.remaining_budget == 85_d);
  CHECK(m.used_budget == 15_d);
  CHECK(m.reserved_budget == 0_d);
  CHECK(m.consumption_count == 2);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("a monitor that spends from an agent whose monitors are running gets reentrant_call",
          "[monitor][failure]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  AgentId b = h.agent("b", 100_d);
  int b_events = 0;
  auto b_monitor = coord.add_monitor(b, [&b_events](const Event&) { ++b_events; });
  std::vector<ConsumeStatus> inner;
  Decimal budget_seen;
  Decimal used_seen;

  SECTION("from an observer; other agents can be spent from") {
    auto handle = coord.add_monitor(a, [&](const Event&) {
      inner.push_back(coord.try_consume(a, 1_d).status());
      inner.push_back(coord.try_reserve(a, 1_d).status());
      inner.push_back(coord.try_consume(b, 1_d).status());
      budget_seen = coord.get_budget(a);
      used_seen = coord.agent_metrics(a).used_budget;
    });
    CHECK(coord.try_consume(a, 10_d).ok());
    CHECK(inner == std::vector<ConsumeStatus>{ConsumeStatus::reentrant_call,
                                              ConsumeStatus::reentrant_call, ConsumeStatus::ok});
    CHECK(budget_seen == 90_d); // an observer runs after the change
    CHECK(used_seen == 10_d);
    CHECK(coord.get_budget(a) == 90_d);
    CHECK(coord.agent_metrics(a).reserved_budget == 0_d);
    CHECK(coord.get_budget(b) == 99_d);
    CHECK(b_events == 1);
  }
  SECTION("from a check") {
    auto handle = coord.add_monitor(a, [&](const Event&) {
      inner.push_back(coord.try_consume(a, 1_d).status());
      budget_seen = coord.get_budget(a);
      return true;
    });
    CHECK(coord.try_consume(a, 10_d).ok());
    CHECK(inner == std::vector<ConsumeStatus>{ConsumeStatus::reentrant_call});
    CHECK(budget_seen == 100_d); // a check runs before the change
    CHECK(coord.get_budget(a) == 90_d);
  }
  SECTION("two agents whose monitors spend from each other") {
    // a's observer spends from b, whose observer spends from a: the inner call on a must not
    // wait for the lock this thread holds while it runs a's monitors.
    auto to_b = coord.add_monitor(
        a, [&](const Event&) { inner.push_back(coord.try_consume(b, 2_d).status()); });
    auto to_a = coord.add_monitor(
        b, [&](const Event&) { inner.push_back(coord.try_consume(a, 3_d).status()); });
    CHECK(coord.try_consume(a, 10_d).ok());
    CHECK(inner == std::vector<ConsumeStatus>{ConsumeStatus::reentrant_call, ConsumeStatus::ok});
    CHECK(coord.get_budget(a) == 90_d);
    CHECK(coord.get_budget(b) == 98_d);
    CHECK(b_events == 1);
  }
  SECTION("the throwing consume inside a check becomes a veto") {
    auto handle = coord.add_monitor(a, [&](const Event&) {
      coord.consume(a, 1_d);
      return true;
    });
    CHECK(coord.try_consume(a, 10_d).status() == ConsumeStatus::denied_by_monitor);
    CHECK(coord.get_budget(a) == 100_d);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].type == ViolationType::MonitorFailure);
    CHECK(seen[0].details ==
          Details{{"exception", "safeguards: agent-1 cannot consume 1.0: reentrant call"},
                  {"usage", "consume"}});
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("the coordinator reports an Overspend itself, without any monitor", "[violation]") {
  Harness h;
  auto& coord = h.coord;
  auto& seen = h.violations.seen;
  AgentId a = h.agent("a", 100_d);
  auto r = coord.try_reserve(a, 10_d);
  REQUIRE(r.ok());
  h.clock.advance(2s);
  auto settled = r.commit(150_d);
  CHECK(settled.ok());
  CHECK(settled.charged == 100_d);
  CHECK(settled.overspent == 50_d);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].agent == a);
  CHECK(seen[0].type == ViolationType::Overspend);
  CHECK(seen[0].severity == AlertSeverity::High);
  CHECK(seen[0].message == "Actual usage 150.0 exceeded what agent-1 could pay by 50.0");
  CHECK(seen[0].details == Details{{"actual", "150.0"},
                                   {"charged", "100.0"},
                                   {"estimate", "10.0"},
                                   {"uncovered", "50.0"}});
  CHECK(seen[0].timestamp == at(2s));
  CHECK(coord.agent_metrics(a).overspent_budget == 50_d);
  CHECK(coord.get_budget(a) == 0_d);
  CHECK(coord.check_invariants().empty());
}

// ---- violation sinks -----------------------------------------------------------------------

TEST_CASE("every violation sink receives every violation, a throwing one is only counted",
          "[violation][sink]") {
  ManualClock clock;
  Coordinator coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  std::vector<ManualViolation> first;
  std::vector<ManualViolation> second;
  auto thrower = coord.add_violation_sink(
      [](const ManualViolation&) { throw std::runtime_error("pager down"); });
  auto s1 = coord.add_violation_sink([&first](const ManualViolation& v) { first.push_back(v); });
  auto s2 = coord.add_violation_sink([&second](const ManualViolation& v) { second.push_back(v); });
  auto reporter = coord.add_monitor(a, report_every_change);
  CHECK(coord.sink_failures() == 0);

  clock.advance(1500ms);
  CHECK(coord.try_consume(a, 10_d).ok());
  CHECK(coord.get_budget(a) == 90_d);
  REQUIRE(first.size() == 1);
  REQUIRE(second.size() == 1);
  CHECK(coord.sink_failures() == 1);
  CHECK(first[0].agent == a);
  CHECK(first[0].type == ViolationType::PolicyBreach);
  CHECK(first[0].severity == AlertSeverity::Info);
  CHECK(first[0].message == "saw consume of 10.0");
  CHECK(first[0].details == Details{{"kind", "consume"}});
  CHECK(first[0].timestamp == at(1500ms));
  CHECK(fmt::format("{}", second[0]) ==
        "[INFO] POLICY_BREACH a (agent-1) at 1.5s: saw consume of 10.0 {kind=consume}");

  s1.reset();
  CHECK_FALSE(s1.active());
  CHECK(coord.try_consume(a, 5_d).ok());
  CHECK(first.size() == 1);
  CHECK(second.size() == 2);
  CHECK(coord.sink_failures() == 2);

  thrower.reset();
  std::vector<ManualViolation> late;
  auto s3 = coord.add_violation_sink([&late](const ManualViolation& v) { late.push_back(v); });
  {
    auto s4 = coord.add_violation_sink([](const ManualViolation&) {});
  } // destroyed: unregistered
  CHECK(coord.try_consume(a, 5_d).ok());
  CHECK(second.size() == 3);
  CHECK(late.size() == 1); // a sink sees only what is reported after it was added
  CHECK(coord.sink_failures() == 2);
  CHECK(coord.get_budget(a) == 80_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("a throwing sink never changes a veto or a balance", "[violation][sink]") {
  Harness h;
  auto& coord = h.coord;
  AgentId a = h.agent("a", 100_d);
  auto thrower = coord.add_violation_sink([](const ManualViolation&) { throw 1; });
  auto limit = coord.add_monitor(a, SpendingLimit{30_d});
  auto low = coord.add_monitor(a, LowBudgetAlert{.percent = 75});
  CHECK(coord.try_consume(a, 31_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_consume(a, 30_d).ok()); // 70 left: crosses the 75 % line
  CHECK(coord.get_budget(a) == 70_d);
  CHECK(coord.sink_failures() == 2);
  REQUIRE(h.violations.seen.size() == 2);
  CHECK(h.violations.seen[0].type == ViolationType::BudgetLimitExceeded);
  CHECK(h.violations.seen[1].type == ViolationType::LowBudget);
}

TEST_CASE("violation types format as the guide names them", "[violation][fmt]") {
  auto [type, type_name] = GENERATE(table<ViolationType, std::string>({
      {ViolationType::BudgetLimitExceeded, "BUDGET_LIMIT_EXCEEDED"},
      {ViolationType::LowBudget, "LOW_BUDGET"},
      {ViolationType::HighUsage, "HIGH_USAGE"},
      {ViolationType::Overspend, "OVERSPEND"},
      {ViolationType::PoolBreach, "POOL_BREACH"},
      {ViolationType::RateLimit, "RATE_LIMIT"},
      {ViolationType::Unauthorized, "UNAUTHORIZED"},
      {ViolationType::PolicyBreach, "POLICY_BREACH"},
      {ViolationType::MonitorFailure, "MONITOR_FAILURE"},
  }));
  CHECK(fmt::format("{}", type) == type_name);
  CHECK(to_string(type) == type_name);
  // They take string format specs.
  CHECK(fmt::format("[{:<22}]", type) ==
        "[" + type_name + std::string(std::size_t{22} - type_name.size(), ' ') + "]");
}

TEST_CASE("alert severities format as the guide names them", "[violation][fmt]") {
  auto [severity, severity_name] = GENERATE(table<AlertSeverity, std::string>({
      {AlertSeverity::Info, "INFO"},
      {AlertSeverity::Low, "LOW"},
      {AlertSeverity::Medium, "MEDIUM"},
      {AlertSeverity::High, "HIGH"},
      {AlertSeverity::Critical, "CRITICAL"},
  }));
  CHECK(fmt::format("{}", severity) == severity_name);
  CHECK(to_string(severity) == severity_name);
  CHECK(fmt::format("[{:>10}]", severity) ==
        "[" + std::string(std::size_t{10} - severity_name.size(), ' ') + severity_name + "]");
}

TEST_CASE("a violation formats as the guide's line", "[violation][fmt]") {
  const auto when = std::chrono::sys_days{std::chrono::year{2026} / std::chrono::January / 2} + 3h +
                    4min + 5s + 6us;
  Violation v{AgentId(2),
              ViolationType::BudgetLimitExceeded,
              AlertSeverity::Medium,
              "Agent exceeded spending limit of 100.0",
              {{"spent", "110.0"}, {"overage", "10.0"}, {"limit", "100.0"}},
              when};
  CHECK(fmt::format("{}", v) == "[MEDIUM] BUDGET_LIMIT_EXCEEDED agent-2 at "
                                "2026-01-02T03:04:05.000006Z: Agent exceeded spending limit of "
                                "100.0 {limit=100.0, overage=10.0, spent=110.0}");

  Violation bare{AgentId(1), ViolationType::Unauthorized, AlertSeverity::Critical, "nope", {}, {}};
  CHECK(fmt::format("{}", bare) ==
        "[CRITICAL] UNAUTHORIZED agent-1 at 1970-01-01T00:00:00.000000Z: nope");

  SECTION("a real SpendingLimit violation, as docs/coordinator.md shows it") {
    BudgetCoordinator coord;
    std::vector<Violation> seen;
    auto sink = coord.add_violation_sink([&seen](const Violation& x) { seen.push_back(x); });
    coord.create_agent({.name = "first", .initial_budget = 1_d});
    AgentId a = coord.create_agent({.name = "second", .initial_budget = 200_d});
    auto limit = coord.add_monitor(a, SpendingLimit{Decimal("100.0")});
    CHECK(coord.try_consume(a, 110_d).status() == ConsumeStatus::denied_by_monitor);
    REQUIRE(seen.size() == 1);
    const std::string text = fmt::format("{}", seen[0]);
    const std::string stamp = safeguards::detail::timestamp_to_string(seen[0].timestamp);
    CHECK(text == "[MEDIUM] BUDGET_LIMIT_EXCEEDED second (agent-2) at " + stamp +
                      ": Agent exceeded spending limit of 100.0 {limit=100.0, overage=10.0, "
                      "spent=110.0}");
    CHECK(stamp.size() == 27); // 2026-01-02T03:04:05.000006Z
    CHECK(stamp.back() == 'Z');
  }
}

// ---- audit trail ---------------------------------------------------------------------------

TEST_CASE("create, update, transfer and remove each emit their BudgetChange records", "[audit]") {
  ManualClock clock;
  Coordinator coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  ManualAuditLog log;
  auto sink = coord.add_audit_sink(log); // a copy: it shares the log's buffer

  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d, .priority = 9});
  CHECK(log.records().empty()); // pools are not agents' budgets

  clock.advance(1s);
  AgentId a = coord.create_agent(
      {.name = "critical_agent", .initial_budget = Decimal("200.0"), .priority = 8, .pool = p});
  clock.advance(1s);
  AgentId b = coord.create_agent({.name = "b", .initial_budget = 50_d, .priority = 3, .pool = p});
  clock.advance(1s);
  coord.update_budget(a, Decimal("150.0"), "reduce after review");

  auto records = log.records();
  REQUIRE(records.size() == 3);
  CHECK(records[0] ==
        ManualChange{a, 8, 0_d, 200_d, 200_d, "agent created", at(1s), "critical_agent", 1});
  CHECK(records[1] == ManualChange{b, 3, 0_d, 50_d, 50_d, "agent created", at(2s), "b", 2});
  CHECK(records[2] == ManualChange{a, 8, 200_d, 150_d, -50_d, "reduce after review", at(3s),
                                   "critical_agent", 3});
  CHECK(fmt::format("{}", records[2]) == "Budget change for agent critical_agent (agent-1, "
                                         "priority 8): 200.0 \u2192 150.0 (-50.0). Reason: "
                                         "reduce after review");
  CHECK(fmt::format("{}", records[0]) == "Budget change for agent critical_agent (agent-1, "
                                         "priority 8): 0.0 \u2192 200.0 (+200.0). Reason: "
                                         "agent created");
  CHECK(to_json_line(records[2]) ==
        "{\"agent\":1,\"agent_name\":\"critical_agent\",\"sequence\":3,\"priority\":8,"
        "\"old\":\"200.0\",\"new\":\"150.0\",\"delta\":\"-50.0\","
        "\"reason\":\"reduce after review\",\"timestamp_us\":3000000}\n");

  // Plain consumes and reservations are not budget changes.
  REQUIRE(coord.try_consume(a, 10_d).ok());
  auto held = coord.try_reserve(b, 20_d);
  REQUIRE(held.ok());
  CHECK(log.records().size() == 3);

  // Failed management calls change nothing and record nothing.
  CHECK_THROWS_AS(coord.update_budget(a, 2000_d, "too much"), PoolExhausted);
  CHECK_THROWS_AS(coord.transfer(a, b, 1000_d, "too much"), BudgetExceeded);
  CHECK(log.records().size() == 3);

  clock.advance(1s);
  coord.transfer(a, b, Decimal("40.5"), "rebalance");
  records = log.records();
  REQUIRE(records.size() == 5);
  CHECK(records[3] == ManualChange{a, 8, 140_d, Decimal("99.5"), Decimal("-40.5"), "rebalance",
                                   at(4s), "critical_agent", 4});
  CHECK(records[4] ==
        ManualChange{b, 3, 30_d, Decimal("70.5"), Decimal("40.5"), "rebalance", at(4s), "b", 5});
  CHECK(fmt::format("{}", records[4]) ==
        "Budget change for agent b (agent-2, priority 3): 30.0 \u2192 70.5 (+40.5). Reason: "
        "rebalance");

  // The record carries the agent's priority at the time of the change.
  coord.set_priority(a, 10);
  clock.advance(1s);
  coord.update_budget(a, Decimal("99.5"), "no-op review");
  clock.advance(1s);
  coord.update_budget(a, 120_d, "raise");
  records = log.records();
  REQUIRE(records.size() == 7);
  CHECK(records[5] == ManualChange{a, 10, Decimal("99.5"), Decimal("99.5"), 0_d, "no-op review",
                                   at(5s), "critical_agent", 6});
  CHECK(fmt::format("{}", records[5]) == "Budget change for agent critical_agent (agent-1, "
                                         "priority 10): 99.5 \u2192 99.5 (+0.0). Reason: no-op "
                                         "review");
  CHECK(records[6] == ManualChange{a, 10, Decimal("99.5"), 120_d, Decimal("20.5"), "raise", at(6s),
                                   "critical_agent", 7});

  // Removal sweeps the remaining budget only; what is reserved goes back when it settles.
  clock.advance(1s);
  coord.remove_agent(b);
  clock.advance(1s);
  coord.remove_agent(a, "decommissioned");
  records = log.records();
  REQUIRE(records.size() == 9);
  CHECK(records[7] == ManualChange{b, 3, Decimal("70.5"), 0_d, Decimal("-70.5"), "agent removed",
                                   at(7s), "b", 8});
  CHECK(records[8] ==
        ManualChange{a, 10, 120_d, 0_d, -120_d, "decommissioned", at(8s), "critical_agent", 9});
  CHECK(fmt::format("{}", records[8]) == "Budget change for agent critical_agent (agent-1, "
                                         "priority 10): 120.0 \u2192 0.0 (-120.0). Reason: "
                                         "decommissioned");
  held.release();
  CHECK(coord.pool_metrics(p).unallocated_budget == Decimal("990.0"));
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("changes made while no audit sink is registered keep their sequence numbers", "[audit]") {
  ManualClock clock;
  Coordinator coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  (void)coord.create_agent({.name = "a", .initial_budget = 10_d, .pool = p}); // 1, unseen
  (void)coord.create_agent({.name = "b", .initial_budget = 10_d, .pool = p}); // 2, unseen
  std::vector<ManualChange> seen;
  {
    auto sink = coord.add_audit_sink([&](const ManualChange& c) { seen.push_back(c); });
    clock.advance(5s);
    AgentId c = coord.create_agent({.name = "c", .initial_budget = 20_d, .priority = 4, .pool = p});
    REQUIRE(seen.size() == 1); // the creation after the sink came, whole
    CHECK(seen[0].sequence == 3);
    CHECK(seen[0].agent == c);
    CHECK(seen[0].agent_name == "c");
    CHECK(seen[0].reason == "agent created");
    CHECK(seen[0].priority == 4);
    CHECK(seen[0].old_budget == 0_d);
    CHECK(seen[0].new_budget == 20_d);
    CHECK(seen[0].delta == 20_d);
    CHECK(seen[0].timestamp == clock.now());
  }
  (void)coord.create_agent({.name = "d", .initial_budget = 10_d, .pool = p}); // 4, unseen
  auto again = coord.add_audit_sink([&](const ManualChange& c) { seen.push_back(c); });
  (void)coord.create_agent({.name = "e", .initial_budget = 10_d, .pool = p});
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].sequence == 5);
  CHECK(seen[1].agent_name == "e");
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("audit sinks: several, unregistering, throwing, calling back into the coordinator",
          "[audit][sink]") {
  ManualClock clock;
  Coordinator coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  ManualAuditLog first;
  std::vector<Decimal> remaining_seen;
  auto thrower =
      coord.add_audit_sink([](const ManualChange&) { throw std::runtime_error("disk full"); });
  auto s1 = coord.add_audit_sink(first);
  // Sinks run after the coordinator's lock is released, so one may read it.
  auto s2 = coord.add_audit_sink([&](const ManualChange& c) {
    remaining_seen.push_back(coord.agent_metrics(c.agent).remaining_budget);
  });

  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  CHECK(coord.sink_failures() == 1);
  coord.update_budget(a, 60_d, "trim"); // a throwing sink does not make the update throw
  CHECK(coord.get_budget(a) == 60_d);
  CHECK(coord.sink_failures() == 2);
  CHECK(first.records().size() == 2);
  CHECK(remaining_seen == std::vector<Decimal>{100_d, 60_d});

  s1.reset();
  thrower.reset();
  coord.update_budget(a, 70_d, "restore");
  CHECK(first.records().size() == 2);
  CHECK(remaining_seen == std::vector<Decimal>{100_d, 60_d, 70_d});
  CHECK(coord.sink_failures() == 2);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("MemoryAuditLog keeps the most recent records up to its capacity", "[audit]") {
  ManualClock clock;
  Coordinator coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  ManualAuditLog log(3);
  auto sink = coord.add_audit_sink(log);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  for (int i = 1; i <= 4; ++i) {
    clock.advance(1s);
    coord.update_budget(a, Decimal(100 - i), fmt::format("r{}", i));
  }
  auto records = log.records();
  REQUIRE(records.size() == 3); // "agent created" and "r1" were dropped, oldest first
  CHECK(records[0].reason == "r2");
  CHECK(records[1].reason == "r3");
  CHECK(records[2].reason == "r4");
  CHECK(records[2] == ManualChange{a, 5, 97_d, 96_d, -1_d, "r4", at(4s), "a", 5});

  SECTION("copies share one buffer") {
    ManualAuditLog copy = log;
    copy(ManualChange{a, 5, 96_d, 96_d, 0_d, "by hand", at(9s)});
    records = log.records();
    REQUIRE(records.size() == 3);
    CHECK(records[0].reason == "r3");
    CHECK(records[2].reason == "by hand");
  }
  SECTION("capacity zero keeps nothing") {
    ManualAuditLog none(0);
    auto none_sink = coord.add_audit_sink(none);
    coord.update_budget(a, 10_d, "ignored");
    CHECK(none.records().empty());
    CHECK(log.records().back().reason == "ignored");
  }
  SECTION("capacity one keeps the last") {
    MemoryAuditLog one(1);
    one(BudgetChange{AgentId(1), 5, 1_d, 2_d, 1_d, "first", {}});
    one(BudgetChange{AgentId(1), 5, 2_d, 3_d, 1_d, "second", {}});
    REQUIRE(one.records().size() == 1);
    CHECK(one.records()[0].reason == "second");
  }
}

TEST_CASE("changes made from inside a monitor reach every observer after the change observed",
          "[monitor][nested]") {
  Harness h;
  AgentId a = h.agent("a", 10_d);
  auto pending = h.coord.reserve(a, 8_d);
  std::vector<std::pair<UsageKind, Decimal>> seen;
  // An observer that settles the agent's pending reservation when it sees the first consume:
  // used goes from 1 to 9 of 10, past HighUsageWarning's 80 % line.
  auto settle = h.coord.add_monitor(a, [&](const Event& e) {
    if (e.kind == UsageKind::consume)
      CHECK(pending.commit(8_d).ok());
  });
  auto count =
      h.coord.add_monitor(a, [&](const Event& e) { seen.emplace_back(e.kind, e.used_after); });
  auto high = h.coord.add_monitor(a, HighUsageWarning{.percent = 80});
  REQUIRE(h.coord.try_consume(a, 1_d).ok());
  // Both changes, each once, in the order they were made, with their own numbers.
  CHECK(seen == std::vector<std::pair<UsageKind, Decimal>>{{UsageKind::consume, 1_d},
                                                           {UsageKind::commit, 9_d}});
  REQUIRE(h.violations.seen.size() == 1);
  CHECK(h.violations.seen[0].type == ViolationType::HighUsage);
  CHECK(h.violations.seen[0].details.at("used_budget") == "9.0");
}

TEST_CASE("a change made by a veto check is delivered before the change it was checking",
          "[monitor][nested]") {
  Harness h;
  AgentId a = h.agent("a", 10_d);
  auto pending = h.coord.reserve(a, 5_d);
  std::vector<std::pair<UsageKind, Decimal>> seen; // kind, remaining after
  auto check = h.coord.add_monitor(a, [&](const Event& e) {
    if (e.kind == UsageKind::consume)
      pending.release(); // gives the 5 back before the consume is decided
    return true;
  });
  auto count =
      h.coord.add_monitor(a, [&](const Event& e) { seen.emplace_back(e.kind, e.remaining_after); });
  REQUIRE(h.coord.try_consume(a, 4_d).ok()); // 5 remaining when checked; 10 when debited
  CHECK(seen == std::vector<std::pair<UsageKind, Decimal>>{{UsageKind::release, 10_d},
                                                           {UsageKind::consume, 6_d}});
  // A consume from inside the agent's own monitor is refused, as before.
  auto nested = h.coord.add_monitor(a, [&](const Event& e) {
    if (e.kind == UsageKind::consume && e.amount == 1_d)
      CHECK(h.coord.try_consume(a, 1_d).status() == ConsumeStatus::reentrant_call);
  });
  REQUIRE(h.coord.try_consume(a, 1_d).ok());
  CHECK(h.coord.get_budget(a) == 5_d);
}

TEST_CASE("SpendingLimit reports a commit whose actual usage carries spending past it",
          "[monitor][builtin][limit]") {
  Harness h;
  AgentId a = h.agent("a", 1000_d);
  auto limit = h.coord.add_monitor(a, SpendingLimit{100_d});
  auto r = h.coord.reserve(a, 10_d);
  h.clock.advance(1s);
  auto settled = r.commit(500_d); // a commit cannot be vetoed: the call has been made
  CHECK(settled.ok());
  CHECK(settled.charged == 500_d);
  CHECK(h.coord.agent_metrics(a).used_budget == 500_d);
  REQUIRE(h.violations.seen.size() == 1);
  const auto& v = h.violations.seen[0];
  CHECK(v.type == ViolationType::BudgetLimitExceeded);
  CHECK(v.details == Details{{"charged", "500.0"},
                             {"kind", "commit"},
                             {"limit", "100.0"},
                             {"overage", "400.0"},
                             {"spent", "500.0"}});
  CHECK(v.message == "Agent's actual usage exceeded spending limit of 100.0");
  // Later consumes are vetoed (and that episode reported once); a commit within its
  // reservation, or one that refunds, raises nothing.
  CHECK(h.coord.try_consume(a, 1_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(h.violations.seen.size() == 2);

  SECTION("a commit that stays within the limit reports nothing") {
    Harness g;
    AgentId b = g.agent("b", 1000_d);
    auto l = g.coord.add_monitor(b, SpendingLimit{100_d});
    auto r2 = g.coord.reserve(b, 50_d);
    CHECK(r2.commit(80_d).ok()); // 80 <= 100
    CHECK(g.violations.seen.empty());
  }
}

TEST_CASE("SpendingLimit vetoes huge requests without throwing and refuses bad limits",
          "[monitor][builtin][limit]") {
  Harness h;
  AgentId a = h.agent("a", 100_d);
  REQUIRE(h.coord.try_consume(a, 10_d).ok());
  auto limit = h.coord.add_monitor(a, SpendingLimit{50_d});
  // 10 spent + Decimal::max() does not fit a Decimal: the check must not throw (a throwing check
  // would be reported as a MonitorFailure), it must veto as over the limit.
  auto r = h.coord.try_reserve(a, Decimal::max());
  CHECK(r.status() == ConsumeStatus::insufficient); // the balance says no before any check
  CHECK(h.violations.seen.empty());
  SpendingLimit<Decimal> direct{50_d};
  Event e{a, {}, UsageKind::consume, Decimal::max(), 100_d, 90_d, 90_d, 10_d, 10_d, at(0s)};
  std::vector<ManualViolation> got;
  Coordinator::ViolationReporter::Deliver deliver = [&](ManualViolation&& v) { got.push_back(v); };
  const Reporter reporter(deliver, a, "a", at(0s));
  CHECK_FALSE(direct.check(e, reporter));
  REQUIRE(got.size() == 1);
  CHECK(got[0].type == ViolationType::BudgetLimitExceeded);
  CHECK_THAT(got[0].details.at("spent"), Catch::Contains("beyond the amount type's range"));

  CHECK_THROWS_AS(SpendingLimit{-1_d}, InvalidArgument);
  CHECK_THROWS_AS(SpendingLimit<double>{std::numeric_limits<double>::quiet_NaN()}, InvalidArgument);
  CHECK_THROWS_AS(SpendingLimit<double>{std::numeric_limits<double>::infinity()}, InvalidArgument);
  CHECK(SpendingLimit{0_d}.limit() == 0_d);
}

TEST_CASE("threshold percentages outside 0..100 are refused where the monitor is made",
          "[monitor][builtin][percent]") {
  const std::int64_t bad =
      GENERATE(as<std::int64_t>{}, -1, 101, 150, -100, std::numeric_limits<std::int64_t>::max(),
               std::numeric_limits<std::int64_t>::min());
  INFO("percent " << bad);
  CHECK_THROWS_AS(LowBudgetAlert{.percent = bad}, InvalidArgument);
  CHECK_THROWS_AS(HighUsageWarning{.percent = bad}, InvalidArgument);
  CHECK_THROWS_WITH(LowBudgetAlert{.percent = bad},
                    Catch::Contains("between 0 and 100") && Catch::Contains(std::to_string(bad)));
  static_assert(LowBudgetAlert{.percent = 0}.percent.value() == 0);
  static_assert(HighUsageWarning{.percent = 100}.percent.value() == 100);
  static_assert(LowBudgetAlert{}.percent == Percent(15));
  static_assert(!std::is_convertible_v<double, Percent>, "15.5 % would be rounded silently");
}

TEST_CASE("violations and audit records carry the agent's name", "[violation][audit][names]") {
  Harness h;
  ManualAuditLog log;
  auto sink = h.coord.add_audit_sink(log);
  AgentId a = h.agent("summarizer", 100_d);
  auto limit = h.coord.add_monitor(a, SpendingLimit{10_d});
  CHECK(h.coord.try_consume(a, 11_d).status() == ConsumeStatus::denied_by_monitor);
  REQUIRE(h.violations.seen.size() == 1);
  CHECK(h.violations.seen[0].agent == a);
  CHECK(h.violations.seen[0].agent_name == "summarizer");
  CHECK_THAT(fmt::format("{}", h.violations.seen[0]),
             Catch::StartsWith("[MEDIUM] BUDGET_LIMIT_EXCEEDED summarizer (agent-1) at "));
  auto r = h.coord.reserve(a, 5_d);
  CHECK(r.commit(200_d).ok()); // 100 of it uncovered: an Overspend names the agent too
  REQUIRE(h.violations.seen.size() == 3);
  for (const auto& v : h.violations.seen)
    CHECK(v.agent_name == "summarizer");
  CHECK(h.violations.seen[1].type == ViolationType::BudgetLimitExceeded); // by the observer
  CHECK(h.violations.seen[2].type == ViolationType::Overspend);
  REQUIRE(log.records().size() == 1);
  CHECK(log.records()[0].agent_name == "summarizer");
  CHECK(log.records()[0].sequence == 1);
  // Without a name (a record made by hand), the id alone.
  ManualViolation anonymous{a, ViolationType::LowBudget, AlertSeverity::Low, "m", {}, at(0s)};
  CHECK(fmt::format("{}", anonymous) == "[LOW] LOW_BUDGET agent-1 at 0.0s: m");
}

TEST_CASE("MonitorOptions: a change reads the clock only when a monitor of its agent reads "
          "timestamps - violations are stamped either way",
          "[monitor][timestamp]") {
  Harness h;
  h.clock.set(at(5s));
  const AgentId a = h.agent("a", 100_d);
  std::vector<TimePoint> quiet_seen, loud_seen;
  auto quiet = h.coord.add_monitor(
      a,
      [&](const Event& e, const Reporter& r) {
        quiet_seen.push_back(e.timestamp);
        report_every_change(e, r);
      },
      MonitorOptions{.reads_timestamp = false});

  h.coord.consume(a, 1_d);
  CHECK(quiet_seen == std::vector<TimePoint>{TimePoint{}}); // the clock's epoch: not read
  REQUIRE(h.violations.seen.size() == 1);
  CHECK(h.violations.seen[0].timestamp == at(5s)); // read when the violation was reported

  {
    // A monitor that reads timestamps: every change of the agent is stamped, for both.
    auto loud = h.coord.add_monitor(a, [&](const Event& e) { loud_seen.push_back(e.timestamp); });
    h.clock.set(at(7s));
    h.coord.consume(a, 1_d);
    CHECK(quiet_seen.back() == at(7s));
    CHECK(loud_seen == std::vector<TimePoint>{at(7s)});
  }
  // Gone again: settlements and consumes alike go unstamped.
  auto r = h.coord.reserve(a, 2_d);
  (void)r.commit(1_d);
  h.coord.consume(a, 1_d);
  REQUIRE(quiet_seen.size() == 5);
  CHECK(quiet_seen[2] == TimePoint{});
  CHECK(quiet_seen[3] == TimePoint{});
  CHECK(quiet_seen[4] == TimePoint{});
  CHECK(h.violations.seen.back().timestamp == at(7s));

  // An event made unstamped and delivered after a monitor that reads timestamps joined (here:
  // a settlement queued by the observer, which then registers one) is stamped when delivered.
  std::optional<Coordinator::Reservation> pending = h.coord.reserve(a, 2_d);
  std::optional<MonitorHandle> late;
  std::vector<std::pair<UsageKind, TimePoint>> late_seen;
  auto registrar = h.coord.add_monitor(
      a,
      [&](const Event& e) {
        if (e.kind != UsageKind::consume || late)
          return;
        (void)pending->commit(2_d); // queued behind this event, made while nobody reads time
        late = h.coord.add_monitor(
            a, [&](const Event& seen) { late_seen.emplace_back(seen.kind, seen.timestamp); });
      },
      MonitorOptions{.reads_timestamp = false});
  h.clock.set(at(8s));
  h.coord.consume(a, 1_d);
  CHECK(late_seen == std::vector<std::pair<UsageKind, TimePoint>>{{UsageKind::commit, at(8s)}});

  // Usage history reads the clock anyway, so its coordinator's events are stamped.
  ManualClock clock(at(9s));
  Coordinator with_history{CoordinatorOptions{.history_capacity = 4}, FixedAllocation{}, clock};
  const AgentId b = with_history.create_agent({.name = "b", .initial_budget = 10_d});
  std::vector<TimePoint> seen;
  auto watch = with_history.add_monitor(
      b, [&](const Event& e) { seen.push_back(e.timestamp); },
      MonitorOptions{.reads_timestamp = false});
  with_history.consume(b, 1_d);
  CHECK(seen == std::vector<TimePoint>{at(9s)});
}

TEST_CASE("the built-in monitors read no clock for their events, and their violations are "
          "stamped when reported",
          "[monitor][timestamp]") {
  static_assert(!LowBudgetAlert::reads_timestamp && !HighUsageWarning::reads_timestamp &&
                !SpendingLimit<Decimal>::reads_timestamp);
  Harness h;
  h.clock.set(at(5s));
  const AgentId a = h.agent("a", 100_d);
  std::vector<TimePoint> seen;
  // Only events of the agent nobody else asks a timestamp for: this observer says so too.
  auto tally = h.coord.add_monitor(
      a, [&](const Event& e) { seen.push_back(e.timestamp); },
      MonitorOptions{.reads_timestamp = false});
  auto low = h.coord.add_monitor(a, LowBudgetAlert{.percent = 50});
  auto high = h.coord.add_monitor(a, HighUsageWarning{.percent = 50});
  auto limit = h.coord.add_monitor(a, SpendingLimit<Decimal>{80_d});
  h.clock.set(at(6s));
  h.coord.consume(a, 60_d); // crosses both lines
  CHECK(h.coord.try_consume(a, 30_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(seen == std::vector<TimePoint>{TimePoint{}});
  REQUIRE(h.violations.seen.size() == 3); // low budget, high usage, the limit
  for (const auto& v : h.violations.seen)
    CHECK(v.timestamp == at(6s));
  // A type's own opt-out wins over options asking for timestamps.
  auto again = h.coord.add_monitor(a, LowBudgetAlert{}, MonitorOptions{.reads_timestamp = true});
  h.coord.consume(a, 1_d);
  CHECK(seen.back() == TimePoint{});
}
