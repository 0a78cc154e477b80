// Soak: at least 10^8 mixed operations (consume, reserve + commit, reserve + partial commits,
// reserve + release, metrics reads, usage resets, transfers) from 4 threads on 3 shared agents, one
// of them watched by an observer and a veto check, then the books must be exact: every agent's
// used, reserved, remaining, overspent and charge count equal the sums the threads kept of their
// own results (used less what resets forgave), the allocations still add up to the pool's budget,
// and `check_invariants()` holds. Not in the presets' test runs (label `soak`); run it with
//
//   ctest --test-dir build/default -L soak --output-on-failure
//
// or `build/default/tests/mixed_operations_soak [operations]` (default 100000000).
// SPDX-License-Identifier: MIT
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <safeguards/coordinator.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

namespace {

constexpr int threads = 4;
constexpr std::size_t agents = 3;
// Small: balances run dry within a few thousand operations, and a dry balance is refilled by a
// usage reset or a transfer from the next agent, so refusals, resets and transfers are all part
// of the mix.
constexpr std::int64_t budget = 1'000'000;

struct Tally {
  std::int64_t used = 0, overspent = 0;
  std::uint64_t charges = 0, refused = 0, vetoed = 0, ops = 0;
};

} // namespace

int main(int argc, char** argv) {
  const std::uint64_t total = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 100'000'000;
  const std::uint64_t per_thread = total / threads + 1;

  BudgetCoordinator coord;
  const PoolId pool =
      coord.create_pool({.name = "soak", .initial_budget = Decimal::from_raw(budget * agents)});
  std::vector<AgentId> ids;
  for (std::size_t i = 0; i < agents; ++i)
    ids.push_back(coord.create_agent({.name = "agent-" + std::to_string(i),
                                      .initial_budget = Decimal::from_raw(budget),
                                      .pool = pool}));
  // Agent 0 is watched: the observer counts events, the check vetoes one amount only.
  std::atomic<std::uint64_t> events{0};
  auto observer = coord.add_monitor(ids[0], [&](const BudgetCoordinator::UsageEvent&) {
    events.fetch_add(1, std::memory_order_relaxed);
  });
  auto veto = coord.add_monitor(ids[0], [](const BudgetCoordinator::UsageEvent& e) {
    return e.amount.raw() != 13; // refuses every consume and reserve of exactly 13 units
  });

  std::vector<std::vector<Tally>> tallies(threads, std::vector<Tally>(agents));
  std::atomic<std::uint64_t> resets{0}, transfers{0};
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
      auto& mine = tallies[static_cast<std::size_t>(t)];
      for (std::uint64_t i = 0; i < per_thread; ++i) {
        const std::size_t a = rng() % agents;
        Tally& tally = mine[a];
        ++tally.ops;
        const std::int64_t x = 1 + static_cast<std::int64_t>(rng() % 32);
        const auto count = [&](ConsumeStatus s) {
          if (s == ConsumeStatus::insufficient)
            ++tally.refused;
          else if (s == ConsumeStatus::denied_by_monitor)
            ++tally.vetoed;
          else if (s != ConsumeStatus::ok)
            std::abort(); // nothing else can happen here
        };
        switch (rng() % 8) {
        case 0:
        case 1:
        case 2: { // consume
          const auto s = coord.try_consume(ids[a], Decimal::from_raw(x)).status();
          count(s);
          if (s == ConsumeStatus::ok) {
            tally.used += x;
            ++tally.charges;
          }
          break;
        }
        case 3:
        case 4: { // reserve, then commit between nothing and twice the estimate
          auto r = coord.try_reserve(ids[a], Decimal::from_raw(x));
          count(r.status());
          if (!r.ok())
            break;
          const auto c = r.commit(Decimal::from_raw(static_cast<std::int64_t>(rng() % 65)));
          tally.used += c.charged.raw();
          tally.overspent += c.overspent.raw();
          if (c.charged.raw() > 0)
            ++tally.charges;
          break;
        }
        case 5: { // reserve, stream two partial commits, then commit the total
          auto r = coord.try_reserve(ids[a], Decimal::from_raw(x));
          count(r.status());
          if (!r.ok())
            break;
          for (int k = 0; k < 2; ++k) {
            const auto c =
                r.commit_partial(Decimal::from_raw(1 + static_cast<std::int64_t>(rng() % 20)));
            tally.used += c.charged.raw();
            tally.overspent += c.overspent.raw();
            if (c.charged.raw() > 0)
              ++tally.charges;
          }
          const auto c = r.commit(r.settled());
          tally.used += c.charged.raw();
          tally.overspent += c.overspent.raw();
          if (c.charged.raw() > 0)
            ++tally.charges;
          break;
        }
        case 6: { // reserve and drop it: released by the destructor
          auto r = coord.try_reserve(ids[a], Decimal::from_raw(x));
          count(r.status());
          break;
        }
        default: { // read, and top up a low balance from the pool
          const auto m = coord.agent_metrics(ids[a]);
          if (m.remaining_budget.raw() < 0 || m.used_budget.raw() < 0 ||
              m.reserved_budget.raw() < 0)
            std::abort();
          if (m.remaining_budget.raw() >= 32 || rng() % 4 != 0)
            break;
          if (rng() % 2 == 0) { // a new period: what was used is forgiven
            tally.used -= coord.reset_usage(ids[a], "soak period").raw();
            resets.fetch_add(1, std::memory_order_relaxed);
          } else {
            try {
              coord.transfer(ids[(a + 1) % agents], ids[a], Decimal::from_raw(10'000),
                             "soak refill");
              transfers.fetch_add(1, std::memory_order_relaxed);
            } catch (const BudgetExceeded&) { // the other agent is low too
            }
          }
          break;
        }
        }
      }
    });
  for (auto& w : workers)
    w.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  int failures = 0;
  std::uint64_t ops = 0, refused = 0, vetoed = 0;
  std::int64_t allocated_total = 0;
  for (std::size_t a = 0; a < agents; ++a) {
    Tally sum;
    for (const auto& mine : tallies) {
      sum.used += mine[a].used;
      sum.overspent += mine[a].overspent;
      sum.charges += mine[a].charges;
      sum.refused += mine[a].refused;
      sum.vetoed += mine[a].vetoed;
      sum.ops += mine[a].ops;
    }
    ops += sum.ops;
    refused += sum.refused;
    vetoed += sum.vetoed;
    const auto m = coord.agent_metrics(ids[a]);
    allocated_total += m.initial_budget.raw();
    const bool exact = m.used_budget.raw() == sum.used && m.reserved_budget.raw() == 0 &&
                       m.overspent_budget.raw() == sum.overspent &&
                       m.consumption_count == sum.charges &&
                       m.remaining_budget.raw() == m.initial_budget.raw() - sum.used;
    std::printf("agent %zu: %llu operations, used %lld (tally %lld), charges %llu (tally %llu), "
                "remaining %lld, overspent %lld, refused %llu, vetoed %llu: %s\n",
                a, static_cast<unsigned long long>(sum.ops),
                static_cast<long long>(m.used_budget.raw()), static_cast<long long>(sum.used),
                static_cast<unsigned long long>(m.consumption_count),
                static_cast<unsigned long long>(sum.charges),
                static_cast<long long>(m.remaining_budget.raw()),
                static_cast<long long>(m.overspent_budget.raw()),
                static_cast<unsigned long long>(sum.refused),
                static_cast<unsigned long long>(sum.vetoed), exact ? "exact" : "WRONG");
    failures += exact ? 0 : 1;
  }
  if (allocated_total != budget * static_cast<std::int64_t>(agents)) {
    std::printf("allocations moved: %lld, not %lld\n", static_cast<long long>(allocated_total),
                static_cast<long long>(budget * static_cast<std::int64_t>(agents)));
    ++failures;
  }
  if (vetoed == 0 || refused == 0 || events.load() == 0 || resets.load() == 0 ||
      transfers.load() == 0) {
    std::printf("the mix did not exercise refusals, vetoes, events, resets and transfers\n");
    ++failures;
  }
  for (const auto& problem : coord.check_invariants()) {
    std::printf("invariant: %s\n", problem.c_str());
    ++failures;
  }
  std::printf(
      "%llu operations from %d threads in %.1f s (%.0f ns each of all threads), "
      "%llu observed events, %llu resets, %llu transfers: %s\n",
      static_cast<unsigned long long>(ops), threads, seconds,
      seconds * 1e9 / static_cast<double>(ops), static_cast<unsigned long long>(events.load()),
      static_cast<unsigned long long>(resets.load()),
      static_cast<unsigned long long>(transfers.load()), failures == 0 ? "books exact" : "FAILED");
  return failures == 0 ? 0 : 1;
}
