// Concurrency stress for BudgetCoordinator: several threads run every hot-path and management
// operation at once on shared agents, and afterwards the books must balance to the last
// micro-unit. CI runs this file under ThreadSanitizer.
//
// Knobs (environment): SAFEGUARDS_STRESS_OPS = operations per thread (default 100000),
// SAFEGUARDS_STRESS_SEED = base seed (thread t uses seed + t). The full default size also runs
// under ThreadSanitizer: the whole file takes about 5 s there on 2 cores (under 1 s without), so
// there is no reduced TSan size; lower SAFEGUARDS_STRESS_OPS on a slower machine.
#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <latch>
#include <mutex>
#include <random>
#include <safeguards/big_decimal.hpp>
#include <safeguards/coordinator.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace safeguards;

namespace {

using Reservation = BudgetCoordinator::Reservation;
using Event = BudgetCoordinator::UsageEvent;
using Violation = BudgetCoordinator::Violation;

constexpr unsigned thread_count = 4;
constexpr std::int64_t unit = Decimal::scale; // raw units per 1.0

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::stoull(value) : fallback;
}

std::uint64_t ops_per_thread() {
  return env_or("SAFEGUARDS_STRESS_OPS", 100'000);
}

std::uint64_t base_seed() {
  return env_or("SAFEGUARDS_STRESS_SEED", 0x5afe'6a4d);
}

Decimal raw(std::int64_t r) {
  return Decimal::from_raw(r);
}

// Runs `body(thread_index)` on `thread_count` threads released at the same instant.
template <class F>
void run_threads(unsigned n, F body) {
  std::latch start(static_cast<std::ptrdiff_t>(n));
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < n; ++t)
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      body(t);
    });
  for (auto& th : threads)
    th.join();
}

// ---- the mixed-operation stress --------------------------------------------------------------

struct StressConfig {
  const char* name;
  bool monitors;             // an observer on pool 0, a SpendingLimit on one agent of pool 1
  std::size_t history;       // CoordinatorOptions::history_capacity
  std::int64_t agent_budget; // whole units, per agent at creation
  std::int64_t pool_spare;   // whole units each pool keeps unallocated at the start
  std::int64_t update_floor; // whole units, the lowest budget update_budget sets
  std::int64_t limit;        // whole units, the SpendingLimit
  bool scarce;               // demand must end up far above supply
};

// Budgets so large that nothing ever runs short: every refusal would be a bug. An agent spends
// about 3 units per operation of each thread, and update_budget never sets less than half of
// its initial budget.
StressConfig plenty(const char* name, bool monitors, std::uint64_t ops) {
  const auto budget = std::max<std::int64_t>(static_cast<std::int64_t>(ops) * 100, 10'000'000);
  return {.name = name,
          .monitors = monitors,
          .history = monitors ? 64u : 0u,
          .agent_budget = budget,
          .pool_spare = budget,
          .update_floor = budget / 2,
          .limit = 1000,
          .scarce = false};
}

// Supply about 1/20 of what the threads will ask for, so every agent and pool runs dry while
// money still circulates through update_budget and transfer.
StressConfig scarce(const char* name, bool monitors, std::uint64_t ops) {
  const auto budget = std::max<std::int64_t>(static_cast<std::int64_t>(ops / 10), 10);
  return {.name = name,
          .monitors = monitors,
          .history = monitors ? 64u : 0u,
          .agent_budget = budget,
          .pool_spare = 2 * budget,
          .update_floor = 0,
          .limit = budget / 2,
          .scarce = true};
}

constexpr std::size_t pool_count = 2;
constexpr std::size_t agents_per_pool = 3;
constexpr std::size_t agent_count = pool_count * agents_per_pool;
constexpr std::size_t limited = agent_count - 1; // index of the agent with a SpendingLimit
constexpr std::size_t max_open_reservations = 4;

