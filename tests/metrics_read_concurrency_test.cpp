// Readers never see an impossible balance. `used` is not stored by the lock-free ledger (it is
// allocated - remaining - reserved), so a reader racing with writers could compute a torn,
// negative or shrinking `used` if the ledger let it. Here a reader snapshots the numbers without
// pause while two threads consume, reserve, commit, release and change budgets, and every
// snapshot must be one the books could have had: nothing negative, the three parts summing to
// the allocation, and usage and the charge count never going back (nothing resets them here).
// CI runs this file under ThreadSanitizer.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <latch>
#include <optional>
#include <random>
#include <safeguards/coordinator.hpp>
#include <safeguards/ledger.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

namespace {

constexpr int ops_per_thread = 40000;

Decimal cents(std::int64_t n) {
  return Decimal::from_raw(n * (Decimal::scale / 100));
}

// What the reader found first, reported on the main thread (no Catch assertion off it).
struct Finding {
  std::optional<std::string> first;
  std::uint64_t snapshots = 0;
  void fail(std::string what) {
    if (!first)
      first = std::move(what);
  }
};

} // namespace

TEST_CASE("ledger balances read during writes are always possible", "[ledger][concurrency]") {
  InMemoryLedger<Decimal> ledger;
  auto h = ledger.open(cents(100000));
  // Raised before each credit, so a snapshot's total is never above it.
  std::atomic<std::int64_t> credited{100000};
  std::atomic<int> running{2};
  // What the writers were told they charged: the books must hold exactly that at the end.
  std::atomic<std::uint64_t> charges{0};
  std::atomic<std::int64_t> charged_cents{0};
  std::latch start(3);

  auto writer = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::uint64_t my_charges = 0;
    std::int64_t my_cents = 0;
    start.arrive_and_wait();
    for (int i = 0; i < ops_per_thread; ++i) {
      const auto n = static_cast<std::int64_t>(rng() % 50) + 1;
      switch (rng() % 6) {
      case 0:
      case 1:
        if (ledger.debit(h, cents(n)) == LedgerStatus::ok) {
          ++my_charges;
          my_cents += n;
        }
        break;
      case 2:
        if (ledger.reserve(h, cents(n)) == LedgerStatus::ok) {
          const auto s = ledger.settle(h, cents(n), cents(static_cast<std::int64_t>(rng() % 80)));
          if (Decimal() < s.charged) {
            ++my_charges;
            my_cents += s.charged.raw() / (Decimal::scale / 100);
          }
        }
        break;
      case 3:
        if (ledger.reserve(h, cents(n)) == LedgerStatus::ok)
          (void)ledger.release(h, cents(n));
        break;
      default:
        credited.fetch_add(n);
        (void)ledger.credit(h, cents(n));
        break;
      }
    }
    charges.fetch_add(my_charges);
    charged_cents.fetch_add(my_cents);
    running.fetch_sub(1);
  };

  Finding found;
  std::thread t1(writer, 1u);
  std::thread t2(writer, 2u);
  start.arrive_and_wait();
  Decimal last_used;
  std::uint64_t last_count = 0;
  Decimal last_total = cents(100000);
  while (running.load() != 0 || found.snapshots < 1000) {
    const auto b = ledger.balance(h);
    const auto count = ledger.charge_count(h);
    const Decimal total = b.remaining + b.used + b.reserved;
    const Decimal bound = cents(credited.load());
    ++found.snapshots;
    if (b.remaining < Decimal() || b.used < Decimal() || b.reserved < Decimal())
      found.fail(fmt::format("negative: remaining {} used {} reserved {}", b.remaining, b.used,
                             b.reserved));
    if (b.used < last_used)
      found.fail(fmt::format("used went back from {} to {}", last_used, b.used));
    if (count < last_count)
      found.fail(fmt::format("charge count went back from {} to {}", last_count, count));
    if (total < last_total || bound < total)
      found.fail(fmt::format("allocation {} outside [{}, {}]", total, last_total, bound));
    last_used = b.used;
    last_count = count;
    last_total = total;
  }
  t1.join();
  t2.join();
  INFO(found.snapshots << " snapshots");
  CHECK_FALSE(found.first);
  if (found.first)
    FAIL(*found.first);
  const auto b = ledger.balance(h);
  CHECK(b.reserved == Decimal());
  CHECK(b.remaining + b.used == cents(credited.load()));
  CHECK(b.used == cents(charged_cents.load()));
  CHECK(ledger.charge_count(h) == charges.load());
  CHECK(charges.load() > 1000); // the count's low bits wrapped many times meanwhile
}

TEST_CASE("agent metrics read during writes are always possible", "[coordinator][concurrency]") {
  BudgetCoordinator coord;
  const PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100000_d});
  const AgentId agent = coord.create_agent({.name = "a", .initial_budget = 500_d, .pool = pool});
  std::atomic<int> running{2};
  std::latch start(3);

  auto writer = [&](unsigned seed) {
    std::mt19937 rng(seed);
    start.arrive_and_wait();
    for (int i = 0; i < ops_per_thread; ++i) {
      const auto n = static_cast<std::int64_t>(rng() % 50) + 1;
      switch (rng() % 8) {
      case 0:
      case 1:
      case 2:
        (void)coord.try_consume(agent, cents(n));
        break;
      case 3:
      case 4: {
        auto r = coord.try_reserve(agent, cents(n));
        if (r.ok())
          (void)r.commit(cents(static_cast<std::int64_t>(rng() % 80)));
        break;
      }
      case 5: {
        auto r = coord.try_reserve(agent, cents(n)); // released when it goes out of scope
        break;
      }
      default:
        if (i % 64 == 0) // budget changes take the writer lock: not on every iteration
          coord.update_budget(agent, cents(40000 + static_cast<std::int64_t>(rng() % 20000)),
                              "top up");
        break;
      }
    }
    running.fetch_sub(1);
  };

  Finding found;
  std::thread t1(writer, 11u);
  std::thread t2(writer, 12u);
  start.arrive_and_wait();
  Decimal last_used;
  std::uint64_t last_count = 0;
  while (running.load() != 0 || found.snapshots < 1000) {
    const auto m = coord.agent_metrics(agent);
    ++found.snapshots;
    if (m.remaining_budget < Decimal() || m.used_budget < Decimal() ||
        m.reserved_budget < Decimal())
      found.fail(fmt::format("negative: remaining {} used {} reserved {}", m.remaining_budget,
                             m.used_budget, m.reserved_budget));
    if (m.remaining_budget + m.used_budget + m.reserved_budget != m.initial_budget)
      found.fail(fmt::format("{} + {} + {} != allocated {}", m.remaining_budget, m.used_budget,
                             m.reserved_budget, m.initial_budget));
    if (m.initial_budget < m.remaining_budget)
      found.fail(
          fmt::format("remaining {} above allocated {}", m.remaining_budget, m.initial_budget));
    if (m.used_budget < last_used)
      found.fail(fmt::format("used went back from {} to {}", last_used, m.used_budget));
    if (m.consumption_count < last_count)
      found.fail(fmt::format("consumption count went back from {} to {}", last_count,
                             m.consumption_count));
    last_used = m.used_budget;
    last_count = m.consumption_count;
  }
  t1.join();
  t2.join();
  INFO(found.snapshots << " snapshots");
  CHECK_FALSE(found.first);
  if (found.first)
    FAIL(*found.first);
  CHECK(coord.agent_metrics(agent).reserved_budget == Decimal());
  coord.check_invariants();
}
