// Budget periods: the windows BudgetPeriod computes (boundary instants, one microsecond before,
// month ends, leap years, year ends, extreme times, bad input), and BudgetPeriods resetting a
// coordinator's agents and pools exactly once per period on a ManualClock: jumps over several
// periods, reservations open across a reset, pools with removed agents, re-entrant audit sinks,
// a clock that goes back, and reset_usage by hand.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <safeguards/big_decimal.hpp>
#include <safeguards/period.hpp>
#include <safeguards/safeguards.hpp>
#include <set>
#include <string>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;
using std::chrono::sys_days;
using std::chrono::year;

namespace {

using Coord = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using Periods = BasicBudgetPeriods<Coord>;
using TimePoint = Coord::time_point;
using Change = Coord::BudgetChange;
using AuditLog = BasicMemoryAuditLog<Change>;
using SysNs = std::chrono::sys_time<std::chrono::nanoseconds>;

// A ManualClock time point on a UTC calendar date.
TimePoint on(std::chrono::year_month_day day, std::chrono::nanoseconds time_of_day = 0ns) {
  return TimePoint(sys_days(day).time_since_epoch() + time_of_day);
}

SysNs sys(std::chrono::year_month_day day, std::chrono::nanoseconds time_of_day = 0ns) {
  return SysNs(sys_days(day).time_since_epoch() + time_of_day);
}

std::vector<Change> period_resets(const AuditLog& log) {
  std::vector<Change> out;
  for (const auto& c : log.records())
    if (c.reason.rfind("period reset", 0) == 0)
      out.push_back(c);
  return out;
}

// A coordinator on a ManualClock that starts at `start`, with its audit trail in memory.
struct Fixture {
  explicit Fixture(TimePoint start) : clock(start), coord({}, {}, clock) {}
  ManualClock clock;
  Coord coord;
  AuditLog log;
  SinkHandle sink = coord.add_audit_sink(log);
};

// A clock that can be set backwards, for the one test that needs it.
struct SettableClock {
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<SettableClock, duration>;
  std::shared_ptr<std::atomic<rep>> now_ = std::make_shared<std::atomic<rep>>(0);
  time_point now() const noexcept { return time_point(duration(now_->load())); }
  void set(time_point t) const noexcept { now_->store(t.time_since_epoch().count()); }
};

} // namespace

// ---- BudgetPeriod ----------------------------------------------------------------------------

TEST_CASE("period: daily boundary at the instant and one microsecond before", "[period]") {
  const auto p = BudgetPeriod::daily();
  const auto midnight = sys(year(2024) / 3 / 2);
  const auto before = p.period_containing(midnight - 1us);
  CHECK(before.start == sys(year(2024) / 3 / 1));
  CHECK(before.end == midnight);
  CHECK(before.contains(midnight - 1us));
  CHECK_FALSE(before.contains(midnight));
  const auto at = p.period_containing(midnight);
  CHECK(at.start == midnight);
  CHECK(at.end == sys(year(2024) / 3 / 3));
  CHECK(p.period_containing(midnight - 1ns).end == midnight);
}

TEST_CASE("period: every fixed length from an anchor, before and after it", "[period]") {
  const auto anchor = sys(year(2024) / 1 / 1, 6h);
  const auto p = BudgetPeriod::every(8h, anchor);
  CHECK(p.kind() == BudgetPeriod::Kind::every);
  CHECK(p.length() == 8h);
  SECTION("at the anchor") {
    CHECK(p.period_containing(anchor) == PeriodWindow<SysNs>{anchor, anchor + 8h});
  }
  SECTION("the boundary instant and one microsecond before") {
    const auto boundary = anchor + 5 * 8h;
    CHECK(p.period_containing(boundary).start == boundary);
    CHECK(p.period_containing(boundary - 1us).start == boundary - 8h);
    CHECK(p.period_containing(boundary - 1us).end == boundary);
  }
  SECTION("before the anchor: floor, not truncation toward the anchor") {
    CHECK(p.period_containing(anchor - 1ns).start == anchor - 8h);
    CHECK(p.period_containing(anchor - 8h).start == anchor - 8h);
    CHECK(p.period_containing(anchor - 8h - 1ns).start == anchor - 16h);
  }
  SECTION("before 1970") {
    const auto q = BudgetPeriod::every(24h);
    const auto t = SysNs(-1ns);
    CHECK(q.period_containing(t) == PeriodWindow<SysNs>{SysNs(-24h), SysNs(0ns)});
  }
  SECTION("an odd length") {
    const auto q = BudgetPeriod::every(7ns, SysNs(3ns));
    CHECK(q.period_containing(SysNs(9ns)) == PeriodWindow<SysNs>{SysNs(3ns), SysNs(10ns)});
    CHECK(q.period_containing(SysNs(10ns)).start == SysNs(10ns));
    CHECK(q.period_containing(SysNs(2ns)).start == SysNs(-4ns));
  }
}

