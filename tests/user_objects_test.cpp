// User objects kept where the API invites them — an agent's data slot, a monitor's or a sink's
// captures — that call back into the coordinator when they die: reservations release, handles
// unregister. Whenever the coordinator destroys such an object (replacing a data slot, removing
// an agent, being destroyed itself) it must do so with no lock held and while everything the
// object touches still exists. The ASan+UBSan CI job turns any use-after-free here into a failure;
// the debug build's assert catches a reservation the coordinator would outlive.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <safeguards/safeguards.hpp>
#include <utility>
#include <vector>

using namespace safeguards;

namespace {

using Reservation = BudgetCoordinator::Reservation;
using Event = BudgetCoordinator::UsageEvent;
using Change = BudgetCoordinator::BudgetChange;
using Violation = BudgetCoordinator::Violation;

// std::any needs copyable values; shared_ptr makes the move-only handles storable.
using SharedReservation = std::shared_ptr<Reservation>;
using SharedHandle = std::shared_ptr<MonitorHandle>;

// Counts the changes a monitor sees, through a counter that outlives the coordinator.
auto counting(std::shared_ptr<std::atomic<int>> seen) {
  return [seen](const Event&) { seen->fetch_add(1); };
}

} // namespace

TEST_CASE("replacing a data slot that holds a Reservation releases it outside the lock",
          "[user_objects][data_slot]") {
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 50_d, .pool = p});
  AgentId b = coord.create_agent({.name = "b", .initial_budget = 50_d, .pool = p});
  auto seen = std::make_shared<std::atomic<int>>(0);
  auto watch = coord.add_monitor(a, counting(seen));

  SECTION("a reservation of the same agent") {
    coord.set_agent_data(a, std::make_shared<Reservation>(coord.reserve(a, 30_d)));
    CHECK(coord.get_budget(a) == 20_d);
    coord.set_agent_data(a, 42);
    CHECK(coord.get_budget(a) == 50_d);
    CHECK(seen->load() == 2); // the reserve and the release, each seen once
    CHECK(coord.agent_data<int>(a) == 42);
  }
  SECTION("a reservation of a removed agent, whose release returns money to the pool") {
    // Returning the money takes the writer lock: destroying the old slot under it used to end in
    // EDEADLK thrown from the noexcept release, that is std::terminate.
    coord.set_agent_data(a, std::make_shared<Reservation>(coord.reserve(b, 30_d)));
    coord.remove_agent(b);
    CHECK(coord.pool_metrics(p).unallocated_budget == 20_d); // b's 20 remaining came back
    coord.set_agent_data(a, std::any{});
    CHECK(coord.pool_metrics(p).unallocated_budget == 50_d); // and now the 30 it had reserved
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("replacing a data slot that holds a MonitorHandle really unregisters the monitor",
          "[user_objects][data_slot]") {
  BudgetCoordinator coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  auto seen = std::make_shared<std::atomic<int>>(0);
  coord.set_agent_data(a, std::make_shared<MonitorHandle>(coord.add_monitor(a, counting(seen))));
  REQUIRE(coord.try_consume(a, 1_d).ok());
  CHECK(seen->load() == 1);
  // The old value's unregister used to fail with EDEADLK, be swallowed, and leave the monitor
  // registered and running.
  coord.set_agent_data(a, 0);
  REQUIRE(coord.try_consume(a, 1_d).ok());
  CHECK(seen->load() == 1);
}

TEST_CASE("removing an agent empties its data slot and releases what it held",
          "[user_objects][data_slot]") {
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 40_d, .pool = p});
  coord.set_agent_data(a, std::make_shared<Reservation>(coord.reserve(a, 25_d)));
  coord.remove_agent(a);
  // The swept remaining (15) and the released reservation (25) are both back in the pool.
  CHECK(coord.pool_metrics(p).unallocated_budget == 100_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("destroying a coordinator whose data slots and monitors and sinks hold its objects",
          "[user_objects][lifetime]") {
  auto monitor_calls = std::make_shared<std::atomic<int>>(0);
  auto coord = std::make_unique<BudgetCoordinator>();
  PoolId p = coord->create_pool({.name = "p", .initial_budget = 1000_d});
  AgentId a = coord->create_agent({.name = "a", .initial_budget = 100_d, .pool = p});
  AgentId b = coord->create_agent({.name = "b", .initial_budget = 100_d, .pool = p});

  // A handle in a data slot used to unregister into already destroyed members
  // (heap-use-after-free in Subscription::reset).
  coord->set_agent_data(
      a, std::make_shared<MonitorHandle>(coord->add_monitor(a, counting(monitor_calls))));
  // A reservation in a data slot used to trip the "Reservation outlived its coordinator"
  // assert, and to settle into freed memory without it.
  coord->set_agent_data(b, std::make_shared<Reservation>(coord->reserve(b, 10_d)));
  // A monitor that keeps its own handle (it could unregister itself) and a reservation.
  auto self = std::make_shared<std::optional<MonitorHandle>>();
  auto kept = std::make_shared<Reservation>(coord->reserve(a, 5_d));
  *self = coord->add_monitor(b, [self, kept](const Event&) {});
  self.reset();
  kept.reset();
  // Sinks that hold a reservation and a handle.
  auto in_sink = std::make_shared<Reservation>(coord->reserve(b, 1_d));
  auto violation_sink = std::make_shared<std::optional<SinkHandle>>();
  *violation_sink = coord->add_violation_sink([in_sink, violation_sink](const Violation&) {});
  auto audit_sink = coord->add_audit_sink([in_sink](const Change&) {});
  in_sink.reset();
  violation_sink.reset();
  audit_sink.detach();

  REQUIRE(coord->try_consume(a, 1_d).ok());
  CHECK(monitor_calls->load() == 2); // the reservation `kept` and this consume
  coord.reset();                     // must neither crash, leak (LeakSanitizer in CI) nor assert
  SUCCEED("destroyed cleanly");
}

TEST_CASE("a handle held elsewhere does nothing once its coordinator is gone",
          "[user_objects][lifetime]") {
  auto coord = std::make_unique<BudgetCoordinator>();
  AgentId a = coord->create_agent({.name = "a", .initial_budget = 100_d});
  auto seen = std::make_shared<std::atomic<int>>(0);
  MonitorHandle handle = coord->add_monitor(a, counting(seen));
  SinkHandle sink = coord->add_audit_sink([](const Change&) {});
  CHECK(handle.active());
  coord.reset();
  CHECK_FALSE(handle.active());
  handle.reset();
  sink.reset();
}

TEST_CASE("a monitor that resets its own handle stops at once and is not called again",
          "[user_objects][handles]") {
  BudgetCoordinator coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  MonitorHandle handle;
  int calls = 0;
  handle = coord.add_monitor(a, [&](const Event&) {
    ++calls;
    handle.reset(); // unregisters from inside the monitor
  });
  auto other = std::make_shared<std::atomic<int>>(0);
  auto keep = coord.add_monitor(a, counting(other));
  REQUIRE(coord.try_consume(a, 1_d).ok());
  REQUIRE(coord.try_consume(a, 1_d).ok());
  CHECK(calls == 1);
  CHECK(other->load() == 2);
}