// What one thread saw succeed, from the results it was handed. Raw units throughout.
struct Tally {
  std::array<std::int64_t, agent_count> charged{};   // consumes + commits' `charged`
  std::array<std::int64_t, agent_count> consumed{};  // successful try_consume only
  std::array<std::int64_t, agent_count> overspent{}; // commits' `overspent`
  std::array<std::uint64_t, agent_count> charges{};  // consumes + settles that charged > 0
  std::array<std::uint64_t, agent_count> consumes{}; // successful try_consume only
  std::uint64_t overspend_settles = 0;
  std::uint64_t insufficient = 0, denied = 0, reserves = 0, commits = 0, partials = 0, releases = 0,
                updates = 0, updates_refused = 0, transfers = 0, transfers_refused = 0;
  std::int64_t demand = 0;     // everything asked for by consumes and reservations
  std::uint64_t anomalies = 0; // a result that contradicts itself or the contract
  std::string first_anomaly;

  void anomaly(std::string what) {
    if (anomalies++ == 0)
      first_anomaly = std::move(what);
  }
};

// Counted by the monitors and the violation sink, which run on every thread.
struct Observed {
  std::array<std::atomic<std::int64_t>, agent_count + 1> charged{}; // by agent id
  std::array<std::atomic<std::uint64_t>, agent_count + 1> consumes{};
  std::atomic<std::uint64_t> overspend_violations{0};
  std::atomic<std::uint64_t> limit_violations{0};
};

struct World {
  explicit World(const StressConfig& cfg)
      : coord(CoordinatorOptions{.history_capacity = cfg.history}) {
    for (std::size_t p = 0; p < pool_count; ++p) {
      const std::int64_t initial =
          cfg.agent_budget * static_cast<std::int64_t>(agents_per_pool) + cfg.pool_spare;
      pools.push_back(coord.create_pool(
          {.name = "pool" + std::to_string(p), .initial_budget = Decimal(initial)}));
      supply += initial * unit;
      for (std::size_t a = 0; a < agents_per_pool; ++a) {
        agents.push_back(coord.create_agent({.name = "agent" + std::to_string(agents.size()),
                                             .initial_budget = Decimal(cfg.agent_budget),
                                             .pool = pools.back()}));
        pool_of.push_back(p);
      }
    }
  }

  std::size_t index_of(AgentId id) const {
    return static_cast<std::size_t>(std::find(agents.begin(), agents.end(), id) - agents.begin());
  }

  BudgetCoordinator coord;
  std::vector<PoolId> pools;
  std::vector<AgentId> agents;
  std::vector<std::size_t> pool_of;
  std::int64_t supply = 0; // Σ pool initial budgets, raw
};

