// Reservations (reserve, commit, commit_partial, release, moves, misuse), the per-agent usage
// history ring and the metrics, all driven by a ManualClock so every number is exact.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <ostream>
#include <safeguards/big_decimal.hpp>
#include <safeguards/safeguards.hpp>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

template <class A>
using CoordinatorOf = BasicBudgetCoordinator<A, FixedAllocation, ManualClock>;
using Coord = CoordinatorOf<Decimal>;
using Reservation = Coord::Reservation;

template <class A>
A amount(std::int64_t n) {
  return amount_traits<A>::from_integer(n);
}

// An agent's three balances, read through both get_budget and agent_metrics.
template <class A>
struct Balances {
  A budget;    // get_budget
  A remaining; // agent_metrics().remaining_budget
  A used;
  A reserved;
  friend bool operator==(const Balances&, const Balances&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Balances& b) {
    return os << "{get_budget " << amount_to_string(b.budget) << ", remaining "
              << amount_to_string(b.remaining) << ", used " << amount_to_string(b.used)
              << ", reserved " << amount_to_string(b.reserved) << "}";
  }
};

template <class A>
Balances<A> expect(A remaining, A used, A reserved) {
  return {remaining, remaining, used, reserved};
}

template <class Coordinator>
auto balances(const Coordinator& coord, AgentId agent) {
  using A = typename Coordinator::amount_type;
  auto m = coord.agent_metrics(agent);
  return Balances<A>{coord.get_budget(agent), m.remaining_budget, m.used_budget, m.reserved_budget};
}

// Every violation a coordinator reports, in order.
template <class Coordinator>
struct ViolationLog {
  std::vector<typename Coordinator::Violation> seen;
  SinkHandle handle;
  explicit ViolationLog(Coordinator& coord)
      : handle(coord.add_violation_sink(
            [this](const typename Coordinator::Violation& v) { seen.push_back(v); })) {}
};

// A history entry in a form Catch can print: "kind amount unit @ms from source".
template <class Event>
std::string describe(const Event& e) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(e.timestamp().time_since_epoch());
  return fmt::format("{} {} {} @{}ms from {}", e.consumption().kind(),
                     amount_to_string(e.consumption().value()), e.consumption().unit(), ms.count(),
                     e.source());
}

template <class Events>
std::vector<std::string> describe_all(const Events& events) {
  std::vector<std::string> out;
  out.reserve(events.size());
  for (const auto& e : events)
    out.push_back(describe(e));
  return out;
}

// A Clock that counts how often it is read; copies share the count and the time.
class CountingClock {
public:
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<CountingClock, duration>;

  time_point now() const noexcept {
    reads_->fetch_add(1);
    return time_point(time_.now().time_since_epoch());
  }
  std::int64_t reads() const noexcept { return reads_->load(); }
  void advance(duration step) { time_.advance(step); }

private:
  std::shared_ptr<std::atomic<std::int64_t>> reads_ =
      std::make_shared<std::atomic<std::int64_t>>(0);
  ManualClock time_;
};
static_assert(Clock<CountingClock>);

} // namespace

// ---- reservations ---------------------------------------------------------------------------

static_assert(!std::is_copy_constructible_v<Reservation>);
static_assert(!std::is_copy_assignable_v<Reservation>);
static_assert(std::is_nothrow_move_constructible_v<Reservation>);
static_assert(std::is_nothrow_move_assignable_v<Reservation>);
static_assert(std::is_nothrow_default_constructible_v<Reservation>);
static_assert(std::is_nothrow_destructible_v<Reservation>);

TEMPLATE_TEST_CASE("commit settles a reservation against its estimate", "[reservation]", Decimal,
                   std::int64_t, BigDecimal) {
  using A = TestType;
  ManualClock clock;
  CoordinatorOf<A> coord({}, {}, clock);
  ViolationLog log(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = amount<A>(100)});

  auto r = coord.reserve(a, amount<A>(10));
  REQUIRE(r.ok());
  CHECK(r.status() == ConsumeStatus::ok);
  CHECK(r.active());
  CHECK(r.agent() == a);
  CHECK(r.estimate() == amount<A>(10));
  CHECK(r.held() == amount<A>(10));
  CHECK(r.charged() == amount<A>(0));
  CHECK(balances(coord, a) == expect(amount<A>(90), amount<A>(0), amount<A>(10)));
  CHECK(coord.agent_metrics(a).consumption_count == 0); // a reserve is not a charge

  SECTION("below the estimate: the rest is refunded") {
    auto s = r.commit(amount<A>(7));
    CHECK(s.ok());
    CHECK(s.charged == amount<A>(7));
    CHECK(s.refunded == amount<A>(3));
    CHECK(s.overspent == amount<A>(0));
    CHECK(balances(coord, a) == expect(amount<A>(93), amount<A>(7), amount<A>(0)));
  }
  SECTION("exactly the estimate: nothing refunded") {
    auto s = r.commit(amount<A>(10));
    CHECK(s.ok());
    CHECK(s.charged == amount<A>(10));
    CHECK(s.refunded == amount<A>(0));
    CHECK(s.overspent == amount<A>(0));
    CHECK(balances(coord, a) == expect(amount<A>(90), amount<A>(10), amount<A>(0)));
  }
  SECTION("above the estimate, covered by the balance: the overage is charged") {
    auto s = r.commit(amount<A>(12));
    CHECK(s.ok());
    CHECK(s.charged == amount<A>(12));
    CHECK(s.refunded == amount<A>(0));
    CHECK(s.overspent == amount<A>(0));
    CHECK(balances(coord, a) == expect(amount<A>(88), amount<A>(12), amount<A>(0)));
  }
  SECTION("an overage of exactly the whole balance is charged, not overspent") {
    auto s = r.commit(amount<A>(100));
    CHECK(s.ok());
    CHECK(s.charged == amount<A>(100));
    CHECK(s.overspent == amount<A>(0));
    CHECK(balances(coord, a) == expect(amount<A>(0), amount<A>(100), amount<A>(0)));
  }
  SECTION("zero actual usage refunds everything and charges nothing") {
    auto s = r.commit(amount<A>(0));
    CHECK(s.ok());
    CHECK(s.charged == amount<A>(0));
    CHECK(s.refunded == amount<A>(10));
    CHECK(balances(coord, a) == expect(amount<A>(100), amount<A>(0), amount<A>(0)));
    CHECK(coord.agent_metrics(a).consumption_count == 0);
  }
  CHECK_FALSE(r.active());
  CHECK(r.ok()); // still reports that it was granted
  CHECK(r.held() == amount<A>(0));
  CHECK(r.charged() == coord.agent_metrics(a).used_budget);
  CHECK(coord.agent_metrics(a).overspent_budget == amount<A>(0));
  CHECK(coord.agent_metrics(a).initial_budget == amount<A>(100));
  CHECK(log.seen.empty());
  CHECK(coord.check_invariants().empty());
}

