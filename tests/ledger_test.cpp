// The ledger on its own: every operation, on the lock-free and the locked cells, and a
// coordinator running on a ledger of the user's own.
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <safeguards/big_decimal.hpp>
#include <safeguards/coordinator.hpp>
#include <safeguards/ledger.hpp>
#include <utility>
#include <vector>

using namespace safeguards;

namespace {
template <class A>
A amt(std::int64_t n) {
  return amount_traits<A>::from_integer(n);
}
} // namespace

static_assert(InMemoryLedger<Decimal>::is_lock_free());
static_assert(InMemoryLedger<std::int64_t>::is_lock_free());
static_assert(!InMemoryLedger<BigDecimal>::is_lock_free());
static_assert(!InMemoryLedger<double>::is_lock_free());
static_assert(Ledger<InMemoryLedger<std::int64_t>>);
static_assert(Ledger<InMemoryLedger<double>>);
static_assert(Ledger<InMemoryLedger<BigDecimal>>);
static_assert(!Ledger<int>);

TEMPLATE_TEST_CASE("ledger debits refuse to cross zero", "[ledger]", Decimal, std::int64_t,
                   BigDecimal, double) {
  using A = TestType;
  InMemoryLedger<A> ledger;
  auto h = ledger.open(amt<A>(10));
  CHECK(ledger.debit(h, amt<A>(4)) == LedgerStatus::ok);
  CHECK(ledger.debit(h, amt<A>(7)) == LedgerStatus::insufficient);
  auto b = ledger.balance(h);
  CHECK(b.remaining == amt<A>(6));
  CHECK(b.used == amt<A>(4));
  CHECK(b.reserved == amt<A>(0));
  CHECK(ledger.debit(h, amt<A>(6)) == LedgerStatus::ok);
  CHECK(ledger.balance(h).remaining == amt<A>(0));
  CHECK(ledger.debit(h, amt<A>(1)) == LedgerStatus::insufficient);
}

TEMPLATE_TEST_CASE("a ledger refuses negative debits, reserves and credits", "[ledger]", Decimal,
                   std::int64_t, BigDecimal, double) {
  using A = TestType;
  InMemoryLedger<A> ledger;
  auto h = ledger.open(amt<A>(10));
  const A minus = amt<A>(-3);
  // Each of these would otherwise move money the wrong way: a debit or reserve that gives, a
  // credit that takes.
  CHECK(ledger.debit(h, minus) == LedgerStatus::invalid_amount);
  CHECK(ledger.reserve(h, minus) == LedgerStatus::invalid_amount);
  CHECK(ledger.credit(h, minus) == LedgerStatus::invalid_amount);
  auto b = ledger.balance(h);
  CHECK(b.remaining == amt<A>(10));
  CHECK(b.used == amt<A>(0));
  CHECK(b.reserved == amt<A>(0));
  CHECK(ledger.charge_count(h) == 0);
  // On a closed account a negative credit is refused first: nothing is swept back in.
  CHECK(ledger.close(h) == amt<A>(10));
  CHECK(ledger.credit(h, minus) == LedgerStatus::invalid_amount);
  CHECK(ledger.balance(h).remaining == amt<A>(0));
}