void stress_thread(World& w, const StressConfig& cfg, std::uint64_t seed, std::uint64_t ops,
                   Tally& t) {
  std::mt19937_64 rng(seed);
  auto below = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  auto between = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  auto& coord = w.coord;
  struct Open {
    std::size_t agent;
    Reservation res;
  };
  std::vector<Open> open;
  open.reserve(max_open_reservations);

  auto settle_checks = [&](std::size_t i, const BudgetCoordinator::CommitResult& r,
                           std::int64_t asked, std::int64_t from_hold, std::int64_t held_before,
                           const char* what) {
    if (!r.ok()) {
      t.anomaly(std::string(what) + " failed: " + std::string(to_string(r.status)));
      return;
    }
    const std::int64_t charged = r.charged.raw(), over = r.overspent.raw();
    if (charged + over != asked || charged < from_hold || over < 0 ||
        r.refunded.raw() != held_before - from_hold)
      t.anomaly(fmt::format("{}: asked {} from hold {} held {} -> charged {} refunded {} over {}",
                            what, asked, from_hold, held_before, charged, r.refunded.raw(), over));
    t.charged[i] += charged;
    t.overspent[i] += over;
    if (charged > 0)
      ++t.charges[i];
    if (over > 0)
      ++t.overspend_settles;
  };

  // commit: the total actual usage, usually near the estimate, sometimes far above it.
  auto commit = [&](Open& o) {
    const std::int64_t held = o.res.held().raw(), before = o.res.settled().raw();
    const std::int64_t estimate = o.res.estimate().raw();
    const std::int64_t actual = between(0, 2 * estimate);
    const std::int64_t rest = std::max<std::int64_t>(actual - before, 0);
    auto r = o.res.commit(raw(actual));
    settle_checks(o.agent, r, rest, std::min(rest, held), held, "commit");
    if (o.res.active() || o.res.held().raw() != 0)
      t.anomaly("a committed reservation is still active");
    ++t.commits;
  };

  for (std::uint64_t n = 0; n < ops; ++n) {
    const std::size_t op = below(100);
    const std::size_t i = below(agent_count);
    const AgentId agent = w.agents[i];
    if (op < 40) { // try_consume
      const std::int64_t amount = between(1, 20 * unit);
      t.demand += amount;
      auto r = coord.try_consume(agent, raw(amount));
      if (r.ok()) {
        t.charged[i] += amount;
        t.consumed[i] += amount;
        ++t.charges[i];
        ++t.consumes[i];
      } else if (r.status() == ConsumeStatus::insufficient) {
        ++t.insufficient;
      } else if (r.status() == ConsumeStatus::denied_by_monitor) {
        ++t.denied;
        if (!cfg.monitors || i != limited)
          t.anomaly("a consume was denied with no monitor that could deny it");
      } else {
        t.anomaly("try_consume: " + std::string(to_string(r.status())));
      }
    } else if (op < 58 && open.size() < max_open_reservations) { // try_reserve
      const std::int64_t estimate = between(1, 20 * unit);
      t.demand += estimate;
      auto r = coord.try_reserve(agent, raw(estimate));
      if (r.ok()) {
        if (!r.active() || r.held().raw() != estimate)
          t.anomaly("a granted reservation does not hold its estimate");
        open.push_back({i, std::move(r)});
        ++t.reserves;
      } else if (r.status() == ConsumeStatus::insufficient) {
        ++t.insufficient;
      } else if (r.status() == ConsumeStatus::denied_by_monitor) {
        ++t.denied;
      } else {
        t.anomaly("try_reserve: " + std::string(to_string(r.status())));
      }
    } else if (op < 72) { // commit
      if (open.empty())
        continue;
      const std::size_t k = below(open.size());
      commit(open[k]);
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(k));
    } else if (op < 82) { // commit_partial (streaming), may go past what is held
      if (open.empty())
        continue;
      auto& o = open[below(open.size())];
      const std::int64_t held = o.res.held().raw();
      const std::int64_t amount = between(1, std::max<std::int64_t>(held, unit));
      auto r = o.res.commit_partial(raw(amount));
      settle_checks(o.agent, r, amount, std::min(amount, held), std::min(amount, held),
                    "commit_partial");
      if (o.res.held().raw() != held - std::min(amount, held))
        t.anomaly("commit_partial did not take from what is held first");
      ++t.partials;
    } else if (op < 90) { // release by destruction
      if (open.empty())
        continue;
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(below(open.size())));
      ++t.releases;
    } else if (op < 95) { // update_budget, up or down
      try {
        coord.update_budget(
            agent, raw(between(cfg.update_floor * unit, 2 * cfg.agent_budget * unit)), "stress");
        ++t.updates;
      } catch (const PoolExhausted&) {
        ++t.updates_refused;
      }
    } else { // transfer within the pool
      const std::size_t p = w.pool_of[i];
      std::size_t j = p * agents_per_pool + below(agents_per_pool - 1);
      if (j >= i)
        ++j; // any other agent of the same pool
      try {
        coord.transfer(agent, w.agents[j], raw(between(1, 50 * unit)), "stress");
        ++t.transfers;
      } catch (const BudgetExceeded&) {
        ++t.transfers_refused;
      }
    }
  }
  // Whatever is still open: commit every other one, release the rest by destruction.
  for (std::size_t k = 0; k < open.size(); k += 2)
    commit(open[k]);
  t.releases += open.size() / 2;
  open.clear();
}