TEMPLATE_TEST_CASE("an overage beyond the balance is charged down to zero and reported",
                   "[reservation][violation]", Decimal, std::int64_t, BigDecimal) {
  using A = TestType;
  ManualClock clock(ManualClock::time_point(5s));
  CoordinatorOf<A> coord({}, {}, clock);
  ViolationLog log(coord);
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = amount<A>(50)});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = amount<A>(10), .pool = pool});

  auto r = coord.reserve(a, amount<A>(8));
  clock.advance(3s);
  auto s = r.commit(amount<A>(15)); // 8 from the hold, 2 from remaining, 5 nobody can pay
  CHECK(s.ok());
  CHECK(s.charged == amount<A>(10));
  CHECK(s.refunded == amount<A>(0));
  CHECK(s.overspent == amount<A>(5));
  CHECK(balances(coord, a) == expect(amount<A>(0), amount<A>(10), amount<A>(0)));
  auto m = coord.agent_metrics(a);
  CHECK(m.overspent_budget == amount<A>(5));
  CHECK(m.initial_budget == amount<A>(10)); // the uncovered part is never charged
  CHECK(m.consumption_count == 1);
  CHECK(coord.pool_metrics(pool).used_budget == amount<A>(10));
  CHECK(coord.pool_metrics(pool).unallocated_budget == amount<A>(40));

  REQUIRE(log.seen.size() == 1);
  const auto& v = log.seen[0];
  CHECK(v.agent == a);
  CHECK(v.type == ViolationType::Overspend);
  CHECK(v.severity == AlertSeverity::High);
  CHECK(v.timestamp == ManualClock::time_point(8s));
  CHECK(v.message == fmt::format("Actual usage {} exceeded what agent-1 could pay by {}",
                                 amount_to_string(amount<A>(15)), amount_to_string(amount<A>(5))));
  CHECK(v.details ==
        std::map<std::string, std::string>{{"estimate", amount_to_string(amount<A>(8))},
                                           {"actual", amount_to_string(amount<A>(15))},
                                           {"charged", amount_to_string(amount<A>(10))},
                                           {"uncovered", amount_to_string(amount<A>(5))}});
  CHECK(coord.check_invariants().empty());
  CHECK(coord.sink_failures() == 0);
}