TEMPLATE_TEST_CASE("ledger reservations settle, refund and charge overage up to zero", "[ledger]",
                   Decimal, std::int64_t, BigDecimal, double) {
  using A = TestType;
  InMemoryLedger<A> ledger;
  auto h = ledger.open(amt<A>(10));
  REQUIRE(ledger.reserve(h, amt<A>(4)) == LedgerStatus::ok);
  CHECK(ledger.balance(h).reserved == amt<A>(4));
  CHECK(ledger.balance(h).remaining == amt<A>(6));

  SECTION("actual below the hold refunds the rest") {
    auto s = ledger.settle(h, amt<A>(4), amt<A>(1));
    CHECK(s.charged == amt<A>(1));
    CHECK(s.refunded == amt<A>(3));
    CHECK(s.uncovered == amt<A>(0));
    CHECK(ledger.balance(h).remaining == amt<A>(9));
    CHECK(ledger.balance(h).used == amt<A>(1));
  }
  SECTION("an overage the balance covers is charged") {
    auto s = ledger.settle(h, amt<A>(4), amt<A>(7));
    CHECK(s.charged == amt<A>(7));
    CHECK(s.uncovered == amt<A>(0));
    CHECK(ledger.balance(h).remaining == amt<A>(3));
  }
  SECTION("an overage beyond the balance is charged to zero, the rest uncovered") {
    auto s = ledger.settle(h, amt<A>(4), amt<A>(15));
    CHECK(s.charged == amt<A>(10));
    CHECK(s.uncovered == amt<A>(5));
    CHECK(ledger.balance(h).remaining == amt<A>(0));
    CHECK(ledger.balance(h).used == amt<A>(10));
  }
  SECTION("release returns the hold") {
    CHECK(ledger.release(h, amt<A>(4)));
    CHECK(ledger.balance(h).remaining == amt<A>(10));
    CHECK(ledger.balance(h).reserved == amt<A>(0));
  }
  SECTION("closing sweeps remaining; the hold comes back to the caller") {
    auto swept = ledger.close(h);
    REQUIRE(swept.has_value());
    CHECK(*swept == amt<A>(6));
    CHECK_FALSE(ledger.is_open(h));
    CHECK_FALSE(ledger.close(h).has_value());
    CHECK(ledger.debit(h, amt<A>(1)) == LedgerStatus::closed);
    CHECK(ledger.reserve(h, amt<A>(1)) == LedgerStatus::closed);
    CHECK(ledger.credit(h, amt<A>(1)) == LedgerStatus::closed);
    SECTION("release") {
      CHECK_FALSE(ledger.release(h, amt<A>(4)));
      CHECK(ledger.balance(h).reserved == amt<A>(0));
    }
    SECTION("settle") {
      auto s = ledger.settle(h, amt<A>(4), amt<A>(3));
      CHECK(s.account_closed);
      CHECK(s.charged == amt<A>(3));
      CHECK(s.refunded == amt<A>(1));
      CHECK(ledger.balance(h).used == amt<A>(3));
    }
    CHECK(ledger.balance(h).remaining == amt<A>(0));
  }
}

TEMPLATE_TEST_CASE("ledger settle of a negative usage against no hold gives usage back", "[ledger]",
                   Decimal, std::int64_t, BigDecimal, double) {
  // The contract reset_usage (budget periods) relies on; see Ledger::settle.
  using A = TestType;
  InMemoryLedger<A> ledger;
  auto h = ledger.open(amt<A>(10));
  REQUIRE(ledger.debit(h, amt<A>(3)) == LedgerStatus::ok);
  REQUIRE(ledger.reserve(h, amt<A>(2)) == LedgerStatus::ok);
  const std::uint64_t charges = ledger.charge_count(h);
  auto s = ledger.settle(h, amt<A>(0), amt<A>(-3));
  CHECK(s.charged == amt<A>(-3));
  CHECK(s.refunded == amt<A>(3));
  CHECK(s.uncovered == amt<A>(0));
  const auto after = ledger.balance(h);
  CHECK(after.remaining == amt<A>(8));
  CHECK(after.used == amt<A>(0));
  CHECK(after.reserved == amt<A>(2)); // an open reservation stays
  CHECK(ledger.charge_count(h) == charges);
  SECTION("on a closed account the usage goes to the caller") {
    REQUIRE(ledger.debit(h, amt<A>(1)) == LedgerStatus::ok);
    REQUIRE(ledger.close(h));
    auto closed = ledger.settle(h, amt<A>(0), amt<A>(-1));
    CHECK(closed.account_closed);
    CHECK(closed.refunded == amt<A>(1));
  }
}