void run_stress(const StressConfig& cfg, std::uint64_t ops) {
  const std::uint64_t seed = base_seed();
  INFO("scenario " << cfg.name << ", " << thread_count << " threads x " << ops << " ops, seed "
                   << seed);
  World w(cfg);
  auto observed = std::make_shared<Observed>();
  auto sink = w.coord.add_violation_sink([observed](const Violation& v) {
    if (v.type == ViolationType::Overspend)
      observed->overspend_violations.fetch_add(1, std::memory_order_relaxed);
    else if (v.type == ViolationType::BudgetLimitExceeded)
      observed->limit_violations.fetch_add(1, std::memory_order_relaxed);
  });
  std::vector<MonitorHandle> monitors;
  if (cfg.monitors) {
    monitors.push_back(w.coord.add_monitor(w.pools[0], [observed](const Event& e) {
      const auto id = static_cast<std::size_t>(e.agent.value());
      if (e.kind == UsageKind::consume || e.kind == UsageKind::commit)
        observed->charged[id].fetch_add(e.amount.raw(), std::memory_order_relaxed);
      if (e.kind == UsageKind::consume)
        observed->consumes[id].fetch_add(1, std::memory_order_relaxed);
    }));
    monitors.push_back(w.coord.add_monitor(w.agents[limited], SpendingLimit{Decimal(cfg.limit)}));
  }

  std::vector<Tally> tallies(thread_count);
  run_threads(thread_count, [&](unsigned t) { stress_thread(w, cfg, seed + t, ops, tallies[t]); });

  Tally all;
  for (const auto& t : tallies) {
    for (std::size_t i = 0; i < agent_count; ++i) {
      all.charged[i] += t.charged[i];
      all.consumed[i] += t.consumed[i];
      all.overspent[i] += t.overspent[i];
      all.charges[i] += t.charges[i];
      all.consumes[i] += t.consumes[i];
    }
    all.overspend_settles += t.overspend_settles;
    all.demand += t.demand;
    all.denied += t.denied;
    all.insufficient += t.insufficient;
    all.updates += t.updates;
    all.transfers += t.transfers;
    if (t.anomalies != 0)
      UNSCOPED_INFO("first anomaly: " << t.first_anomaly);
    CHECK(t.anomalies == 0);
  }
  INFO("updates " << all.updates << ", transfers " << all.transfers << ", insufficient "
                  << all.insufficient << ", denied " << all.denied);

  for (const auto& problem : w.coord.check_invariants())
    FAIL_CHECK(problem);

  const Decimal zero;
  std::int64_t used = 0, allocated = 0, remaining = 0, unallocated = 0;
  for (std::size_t i = 0; i < agent_count; ++i) {
    INFO("agent index " << i);
    const auto m = w.coord.agent_metrics(w.agents[i]);
    CHECK(m.reserved_budget == zero); // every reservation was settled or released
    CHECK(m.used_budget + m.reserved_budget + m.remaining_budget == m.initial_budget);
    CHECK(zero <= m.used_budget);
    CHECK(zero <= m.remaining_budget);
    CHECK(zero <= m.initial_budget);
    CHECK(m.used_budget.raw() == all.charged[i]); // nothing charged that no caller was told of
    CHECK(m.overspent_budget.raw() == all.overspent[i]);
    CHECK(m.consumption_count == all.charges[i]);
    CHECK(w.coord.usage_stats(w.agents[i]).total == m.used_budget);
    if (cfg.history != 0)
      CHECK(w.coord.usage_history(w.agents[i]).size() ==
            std::min<std::size_t>(cfg.history, m.consumption_count));
    used += m.used_budget.raw();
    allocated += m.initial_budget.raw();
    remaining += m.remaining_budget.raw();
  }
  for (std::size_t p = 0; p < pool_count; ++p) {
    const auto pm = w.coord.pool_metrics(w.pools[p]);
    std::int64_t pool_used = 0;
    for (std::size_t i = 0; i < agent_count; ++i)
      if (w.pool_of[i] == p)
        pool_used += all.charged[i];
    CHECK(pm.used_budget.raw() == pool_used);
    CHECK(zero <= pm.unallocated_budget);
    CHECK(pm.unallocated_budget + pm.allocated_budget == pm.initial_budget);
    unallocated += pm.unallocated_budget.raw();
  }

  std::int64_t counted = 0;
  for (auto c : all.charged)
    counted += c;
  CHECK(counted == used);                            // exact: no lost or phantom update
  CHECK(unallocated + allocated == w.supply);        // money is conserved
  CHECK(unallocated + remaining + used == w.supply); // (nothing is reserved any more)
  CHECK(used <= w.supply);                           // never overspent
  CHECK(observed->overspend_violations.load() == all.overspend_settles);

  if (cfg.monitors) {
    for (std::size_t i = 0; i < agent_count; ++i) {
      if (w.pool_of[i] != 0)
        continue;
      INFO("observed agent index " << i);
      const auto id = static_cast<std::size_t>(w.agents[i].value());
      CHECK(observed->charged[id].load() == all.charged[i]); // each change seen exactly once
      CHECK(observed->consumes[id].load() == all.consumes[i]);
    }
    CHECK(all.consumed[limited] <= cfg.limit * unit); // the limit held for consumes
    CHECK(all.denied > 0);
    CHECK(observed->limit_violations.load() > 0);
  }
  if (cfg.scarce)
    CHECK(all.demand > 10 * w.supply);
  else
    CHECK(all.insufficient == 0);
}

} // namespace