TEST_CASE("Decimal reservations settle to the micro-unit", "[reservation]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = Decimal("1.000001")});
  {
    auto r = coord.reserve(a, Decimal("0.5"));
    auto s = r.commit(Decimal("0.123457"));
    CHECK(s.charged == Decimal("0.123457"));
    CHECK(s.refunded == Decimal("0.376543"));
  }
  CHECK(balances(coord, a) == expect(Decimal("0.876544"), Decimal("0.123457"), 0_d));
  {
    ViolationLog log(coord);
    auto r = coord.reserve(a, Decimal("0.876544"));
    auto s = r.commit(Decimal("0.876545")); // one micro-unit more than anyone can pay
    CHECK(s.charged == Decimal("0.876544"));
    CHECK(s.overspent == Decimal("0.000001"));
    REQUIRE(log.seen.size() == 1);
    CHECK(log.seen[0].details.at("uncovered") == "0.000001");
    CHECK(log.seen[0].details.at("charged") == "0.876544");
    CHECK(log.seen[0].message ==
          "Actual usage 0.876545 exceeded what agent-1 could pay by 0.000001");
  }
  CHECK(balances(coord, a) == expect(0_d, Decimal("1.000001"), 0_d));
  CHECK(coord.agent_metrics(a).overspent_budget == Decimal("0.000001"));
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("commit_partial charges a streaming response as it arrives", "[reservation][partial]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  ViolationLog log(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  auto r = coord.reserve(a, 10_d);

  auto p1 = r.commit_partial(3_d);
  CHECK(p1.ok());
  CHECK(p1.charged == 3_d);
  CHECK(p1.refunded == 0_d);
  CHECK(p1.overspent == 0_d);
  CHECK(r.active());
  CHECK(r.held() == 7_d);
  CHECK(r.charged() == 3_d);
  CHECK(balances(coord, a) == expect(90_d, 3_d, 7_d));

  auto p2 = r.commit_partial(Decimal("4.5"));
  CHECK(p2.charged == Decimal("4.5"));
  CHECK(r.held() == Decimal("2.5"));
  CHECK(r.charged() == Decimal("7.5"));
  CHECK(balances(coord, a) == expect(90_d, Decimal("7.5"), Decimal("2.5")));
  CHECK(coord.agent_metrics(a).consumption_count == 2);
  CHECK(coord.check_invariants().empty());

  SECTION("commit(total) charges only total minus what was already charged") {
    auto s = r.commit(9_d);
    CHECK(s.ok());
    CHECK(s.charged == Decimal("1.5"));
    CHECK(s.refunded == 1_d);
    CHECK(s.overspent == 0_d);
    CHECK(r.charged() == 9_d);
    CHECK(balances(coord, a) == expect(91_d, 9_d, 0_d));
    CHECK(r.held() == 0_d);
    CHECK(coord.agent_metrics(a).consumption_count == 3);
  }
  SECTION("commit(total) above the estimate charges the overage from the balance") {
    auto s = r.commit(14_d);
    CHECK(s.charged == Decimal("6.5"));
    CHECK(s.refunded == 0_d);
    CHECK(r.charged() == 14_d);
    CHECK(balances(coord, a) == expect(86_d, 14_d, 0_d));
    CHECK(r.held() == 0_d);
  }
  SECTION("commit(total) equal to what was charged refunds the rest of the hold") {
    auto s = r.commit(Decimal("7.5"));
    CHECK(s.charged == 0_d);
    CHECK(s.refunded == Decimal("2.5"));
    CHECK(balances(coord, a) == expect(Decimal("92.5"), Decimal("7.5"), 0_d));
    CHECK(coord.agent_metrics(a).consumption_count == 2); // nothing charged, nothing counted
    CHECK(r.held() == 0_d);
  }
  SECTION("commit(total) below what was charged cannot un-spend it") {
    auto s = r.commit(4_d);
    CHECK(s.ok());
    CHECK(s.charged == 0_d);
    CHECK(s.refunded == Decimal("2.5"));
    CHECK(r.charged() == Decimal("7.5"));
    CHECK(balances(coord, a) == expect(Decimal("92.5"), Decimal("7.5"), 0_d));
    CHECK(r.held() == 0_d);
  }
  SECTION("release gives back only what is still held") {
    r.release();
    CHECK(balances(coord, a) == expect(Decimal("92.5"), Decimal("7.5"), 0_d));
    CHECK(r.held() == 0_d);
  }
  SECTION("destroying it gives back only what is still held") {
    (void)std::exchange(r, Reservation{}); // the returned old reservation is destroyed here
    CHECK(balances(coord, a) == expect(Decimal("92.5"), Decimal("7.5"), 0_d));
  }
  SECTION("a partial commit beyond the hold is charged from the balance") {
    auto p3 = r.commit_partial(4_d); // 2.5 from the hold, 1.5 from remaining
    CHECK(p3.charged == 4_d);
    CHECK(p3.refunded == 0_d);
    CHECK(r.held() == 0_d);
    CHECK(r.active());
    CHECK(balances(coord, a) == expect(Decimal("88.5"), Decimal("11.5"), 0_d));
    auto p4 = r.commit_partial(1_d); // nothing left held: all from remaining
    CHECK(p4.charged == 1_d);
    CHECK(balances(coord, a) == expect(Decimal("87.5"), Decimal("12.5"), 0_d));
    auto s = r.commit(Decimal("12.5"));
    CHECK(s.charged == 0_d);
    CHECK(s.refunded == 0_d);
    CHECK(balances(coord, a) == expect(Decimal("87.5"), Decimal("12.5"), 0_d));
  }
  CHECK_FALSE(r.active());
  CHECK(r.commit_partial(1_d).status == ConsumeStatus::not_active);
  CHECK(log.seen.empty());
  CHECK(coord.agent_metrics(a).overspent_budget == 0_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an overage at the final commit after partial commits is reported once",
          "[reservation][partial][violation]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  ViolationLog log(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 12_d});
  auto r = coord.reserve(a, 10_d);
  REQUIRE(r.commit_partial(4_d).ok());
  CHECK(balances(coord, a) == expect(2_d, 4_d, 6_d));
  auto s = r.commit(20_d); // 16 more: 6 held + 2 remaining, 8 nobody can pay
  CHECK(s.ok());
  CHECK(s.charged == 8_d);
  CHECK(s.refunded == 0_d);
  CHECK(s.overspent == 8_d);
  CHECK(r.charged() == 12_d);
  CHECK(balances(coord, a) == expect(0_d, 12_d, 0_d));
  CHECK(coord.agent_metrics(a).overspent_budget == 8_d);
  REQUIRE(log.seen.size() == 1);
  CHECK(log.seen[0].type == ViolationType::Overspend);
  CHECK(log.seen[0].severity == AlertSeverity::High);
  CHECK(log.seen[0].details.at("estimate") == "10.0");
  CHECK(log.seen[0].details.at("charged") == "8.0");
  CHECK(log.seen[0].details.at("uncovered") == "8.0");
  CHECK(log.seen[0].details.at("actual") == "20.0"); // the call's total, not this commit's 16
  CHECK(log.seen[0].message == "Actual usage 20.0 exceeded what agent-1 could pay by 8.0");
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("commit_partial refuses non-positive amounts and changes nothing",
          "[reservation][partial][errors]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 20_d});
  auto r = coord.reserve(a, 5_d);
  auto bad = GENERATE(0_d, -1_d, Decimal("-0.000001"));
  auto p = r.commit_partial(bad);
  CHECK(p.status == ConsumeStatus::invalid_amount);
  CHECK_FALSE(p.ok());
  CHECK(p.charged == 0_d);
  CHECK(r.active());
  CHECK(r.held() == 5_d);
  CHECK(r.charged() == 0_d);
  CHECK(balances(coord, a) == expect(15_d, 0_d, 5_d));
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an overage a partial commit could not pay is reported once, not again at commit",
          "[reservation][partial][violation]") {
  // The stream really cost 15 and the agent could pay 10, so 5 is uncovered: reported by the
  // partial commit, and not again when commit(15) names the same total.
  ManualClock clock;
  Coord coord({}, {}, clock);
  ViolationLog log(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  auto r = coord.reserve(a, 10_d);
  auto p = r.commit_partial(15_d);
  CHECK(p.charged == 10_d);
  CHECK(p.overspent == 5_d);
  CHECK(r.charged() == 10_d);
  CHECK(r.settled() == 15_d);
  auto s = r.commit(15_d); // the stream's total
  CHECK(s.ok());
  CHECK(s.charged == 0_d);
  CHECK(s.overspent == 0_d);
  CHECK(balances(coord, a) == expect(0_d, 10_d, 0_d));
  CHECK(coord.agent_metrics(a).overspent_budget == 5_d);
  CHECK(log.seen.size() == 1);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an uncommitted reservation releases everything when destroyed", "[reservation]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 50_d});
  {
    auto r1 = coord.reserve(a, 20_d);
    auto r2 = coord.try_reserve(a, Decimal("12.5"));
    REQUIRE(r2.ok());
    CHECK(balances(coord, a) == expect(Decimal("17.5"), 0_d, Decimal("32.5")));
    CHECK(coord.check_invariants().empty());
  }
  CHECK(balances(coord, a) == expect(50_d, 0_d, 0_d));
  CHECK(coord.agent_metrics(a).consumption_count == 0);

  SECTION("release() gives it back early and is idempotent") {
    auto r = coord.reserve(a, 30_d);
    r.release();
    CHECK_FALSE(r.active());
    CHECK(r.held() == 0_d);
    CHECK(balances(coord, a) == expect(50_d, 0_d, 0_d));
    r.release();
    CHECK(balances(coord, a) == expect(50_d, 0_d, 0_d));
  }
  SECTION("a reservation of the whole balance") {
    {
      auto r = coord.reserve(a, 50_d);
      CHECK(balances(coord, a) == expect(0_d, 0_d, 50_d));
      CHECK(coord.try_consume(a, Decimal("0.000001")).status() == ConsumeStatus::insufficient);
    }
    CHECK(balances(coord, a) == expect(50_d, 0_d, 0_d));
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("moving a reservation moves ownership of what it holds", "[reservation][move]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});

  SECTION("move construction: the moved-from one releases nothing") {
    {
      auto r1 = coord.reserve(a, 30_d);
      Reservation r2(std::move(r1));
      CHECK_FALSE(r1.active()); // NOLINT(bugprone-use-after-move): inspecting it is the point
      CHECK(r2.active());
      CHECK(r2.held() == 30_d);
      CHECK(r2.estimate() == 30_d);
      CHECK(r2.agent() == a);
      CHECK(r1.commit(30_d).status == ConsumeStatus::not_active); // NOLINT(bugprone-use-after-move)
      r1.release();                                               // NOLINT(bugprone-use-after-move)
      CHECK(balances(coord, a) == expect(70_d, 0_d, 30_d));
    }
    // Released once: a double release would leave more than 100 remaining.
    CHECK(balances(coord, a) == expect(100_d, 0_d, 0_d));
  }
  SECTION("the new owner commits") {
    Reservation outer;
    {
      auto inner = coord.reserve(a, 30_d);
      outer = std::move(inner);
    }
    CHECK(balances(coord, a) == expect(70_d, 0_d, 30_d));
    auto s = outer.commit(25_d);
    CHECK(s.charged == 25_d);
    CHECK(s.refunded == 5_d);
    CHECK(balances(coord, a) == expect(75_d, 25_d, 0_d));
  }
  SECTION("move assignment releases what the target held first") {
    auto r1 = coord.reserve(a, 10_d);
    auto r2 = coord.reserve(a, 20_d);
    CHECK(balances(coord, a) == expect(70_d, 0_d, 30_d));
    r1 = std::move(r2);
    CHECK(balances(coord, a) == expect(80_d, 0_d, 20_d));
    CHECK(r1.estimate() == 20_d);
    CHECK(r1.held() == 20_d);
    CHECK_FALSE(r2.active()); // NOLINT(bugprone-use-after-move)
    CHECK(r1.commit(20_d).ok());
    CHECK(balances(coord, a) == expect(80_d, 20_d, 0_d));
  }
  SECTION("move assignment after partial commits carries the charged amount along") {
    auto r1 = coord.reserve(a, 10_d);
    CHECK(r1.commit_partial(4_d).ok());
    Reservation r2;
    r2 = std::move(r1);
    CHECK(r2.charged() == 4_d);
    CHECK(r2.held() == 6_d);
    auto s = r2.commit(5_d);
    CHECK(s.charged == 1_d);
    CHECK(s.refunded == 5_d);
    CHECK(balances(coord, a) == expect(95_d, 5_d, 0_d));
  }
  SECTION("reservations moved around inside a growing vector are each released once") {
    {
      // No reserve(): reallocation is what moves them.
      std::vector<Reservation> held;
      for (int i = 0; i < 17; ++i)
        held.push_back(coord.reserve(a, 1.5_d)); // NOLINT(performance-inefficient-vector-operation)
      CHECK(balances(coord, a) == expect(Decimal("74.5"), 0_d, Decimal("25.5")));
      held.erase(held.begin(), held.begin() + 7);
      CHECK(balances(coord, a) == expect(Decimal("85.0"), 0_d, Decimal("15.0")));
      CHECK(held.front().commit(2_d).ok());
      CHECK(balances(coord, a) == expect(Decimal("84.5"), 2_d, Decimal("13.5")));
    }
    CHECK(balances(coord, a) == expect(98_d, 2_d, 0_d));
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("a moved-from reservation reports that it holds nothing", "[reservation][move]") {
  // held() is "what is still set aside": a moved-from reservation sets nothing aside.
  ManualClock clock;
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  auto r1 = coord.reserve(a, 30_d);
  Reservation r2(std::move(r1));
  CHECK_FALSE(r1.active()); // NOLINT(bugprone-use-after-move)
  CHECK(r1.held() == 0_d);  // NOLINT(bugprone-use-after-move)
  Reservation r3;
  r3 = std::move(r2);
  CHECK(r2.held() == 0_d); // NOLINT(bugprone-use-after-move)
  CHECK(r3.held() == 30_d);
}

TEST_CASE("misused reservations give the documented result and change nothing",
          "[reservation][errors]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  ViolationLog log(coord);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 40_d});

  SECTION("a second commit returns not_active") {
    auto r = coord.reserve(a, 10_d);
    REQUIRE(r.commit(6_d).ok());
    auto again = r.commit(6_d);
    CHECK(again.status == ConsumeStatus::not_active);
    CHECK_FALSE(again.ok());
    CHECK(again.charged == 0_d);
    CHECK(again.refunded == 0_d);
    CHECK(r.commit_partial(1_d).status == ConsumeStatus::not_active);
    r.release(); // after commit: nothing
    CHECK(balances(coord, a) == expect(34_d, 6_d, 0_d));
  }
  SECTION("commit after release returns not_active") {
    auto r = coord.reserve(a, 10_d);
    r.release();
    CHECK(r.commit(3_d).status == ConsumeStatus::not_active);
    CHECK(balances(coord, a) == expect(40_d, 0_d, 0_d));
  }
  SECTION("a negative actual usage is invalid and the reservation stays open") {
    auto r = coord.reserve(a, 10_d);
    auto s = r.commit(Decimal("-0.5"));
    CHECK(s.status == ConsumeStatus::invalid_amount);
    CHECK(s.charged == 0_d);
    CHECK(r.active());
    CHECK(r.held() == 10_d);
    CHECK(balances(coord, a) == expect(30_d, 0_d, 10_d));
    CHECK(r.commit(4_d).ok());
    CHECK(balances(coord, a) == expect(36_d, 4_d, 0_d));
  }
  SECTION("a default-constructed reservation holds nothing") {
    Reservation r;
    CHECK_FALSE(r.ok());
    CHECK_FALSE(r);
    CHECK(r.status() == ConsumeStatus::not_active);
    CHECK_FALSE(r.active());
    CHECK(r.commit(1_d).status == ConsumeStatus::not_active);
    CHECK(r.commit_partial(1_d).status == ConsumeStatus::not_active);
    r.release();
    CHECK(balances(coord, a) == expect(40_d, 0_d, 0_d));
  }
  SECTION("zero and negative estimates are invalid") {
    auto bad = GENERATE(0_d, -5_d, Decimal("-0.000001"));
    auto r = coord.try_reserve(a, bad);
    CHECK_FALSE(r.ok());
    CHECK(r.status() == ConsumeStatus::invalid_amount);
    CHECK_FALSE(r.active());
    CHECK(r.commit(1_d).status == ConsumeStatus::not_active);
    CHECK_THROWS_AS(coord.reserve(a, bad), InvalidArgument);
    CHECK(balances(coord, a) == expect(40_d, 0_d, 0_d));
  }
  SECTION("an unknown agent") {
    auto who = GENERATE(AgentId(), AgentId(2), AgentId(99));
    auto r = coord.try_reserve(who, 1_d);
    CHECK(r.status() == ConsumeStatus::unknown_agent);
    CHECK_FALSE(r.active());
    CHECK_THROWS_AS(coord.reserve(who, 1_d), UnknownAgent);
    CHECK(balances(coord, a) == expect(40_d, 0_d, 0_d));
  }
  SECTION("a removed agent") {
    AgentId gone = coord.create_agent({.name = "gone", .initial_budget = 5_d});
    coord.remove_agent(gone);
    CHECK(coord.try_reserve(gone, 1_d).status() == ConsumeStatus::unknown_agent);
    CHECK_THROWS_AS(coord.reserve(gone, 1_d), UnknownAgent);
  }
  SECTION("more than the balance is insufficient, and nothing is held") {
    auto first = coord.reserve(a, 25_d);
    auto r = coord.try_reserve(a, Decimal("15.000001"));
    CHECK(r.status() == ConsumeStatus::insufficient);
    CHECK_FALSE(r.ok());
    CHECK_FALSE(r.active());
    CHECK_THROWS_AS(coord.reserve(a, Decimal("15.000001")), BudgetExceeded);
    CHECK(balances(coord, a) == expect(15_d, 0_d, 25_d));
    auto exact = coord.try_reserve(a, 15_d); // exactly what remains is fine
    CHECK(exact.ok());
    CHECK(balances(coord, a) == expect(0_d, 0_d, 40_d));
  }
  CHECK(log.seen.empty());
  CHECK(coord.agent_metrics(a).overspent_budget == 0_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("a reservation of a removed agent settles into its pool", "[reservation][remove]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  ViolationLog log(coord);
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 50_d, .pool = pool});
  auto r = coord.reserve(a, 20_d);
  coord.remove_agent(a);
  // The remaining 30 returned at once; the 20 held is still out.
  CHECK(coord.pool_metrics(pool).unallocated_budget == 80_d);
  CHECK(coord.pool_metrics(pool).reserved_budget == 20_d);
  CHECK(coord.check_invariants().empty());

  SECTION("commit: the unused rest returns to the pool") {
    auto s = r.commit(5_d);
    CHECK(s.charged == 5_d);
    CHECK(s.refunded == 15_d);
    auto pm = coord.pool_metrics(pool);
    CHECK(pm.unallocated_budget == 95_d);
    CHECK(pm.used_budget == 5_d);
    CHECK(pm.reserved_budget == 0_d);
    CHECK(pm.remaining_budget == 95_d);
    CHECK(pm.agent_count == 0);
    auto m = coord.agent_metrics(a);
    CHECK(m.used_budget == 5_d);
    CHECK(m.remaining_budget == 0_d);
    CHECK(m.initial_budget == 5_d);
    CHECK(log.seen.empty());
  }
  SECTION("destroyed: everything held returns to the pool") {
    (void)std::exchange(r, Reservation{}); // the returned old reservation is destroyed here
    CHECK(coord.pool_metrics(pool).unallocated_budget == 100_d);
    CHECK(coord.pool_metrics(pool).used_budget == 0_d);
  }
  SECTION("an overage cannot be paid by a closed account") {
    auto s = r.commit(25_d);
    CHECK(s.charged == 20_d);
    CHECK(s.refunded == 0_d);
    CHECK(s.overspent == 5_d);
    CHECK(coord.pool_metrics(pool).unallocated_budget == 80_d);
    CHECK(coord.agent_metrics(a).overspent_budget == 5_d);
    REQUIRE(log.seen.size() == 1);
    CHECK(log.seen[0].type == ViolationType::Overspend);
    CHECK(log.seen[0].details.at("uncovered") == "5.0");
  }
  CHECK(coord.check_invariants().empty());
  CHECK(coord.pool_metrics(pool).initial_budget == 100_d);
}

// ---- usage history --------------------------------------------------------------------------

TEST_CASE("usage history records consumes and commits with the clock's timestamps", "[history]") {
  ManualClock clock;
  Coord coord({.history_capacity = 8}, {}, clock);
  AgentId a = coord.create_agent({.name = "worker", .initial_budget = 100_d});
  CHECK(coord.usage_history(a).empty());

  clock.advance(1s);
  REQUIRE(coord.try_consume(a, Decimal("1.25")).ok());
  clock.advance(1s);
  CHECK(coord.try_consume(a, 1000_d).status() == ConsumeStatus::insufficient); // not recorded
  auto r = coord.reserve(a, 10_d);                                             // not recorded
  clock.advance(500ms);
  CHECK(r.commit_partial(3_d).ok());
  clock.advance(500ms);
  CHECK(r.commit(4_d).ok()); // charges the remaining 1
  clock.advance(1s);
  {
    auto unused = coord.reserve(a, 5_d);
    CHECK(unused.commit(0_d).ok()); // charges nothing: not recorded
  }
  { auto released = coord.reserve(a, 5_d); } // released: not recorded
  coord.consume(a, 2_d);

  auto history = coord.usage_history(a);
  CHECK(describe_all(history) == std::vector<std::string>{
                                     "consume 1.25 USD @1000ms from worker",
                                     "commit 3.0 USD @2500ms from worker",
                                     "commit 1.0 USD @3000ms from worker",
                                     "consume 2.0 USD @4000ms from worker",
                                 });
  REQUIRE(history.size() == 4);
  CHECK(history[0] == Coord::ConsumptionEvent(Consumption(Decimal("1.25"), "USD", "consume"),
                                              "worker", ManualClock::time_point(1s)));
  auto stats = coord.usage_stats(a);
  CHECK(stats.count == 4);
  CHECK(stats.total == Decimal("7.25"));
  CHECK(balances(coord, a) == expect(Decimal("92.75"), Decimal("7.25"), 0_d));
  CHECK(coord.agent_metrics(a).consumption_count == 4);
  CHECK_THROWS_AS(coord.usage_history(AgentId(42)), UnknownAgent);
  CHECK_THROWS_AS(coord.usage_stats(AgentId(42)), UnknownAgent);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("usage_history(agent, from, to) includes both ends", "[history]") {
  ManualClock clock;
  Coord coord({.history_capacity = 10}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  AgentId b = coord.create_agent({.name = "b", .initial_budget = 100_d});
  using tp = ManualClock::time_point;
  for (int i = 1; i <= 4; ++i) {
    clock.advance(10s);
    coord.consume(a, Decimal(i));
    coord.consume(b, Decimal(10 * i)); // each agent has its own history
  }
  coord.consume(a, 5_d); // same timestamp as the previous one, kept in order

  auto amounts = [&](tp from, tp to) {
    std::vector<Decimal> out;
    for (const auto& e : coord.usage_history(a, from, to))
      out.push_back(e.consumption().value());
    return out;
  };
  using V = std::vector<Decimal>;
  CHECK(amounts(tp::min(), tp::max()) == V{1_d, 2_d, 3_d, 4_d, 5_d});
  CHECK(amounts(tp(20s), tp(30s)) == V{2_d, 3_d});
  CHECK(amounts(tp(20s) + 1ns, tp(30s) - 1ns).empty());
  CHECK(amounts(tp(20s) - 1ns, tp(30s) + 1ns) == V{2_d, 3_d});
  CHECK(amounts(tp(25s), tp::max()) == V{3_d, 4_d, 5_d});
  CHECK(amounts(tp::min(), tp(10s)) == V{1_d});
  CHECK(amounts(tp(40s), tp(40s)) == V{4_d, 5_d});
  CHECK(amounts(tp(30s), tp(20s)).empty());
  CHECK(amounts(tp(41s), tp::max()).empty());
  CHECK(coord.usage_history(a, tp(20s)).size() == 4); // `to` defaults to the end of time

  auto hb = coord.usage_history(b, tp(40s), tp(40s));
  REQUIRE(hb.size() == 1);
  CHECK(hb[0].consumption().value() == 40_d);
  CHECK(hb[0].source() == "b");
}

TEST_CASE("the history ring drops the oldest events - the aggregates stay exact", "[history]") {
  const auto capacity = GENERATE(as<std::size_t>{}, 1, 2, 3, 5);
  const auto events = GENERATE(as<std::size_t>{}, 0, 1, 3, 4, 11);
  ManualClock clock;
  Coord coord({.history_capacity = capacity}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 1000_d});
  Decimal total = 0_d;
  for (std::size_t i = 1; i <= events; ++i) {
    clock.advance(1s);
    Decimal x = Decimal(static_cast<std::int64_t>(i)) + Decimal("0.1");
    REQUIRE(coord.try_consume(a, x).ok());
    total += x;
  }
  CAPTURE(capacity, events);
  auto history = coord.usage_history(a);
  const std::size_t kept = std::min(capacity, events);
  REQUIRE(history.size() == kept);
  for (std::size_t k = 0; k < kept; ++k) {
    const std::size_t i = events - kept + 1 + k; // the event's number, oldest kept first
    CHECK(history[k].consumption().value() ==
          Decimal(static_cast<std::int64_t>(i)) + Decimal("0.1"));
    CHECK(history[k].timestamp() ==
          ManualClock::time_point(std::chrono::seconds(static_cast<std::int64_t>(i))));
  }
  auto stats = coord.usage_stats(a);
  CHECK(stats.count == events);
  CHECK(stats.total == total);
  CHECK(coord.agent_metrics(a).used_budget == total);
  CHECK(coord.agent_metrics(a).consumption_count == events);
}

TEST_CASE("the ring wraps across consumes, partial commits and commits", "[history]") {
  ManualClock clock;
  Coord coord({.history_capacity = 3}, {}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  clock.advance(1s);
  coord.consume(a, 1_d);
  clock.advance(1s);
  CHECK(coord.reserve(a, 10_d).commit(4_d).ok());
  clock.advance(1s);
  coord.consume(a, 2_d);
  auto r = coord.reserve(a, 10_d);
  clock.advance(1s);
  CHECK(r.commit_partial(3_d).ok());
  clock.advance(1s);
  CHECK(r.commit(5_d).ok());
  CHECK(describe_all(coord.usage_history(a)) == std::vector<std::string>{
                                                    "consume 2.0 USD @3000ms from a",
                                                    "commit 3.0 USD @4000ms from a",
                                                    "commit 2.0 USD @5000ms from a",
                                                });
  auto stats = coord.usage_stats(a);
  CHECK(stats.count == 5);
  CHECK(stats.total == 12_d);
  CHECK(balances(coord, a) == expect(88_d, 12_d, 0_d));
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("history reports amounts in the configured unit", "[history]") {
  ManualClock clock;
  CoordinatorOf<std::int64_t> coord({.history_capacity = 2, .unit = "token"}, {}, clock);
  AgentId a = coord.create_agent({.name = "tokens", .initial_budget = 1000});
  clock.advance(2s);
  coord.consume(a, 7);
  auto history = coord.usage_history(a);
  REQUIRE(history.size() == 1);
  CHECK(history[0].consumption() == BasicConsumption<std::int64_t>(7, "token", "consume"));
  CHECK(describe(history[0]) == "consume 7 token @2000ms from tokens");
}

TEST_CASE("history capacity 0 keeps no history and reads no clock on the hot path",
          "[history][clock]") {
  CountingClock clock;
  BasicBudgetCoordinator<Decimal, FixedAllocation, CountingClock> coord({}, {}, clock);
  REQUIRE(coord.options().history_capacity == 0); // the default
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  const auto before = clock.reads();
  for (int i = 0; i < 5; ++i) {
    clock.advance(1s);
    REQUIRE(coord.try_consume(a, 2_d).ok());
  }
  coord.consume(a, 1_d);
  {
    auto r = coord.reserve(a, 10_d);
    CHECK(r.commit_partial(2_d).ok());
    CHECK(r.commit(6_d).ok());
  }
  { auto released = coord.reserve(a, 1_d); }
  CHECK(clock.reads() == before);
  CHECK(coord.usage_history(a).empty());
  auto stats = coord.usage_stats(a); // the aggregates do not need history
  CHECK(stats.count == 8);
  CHECK(stats.total == 17_d);
  CHECK(coord.get_budget(a) == 83_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("with history on, each consume costs one clock read", "[history][clock]") {
  CountingClock clock;
  BasicBudgetCoordinator<Decimal, FixedAllocation, CountingClock> coord({.history_capacity = 4}, {},
                                                                        clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  const auto before = clock.reads();
  for (int i = 0; i < 6; ++i) {
    clock.advance(1s);
    REQUIRE(coord.try_consume(a, 1_d).ok());
  }
  CHECK(clock.reads() - before == 6);
  auto history = coord.usage_history(a);
  REQUIRE(history.size() == 4);
  CHECK(history.front().timestamp() == CountingClock::time_point(3s));
  CHECK(history.back().timestamp() == CountingClock::time_point(6s));
  CHECK(coord.usage_stats(a).count == 6);
}

// ---- metrics --------------------------------------------------------------------------------

TEST_CASE("agent and pool metrics after a known sequence, with exact consumption rates",
          "[metrics]") {
  ManualClock clock;
  Coord coord({}, {}, clock);
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 1000_d, .priority = 7});
  clock.advance(4s);
  AgentId a =
      coord.create_agent({.name = "a", .initial_budget = 200_d, .priority = 9, .pool = pool});
  AgentId b =
      coord.create_agent({.name = "b", .initial_budget = 100_d, .priority = 3, .pool = pool});
  CHECK(coord.agent_metrics(a).consumption_rate == 0.0); // no time has passed yet

  coord.consume(a, 30_d);
  auto ra = coord.reserve(a, 50_d);
  coord.consume(b, 10_d);
  CHECK(coord.reserve(b, 20_d).commit(26_d).ok()); // 6 over the estimate, covered
  clock.advance(8s);                               // t = 12 s: agents are 8 s old, the pool 12 s

  auto ma = coord.agent_metrics(a);
  CHECK(ma.id == a);
  CHECK(ma.name == "a");
  CHECK(ma.pool == pool);
  CHECK(ma.priority == 9);
  CHECK(ma.initial_budget == 200_d);
  CHECK(ma.used_budget == 30_d);
  CHECK(ma.reserved_budget == 50_d);
  CHECK(ma.remaining_budget == 120_d);
  CHECK(ma.overspent_budget == 0_d);
  CHECK(ma.consumption_count == 1);
  CHECK(ma.consumption_rate == 3.75);

  auto mb = coord.agent_metrics(b);
  CHECK(mb.initial_budget == 100_d);
  CHECK(mb.used_budget == 36_d);
  CHECK(mb.reserved_budget == 0_d);
  CHECK(mb.remaining_budget == 64_d);
  CHECK(mb.consumption_count == 2);
  CHECK(mb.consumption_rate == 4.5);

  auto pm = coord.pool_metrics(pool);
  CHECK(pm.id == pool);
  CHECK(pm.name == "p");
  CHECK(pm.priority == 7);
  CHECK_FALSE(pm.implicit);
  CHECK(pm.initial_budget == 1000_d);
  CHECK(pm.unallocated_budget == 700_d);
  CHECK(pm.allocated_budget == 300_d);
  CHECK(pm.used_budget == 66_d);
  CHECK(pm.reserved_budget == 50_d);
  CHECK(pm.remaining_budget == 884_d); // 700 unallocated + 120 + 64
  CHECK(pm.agent_count == 2);
  CHECK(pm.consumption_rate == 5.5);
  CHECK(coord.check_invariants().empty());

  CHECK(ra.commit(34_d).ok()); // refunds 16
  clock.advance(8s);           // t = 20 s: agents 16 s, pool 20 s
  ma = coord.agent_metrics(a);
  CHECK(ma.used_budget == 64_d);
  CHECK(ma.reserved_budget == 0_d);
  CHECK(ma.remaining_budget == 136_d);
  CHECK(ma.consumption_count == 2);
  CHECK(ma.consumption_rate == 4.0);
  CHECK(coord.agent_metrics(b).consumption_rate == 2.25);
  pm = coord.pool_metrics(pool);
  CHECK(pm.used_budget == 100_d);
  CHECK(pm.reserved_budget == 0_d);
  CHECK(pm.remaining_budget == 900_d);
  CHECK(pm.consumption_rate == 5.0);

  auto agent_list = coord.all_agent_metrics();
  REQUIRE(agent_list.size() == 2);
  CHECK(agent_list[0].id == a);
  CHECK(agent_list[0].consumption_rate == 4.0);
  CHECK(agent_list[1].id == b);
  CHECK(agent_list[1].used_budget == 36_d);
  auto pool_list = coord.all_pool_metrics();
  REQUIRE(pool_list.size() == 1);
  CHECK(pool_list[0].remaining_budget == 900_d);
  CHECK(pool_list[0].consumption_rate == 5.0);

  SECTION("a removed agent's usage stays in its pool") {
    coord.remove_agent(b);
    clock.advance(5s); // t = 25 s
    pm = coord.pool_metrics(pool);
    CHECK(pm.unallocated_budget == 764_d);
    CHECK(pm.allocated_budget == 236_d);
    CHECK(pm.used_budget == 100_d);
    CHECK(pm.remaining_budget == 900_d);
    CHECK(pm.agent_count == 1);
    CHECK(pm.consumption_rate == 4.0);
    CHECK(coord.all_agent_metrics().size() == 1);
  }
  SECTION("an overspend shows in overspent_budget, never in used") {
    ViolationLog log(coord);
    auto r = coord.reserve(b, 60_d);
    CHECK(r.commit(70_d).ok()); // 60 held + 4 remaining; 6 uncovered
    mb = coord.agent_metrics(b);
    CHECK(mb.used_budget == 100_d);
    CHECK(mb.remaining_budget == 0_d);
    CHECK(mb.overspent_budget == 6_d);
    CHECK(mb.initial_budget == 100_d);
    CHECK(mb.consumption_rate == 6.25); // 100 over 16 s
    CHECK(coord.pool_metrics(pool).used_budget == 164_d);
    CHECK(log.seen.size() == 1);
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an implicit pool's metrics mirror its one agent", "[metrics]") {
  ManualClock clock(ManualClock::time_point(std::chrono::hours(1)));
  Coord coord({}, {}, clock);
  AgentId a = coord.create_agent({.name = "solo", .initial_budget = 80_d, .priority = 6});
  PoolId own = coord.agent_pool(a);
  auto r = coord.reserve(a, 15_d);
  coord.consume(a, 25_d);
  clock.advance(10s);
  auto pm = coord.pool_metrics(own);
  CHECK(pm.name == "agent:solo");
  CHECK(pm.implicit);
  CHECK(pm.priority == 6);
  CHECK(pm.initial_budget == 80_d);
  CHECK(pm.unallocated_budget == 0_d);
  CHECK(pm.allocated_budget == 80_d);
  CHECK(pm.used_budget == 25_d);
  CHECK(pm.reserved_budget == 15_d);
  CHECK(pm.remaining_budget == 40_d);
  CHECK(pm.agent_count == 1);
  CHECK(pm.consumption_rate == 2.5);
  CHECK(coord.agent_metrics(a).consumption_rate == 2.5);
  r.release();
  CHECK(coord.pool_metrics(own).remaining_budget == 55_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("usage reports past the amount type's range never terminate the process",
          "[reservation][overflow]") {
  ManualClock clock;
  Coord coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  std::vector<Coord::Violation> seen;
  auto sink = coord.add_violation_sink([&](const Coord::Violation& v) { seen.push_back(v); });
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});

  SECTION("a running total of partial commits that would overflow is refused, nothing changes") {
    auto r = coord.reserve(a, 10_d);
    auto first = r.commit_partial(Decimal::max()); // 10 held + 90 remaining; the rest uncovered
    CHECK(first.ok());
    CHECK(first.charged == 100_d);
    CHECK(first.overspent == Decimal::max() - 100_d);
    // The settled total would pass Decimal::max(): this used to throw out of a noexcept call.
    auto second = r.commit_partial(1_d);
    CHECK(second.status == ConsumeStatus::invalid_amount);
    CHECK(r.settled() == Decimal::max());
    CHECK(r.active());
    auto last = r.commit(Decimal::max()); // the same total: nothing more to settle
    CHECK(last.ok());
    CHECK(last.charged == 0_d);
  }
  SECTION("overspent usage saturates at the largest amount instead of overflowing") {
    CHECK(coord.reserve(a, 1_d).commit(Decimal::max()).ok());
    CHECK(coord.agent_metrics(a).overspent_budget == Decimal::max() - 100_d);
    CHECK(coord.reserve(coord.create_agent({.name = "b", .initial_budget = 1_d}), 1_d)
              .commit(Decimal::max())
              .ok());
    auto c = coord.create_agent({.name = "c", .initial_budget = 5_d});
    auto r1 = coord.reserve(c, 1_d);
    auto r2 = coord.reserve(c, 1_d);
    CHECK(r1.commit(Decimal::max()).ok()); // uncovered: max - 4
    CHECK(r2.commit(Decimal::max()).ok()); // uncovered: max - 1; the sum does not fit
    CHECK(coord.agent_metrics(c).overspent_budget == Decimal::max());
    // Each Overspend still names the true figures of its own call.
    REQUIRE(!seen.empty());
    CHECK(seen.back().type == ViolationType::Overspend);
    CHECK(seen.back().details.at("actual") == fmt::format("{}", Decimal::max()));
  }
  SECTION("negative, NaN-like and zero reports are refused with invalid_amount") {
    auto r = coord.reserve(a, 10_d);
    CHECK(r.commit_partial(0_d).status == ConsumeStatus::invalid_amount);
    CHECK(r.commit_partial(-1_d).status == ConsumeStatus::invalid_amount);
    CHECK(r.commit(-1_d).status == ConsumeStatus::invalid_amount);
    CHECK(r.active());
    CHECK(r.commit(0_d).ok()); // an unused reservation settles at zero
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("double reservations refuse non-finite usage", "[reservation][double]") {
  ManualClock clock;
  CoordinatorOf<double> coord(CoordinatorOptions{}, FixedAllocation{}, clock);
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100.0});
  auto r = coord.reserve(a, 10.0);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(r.commit_partial(inf).status == ConsumeStatus::invalid_amount);
  CHECK(r.commit_partial(nan).status == ConsumeStatus::invalid_amount);
  CHECK(r.commit(inf).status == ConsumeStatus::invalid_amount);
  CHECK(r.commit(nan).status == ConsumeStatus::invalid_amount);
  CHECK(r.commit(4.0).ok());
  CHECK(coord.get_budget(a) == 96.0);
}

TEST_CASE("usage_history returns safeguards::ConsumptionEvent", "[history][types]") {
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 4});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 10_d});
  REQUIRE(coord.try_consume(a, 1_d).ok());
  std::vector<ConsumptionEvent> history = coord.usage_history(a); // the obvious line compiles
  REQUIRE(history.size() == 1);
  CHECK(history[0].consumption() == Consumption::cost(1_d, "consume"));
  static_assert(std::is_same_v<BudgetCoordinator::ConsumptionEvent, ConsumptionEvent>);
}