TEMPLATE_TEST_CASE("ledger compare_exchange_remaining and credit", "[ledger]", Decimal,
                   std::int64_t, BigDecimal, double) {
  using A = TestType;
  InMemoryLedger<A> ledger;
  auto h = ledger.open(amt<A>(10));
  A expected = amt<A>(9);
  CHECK(ledger.compare_exchange_remaining(h, expected, amt<A>(20)) == LedgerStatus::conflict);
  CHECK(expected == amt<A>(10));
  CHECK(ledger.compare_exchange_remaining(h, expected, amt<A>(20)) == LedgerStatus::ok);
  CHECK(ledger.balance(h).remaining == amt<A>(20));
  A wrong = amt<A>(20);
  CHECK(ledger.compare_exchange_remaining(h, wrong, amt<A>(-1)) == LedgerStatus::invalid_amount);
  CHECK(ledger.balance(h).remaining == amt<A>(20));
  CHECK(ledger.credit(h, amt<A>(5)) == LedgerStatus::ok);
  CHECK(ledger.balance(h).remaining == amt<A>(25));
  ledger.close(h);
  A now = amt<A>(0);
  CHECK(ledger.compare_exchange_remaining(h, now, amt<A>(1)) == LedgerStatus::closed);
}

namespace {
// A ledger of the user's own: the in-memory one, counting what the coordinator asks of it.
// Shows that the coordinator needs only the Ledger concept, not std::atomic.
class CountingLedger {
public:
  using amount_type = Decimal;
  using handle_type = InMemoryLedger<Decimal>::handle_type;

  handle_type open(const Decimal& a) { return inner_.open(a); }
  std::optional<Decimal> close(handle_type h) noexcept { return inner_.close(h); }
  LedgerStatus debit(handle_type h, const Decimal& a) noexcept {
    ++debits;
    return inner_.debit(h, a);
  }
  LedgerStatus reserve(handle_type h, const Decimal& a) noexcept { return inner_.reserve(h, a); }
  Settlement<Decimal> settle(handle_type h, const Decimal& held, const Decimal& actual) noexcept {
    return inner_.settle(h, held, actual);
  }
  bool release(handle_type h, const Decimal& a) noexcept { return inner_.release(h, a); }
  LedgerStatus credit(handle_type h, const Decimal& a) noexcept { return inner_.credit(h, a); }
  LedgerStatus compare_exchange_remaining(handle_type h, Decimal& e, const Decimal& d) noexcept {
    return inner_.compare_exchange_remaining(h, e, d);
  }
  LedgerBalance<Decimal> balance(handle_type h) const noexcept { return inner_.balance(h); }
  bool is_open(handle_type h) const noexcept { return inner_.is_open(h); }

  int debits = 0;

private:
  InMemoryLedger<Decimal> inner_;
};
static_assert(Ledger<CountingLedger>);
} // namespace

TEST_CASE("the coordinator runs on any Ledger", "[ledger][coordinator]") {
  BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, CountingLedger> coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  CHECK(coord.try_consume(a, 3_d).ok());
  CHECK(coord.try_consume(a, 8_d).status() == ConsumeStatus::insufficient);
  CHECK(coord.get_budget(a) == 7_d);
  CHECK(coord.check_invariants().empty());
  CHECK(coord.ledger().debits == 2);

  SECTION("monitored changes read the balance, then change it, through the ledger's operations") {
    static_assert(!HoldingLedger<CountingLedger>); // so the coordinator cannot hold its accounts
    std::vector<std::pair<Decimal, Decimal>> seen; // remaining before and after, per event
    auto handle = coord.add_monitor(
        a, [&](const auto& e) { seen.emplace_back(e.remaining_before, e.remaining_after); });
    CHECK(coord.try_consume(a, 2_d).ok());
    {
      auto r = coord.reserve(a, 3_d);
      CHECK(r.commit(1_d).ok());
    }
    coord.reserve(a, 1_d).release();
    CHECK(seen == std::vector<std::pair<Decimal, Decimal>>{
                      {7_d, 5_d}, {5_d, 2_d}, {2_d, 4_d}, {4_d, 3_d}, {3_d, 4_d}});
    CHECK(coord.get_budget(a) == 4_d);
    CHECK(coord.check_invariants().empty());
  }
}

