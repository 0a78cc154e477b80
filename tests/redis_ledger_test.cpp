// RedisLedger under a coordinator, against real redis-servers (tests/support/redis_server.hpp):
// the reference model of the in-memory coordinator holds over Redis too; two coordinators share
// an agent by name; a process whose lease ran out settles what is left; a server that stops
// refuses consumes (fail closed), keeps the settlements made meanwhile and applies each once when
// it is back; a request whose reply was lost in a stalled server is applied once or undone, never
// twice. The concurrent cases are in redis_ledger_concurrency_test.cpp. No mocks of Redis.
// SPDX-License-Identifier: MIT
#include "support/coordinator_model.hpp"
#include "support/redis_server.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <random>
#include <safeguards/coordinator.hpp>
#include <safeguards/redis_ledger.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;
using test::eventually;
using test::RedisServer;

namespace {

using RedisCoordinator =
    BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, RedisLedger>;

} // namespace

TEST_CASE("Redis ledger: the reference model of the coordinator holds over Redis",
          "[redis][model]") {
  RedisServer server;
  std::mt19937_64 rng(20261203);
  for (int n = 0; n < 40; ++n) {
    const std::uint64_t seed = rng();
    std::mt19937_64 bytes_rng(seed);
    std::vector<std::uint8_t> bytes(64 + seed % 448);
    for (auto& b : bytes)
      b = static_cast<std::uint8_t>(bytes_rng());
    // A prefix per run: names would otherwise attach to the previous run's accounts.
    RedisOptions o = server.options("model" + std::to_string(n));
    const std::string error = safeguards_test::BasicOperationSequence<RedisLedger>(o).run(bytes);
    INFO("seed " << seed);
    REQUIRE(error == "");
  }
}

TEST_CASE("Redis ledger: a coordinator's management calls", "[redis]") {
  RedisServer server;
  RedisCoordinator coord(server.options());
  const PoolId pool = coord.create_pool({.name = "team", .initial_budget = 100_d});
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = 40_d, .pool = pool});
  const AgentId b = coord.create_agent({.name = "b", .initial_budget = 20_d, .pool = pool});
  CHECK(coord.try_consume(a, 5_d));
  coord.transfer(a, b, 10_d, "rebalance");
  CHECK(coord.get_budget(a) == 25_d);
  CHECK(coord.get_budget(b) == 30_d);
  coord.update_budget(a, 60_d, "raise");
  CHECK(coord.pool_metrics(pool).unallocated_budget == 5_d);
  CHECK(server.hget("t:account:1", "remaining") == "60000000"); // micro-units, as text
  coord.remove_agent(b);
  CHECK(coord.pool_metrics(pool).unallocated_budget == 35_d);
  CHECK(server.hget("t:account:2", "closed") == "1");
  CHECK(coord.check_invariants().empty());
  CHECK(coord.ledger().in_doubt() == 0);
}

TEST_CASE("Redis ledger: a consume is one round trip, a reservation and its commit two",
          "[redis]") {
  RedisServer server;
  RedisOptions o = server.options();
  o.background = false; // no upkeep commands in the count
  RedisCoordinator coord(o);
  const AgentId agent = coord.create_agent({.name = "a", .initial_budget = 10_d});
  REQUIRE(coord.try_consume(agent, 1_d)); // the scripts are loaded on first use
  auto r = coord.reserve(agent, 1_d);
  std::ignore = r.commit(1_d);
  const std::uint64_t before = coord.ledger().round_trips();
  REQUIRE(coord.try_consume(agent, 1_d));
  CHECK(coord.ledger().round_trips() - before == 1);
  auto call = coord.reserve(agent, 2_d);
  CHECK(call.commit(1.5_d).charged == 1.5_d);
  CHECK(coord.ledger().round_trips() - before == 3);
  CHECK(coord.try_consume(agent, 100_d).status() == ConsumeStatus::insufficient);
  CHECK(coord.ledger().round_trips() - before == 4);
}

TEST_CASE("Redis ledger: two coordinators share an agent by its name", "[redis]") {
  RedisServer server;
  RedisCoordinator first(server.options());
  RedisCoordinator second(server.options());
  const AgentId a1 = first.create_agent({.name = "shared", .initial_budget = 10_d});
  const AgentId a2 = second.create_agent({.name = "shared", .initial_budget = 10_d});
  REQUIRE(first.try_consume(a1, 4_d));
  CHECK(second.get_budget(a2) == 6_d); // one account, not two budgets of 10
  CHECK(second.try_consume(a2, 7_d).status() == ConsumeStatus::insufficient);
  REQUIRE(second.try_consume(a2, 6_d));
  CHECK(first.try_consume(a1, 0.000001_d).status() == ConsumeStatus::insufficient);
  // Removed in one process, it is gone for the other; the name opens a new account afterwards.
  first.remove_agent(a1);
  CHECK(second.try_consume(a2, 0.000001_d).status() == ConsumeStatus::unknown_agent);
  const AgentId again = first.create_agent({.name = "shared", .initial_budget = 3_d});
  CHECK(first.get_budget(again) == 3_d);
}

