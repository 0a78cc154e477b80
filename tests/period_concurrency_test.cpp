// Budget periods under concurrency (run under ThreadSanitizer in CI): consumers spending across
// boundaries while one thread moves the clock and others tick, several threads noticing one
// boundary at once, and reset_usage racing with consumes and reservations. Each checks after the
// join that there was exactly one reset per period and that the books are exact: every
// successful charge is either in the final used balance or in a reset's forgiven amount.
// No Catch assertion runs on a worker thread; workers count, the test checks after the join.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <safeguards/period.hpp>
#include <safeguards/safeguards.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

using Coord = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using Periods = BasicBudgetPeriods<Coord>;
using TimePoint = Coord::time_point;
using Change = Coord::BudgetChange;
using AuditLog = BasicMemoryAuditLog<Change>;

TimePoint start_time() {
  using namespace std::chrono;
  return TimePoint(sys_days(year(2024) / 3 / 1).time_since_epoch() + 12h);
}

struct Resets {
  std::size_t count = 0;
  std::set<std::string> reasons;
  Decimal forgiven = 0_d;
};

Resets period_resets(const AuditLog& log) {
  Resets r;
  for (const auto& c : log.records())
    if (c.reason.rfind("period reset", 0) == 0) {
      ++r.count;
      r.reasons.insert(c.reason + " " + std::to_string(c.agent.value()));
      r.forgiven += c.delta;
    }
  return r;
}

// Spends from `agents` until `stop`: plain consumes, and on odd workers a reservation of 3
// committed at 2 (so reservations are open across resets). Adds what it was charged to
// `charged` (in micro-dollars) and its successes to `successes`.
void spend(Coord& coord, const std::vector<AgentId>& agents, int worker,
           const std::atomic<bool>& stop, std::atomic<std::int64_t>& charged,
           std::atomic<std::uint64_t>& successes) {
  std::int64_t mine = 0;
  std::uint64_t n = 0;
  for (std::size_t i = 0; !stop.load(std::memory_order_acquire); ++i) {
    const AgentId a = agents[(i + static_cast<std::size_t>(worker)) % agents.size()];
    if (worker % 2 == 1 && i % 3 == 0) {
      auto r = coord.try_reserve(a, 3_d);
      if (r) {
        auto c = r.commit(2_d);
        mine += c.charged.raw();
        n += c.charged == 2_d ? 1U : 0U;
      }
    } else if (coord.try_consume(a, 1_d)) {
      mine += (1_d).raw();
      ++n;
    }
    if (i % 64 == 0) { // publish now and then, so the driver sees progress
      charged.fetch_add(mine);
      successes.fetch_add(n);
      mine = 0;
      n = 0;
    }
  }
  charged.fetch_add(mine);
  successes.fetch_add(n);
}

// Waits (without sleeping) until `agents` have used `amount` in the current period between
// them: reachable whatever the consumers did before, since only this thread starts periods.
void await_usage(const Coord& coord, const std::vector<AgentId>& agents, Decimal amount) {
  for (;;) {
    Decimal used = 0_d;
    for (AgentId a : agents)
      used += coord.agent_metrics(a).used_budget;
    if (used >= amount)
      return;
    std::this_thread::yield();
  }
}

} // namespace