TEMPLATE_TEST_CASE("a hold makes the same changes as the single operations", "[ledger]", Decimal,
                   std::int64_t, BigDecimal) {
  using A = TestType;
  static_assert(HoldingLedger<InMemoryLedger<A>>);
  InMemoryLedger<A> single;
  InMemoryLedger<A> held;
  auto hs = single.open(amt<A>(1000));
  auto hh = held.open(amt<A>(1000));
  std::uint64_t seed = 20261203;
  auto next = [&] { return (seed = seed * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
  std::vector<A> holds; // open reservations, the same in both ledgers
  for (int step = 0; step < 3000; ++step) {
    const A x = amt<A>(static_cast<std::int64_t>(next() % 40) - 2); // a few negative amounts
    auto h = held.hold(hh);
    INFO("step " << step);
    // The hold's balance is the ledger's, exact (nobody else writes).
    const auto before = h.balance();
    const auto expected = single.balance(hs);
    REQUIRE(before.remaining == expected.remaining);
    REQUIRE(before.used == expected.used);
    REQUIRE(before.reserved == expected.reserved);
    switch (next() % 4) {
    case 0:
      REQUIRE(h.debit(x) == single.debit(hs, x));
      break;
    case 1: {
      const auto status = h.reserve(x);
      REQUIRE(status == single.reserve(hs, x));
      if (status == LedgerStatus::ok)
        holds.push_back(x);
      break;
    }
    case 2:
      if (!holds.empty()) {
        const A actual = amt<A>(static_cast<std::int64_t>(next() % 60));
        const auto s = h.settle(holds.back(), actual);
        const auto t = single.settle(hs, holds.back(), actual);
        REQUIRE(s.charged == t.charged);
        REQUIRE(s.refunded == t.refunded);
        REQUIRE(s.uncovered == t.uncovered);
        holds.pop_back();
      }
      break;
    default:
      if (!holds.empty()) {
        REQUIRE(h.release(holds.back()) == single.release(hs, holds.back()));
        holds.pop_back();
      }
      break;
    }
  }
  // The hold's last changes are published when it ends, with the count's carries.
  CHECK(held.charge_count(hh) == single.charge_count(hs));
  CHECK(held.charge_count(hh) > 64);
  const auto b = held.balance(hh);
  const auto c = single.balance(hs);
  CHECK(b.remaining == c.remaining);
  CHECK(b.used == c.used);
  CHECK(b.reserved == c.reserved);
  // Closed accounts too: a hold settles into used and hands the refund back.
  REQUIRE(held.reserve(hh, amt<A>(0)) == LedgerStatus::ok);
  (void)held.close(hh);
  auto s = held.hold(hh).settle(amt<A>(0), amt<A>(0));
  CHECK(s.account_closed);
  CHECK(held.hold(hh).debit(amt<A>(1)) == LedgerStatus::closed);
  CHECK(held.hold(hh).reserve(amt<A>(1)) == LedgerStatus::closed);
  CHECK_FALSE(held.hold(hh).release(amt<A>(0)));
}

TEMPLATE_TEST_CASE("a lock-free account holds at most max_balance", "[ledger]", Decimal,
                   std::int64_t) {
  using A = TestType;
  using traits = amount_traits<A>;
  InMemoryLedger<A> ledger;
  const A cap = *InMemoryLedger<A>::max_balance();
  CHECK(traits::to_raw(cap) == (std::int64_t{1} << 55) - 1);
  CHECK_THROWS_AS(ledger.open(traits::from_raw(traits::to_raw(cap) + 1)), AmountOverflow);
  CHECK_THROWS_WITH(ledger.open(traits::from_raw(std::numeric_limits<std::int64_t>::max())),
                    Catch::Contains("an account holds at most"));

  auto h = ledger.open(cap);
  CHECK(ledger.balance(h).remaining == cap);
  CHECK(ledger.credit(h, traits::from_raw(1)) == LedgerStatus::overflow);
  CHECK(ledger.balance(h).remaining == cap);
  // Spending does not make room: the bound is on what the account was given.
  REQUIRE(ledger.debit(h, amt<A>(1)) == LedgerStatus::ok);
  CHECK(ledger.credit(h, amt<A>(1)) == LedgerStatus::overflow);
  A expected = traits::sub(cap, amt<A>(1));
  CHECK(ledger.compare_exchange_remaining(h, expected, cap) == LedgerStatus::overflow);
  CHECK(expected == traits::sub(cap, amt<A>(1))); // unchanged: the bound, not a race
  // A debit far beyond any balance is refused, not shifted into the count's bits.
  CHECK(ledger.debit(h, traits::from_raw(std::numeric_limits<std::int64_t>::max())) ==
        LedgerStatus::insufficient);
  CHECK(ledger.reserve(h, traits::from_raw(std::numeric_limits<std::int64_t>::max())) ==
        LedgerStatus::insufficient);
  // Everything back to remaining, then a settle far beyond it takes what there is.
  auto s = ledger.settle(h, amt<A>(0), traits::from_raw(std::numeric_limits<std::int64_t>::max()));
  CHECK(s.charged == traits::sub(cap, amt<A>(1)));
  auto b = ledger.balance(h);
  CHECK(b.remaining == amt<A>(0));
  CHECK(b.used == cap);
  // Giving usage back restores the whole balance exactly.
  ledger.settle(h, amt<A>(0), traits::sub(amt<A>(0), cap));
  CHECK(ledger.balance(h).remaining == cap);
  CHECK(ledger.balance(h).used == amt<A>(0));
}

TEMPLATE_TEST_CASE("the charge count is exact across the carries of its low bits", "[ledger]",
                   Decimal, std::int64_t, BigDecimal) {
  using A = TestType;
  InMemoryLedger<A> ledger;
  auto h = ledger.open(amt<A>(100000));
  std::uint64_t expected = 0;
  for (int i = 0; i < 1000; ++i) {
    switch (i % 5) {
    case 0:
    case 1:
      REQUIRE(ledger.debit(h, amt<A>(1)) == LedgerStatus::ok);
      ++expected;
      break;
    case 2: // a settle that charges counts once
      REQUIRE(ledger.reserve(h, amt<A>(2)) == LedgerStatus::ok);
      (void)ledger.settle(h, amt<A>(2), amt<A>(1));
      ++expected;
      break;
    case 3: // a release and a settle of nothing do not count
      REQUIRE(ledger.reserve(h, amt<A>(2)) == LedgerStatus::ok);
      REQUIRE(ledger.release(h, amt<A>(2)));
      REQUIRE(ledger.reserve(h, amt<A>(2)) == LedgerStatus::ok);
      (void)ledger.settle(h, amt<A>(2), amt<A>(0));
      break;
    default: // nor do credits and refused debits
      REQUIRE(ledger.credit(h, amt<A>(1)) == LedgerStatus::ok);
      REQUIRE(ledger.debit(h, amt<A>(1000000)) == LedgerStatus::insufficient);
      break;
    }
    REQUIRE(ledger.charge_count(h) == expected);
  }
  CHECK(expected == 600);
  auto b = ledger.balance(h);
  CHECK(b.used == amt<A>(600));
  CHECK(b.remaining == amt<A>(100000 + 200 - 600));
  CHECK(b.reserved == amt<A>(0));
  // Closing keeps the count and the usage.
  CHECK(ledger.close(h) == amt<A>(99600));
  CHECK(ledger.charge_count(h) == 600);
  CHECK(ledger.balance(h).used == amt<A>(600));
}
