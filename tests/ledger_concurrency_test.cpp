// The lock-free ledger's waiting rules, attacked. A writer (reserve, settle, release, credit,
// close) owns an account from the compare-and-swap that sets its lock bit until it publishes the
// new word; debits that would succeed wait for it, refused ones must not. The debit that wraps
// the charge count's low bits adds the carry while other debits go on, and no reader may see
// the count or `used` go back meanwhile. CI runs this file under ThreadSanitizer.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <latch>
#include <optional>
#include <safeguards/ledger.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

namespace {
using Cell = detail::AtomicCell;
} // namespace

TEST_CASE("a debit that fits waits for the account's owner - a refused one does not",
          "[ledger][concurrency]") {
  InMemoryLedger<Decimal> ledger;
  auto h = ledger.open(10_d);
  h->word.fetch_or(Cell::locked_bit); // as if a writer held the account

  // Refusals are answered from the locked word at once (this thread would spin forever else).
  CHECK(ledger.debit(h, 11_d) == LedgerStatus::insufficient);
  CHECK(ledger.reserve(h, 11_d) == LedgerStatus::insufficient);
  CHECK(ledger.debit(h, Decimal::from_raw(-1)) == LedgerStatus::invalid_amount);

  std::atomic<bool> done{false};
  std::atomic<LedgerStatus> status{LedgerStatus::closed};
  std::thread debtor([&] {
    status.store(ledger.debit(h, 3_d));
    done.store(true);
  });
  // However long the debtor runs, it cannot finish while the account is held.
  for (int i = 0; i < 2000; ++i)
    std::this_thread::yield();
  CHECK_FALSE(done.load());
  h->word.fetch_and(~Cell::locked_bit); // the owner publishes (nothing changed)
  debtor.join();
  CHECK(status.load() == LedgerStatus::ok);
  const auto b = ledger.balance(h);
  CHECK(b.remaining == 7_d);
  CHECK(b.used == 3_d);
  CHECK(ledger.charge_count(h) == 1);
}

TEST_CASE("debits racing across the count's carries keep the count and usage exact",
          "[ledger][concurrency]") {
  constexpr int threads = 4;
  constexpr int debits_per_thread = 30000; // ~1,900 carries of the count's 6 low bits
  InMemoryLedger<std::int64_t> ledger;
  auto h = ledger.open(std::int64_t{1} << 40);
  std::atomic<int> running{threads};
  std::latch start(threads + 1);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < debits_per_thread; ++i) {
        (void)ledger.debit(h, std::int64_t{1} + t);
        if (i % 97 == 0) { // a writer now and then: debits wait for it, the carry may not
          if (ledger.reserve(h, 5) == LedgerStatus::ok)
            (void)ledger.settle(h, 5, 0); // a settle of nothing: not a charge
        }
      }
      running.fetch_sub(1);
    });

  std::optional<std::string> problem;
  std::uint64_t last_count = 0;
  std::int64_t last_used = 0;
  start.arrive_and_wait();
  while (running.load() != 0) {
    const auto b = ledger.balance(h);
    const auto count = ledger.charge_count(h);
    if (!problem && (count < last_count || b.used < last_used || b.used < 0 || b.reserved < 0))
      problem = "count " + std::to_string(last_count) + " -> " + std::to_string(count) + ", used " +
                std::to_string(last_used) + " -> " + std::to_string(b.used);
    last_count = count;
    last_used = b.used;
  }
  for (auto& w : workers)
    w.join();
  CHECK_FALSE(problem);
  if (problem)
    FAIL(*problem);
  std::int64_t used = 0;
  for (int t = 0; t < threads; ++t)
    used += std::int64_t{debits_per_thread} * (1 + t);
  CHECK(ledger.charge_count(h) == std::uint64_t{threads} * debits_per_thread);
  const auto b = ledger.balance(h);
  CHECK(b.used == used);
  CHECK(b.reserved == 0);
  CHECK(b.remaining == (std::int64_t{1} << 40) - used);
}