TEST_CASE("period concurrency: 4 consumers across boundaries, one driver, two tickers",
          "[period][concurrency]") {
  constexpr int periods_to_cross = 12;
  ManualClock clock(start_time());
  Coord coord({}, {}, clock);
  AuditLog log;
  auto sink = coord.add_audit_sink(log);
  Periods periods(coord);
  const bool pool_period = GENERATE(false, true);
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  std::vector<AgentId> agents{
      coord.create_agent({.name = "a", .initial_budget = 300_d, .pool = pool}),
      coord.create_agent({.name = "b", .initial_budget = 200_d, .pool = pool})};
  if (pool_period)
    periods.set_period(pool, BudgetPeriod::daily());
  else
    for (AgentId a : agents)
      periods.set_period(a, BudgetPeriod::daily());

  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> charged{0};
  std::atomic<std::uint64_t> successes{0};
  std::atomic<std::size_t> ticked{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] { spend(coord, agents, w, stop, charged, successes); });
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      while (!stop.load(std::memory_order_acquire))
        ticked.fetch_add(periods.tick());
    });
  std::size_t driver_ticks = 0;
  for (int k = 0; k < periods_to_cross; ++k) {
    await_usage(coord, agents, 50_d);
    clock.advance(24h);
    driver_ticks += periods.tick();
  }
  await_usage(coord, agents, 50_d);
  stop.store(true, std::memory_order_release);
  for (auto& t : threads)
    t.join();

  // One reset per period: a pool counts once, agents each.
  const std::size_t per_period = pool_period ? 1 : agents.size();
  CHECK(driver_ticks + ticked.load() == periods_to_cross * per_period);
  const Resets resets = period_resets(log);
  CHECK(resets.count == periods_to_cross * agents.size());
  CHECK(resets.reasons.size() == resets.count); // no period of any agent twice
  Decimal used = 0_d;
  for (AgentId a : agents) {
    const auto m = coord.agent_metrics(a);
    used += m.used_budget;
    CHECK(m.reserved_budget == 0_d);
    CHECK(periods.current_period(a)->start == clock.now() - 12h);
  }
  CHECK(Decimal::from_raw(charged.load()) == resets.forgiven + used);
  CHECK(successes.load() >= 50 * (periods_to_cross + 1) / 2); // 1 or 2 per success
  CHECK(coord.check_invariants().empty());
  CHECK(coord.pool_metrics(pool).unallocated_budget == 500_d);
}

TEST_CASE("period concurrency: several threads noticing one boundary reset it once",
          "[period][concurrency]") {
  ManualClock clock(start_time());
  Coord coord({}, {}, clock);
  Periods periods(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  periods.set_period(a, BudgetPeriod::every(1h));
  constexpr int rounds = 40;
  std::size_t total = 0;
  std::size_t rounds_with_one_reset = 0;
  for (int round = 0; round < rounds; ++round) {
    coord.consume(a, 1_d);
    clock.advance(round % 5 == 0 ? 5h : 1h); // now and then a jump over several periods
    std::atomic<int> ready{0};
    std::atomic<std::size_t> resets{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        ready.fetch_add(1);
        while (ready.load() < 4)
          std::this_thread::yield();
        resets.fetch_add(periods.tick());
      });
    for (auto& t : threads)
      t.join();
    total += resets.load();
    rounds_with_one_reset += resets.load() == 1 ? 1U : 0U;
    if (coord.get_budget(a) != 100_d)
      break;
  }
  CHECK(total == std::size_t{rounds});
  CHECK(rounds_with_one_reset == std::size_t{rounds});
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("period concurrency: reset_usage by hand racing with consumes and reservations",
          "[period][concurrency]") {
  ManualClock clock(start_time());
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 500_d});
  AgentId b = coord.create_agent({.name = "b", .initial_budget = 500_d});
  const std::vector<AgentId> agents{a, b};
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> charged{0};
  std::atomic<std::uint64_t> successes{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] { spend(coord, agents, w, stop, charged, successes); });
  Decimal forgiven = 0_d;
  for (int k = 0; k < 30; ++k) {
    await_usage(coord, {k % 2 == 0 ? a : b}, 20_d);
    forgiven += coord.reset_usage(k % 2 == 0 ? a : b, "by hand");
  }
  stop.store(true, std::memory_order_release);
  for (auto& t : threads)
    t.join();
  const Decimal used = coord.agent_metrics(a).used_budget + coord.agent_metrics(b).used_budget;
  CHECK(Decimal::from_raw(charged.load()) == forgiven + used);
  CHECK(coord.agent_metrics(a).reserved_budget == 0_d);
  CHECK(coord.check_invariants().empty());
}