TEST_CASE("Redis ledger: a process whose reservations were swept settles what is left", "[redis]") {
  RedisServer server;
  RedisOptions o = server.options();
  o.background = false;
  RedisCoordinator coord(o);
  const AgentId agent = coord.create_agent({.name = "slow", .initial_budget = 50_d});
  auto r = coord.reserve(agent, 20_d);
  // Its lease ran out (a partition longer than the lease, say) and another client swept.
  server.command({"DEL", "t:holder:" + coord.ledger().holder()});
  REQUIRE(coord.ledger().sweep() == 20_d);
  CHECK(coord.get_budget(agent) == 50_d);
  // The call it reserved for cost 15: the hold is gone, so remaining pays; nothing is lost.
  const auto c = r.commit(15_d);
  CHECK(c.charged == 15_d);
  CHECK(c.overspent == 0_d);
  CHECK(coord.get_budget(agent) == 35_d);
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(server.hget("t:account:1", "used") == "15000000");
}

TEST_CASE("Redis ledger: fail closed while the server is down, nothing lost when it returns",
          "[redis]") {
  RedisServer::Options durable;
  durable.append_only = true;
  RedisServer server(durable);
  RedisOptions o = server.options();
  o.background = false; // the test decides when requests in doubt are resent
  RedisCoordinator coord(o);
  const PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100_d});
  const AgentId agent = coord.create_agent({.name = "a", .initial_budget = 80_d, .pool = pool});
  REQUIRE(coord.try_consume(agent, 10_d));
  auto r = coord.reserve(agent, 30_d);
  CHECK(coord.get_budget(agent) == 40_d);

  server.kill(); // a crash: only what the append-only file holds survives
  CHECK(coord.try_consume(agent, 1_d).status() == ConsumeStatus::ledger_unavailable);
  CHECK(coord.try_reserve(agent, 1_d).status() == ConsumeStatus::ledger_unavailable);
  CHECK_THROWS_AS(coord.consume(agent, 1_d), LedgerUnavailable);
  CHECK_THROWS_AS(coord.update_budget(agent, 50_d, "raise"), LedgerUnavailable);
  CHECK_THROWS_AS(coord.remove_agent(agent), LedgerUnavailable);
  CHECK_THROWS_AS(coord.create_agent({.name = "b", .initial_budget = 1_d, .pool = pool}),
                  LedgerUnavailable);
  CHECK(coord.pool_metrics(pool).unallocated_budget == 20_d); // nothing changed
  CHECK(coord.agents().size() == 1);
  // The call was made: its settlement is kept, answered as it will land (the hold pays).
  const auto c = r.commit(12_d);
  CHECK(c.status == ConsumeStatus::ok);
  CHECK(c.charged == 12_d);
  CHECK(c.refunded == 18_d);
  CHECK(coord.get_budget(agent) == 40_d); // the last balance seen, until the server answers
  CHECK(coord.ledger().in_doubt() > 0);
  CHECK_FALSE(coord.ledger().flush());

  server.restart();
  CHECK(coord.ledger().flush());
  CHECK(coord.ledger().in_doubt() == 0);
  CHECK(coord.get_budget(agent) == 58_d); // 80 - 10 - 12: the commit once, the refusals never
  CHECK(server.hget("t:account:1", "used") == "22000000");
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(coord.ledger().applied_after_unavailable() == 0);
  coord.update_budget(agent, 70_d, "raise");
  CHECK(coord.get_budget(agent) == 70_d);
  CHECK(coord.pool_metrics(pool).unallocated_budget == 8_d);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("Redis ledger: fail open spends a bounded allowance while the server is down",
          "[redis]") {
  RedisServer::Options durable;
  durable.append_only = true;
  RedisServer server(durable);
  RedisOptions o = server.options();
  o.background = false;
  o.when_unreachable = FailOpenWithAllowance{3_d};
  // Two processes' coordinators (each its own ledger, allowance and connections).
  RedisCoordinator first(o);
  RedisCoordinator second(o);
  const AgentId a1 = first.create_agent({.name = "shared", .initial_budget = 10_d});
  const AgentId a2 = second.create_agent({.name = "shared", .initial_budget = 10_d});
  REQUIRE(first.try_consume(a1, 8_d));

  server.kill();
  {
    auto call = first.reserve(a1, 1_d); // from the allowance: 2 left
    CHECK(call.commit(0.5_d).charged == 0.5_d);
  }
  CHECK(first.try_consume(a1, 1_d));
  CHECK(first.try_consume(a1, 1_d));
  CHECK(first.try_consume(a1, 1_d).status() == ConsumeStatus::ledger_unavailable); // spent
  CHECK(first.ledger().allowance_left() == 0_d);
  CHECK(second.try_consume(a2, 2_d));
  CHECK(second.try_consume(a2, 1_d));
  CHECK(second.try_consume(a2, 0.5_d).status() == ConsumeStatus::ledger_unavailable);

  server.restart();
  CHECK(first.ledger().flush());
  CHECK(second.ledger().flush());
  // 5.5 was spent on the 2 that remained: the account pays 2, 3.5 is the overshoot, within the
  // bound of 2 processes x 3.
  CHECK(server.hget("t:account:1", "used") == "10000000");
  CHECK(server.hget("t:account:1", "remaining") == "0");
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(first.ledger().overshoot() + second.ledger().overshoot() == 3.5_d);
  // The server answers again: the next outage has a whole allowance.
  CHECK(first.try_consume(a1, 1_d).status() == ConsumeStatus::insufficient);
  CHECK(first.ledger().allowance_left() == 3_d);
}