TEST_CASE("period: weekly from a chosen weekday", "[period]") {
  // 2024-03-06 is a Wednesday.
  const auto wednesday = sys(year(2024) / 3 / 6, 15h);
  CHECK(BudgetPeriod::weekly().period_containing(wednesday) ==
        PeriodWindow<SysNs>{sys(year(2024) / 3 / 4), sys(year(2024) / 3 / 11)});
  CHECK(BudgetPeriod::weekly(std::chrono::Sunday).period_containing(wednesday) ==
        PeriodWindow<SysNs>{sys(year(2024) / 3 / 3), sys(year(2024) / 3 / 10)});
  CHECK(BudgetPeriod::weekly(std::chrono::Wednesday).period_containing(wednesday).start ==
        sys(year(2024) / 3 / 6));
  CHECK(BudgetPeriod::weekly(std::chrono::Thursday).period_containing(wednesday).start ==
        sys(year(2024) / 2 / 29));
  // The boundary instant and one microsecond before.
  const auto monday = sys(year(2024) / 3 / 11);
  CHECK(BudgetPeriod::weekly().period_containing(monday).start == monday);
  CHECK(BudgetPeriod::weekly().period_containing(monday - 1us).end == monday);
}

TEST_CASE("period: monthly boundaries follow the calendar", "[period]") {
  const auto p = BudgetPeriod::monthly();
  SECTION("Jan 31 -> Feb 1") {
    const auto feb1 = sys(year(2025) / 2 / 1);
    CHECK(p.period_containing(feb1 - 1us) == PeriodWindow<SysNs>{sys(year(2025) / 1 / 1), feb1});
    CHECK(p.period_containing(feb1) == PeriodWindow<SysNs>{feb1, sys(year(2025) / 3 / 1)});
  }
  SECTION("Feb 28 -> Mar 1 in a non-leap year: 28 days") {
    const auto w = p.period_containing(sys(year(2023) / 2 / 28, 23h + 59min));
    CHECK(w == PeriodWindow<SysNs>{sys(year(2023) / 2 / 1), sys(year(2023) / 3 / 1)});
    CHECK(w.end - w.start == 28 * 24h);
    CHECK(p.period_containing(sys(year(2023) / 3 / 1)).start == sys(year(2023) / 3 / 1));
  }
  SECTION("Feb 29 in a leap year: 29 days") {
    const auto w = p.period_containing(sys(year(2024) / 2 / 29, 12h));
    CHECK(w == PeriodWindow<SysNs>{sys(year(2024) / 2 / 1), sys(year(2024) / 3 / 1)});
    CHECK(w.end - w.start == 29 * 24h);
    CHECK(p.period_containing(sys(year(2024) / 3 / 1) - 1us).end == sys(year(2024) / 3 / 1));
  }
  SECTION("Dec 31 -> Jan 1 of the next year") {
    const auto jan1 = sys(year(2025) / 1 / 1);
    CHECK(p.period_containing(jan1 - 1us) == PeriodWindow<SysNs>{sys(year(2024) / 12 / 1), jan1});
    CHECK(p.period_containing(jan1) == PeriodWindow<SysNs>{jan1, sys(year(2025) / 2 / 1)});
  }
  SECTION("every month of a year ends where the next starts") {
    auto t = sys(year(2024) / 1 / 1);
    for (int month = 0; month < 12; ++month) {
      const auto w = p.period_containing(t);
      CHECK(w.start == t);
      t = w.end;
    }
    CHECK(t == sys(year(2025) / 1 / 1));
  }
}

