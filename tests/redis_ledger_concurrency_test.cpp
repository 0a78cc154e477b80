// RedisLedger under concurrency, against real redis-servers (tests/support/redis_server.hpp):
// processes and threads sharing an agent spend exactly its budget; a client killed with SIGKILL
// leaves no money reserved once its lease runs out; a server killed and restarted under load
// loses no acknowledged spend and applies nothing twice. Run under ThreadSanitizer in CI.
// SPDX-License-Identifier: MIT
#include "support/redis_server.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <safeguards/coordinator.hpp>
#include <safeguards/redis_ledger.hpp>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;
using test::eventually;
using test::RedisServer;

namespace {

using RedisCoordinator =
    BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, RedisLedger>;

// Runs `child` in a forked process, which exits with its return value; the parent goes on.
template <class F>
pid_t fork_child(F child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = child();
    } catch (...) {
    }
    ::_exit(code);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

} // namespace

TEST_CASE("Redis ledger: processes and threads sharing an agent spend exactly its budget",
          "[redis]") {
  RedisServer server;
  constexpr int processes = 3;
  constexpr int threads = 3;
  const Decimal budget = 500_d;
  const Decimal step = 0.7_d;
  std::vector<pid_t> children;
  std::vector<int> pipes;
  for (int p = 0; p < processes; ++p) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    children.push_back(fork_child([&, fds] {
      ::close(fds[0]);
      RedisCoordinator coord(server.options());
      const AgentId agent = coord.create_agent({.name = "shared", .initial_budget = budget});
      std::atomic<std::int64_t> granted{0}; // micro-units
      std::atomic<int> failures{0};
      std::vector<std::thread> workers;
      for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
          for (int i = 0;; ++i) {
            // Half reserve + commit (the estimate above the usage), half plain consumes.
            if ((i + t) % 2 == 0) {
              auto r = coord.try_reserve(agent, 1_d);
              if (r) {
                const auto c = r.commit(step);
                if (c.status != ConsumeStatus::ok)
                  ++failures;
                granted += c.charged.raw();
                continue;
              }
            }
            const auto s = coord.try_consume(agent, step).status();
            if (s == ConsumeStatus::ok)
              granted += step.raw();
            else if (s == ConsumeStatus::insufficient)
              return;
            else
              ++failures;
          }
        });
      for (auto& w : workers)
        w.join();
      const std::int64_t result[2] = {granted.load(), failures.load()};
      const bool written = ::write(fds[1], result, sizeof result) == sizeof result;
      ::close(fds[1]);
      return written ? 0 : 1;
    }));
    ::close(fds[1]);
    pipes.push_back(fds[0]);
  }
  std::int64_t granted = 0;
  for (int p = 0; p < processes; ++p) {
    std::int64_t result[2] = {0, 0};
    CHECK(::read(pipes[static_cast<std::size_t>(p)], result, sizeof result) == sizeof result);
    ::close(pipes[static_cast<std::size_t>(p)]);
    CHECK(wait_for(children[static_cast<std::size_t>(p)]) == 0);
    CHECK(result[1] == 0);
    granted += result[0];
  }
  // 714 steps of 0.7 fit in 500: every one was granted, once, and nothing more.
  CHECK(granted == 714 * step.raw());
  CHECK(server.hget("t:account:1", "used") == std::to_string(granted));
  CHECK(server.hget("t:account:1", "remaining") == std::to_string(budget.raw() - granted));
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(server.command({"GET", "t:accounts"}) == "1"); // one account for the three processes
}

TEST_CASE("Redis ledger: a client killed with reservations gives them back when its lease ends",
          "[redis]") {
  RedisServer server;
  const bool real_lease = GENERATE(false, true);
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t child = fork_child([&]() -> int {
    ::close(fds[0]);
    RedisOptions o = server.options();
    // The lease the child renews while it lives: long when the test ends it by hand.
    o.lease = real_lease ? std::chrono::milliseconds(300) : std::chrono::minutes(10);
    RedisCoordinator coord(o);
    const AgentId agent = coord.create_agent({.name = "worker", .initial_budget = 100_d});
    auto r1 = coord.reserve(agent, 30_d);
    auto r2 = coord.reserve(agent, 12.5_d);
    const std::string holder = coord.ledger().holder();
    (void)!::write(fds[1], holder.data(), holder.size());
    ::close(fds[1]);
    for (;;)
      ::pause(); // killed here, holding both reservations
  });
  ::close(fds[1]);
  char buffer[32] = {};
  const auto n = ::read(fds[0], buffer, sizeof buffer - 1);
  ::close(fds[0]);
  REQUIRE(n > 0);
  const std::string holder(buffer, static_cast<std::size_t>(n));
  CHECK(server.hget("t:account:1", "reserved") == "42500000");
  ::kill(child, SIGKILL);
  (void)wait_for(child);

  RedisOptions o = server.options();
  o.background = false; // this test sweeps by hand
  RedisLedger sweeper(o);
  if (real_lease) {
    // The server lets the lease run out; each sweep before that gives nothing back.
    Decimal back = 0_d;
    CHECK(eventually([&] {
      back += sweeper.sweep().value_or(0_d);
      return back == 42.5_d;
    }));
  } else {
    CHECK(sweeper.sweep() == 0_d); // the lease is alive: nothing is given back
    CHECK(server.hget("t:account:1", "reserved") == "42500000");
    server.command({"DEL", "t:holder:" + holder}); // what the lease running out does
    CHECK(sweeper.sweep() == 42.5_d);
    CHECK(sweeper.sweep() == 0_d); // once
  }
  CHECK(server.hget("t:account:1", "reserved") == "0");
  CHECK(server.hget("t:account:1", "remaining") == "100000000");
  CHECK(server.hget("t:account:1", "held:" + holder).empty());
}

TEST_CASE("Redis ledger: no acknowledged spend lost when the server is killed under load",
          "[redis]") {
  RedisServer::Options durable;
  durable.append_only = true;
  RedisServer server(durable);
  RedisOptions o = server.options();
  RedisCoordinator coord(o);
  const AgentId agent = coord.create_agent({.name = "busy", .initial_budget = 1'000'000_d});
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> granted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t)
    workers.emplace_back([&] {
      while (!stop.load()) {
        const auto s = coord.try_consume(agent, 1_d).status();
        if (s == ConsumeStatus::ok)
          granted += 1;
        else
          ++refused;
      }
    });
  for (int round = 0; round < 2; ++round) {
    const std::int64_t before = granted.load();
    CHECK(eventually([&] { return granted.load() >= before + 200; }));
    server.kill();
    const int refused_before = refused.load();
    CHECK(eventually([&] { return refused.load() >= refused_before + 20; }));
    server.restart();
  }
  const std::int64_t before = granted.load();
  CHECK(eventually([&] { return granted.load() >= before + 200; }));
  stop = true;
  for (auto& w : workers)
    w.join();
  CHECK(eventually([&] { return coord.ledger().flush(); }));
  // Every consume acknowledged is in the books, once; none refused is.
  CHECK(server.hget("t:account:1", "used") == std::to_string(granted.load() * 1'000'000));
  CHECK(coord.get_budget(agent) == 1'000'000_d - Decimal(granted.load()));
}