TEST_CASE("stress: lock-free path, plenty of budget", "[coordinator][concurrency]") {
  const auto ops = ops_per_thread();
  run_stress(plenty("plain/plenty", false, ops), ops);
}

TEST_CASE("stress: monitors and history, plenty of budget", "[coordinator][concurrency]") {
  const auto ops = ops_per_thread();
  run_stress(plenty("monitored/plenty", true, ops), ops);
}

TEST_CASE("stress: demand far above supply never overspends", "[coordinator][concurrency]") {
  const auto ops = ops_per_thread();
  run_stress(scarce("plain/scarce", false, ops), ops);
}

TEST_CASE("stress: demand far above supply, monitors and history", "[coordinator][concurrency]") {
  const auto ops = ops_per_thread();
  run_stress(scarce("monitored/scarce", true, ops), ops);
}

TEST_CASE("N threads consuming 1 from one agent succeed exactly `budget` times",
          "[coordinator][concurrency]") {
  const std::int64_t budget = 400'000;
  const bool monitored = GENERATE(false, true);
  INFO((monitored ? "with an observer and history" : "lock-free path"));
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = monitored ? 64u : 0u});
  AgentId agent = coord.create_agent({.name = "hot", .initial_budget = Decimal(budget)});
  std::atomic<std::uint64_t> seen{0};
  MonitorHandle handle;
  if (monitored)
    handle = coord.add_monitor(agent, [&seen](const Event&) { seen.fetch_add(1); });

  std::array<std::int64_t, thread_count> wins{};
  std::array<std::uint64_t, thread_count> other{};
  run_threads(thread_count, [&](unsigned t) {
    for (;;) {
      auto r = coord.try_consume(agent, Decimal(1));
      if (r.ok())
        ++wins[t];
      else if (r.status() == ConsumeStatus::insufficient)
        break; // nothing refills it, so it stays empty
      else
        ++other[t];
    }
  });
  std::int64_t total = 0;
  for (unsigned t = 0; t < thread_count; ++t) {
    total += wins[t];
    CHECK(other[t] == 0);
  }
  CHECK(total == budget);
  const auto m = coord.agent_metrics(agent);
  CHECK(m.used_budget == Decimal(budget));
  CHECK(m.remaining_budget == Decimal(0));
  CHECK(m.consumption_count == static_cast<std::uint64_t>(budget));
  CHECK(coord.try_consume(agent, Decimal::epsilon()).status() == ConsumeStatus::insufficient);
  if (monitored)
    CHECK(seen.load() == static_cast<std::uint64_t>(budget));
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an observer sees one agent's changes once, in order, as an unbroken chain",
          "[coordinator][concurrency][monitor]") {
  const std::uint64_t ops = std::max<std::uint64_t>(ops_per_thread() / 5, 1);
  const std::uint64_t seed = base_seed();
  INFO(thread_count << " threads x " << ops << " ops, seed " << seed);
  const Decimal initial(100'000);
  BudgetCoordinator coord;
  AgentId agent = coord.create_agent({.name = "watched", .initial_budget = initial});

  // Deliberately unsynchronised: the coordinator promises one call at a time per agent, so the
  // vector needs no lock (ThreadSanitizer checks the promise). The flag only turns an overlap
  // into a test failure instead of a crash in builds without the sanitizer.
  std::vector<Event> events;
  events.reserve(thread_count * ops * 2 + thread_count * 8);
  std::atomic<bool> inside{false};
  std::atomic<std::uint64_t> overlaps{0};
  auto handle = coord.add_monitor(agent, [&](const Event& e) {
    if (inside.exchange(true, std::memory_order_relaxed)) {
      overlaps.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    events.push_back(e);
    inside.store(false, std::memory_order_relaxed);
  });

  std::array<std::uint64_t, thread_count> consumes{};
  run_threads(thread_count, [&](unsigned t) {
    std::mt19937_64 rng(seed + 100 + t);
    std::uniform_int_distribution<std::int64_t> amount(1, 5 * unit);
    std::uniform_int_distribution<int> op(0, 9);
    Reservation held;
    for (std::uint64_t n = 0; n < ops; ++n) {
      const int choice = op(rng);
      if (choice < 7) {
        if (coord.try_consume(agent, raw(amount(rng))))
          ++consumes[t];
      } else if (choice < 8 && !held.active()) {
        held = coord.try_reserve(agent, raw(amount(rng)));
      } else if (choice < 9) {
        (void)held.commit(raw(amount(rng))); // not_active when nothing is held: that is fine
      } else {
        held.release();
      }
    }
  });

  REQUIRE(overlaps.load() == 0);
  REQUIRE(!events.empty());
  const auto final_balance = coord.agent_metrics(agent);
  CHECK(events.front().remaining_before == initial);
  CHECK(events.front().used_before == Decimal(0));
  CHECK(events.back().remaining_after == final_balance.remaining_budget);
  CHECK(events.back().used_after == final_balance.used_budget);
  std::uint64_t consume_events = 0;
  Decimal charged;
  std::size_t broken = 0, wrong = 0;
  for (std::size_t k = 0; k < events.size(); ++k) {
    const auto& e = events[k];
    if (k + 1 < events.size() && (e.remaining_after != events[k + 1].remaining_before ||
                                  e.used_after != events[k + 1].used_before)) {
      if (broken++ == 0)
        UNSCOPED_INFO("chain broken after event " << k << " of " << events.size());
    }
    bool ok = true;
    switch (e.kind) {
    case UsageKind::consume:
      ++consume_events;
      charged += e.amount;
      ok = e.remaining_after == e.remaining_before - e.amount &&
           e.used_after == e.used_before + e.amount;
      break;
    case UsageKind::reserve:
      ok = e.remaining_after == e.remaining_before - e.amount && e.used_after == e.used_before;
      break;
    case UsageKind::commit:
      charged += e.amount;
      ok = e.used_after == e.used_before + e.amount;
      break;
    case UsageKind::release:
      ok = e.remaining_after == e.remaining_before + e.amount && e.used_after == e.used_before;
      break;
    }
    if (!ok && wrong++ == 0)
      UNSCOPED_INFO("event " << k << " does not add up");
  }
  CHECK(broken == 0);
  CHECK(wrong == 0);
  std::uint64_t consumed = 0;
  for (auto c : consumes)
    consumed += c;
  CHECK(consume_events == consumed);
  CHECK(charged == final_balance.used_budget);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("structure changes race the hot path without losing a unit",
          "[coordinator][concurrency]") {
  // One thread creates and removes agents, registers and drops monitors, updates budgets and
  // reads metrics, while the others spend from whichever agents exist (removed ones included).
  const std::uint64_t ops = std::max<std::uint64_t>(ops_per_thread() / 2, 1);
  const std::uint64_t seed = base_seed() + 1000;
  INFO((thread_count - 1) << " spenders x " << ops << " ops, seed " << seed);
  constexpr std::size_t max_agents = 512;
  constexpr std::size_t max_monitors = 6;
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 8});
  const PoolId pool =
      coord.create_pool({.name = "churn", .initial_budget = Decimal(1'000'000'000)});
  const AgentId first =
      coord.create_agent({.name = "a0", .initial_budget = Decimal(50), .pool = pool});
  std::atomic<std::uint64_t> last_id{first.value()};
  std::atomic<bool> done{false};
  std::atomic<unsigned> finished{0};
  auto seen = std::make_shared<std::atomic<std::uint64_t>>(0);

  struct Spender {
    std::vector<std::int64_t> charged = std::vector<std::int64_t>(max_agents + 1);
    std::vector<std::uint64_t> charges = std::vector<std::uint64_t>(max_agents + 1);
    std::uint64_t unknown = 0, anomalies = 0;
  };
  std::array<Spender, thread_count> spenders;
  std::uint64_t created = 1, removed = 0, registered = 0;

  run_threads(thread_count, [&](unsigned t) {
    std::mt19937_64 rng(seed + t);
    auto below = [&](std::uint64_t n) {
      return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
    };
    if (t == 0) { // the manager
      std::vector<MonitorHandle> handles;
      std::vector<AgentId> live{first};
      while (!done.load(std::memory_order_acquire)) {
        switch (below(8)) {
        case 0:
        case 1:
          if (created < max_agents) {
            auto id = coord.create_agent({.name = "a" + std::to_string(created),
                                          .initial_budget = Decimal(50),
                                          .pool = pool});
            ++created;
            live.push_back(id);
            last_id.store(id.value(), std::memory_order_release);
          }
          break;
        case 2:
          if (live.size() > 1) {
            const auto k = static_cast<std::ptrdiff_t>(below(live.size()));
            coord.remove_agent(live[static_cast<std::size_t>(k)]);
            live.erase(live.begin() + k);
            ++removed;
          }
          break;
        case 3:
          if (handles.size() >= max_monitors)
            handles.erase(handles.begin());
          handles.push_back(coord.add_monitor(pool, [seen](const Event&) { seen->fetch_add(1); }));
          ++registered;
          break;
        case 4:
          if (handles.size() >= max_monitors)
            handles.erase(handles.begin());
          handles.push_back(coord.add_monitor(all_agents, SpendingLimit{Decimal(1'000'000)}));
          ++registered;
          break;
        case 5:
          if (!handles.empty())
            handles.erase(handles.begin() + static_cast<std::ptrdiff_t>(below(handles.size())));
          break;
        case 6:
          try {
            coord.update_budget(live[below(live.size())],
                                Decimal(static_cast<std::int64_t>(below(100))), "churn");
          } catch (const PoolExhausted&) {
          }
          break;
        default:
          (void)coord.all_agent_metrics();
          (void)coord.pool_metrics(pool);
          break;
        }
      }
      return;
    }
    auto& s = spenders[t];
    std::vector<Reservation> open;
    auto agent_id = [&] {
      const std::uint64_t hi = last_id.load(std::memory_order_acquire);
      return AgentId(first.value() + below(hi - first.value() + 1));
    };
    auto charge = [&](AgentId id, const BudgetCoordinator::CommitResult& r) {
      if (!r.ok()) {
        ++s.anomalies;
        return;
      }
      s.charged[id.value()] += r.charged.raw();
      if (r.charged.raw() > 0)
        ++s.charges[id.value()];
    };
    for (std::uint64_t n = 0; n < ops; ++n) {
      const std::uint64_t op = below(10);
      if (op < 4) {
        const AgentId id = agent_id();
        const std::int64_t amount = static_cast<std::int64_t>(below(2 * unit)) + 1;
        auto r = coord.try_consume(id, raw(amount));
        if (r.ok()) {
          s.charged[id.value()] += amount;
          ++s.charges[id.value()];
        } else if (r.status() == ConsumeStatus::unknown_agent) {
          ++s.unknown;
        } else if (r.status() != ConsumeStatus::insufficient) {
          ++s.anomalies;
        }
      } else if (op < 6 && open.size() < max_open_reservations) {
        auto r = coord.try_reserve(agent_id(), raw(static_cast<std::int64_t>(below(2 * unit)) + 1));
        if (r.ok())
          open.push_back(std::move(r));
        else if (r.status() == ConsumeStatus::unknown_agent)
          ++s.unknown;
        else if (r.status() != ConsumeStatus::insufficient)
          ++s.anomalies;
      } else if (op < 8 && !open.empty()) {
        auto& r = open[below(open.size())];
        const AgentId id = r.agent();
        if (op == 6)
          charge(id, r.commit_partial(raw(static_cast<std::int64_t>(below(unit)) + 1)));
        else
          charge(id, r.commit(raw(static_cast<std::int64_t>(below(3 * unit)))));
        std::erase_if(open, [](const Reservation& x) { return !x.active(); });
      } else if (!open.empty()) {
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(below(open.size())));
      }
    }
    open.clear();
    if (finished.fetch_add(1) + 1 == thread_count - 1)
      done.store(true, std::memory_order_release); // the last spender stops the manager
  });

  INFO("created " << created << ", removed " << removed << ", monitors " << registered
                  << ", observed " << seen->load());
  for (const auto& problem : coord.check_invariants())
    FAIL_CHECK(problem);
  std::int64_t counted = 0, used = 0;
  for (std::uint64_t id = first.value(); id <= last_id.load(); ++id) {
    std::int64_t charged = 0;
    std::uint64_t charges = 0;
    for (const auto& s : spenders) {
      charged += s.charged[id];
      charges += s.charges[id];
    }
    const auto m = coord.agent_metrics(AgentId(id));
    INFO("agent " << id);
    CHECK(m.used_budget.raw() == charged);
    CHECK(m.consumption_count == charges);
    CHECK(m.reserved_budget == Decimal(0));
    CHECK(m.used_budget + m.remaining_budget == m.initial_budget);
    counted += charged;
    used += m.used_budget.raw();
  }
  CHECK(counted == used);
  const auto pm = coord.pool_metrics(pool);
  CHECK(pm.used_budget.raw() == used);
  CHECK(pm.unallocated_budget + pm.allocated_budget == pm.initial_budget);
  for (const auto& s : spenders)
    CHECK(s.anomalies == 0);
}

TEMPLATE_TEST_CASE("charge counts and usage stay exact on lock-free and locked ledger cells",
                   "[coordinator][concurrency]", Decimal, std::int64_t, BigDecimal) {
  using A = TestType;
  using traits = amount_traits<A>;
  static_assert(InMemoryLedger<A>::is_lock_free() == !std::is_same_v<A, BigDecimal>);
  constexpr std::int64_t per_thread = 20'000;
  constexpr std::int64_t rounds = per_thread * thread_count;
  BasicBudgetCoordinator<A> coord;
  // Each round consumes 1 and reserves 2 of which it commits 1: 3 per round never runs short.
  const AgentId agent =
      coord.create_agent({.name = "a", .initial_budget = traits::from_integer(3 * rounds)});
  const A one = traits::from_integer(1), two = traits::from_integer(2);
  std::array<std::int64_t, thread_count> refused{};
  run_threads(thread_count, [&](unsigned t) {
    for (std::int64_t i = 0; i < per_thread; ++i) {
      if (!coord.try_consume(agent, one).ok())
        ++refused[t];
      auto r = coord.try_reserve(agent, two);
      if (!r.ok() || !(r.commit(one).charged == one))
        ++refused[t];
    }
  });
  for (auto n : refused)
    CHECK(n == 0);
  const auto m = coord.agent_metrics(agent);
  CHECK(m.consumption_count == static_cast<std::uint64_t>(2 * rounds));
  CHECK(coord.usage_stats(agent).count == static_cast<std::uint64_t>(2 * rounds));
  CHECK(m.used_budget == traits::from_integer(2 * rounds));
  CHECK(m.reserved_budget == traits::from_integer(0));
  CHECK(m.remaining_budget == traits::from_integer(rounds));
  CHECK(coord.check_invariants().empty());
}