TEST_CASE("period: time points of other clocks and resolutions", "[period]") {
  SECTION("ManualClock") {
    const auto w = BudgetPeriod::daily().period_containing(on(year(2024) / 3 / 1, 5h));
    CHECK(w.start == on(year(2024) / 3 / 1));
    CHECK(w.end == on(year(2024) / 3 / 2));
  }
  SECTION("whole seconds and whole days") {
    using Secs = std::chrono::sys_seconds;
    const auto w = BudgetPeriod::monthly().period_containing(Secs(sys_days(year(2024) / 2 / 10)));
    CHECK(w.start == Secs(sys_days(year(2024) / 2 / 1)));
    const auto d = BudgetPeriod::weekly().period_containing(sys_days(year(2024) / 3 / 6));
    CHECK(d.start == sys_days(year(2024) / 3 / 4));
  }
  SECTION("a resolution coarser than the period: start <= t < end still holds") {
    using Minutes = std::chrono::sys_time<std::chrono::minutes>;
    const auto p = BudgetPeriod::every(90s);
    for (int m = 0; m < 10; ++m) {
      const auto t = Minutes(std::chrono::minutes(m));
      const auto w = p.period_containing(t);
      CHECK(w.contains(t));
    }
  }
  SECTION("the last representable times: the window ends at the clock's last time point") {
    const auto last = SysNs::max();
    const auto w = BudgetPeriod::every(24h).period_containing(last);
    CHECK(w.end == SysNs::max());
    CHECK(w.start <= last);
    const auto m = BudgetPeriod::monthly().period_containing(last);
    CHECK(m.end == SysNs::max());
    CHECK(BudgetPeriod::daily().period_containing(SysNs::min()).start == SysNs::min());
  }
}

TEST_CASE("period: names and formatting", "[period]") {
  CHECK(BudgetPeriod::daily().name() == "daily (UTC)");
  CHECK(BudgetPeriod::weekly().name() == "weekly from Monday (UTC)");
  CHECK(BudgetPeriod::weekly(std::chrono::Sunday).name() == "weekly from Sunday (UTC)");
  CHECK(BudgetPeriod::monthly().name() == "monthly (UTC)");
  CHECK(BudgetPeriod::every(24h).name() == "every 1d");
  CHECK(BudgetPeriod::every(8h).name() == "every 8h");
  CHECK(BudgetPeriod::every(90min).name() == "every 90min");
  CHECK(BudgetPeriod::every(1500ms).name() == "every 1500ms");
  CHECK(BudgetPeriod::every(7ns).name() == "every 7ns");
  CHECK(BudgetPeriod::every(8h, sys(year(2024) / 1 / 1, 6h)).name() ==
        "every 8h from 2024-01-01T06:00:00Z");
  CHECK(fmt::format("{}", BudgetPeriod::monthly()) == "monthly (UTC)");
  CHECK(BudgetPeriod::format_utc(sys(year(2024) / 2 / 29, 13h + 5min + 7s).time_since_epoch()) ==
        "2024-02-29T13:05:07Z");
  CHECK(BudgetPeriod::format_utc(std::chrono::nanoseconds(1'500'000)) ==
        "1970-01-01T00:00:00.0015Z");
  CHECK(BudgetPeriod::format_utc(-1ns) == "1969-12-31T23:59:59.999999999Z");
  CHECK(BudgetPeriod::every(1h) == BudgetPeriod::every(60min));
  CHECK_FALSE(BudgetPeriod::every(1h) == BudgetPeriod::every(1h, SysNs(1s)));
  CHECK_FALSE(BudgetPeriod::daily() == BudgetPeriod::monthly());
}