TEST_CASE("Redis ledger: a reservation granted by the allowance takes no other's hold", "[redis]") {
  RedisServer::Options durable;
  durable.append_only = true;
  RedisServer server(durable);
  RedisOptions o = server.options();
  o.background = false;
  o.when_unreachable = FailOpenWithAllowance{5_d};
  RedisCoordinator coord(o);
  const AgentId agent = coord.create_agent({.name = "a", .initial_budget = 10_d});
  auto backed = coord.reserve(agent, 2_d); // held on the server
  server.kill();
  auto granted = coord.reserve(agent, 1_d); // from the allowance: held nowhere
  server.restart();
  granted.release();
  CHECK(server.hget("t:account:1", "reserved") == "2000000"); // the backed hold is whole
  const auto c = backed.commit(2_d);
  CHECK(c.charged == 2_d);
  CHECK(c.overspent == 0_d);
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(server.hget("t:account:1", "remaining") == "8000000");
}

TEST_CASE("Redis ledger: fail closed is the default, and a negative allowance is refused",
          "[redis]") {
  RedisOptions o;
  CHECK(std::holds_alternative<FailClosed>(o.when_unreachable));
  o.port = 1;
  o.when_unreachable = FailOpenWithAllowance{-1_d};
  CHECK_THROWS_AS(RedisLedger(o), InvalidArgument);
}

TEST_CASE("Redis ledger: a reply lost in a stalled server is applied once or undone", "[redis]") {
  RedisServer server;
  RedisOptions o = server.options();
  o.background = false;
  o.timeout = std::chrono::milliseconds(200);
  RedisCoordinator coord(o);
  const AgentId agent = coord.create_agent({.name = "a", .initial_budget = 100_d});
  auto r = coord.reserve(agent, 10_d);
  // The server holds every write for 1.5 s: requests are read and queued, their replies late.
  server.command({"CLIENT", "PAUSE", "1500", "WRITE"});
  CHECK(coord.try_consume(agent, 7_d).status() == ConsumeStatus::ledger_unavailable);
  CHECK(coord.try_reserve(agent, 5_d).status() == ConsumeStatus::ledger_unavailable);
  const auto c = r.commit(4_d); // kept
  CHECK(c.charged == 4_d);
  // Once the server runs them, the refused consume and reserve may have run: they are undone;
  // the commit lands once.
  CHECK(eventually([&] { return coord.ledger().flush(); }));
  CHECK(coord.get_budget(agent) == 96_d);
  CHECK(server.hget("t:account:1", "used") == "4000000");
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(coord.check_invariants().empty());

  // A removal whose close is stalled throws; once the server runs it (or the fence stops it), a
  // second removal closes the account and the pool gets the 96 back either way.
  const PoolId pool = coord.agent_pool(agent);
  server.command({"CLIENT", "PAUSE", "1500", "WRITE"});
  CHECK_THROWS_AS(coord.remove_agent(agent), LedgerUnavailable);
  CHECK(eventually([&] { return coord.ledger().flush(); }));
  coord.remove_agent(agent);
  CHECK(coord.pool_metrics(pool).unallocated_budget == 96_d);
  CHECK(server.hget("t:account:1", "closed") == "1");
}