TEST_CASE("period: bad input is refused with what was wrong", "[period][errors]") {
  CHECK_THROWS_AS(BudgetPeriod::every(0s), InvalidArgument);
  CHECK_THROWS_WITH(BudgetPeriod::every(0s),
                    Catch::Matchers::Contains("must be positive, got 0ns"));
  CHECK_THROWS_AS(BudgetPeriod::every(-1h), InvalidArgument);
  CHECK_THROWS_AS(BudgetPeriod::every(std::chrono::nanoseconds::min()), InvalidArgument);
  // A billion hours does not fit in nanoseconds: refused, not wrapped into a short period.
  CHECK_THROWS_AS(BudgetPeriod::every(std::chrono::hours(1'000'000'000)), InvalidArgument);
  CHECK_THROWS_WITH(BudgetPeriod::every(std::chrono::hours(1'000'000'000)),
                    Catch::Matchers::StartsWith("safeguards: a budget period's length"));
  CHECK_THROWS_AS(
      BudgetPeriod::every(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())),
      InvalidArgument);
  CHECK_THROWS_AS(
      BudgetPeriod::every(std::chrono::duration<double>(std::numeric_limits<double>::infinity())),
      InvalidArgument);
  CHECK_THROWS_AS(BudgetPeriod::every(std::chrono::duration<double>(-0.5)), InvalidArgument);
  CHECK_THROWS_AS(BudgetPeriod::every(1h, std::chrono::sys_days(std::chrono::days(200'000))),
                  InvalidArgument);
  CHECK_THROWS_WITH(BudgetPeriod::every(1h, std::chrono::sys_days(std::chrono::days(200'000))),
                    Catch::Matchers::Contains("anchor"));
  CHECK_THROWS_AS(BudgetPeriod::weekly(std::chrono::weekday(9)), InvalidArgument);
  CHECK_THROWS_WITH(BudgetPeriod::weekly(std::chrono::weekday(9)),
                    Catch::Matchers::Contains("got 9"));
  CHECK(BudgetPeriod::every(std::chrono::duration<double>(0.5)).length() == 500ms);

  Fixture f(on(year(2024) / 3 / 1));
  Periods periods(f.coord);
  CHECK_THROWS_AS(periods.set_period(AgentId(42), BudgetPeriod::daily()), UnknownAgent);
  CHECK_THROWS_AS(periods.set_period(PoolId(42), BudgetPeriod::daily()), UnknownPool);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 10_d});
  f.coord.remove_agent(a);
  CHECK_THROWS_AS(periods.set_period(a, BudgetPeriod::daily()), UnknownAgent);
  CHECK_THROWS_AS(f.coord.reset_usage(a, "by hand"), UnknownAgent);
  CHECK_THROWS_AS(f.coord.reset_usage(AgentId(99), "by hand"), UnknownAgent);
  CHECK_THROWS_AS(f.coord.reset_usage(PoolId(99), "by hand"), UnknownPool);
  CHECK_THROWS_AS(periods.current_period(AgentId(99)), UnknownAgent);
  CHECK_FALSE(periods.current_period(PoolId(99)));
}

// ---- BudgetPeriods on a coordinator -----------------------------------------------------------

TEST_CASE("periods: a daily reset at the boundary instant, none one microsecond before",
          "[period]") {
  Fixture f(on(year(2024) / 3 / 1, 9h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 100_d});
  periods.set_period(a, BudgetPeriod::daily());
  CHECK(periods.period(a) == BudgetPeriod::daily());
  CHECK(periods.current_period(a) ==
        PeriodWindow<TimePoint>{on(year(2024) / 3 / 1), on(year(2024) / 3 / 2)});
  CHECK(periods.tick() == 0);

  f.coord.consume(a, 100_d);
  CHECK_FALSE(f.coord.try_consume(a, 1_d));
  f.clock.set(on(year(2024) / 3 / 2) - 1us);
  CHECK(periods.tick() == 0);
  CHECK(f.coord.get_budget(a) == 0_d);
  CHECK(period_resets(f.log).empty());

  f.clock.advance(1us); // exactly midnight
  CHECK(periods.tick() == 1);
  CHECK(f.coord.get_budget(a) == 100_d);
  auto m = f.coord.agent_metrics(a);
  CHECK(m.used_budget == 0_d);
  CHECK(m.initial_budget == 100_d);
  CHECK(m.consumption_count == 1); // a lifetime count: resets do not forget consumes
  CHECK(periods.current_period(a) ==
        PeriodWindow<TimePoint>{on(year(2024) / 3 / 2), on(year(2024) / 3 / 3)});
  const auto resets = period_resets(f.log);
  REQUIRE(resets.size() == 1);
  CHECK(resets[0].agent == a);
  CHECK(resets[0].old_budget == 0_d);
  CHECK(resets[0].new_budget == 100_d);
  CHECK(resets[0].delta == 100_d);
  CHECK(resets[0].timestamp == on(year(2024) / 3 / 2));
  CHECK(resets[0].reason ==
        "period reset: daily (UTC), period 2024-03-02T00:00:00Z to 2024-03-03T00:00:00Z");
  CHECK(periods.tick() == 0); // the same period again: nothing
  CHECK(f.coord.check_invariants().empty());
}

TEST_CASE("periods: a clock that jumps over five periods gives one reset", "[period]") {
  Fixture f(on(year(2024) / 3 / 1, 9h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 50_d});
  periods.set_period(a, GENERATE(BudgetPeriod::daily(), BudgetPeriod::every(24h)));
  f.coord.consume(a, 20_d);
  f.clock.advance(5 * 24h + 3h);
  CHECK(periods.tick() == 1);
  CHECK(periods.tick() == 0);
  const auto resets = period_resets(f.log);
  REQUIRE(resets.size() == 1);
  CHECK(resets[0].delta == 20_d);
  CHECK(resets[0].reason.find("2024-03-06T00:00:00Z to 2024-03-07T00:00:00Z") != std::string::npos);
  CHECK(periods.current_period(a)->start == on(year(2024) / 3 / 6));
  CHECK(f.coord.get_budget(a) == 50_d);
}

TEST_CASE("periods: monthly resets on the coordinator at month ends", "[period]") {
  struct Case {
    std::chrono::year_month_day last_day;
    std::chrono::year_month_day first_day;
  };
  const auto c = GENERATE(Case{year(2025) / 1 / 31, year(2025) / 2 / 1},
                          Case{year(2023) / 2 / 28, year(2023) / 3 / 1},
                          Case{year(2024) / 2 / 29, year(2024) / 3 / 1},
                          Case{year(2024) / 12 / 31, year(2025) / 1 / 1});
  Fixture f(on(c.last_day, 12h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 10_d});
  periods.set_period(a, BudgetPeriod::monthly());
  f.coord.consume(a, 7_d);
  f.clock.set(on(c.first_day) - 1us);
  CHECK(periods.tick() == 0);
  f.clock.set(on(c.first_day));
  CHECK(periods.tick() == 1);
  CHECK(f.coord.get_budget(a) == 10_d);
  CHECK(periods.current_period(a)->start == on(c.first_day));
  if (c.last_day == year(2024) / 2 / 29) // a leap day stays in February
    CHECK(BudgetPeriod::monthly().period_containing(on(c.last_day)).start ==
          on(year(2024) / 2 / 1));
}

TEST_CASE("periods: a reservation open across a reset settles against the new period",
          "[period][reservation]") {
  Fixture f(on(year(2024) / 3 / 1, 23h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 100_d});
  periods.set_period(a, BudgetPeriod::daily());
  auto r = f.coord.reserve(a, 40_d);
  f.coord.consume(a, 50_d); // remaining 10, used 50, reserved 40
  f.clock.advance(1h);
  REQUIRE(periods.tick() == 1);
  auto m = f.coord.agent_metrics(a);
  CHECK(m.remaining_budget == 60_d); // the allocation less what is still reserved
  CHECK(m.used_budget == 0_d);
  CHECK(m.reserved_budget == 40_d);
  CHECK(f.coord.check_invariants().empty());

  SECTION("committed under the estimate: the refund goes to the new period") {
    auto settled = r.commit(30_d);
    CHECK(settled.charged == 30_d);
    m = f.coord.agent_metrics(a);
    CHECK(m.used_budget == 30_d);
    CHECK(m.remaining_budget == 70_d);
  }
  SECTION("committed over the estimate: the overage is charged in the new period") {
    auto settled = r.commit(55_d);
    CHECK(settled.charged == 55_d);
    CHECK(settled.overspent == 0_d);
    m = f.coord.agent_metrics(a);
    CHECK(m.used_budget == 55_d);
    CHECK(m.remaining_budget == 45_d);
  }
  SECTION("released") {
    r.release();
    m = f.coord.agent_metrics(a);
    CHECK(m.used_budget == 0_d);
    CHECK(m.remaining_budget == 100_d);
  }
  SECTION("partly committed, then the next period, then committed") {
    (void)r.commit_partial(10_d);
    f.clock.advance(24h);
    REQUIRE(periods.tick() == 1);
    (void)r.commit(35_d);
    m = f.coord.agent_metrics(a);
    CHECK(m.used_budget == 25_d);
    CHECK(m.remaining_budget == 75_d);
  }
  CHECK(m.reserved_budget == 0_d);
  CHECK(f.coord.check_invariants().empty());
}

TEST_CASE("periods: a pool's period restores its agents and its unallocated budget",
          "[period][pool]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  Periods periods(f.coord);
  PoolId p = f.coord.create_pool({.name = "p", .initial_budget = 1000_d});
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 200_d, .pool = p});
  AgentId b = f.coord.create_agent({.name = "b", .initial_budget = 300_d, .pool = p});
  AgentId gone = f.coord.create_agent({.name = "gone", .initial_budget = 100_d, .pool = p});
  periods.set_period(p, BudgetPeriod::weekly());
  CHECK(periods.current_period(a) == periods.current_period(p)); // the pool's, it has none
  CHECK_FALSE(periods.period(a));
  f.coord.consume(a, 150_d);
  f.coord.consume(b, 25_d);
  auto open = f.coord.reserve(b, 5_d);
  f.coord.consume(gone, 60_d);
  f.coord.remove_agent(gone); // its 40 remaining went back; its 60 used stays in the pool
  auto pm = f.coord.pool_metrics(p);
  CHECK(pm.used_budget == 235_d);
  CHECK(pm.unallocated_budget == 440_d);

  f.clock.advance(7 * 24h);
  CHECK(periods.tick() == 1); // one pool, one reset
  pm = f.coord.pool_metrics(p);
  CHECK(pm.used_budget == 0_d);
  CHECK(pm.reserved_budget == 5_d);
  CHECK(pm.unallocated_budget == 500_d); // the removed agent's usage came back
  CHECK(pm.remaining_budget == 995_d);
  CHECK(pm.initial_budget == 1000_d);
  CHECK(f.coord.get_budget(a) == 200_d);
  CHECK(f.coord.get_budget(b) == 295_d);
  CHECK(f.coord.check_invariants().empty());
  const auto resets = period_resets(f.log);
  REQUIRE(resets.size() == 2); // one per live agent
  CHECK(resets[0].agent == a);
  CHECK(resets[0].delta == 150_d);
  CHECK(resets[1].agent == b);
  CHECK(resets[1].delta == 25_d);
  CHECK(resets[0].reason.find("weekly from Monday (UTC)") != std::string::npos);
  CHECK(resets[0].sequence + 1 == resets[1].sequence);
  (void)open.commit(5_d);
  CHECK(f.coord.pool_metrics(p).used_budget == 5_d);
  CHECK(f.coord.check_invariants().empty());
}

TEST_CASE("periods: an agent with its own period in a pool with one is reset at both",
          "[period][pool]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  Periods periods(f.coord);
  PoolId p = f.coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 100_d, .pool = p});
  periods.set_period(p, BudgetPeriod::monthly());
  periods.set_period(a, BudgetPeriod::daily());
  CHECK(periods.current_period(a)->end == on(year(2024) / 3 / 2)); // its own first
  f.coord.consume(a, 10_d);
  f.clock.advance(24h);
  CHECK(periods.tick() == 1);
  f.coord.consume(a, 10_d);
  f.clock.set(on(year(2024) / 4 / 1));
  CHECK(periods.tick() == 2);
  CHECK(f.coord.get_budget(a) == 100_d);
  CHECK(periods.clear_period(a));
  CHECK_FALSE(periods.clear_period(a));
  CHECK(periods.current_period(a)->end == on(year(2024) / 5 / 1)); // the pool's now
  CHECK(periods.clear_period(p));
  CHECK_FALSE(periods.current_period(a));
  f.clock.set(on(year(2024) / 6 / 1));
  CHECK(periods.tick() == 0);
}

TEST_CASE("periods: setting a period resets nothing - replacing it starts a new window",
          "[period]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 10_d});
  f.coord.consume(a, 4_d);
  periods.set_period(a, BudgetPeriod::every(1h));
  CHECK(f.coord.get_budget(a) == 6_d);
  f.clock.advance(30min);
  periods.set_period(a, BudgetPeriod::every(2h));
  CHECK(periods.current_period(a) ==
        PeriodWindow<TimePoint>{on(year(2024) / 3 / 1, 8h), on(year(2024) / 3 / 1, 10h)});
  f.clock.advance(30min); // 9:00, a boundary of the old period only
  CHECK(periods.tick() == 0);
  f.clock.advance(1h);
  CHECK(periods.tick() == 1);
  CHECK(f.coord.get_budget(a) == 10_d);
}

TEST_CASE("periods: a removed agent loses its period", "[period]") {
  Fixture f(on(year(2024) / 3 / 1));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 10_d});
  AgentId b = f.coord.create_agent({.name = "b", .initial_budget = 10_d});
  periods.set_period(a, BudgetPeriod::daily());
  periods.set_period(b, BudgetPeriod::daily());
  f.coord.remove_agent(a);
  f.clock.advance(24h);
  CHECK(periods.tick() == 1); // b only
  CHECK_FALSE(periods.period(a));
  CHECK(periods.period(b));
}

TEST_CASE("periods: a clock going back resets nothing until it passes the period again",
          "[period]") {
  SettableClock clock;
  clock.set(SettableClock::time_point(sys_days(year(2024) / 3 / 1).time_since_epoch() + 12h));
  BasicBudgetCoordinator<Decimal, FixedAllocation, SettableClock> coord({}, {}, clock);
  BasicBudgetPeriods periods(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  periods.set_period(a, BudgetPeriod::daily());
  const auto day = [](std::chrono::year_month_day d) {
    return SettableClock::time_point(sys_days(d).time_since_epoch());
  };
  clock.set(day(year(2024) / 3 / 2));
  CHECK(periods.tick() == 1);
  clock.set(day(year(2024) / 2 / 20)); // back ten days
  CHECK(periods.tick() == 0);
  CHECK(periods.current_period(a)->start == day(year(2024) / 3 / 2));
  clock.set(day(year(2024) / 3 / 2) + 5h); // forward again, same period as the last reset
  CHECK(periods.tick() == 0);
  clock.set(day(year(2024) / 3 / 3));
  CHECK(periods.tick() == 1);
}

TEST_CASE("periods: audit sinks may call back in - each period is still reset once",
          "[period][reentrant]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 10_d});
  AgentId b = f.coord.create_agent({.name = "b", .initial_budget = 10_d});
  periods.set_period(a, BudgetPeriod::daily());
  periods.set_period(b, BudgetPeriod::daily());
  std::size_t nested_resets = 0;
  std::vector<std::optional<PeriodWindow<TimePoint>>> seen;
  auto handle = f.coord.add_audit_sink([&](const Change& c) {
    if (c.reason.rfind("period reset", 0) != 0)
      return;
    nested_resets += periods.tick();
    seen.push_back(periods.current_period(c.agent));
    periods.set_period(c.agent, BudgetPeriod::daily()); // changes the map mid-tick
  });
  f.clock.advance(24h);
  const std::size_t outer = periods.tick();
  CHECK(outer + nested_resets == 2);
  CHECK(period_resets(f.log).size() == 2);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0]->start == on(year(2024) / 3 / 2));
  CHECK(seen[1]->start == on(year(2024) / 3 / 2));
  CHECK(periods.tick() == 0);
}

TEST_CASE("periods: a throwing audit sink does not undo or repeat a reset", "[period]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 10_d});
  periods.set_period(a, BudgetPeriod::daily());
  f.coord.consume(a, 10_d);
  auto handle = f.coord.add_audit_sink([](const Change&) { throw std::runtime_error("sink"); });
  f.clock.advance(24h);
  CHECK(periods.tick() == 1);
  CHECK(f.coord.sink_failures() == 1);
  CHECK(f.coord.get_budget(a) == 10_d);
  CHECK(periods.tick() == 0);
}

TEST_CASE("periods: reset_usage by hand", "[period][reset]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  PoolId p = f.coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 60_d, .pool = p});
  AgentId b = f.coord.create_agent({.name = "b", .initial_budget = 30_d, .pool = p});
  f.coord.consume(a, 25_d);
  f.coord.consume(b, 5_d);
  CHECK(f.coord.reset_usage(a, "new contract") == 25_d);
  CHECK(f.coord.get_budget(a) == 60_d);
  CHECK(f.coord.get_budget(b) == 25_d);
  auto records = f.log.records();
  CHECK(records.back().reason == "new contract");
  CHECK(records.back().delta == 25_d);
  CHECK(records.back().agent_name == "a");
  CHECK(f.coord.reset_usage(a, "nothing used") == 0_d); // still recorded
  CHECK(f.log.records().back().reason == "nothing used");
  CHECK(f.log.records().back().delta == 0_d);
  CHECK(f.coord.reset_usage(p, "pool by hand") == 5_d);
  CHECK(f.coord.get_budget(b) == 30_d);
  CHECK(f.coord.pool_metrics(p).used_budget == 0_d);
  CHECK(f.coord.pool_metrics(p).unallocated_budget == 10_d);
  CHECK(f.coord.check_invariants().empty());
  // Updates after a reset keep the pool's books.
  f.coord.update_budget(a, 70_d, "raise");
  CHECK(f.coord.pool_metrics(p).unallocated_budget == 0_d);
  CHECK(f.coord.check_invariants().empty());
}

TEST_CASE("periods: a monitored agent is reset too, and monitors see the new balance",
          "[period][monitor]") {
  Fixture f(on(year(2024) / 3 / 1, 8h));
  Periods periods(f.coord);
  AgentId a = f.coord.create_agent({.name = "a", .initial_budget = 100_d});
  std::vector<Decimal> remaining_before;
  auto h = f.coord.add_monitor(
      a, [&](const Coord::UsageEvent& e) { remaining_before.push_back(e.remaining_before); });
  periods.set_period(a, BudgetPeriod::daily());
  f.coord.consume(a, 90_d);
  f.clock.advance(24h);
  REQUIRE(periods.tick() == 1);
  f.coord.consume(a, 1_d);
  REQUIRE(remaining_before.size() == 2);
  CHECK(remaining_before[1] == 100_d);
}

TEMPLATE_TEST_CASE("periods: reset_usage with every amount type", "[period][amount]", Decimal,
                   std::int64_t, double, BigDecimal) {
  using A = TestType;
  using C = BasicBudgetCoordinator<A, FixedAllocation, ManualClock>;
  const auto n = [](std::int64_t v) { return amount_traits<A>::from_integer(v); };
  ManualClock clock(on(year(2024) / 3 / 1, 8h));
  C coord({}, {}, clock);
  BasicBudgetPeriods<C> periods(coord);
  PoolId p = coord.create_pool({.name = "p", .initial_budget = n(100)});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = n(40), .pool = p});
  AgentId gone = coord.create_agent({.name = "gone", .initial_budget = n(20), .pool = p});
  periods.set_period(p, BudgetPeriod::daily());
  coord.consume(a, n(15));
  auto r = coord.reserve(a, n(5));
  coord.consume(gone, n(12));
  coord.remove_agent(gone);
  clock.advance(24h);
  CHECK(periods.tick() == 1);
  CHECK(coord.get_budget(a) == n(35));
  CHECK(coord.pool_metrics(p).used_budget == n(0));
  CHECK(coord.pool_metrics(p).unallocated_budget == n(60));
  (void)r.commit(n(2));
  CHECK(coord.get_budget(a) == n(38));
  CHECK(coord.reset_usage(a, "by hand") == n(2));
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("periods: the default coordinator, on wall-clock time", "[period]") {
  BudgetCoordinator coord;
  BudgetPeriods periods(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  periods.set_period(a, BudgetPeriod::daily());
  const auto w = periods.current_period(a);
  REQUIRE(w);
  CHECK(w->start <= std::chrono::system_clock::now());
  CHECK(w->end - w->start == 24h);
  CHECK(coord.reset_usage(a, "by hand") == 0_d);
}
