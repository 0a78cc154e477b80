// PeriodicReview's thread, driven by a ManualClock so nothing sleeps: the schedule (one run per
// jump over missed times), findings delivered, start/stop, destruction while waiting (also on
// real clocks with day-long and endless intervals) and while a callback runs, throwing
// callbacks, callbacks that call back in, several reviews on one clock, spending on other threads
// meanwhile; and ManualClock::wait_until itself. Threads never use Catch assertions: they record,
// and the test checks after the review has stopped (Catch is not thread-safe).
// SPDX-License-Identifier: MIT
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <latch>
#include <memory>
#include <mutex>
#include <safeguards/periodic_review.hpp>
#include <safeguards/review.hpp>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

using Coordinator = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using Review = BasicPeriodicReview<Coordinator>;
using Findings = Review::Findings;
using TimePoint = ManualClock::time_point;

TimePoint at(std::chrono::nanoseconds since_start) {
  return TimePoint(since_start);
}

// What a callback saw, written on the review's thread and read after it has stopped (or after
// `wait_for_runs`, which orders the two through the review's mutex).
struct Seen {
  std::mutex mutex;
  std::vector<TimePoint> times;
  std::vector<Findings> findings;

  void record(TimePoint t, const Findings& f) {
    std::lock_guard lock(mutex);
    times.push_back(t);
    findings.push_back(f);
  }
};

// Blocks until the stop token is triggered: a callback that only a stop request ends.
void wait_for_stop(std::stop_token stop) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait(lock, stop, [] { return false; });
}

} // namespace

TEST_CASE("PeriodicReview: runs on the coordinator's clock, once per jump over missed times") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  AgentId a = coord.create_agent({.name = "a", .initial_budget = Decimal(100)});
  Seen seen;
  {
    BasicPeriodicReview review(coord, 1h,
                               [&](const Findings& f) { seen.record(coord.clock().now(), f); });
    CHECK(review.every() == 1h);
    clock.advance(59min); // not due yet
    clock.advance(1min);  // due: 1 h after construction
    REQUIRE(review.wait_for_runs(1));

    REQUIRE(coord.try_consume(a, Decimal(95)).ok());
    clock.advance(5h + 30min); // five due times passed: one run at 6:30
    REQUIRE(review.wait_for_runs(2));

    clock.advance(30min); // the schedule continues on its grid: 7:00
    REQUIRE(review.wait_for_runs(3));
    CHECK(review.runs() == 3);
    CHECK(review.failures() == 0);
  }
  CHECK(seen.times == std::vector<TimePoint>{at(1h), at(6h + 30min), at(7h)});
  REQUIRE(seen.findings.size() == 3);
  REQUIRE(seen.findings[0].size() == 1);
  CHECK(seen.findings[0][0].kind == ReviewFindingKind::Underused);
  REQUIRE(seen.findings[1].size() == 1);
  CHECK(seen.findings[1][0].kind == ReviewFindingKind::NearlyDepleted);
  CHECK(seen.findings[1][0].remaining_budget == Decimal(5));
  CHECK(seen.findings[2] == review(coord));
}

TEST_CASE("PeriodicReview: thresholds are passed on, and an empty review is delivered too") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  AgentId a = coord.create_agent({.name = "a", .initial_budget = Decimal(100)});
  REQUIRE(coord.try_consume(a, Decimal(50)).ok());
  Seen seen;
  {
    BasicPeriodicReview review(coord, 10min,
                               [&](const Findings& f) { seen.record(coord.clock().now(), f); },
                               {.underused = 40, .nearly_depleted = 5});
    CHECK(review.thresholds().underused == Percent(40));
    clock.advance(10min);
    REQUIRE(review.wait_for_runs(1));
    REQUIRE(coord.try_consume(a, Decimal(20)).ok()); // 30 % left: nothing to say
    clock.advance(10min);
    REQUIRE(review.wait_for_runs(2));
  }
  REQUIRE(seen.findings.size() == 2);
  REQUIRE(seen.findings[0].size() == 1);
  CHECK(seen.findings[0][0].kind == ReviewFindingKind::Underused);
  CHECK(seen.findings[0][0].threshold == Percent(40));
  CHECK(seen.findings[1].empty());
}

TEST_CASE("PeriodicReview: start and stop") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  std::atomic<int> calls{0};
  auto count = [&](const Findings&) { ++calls; };

  SECTION("destroyed before its first due time: never runs") {
    { Review review(coord, 1h, count); }
    CHECK(calls == 0);
  }
  SECTION("destroyed while waiting, long after construction") {
    {
      Review review(coord, 1h, count);
      clock.advance(59min);
    }
    CHECK(calls == 0);
  }
  SECTION("stop() ends the thread; later time moves nothing; stop() again and the destructor "
          "are harmless") {
    Review review(coord, 1h, count);
    clock.advance(1h);
    REQUIRE(review.wait_for_runs(1));
    review.stop();
    CHECK_FALSE(review.wait_for_runs(2)); // stopped short of it: returns, does not block
    clock.advance(10h);
    review.stop();
    CHECK(review.runs() == 1);
    CHECK(calls == 1);
  }
  SECTION("stop() from several threads at once") {
    Review review(coord, 1h, count);
    {
      std::jthread t1([&] { review.stop(); });
      std::jthread t2([&] { review.stop(); });
      review.stop();
    }
    CHECK_FALSE(review.wait_for_runs(1));
  }
  SECTION("a thread waiting for a run is released by stop()") {
    Review review(coord, 1h, count);
    std::atomic<int> result{-1};
    std::jthread waiter([&] { result = review.wait_for_runs(1) ? 1 : 0; });
    review.stop();
    waiter.join();
    CHECK(result == 0);
  }
  SECTION("an interval so long its due time saturates") {
    {
      Review review(coord, std::chrono::nanoseconds::max(), count);
      clock.advance(24h * 365 * 100);
    }
    CHECK(calls == 0);
  }
}

TEST_CASE("PeriodicReview on real clocks stops at once, without waiting for the due time") {
  // Were the destructor to wait for the due time, these would hang (and CTest's timeout fail
  // them); nothing here depends on how fast the machine is.
  std::atomic<int> calls{0};
  SECTION("system_clock, daily (the default BudgetCoordinator)") {
    BudgetCoordinator coord;
    coord.create_agent({.name = "a", .initial_budget = Decimal(1)});
    {
      PeriodicReview daily(coord, 24h, [&](const std::vector<ReviewFinding>&) { ++calls; });
    }
  }
  SECTION("system_clock, an interval too long for any due time") {
    BudgetCoordinator coord;
    {
      PeriodicReview never(coord, std::chrono::system_clock::duration::max(),
                           [&](const std::vector<ReviewFinding>&) { ++calls; });
    }
  }
  SECTION("steady_clock") {
    BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::steady_clock> coord;
    {
      BasicPeriodicReview hourly(coord, 1h, [&](const auto&) { ++calls; });
      hourly.stop();
      CHECK_FALSE(hourly.wait_for_runs(1));
    }
  }
  CHECK(calls == 0);
}

TEST_CASE("PeriodicReview: destroyed while its callback runs") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  coord.create_agent({.name = "a", .initial_budget = Decimal(1)});
  std::atomic<int> calls{0};
  std::latch entered{1};

  SECTION("a callback that watches the stop token returns as soon as destruction asks") {
    std::atomic<bool> saw_stop{false};
    auto review = std::make_unique<Review>(coord, 1h, [&](const Findings&, std::stop_token stop) {
      if (calls++ == 0)
        entered.count_down();
      wait_for_stop(stop); // would block forever without the destructor's stop request
      saw_stop = stop.stop_requested();
    });
    clock.advance(1h);
    entered.wait(); // the callback is running now
    review.reset(); // requests the stop, the callback returns, the thread is joined
    CHECK(calls == 1);
    CHECK(saw_stop);
  }
  SECTION("a callback blocked on a latch another thread releases: the destructor waits for it") {
    std::latch release{1};
    auto review = std::make_unique<Review>(coord, 1h, [&](const Findings&) {
      if (calls++ == 0)
        entered.count_down();
      release.wait();
    });
    clock.advance(1h);
    entered.wait();
    // Released before or during the destruction, whichever comes first; either way the
    // destructor neither deadlocks nor cuts the callback short.
    std::jthread releaser([&] { release.count_down(); });
    review.reset();
    CHECK(calls == 1);
  }
  SECTION("time moving on while the callback runs: at most one more run, then the stop") {
    std::latch release{1};
    auto review = std::make_unique<Review>(coord, 1h, [&](const Findings&) {
      if (calls++ == 0) {
        entered.count_down();
        release.wait();
      }
    });
    clock.advance(1h);
    entered.wait();
    clock.advance(3h); // due again, several times over, while the first run is still going
    release.count_down();
    REQUIRE(review->wait_for_runs(2));
    review.reset();
    CHECK(calls == 2);
  }
}

TEST_CASE("PeriodicReview: a throwing callback is counted and reported, and reviews go on") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  coord.create_agent({.name = "a", .initial_budget = Decimal(1)});
  std::mutex mutex;
  std::vector<std::string> errors;
  std::atomic<int> calls{0};
  Review review(
      coord, 1h,
      [&](const Findings&) {
        switch (++calls) {
        case 1:
          throw std::runtime_error("boom 1");
        case 2:
          throw 42; // not even a std::exception
        case 3:
          throw std::logic_error("boom 3"); // and the error callback throws on this one
        default:
          return;
        }
      },
      {},
      [&](std::exception_ptr e) {
        std::string what = "non-standard";
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          what = ex.what();
        } catch (...) {
        }
        {
          std::lock_guard lock(mutex);
          errors.push_back(what);
        }
        if (what == "boom 3")
          throw std::runtime_error("the error callback fails too");
      });

  for (std::uint64_t run = 1; run <= 5; ++run) {
    clock.advance(1h);
    REQUIRE(review.wait_for_runs(run));
  }
  CHECK(review.runs() == 5);
  CHECK(review.failures() == 3);
  CHECK(calls == 5);
  std::lock_guard lock(mutex);
  CHECK(errors == std::vector<std::string>{"boom 1", "non-standard", "boom 3"});
}

TEST_CASE("PeriodicReview: a throwing callback without an error callback is only counted") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  Review review(coord, 1h, [](const Findings&) { throw std::runtime_error("always"); });
  for (std::uint64_t run = 1; run <= 3; ++run) {
    clock.advance(1h);
    REQUIRE(review.wait_for_runs(run));
  }
  CHECK(review.failures() == 3);
}

TEST_CASE("PeriodicReview: a callback may call the coordinator, review and the review itself") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  AgentId a = coord.create_agent({.name = "a", .initial_budget = Decimal(100)});
  struct Inside {
    std::uint64_t runs_before = 0;
    bool waited_for_far_run = true;
    std::size_t findings = 0;
    bool consumed = false;
  };
  std::vector<Inside> inside; // only the review's thread writes it, until the review stopped
  Review periodic(coord, 1h, [&](const Findings&) {
    Inside in;
    in.consumed = coord.try_consume(a, Decimal(30)).ok();
    in.findings = safeguards::review(coord).size();
    in.runs_before = periodic.runs();
    in.waited_for_far_run = periodic.wait_for_runs(100); // must not block on its own thread
    inside.push_back(in);
    if (inside.size() == 2)
      periodic.stop(); // only requests: the thread ends after this callback
  });
  clock.advance(1h);
  REQUIRE(periodic.wait_for_runs(1));
  clock.advance(1h);
  REQUIRE(periodic.wait_for_runs(2));
  clock.advance(1h);
  CHECK_FALSE(periodic.wait_for_runs(3)); // the callback stopped it
  periodic.stop();
  REQUIRE(inside.size() == 2);
  CHECK(inside[0].runs_before == 0);
  CHECK(inside[1].runs_before == 1);
  CHECK_FALSE(inside[0].waited_for_far_run);
  CHECK(inside[0].consumed);
  CHECK(inside[1].consumed);
  CHECK(inside[0].findings == 0); // 70 % left
  CHECK(inside[1].findings == 0); // 40 % left
  CHECK(coord.get_budget(a) == Decimal(40));
}

TEST_CASE("PeriodicReview: several reviews share one ManualClock") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  std::atomic<int> hourly_calls{0};
  std::atomic<int> slow_calls{0};
  Review slow(coord, 90min, [&](const Findings&) { ++slow_calls; });
  {
    Review hourly(coord, 1h, [&](const Findings&) { ++hourly_calls; });
    clock.advance(1h);
    REQUIRE(hourly.wait_for_runs(1));
    clock.advance(30min);
    REQUIRE(slow.wait_for_runs(1));
  }                  // destroying one wakes the other's wait too; it must go back to waiting
  clock.advance(1h); // 2:30: slow is not due until 3:00
  clock.advance(30min);
  REQUIRE(slow.wait_for_runs(2));
  slow.stop();
  CHECK(hourly_calls == 1);
  CHECK(slow_calls == 2);
}

TEST_CASE("PeriodicReview: reviews while other threads spend") {
  ManualClock clock;
  Coordinator coord{{}, {}, clock};
  PoolId p = coord.create_pool({.name = "shared", .initial_budget = Decimal(4000)});
  std::vector<AgentId> agents;
  for (int i = 0; i < 4; ++i)
    agents.push_back(coord.create_agent(
        {.name = "w" + std::to_string(i), .initial_budget = Decimal(1000), .pool = p}));
  std::atomic<std::uint64_t> findings_seen{0};
  Review periodic(coord, 1min, [&](const Findings& f) { findings_seen += f.size(); });

  constexpr int per_thread = 2000;
  std::atomic<int> ok{0};
  {
    std::vector<std::jthread> workers;
    for (AgentId agent : agents)
      workers.emplace_back([&, agent] {
        for (int i = 0; i < per_thread; ++i)
          if (coord.try_consume(agent, Decimal("0.5")).ok())
            ++ok;
      });
    for (std::uint64_t run = 1; run <= 20; ++run) {
      clock.advance(1min);
      REQUIRE(periodic.wait_for_runs(run));
    }
  }
  periodic.stop();
  CHECK(periodic.runs() == 20);
  CHECK(periodic.failures() == 0);
  CHECK(ok == 4 * per_thread);
  // Every agent spent everything: all four nearly depleted, the pool low.
  auto final_findings = review(coord);
  CHECK(final_findings.size() == 5);
  CHECK(coord.pool_metrics(p).used_budget == Decimal(4000));
  CHECK(findings_seen <= 20 * 5);
}

TEST_CASE("ManualClock::wait_until wakes on advance and set, and on a stop request") {
  ManualClock clock;
  SECTION("a time already reached returns at once") {
    std::stop_source never;
    CHECK(clock.wait_until(at(0ns), never.get_token()));
  }
  SECTION("advance, on any copy, wakes the waiter") {
    std::atomic<int> result{-1};
    ManualClock copy = clock;
    std::jthread waiter([&](std::stop_token stop) { result = copy.wait_until(at(10s), stop); });
    clock.advance(5s);
    clock.advance(5s);
    waiter.join();
    CHECK(result == 1);
  }
  SECTION("set wakes the waiter") {
    std::atomic<int> result{-1};
    std::jthread waiter([&](std::stop_token stop) { result = clock.wait_until(at(1h), stop); });
    clock.set(at(2h));
    waiter.join();
    CHECK(result == 1);
  }
  SECTION("a stop request ends the wait, unreached") {
    std::atomic<int> result{-1};
    std::jthread waiter([&](std::stop_token stop) { result = clock.wait_until(at(1h), stop); });
    waiter.request_stop();
    waiter.join();
    CHECK(result == 0);
    CHECK(clock.now() == at(0ns));
  }
  SECTION("the existing behaviour is unchanged: no going back") {
    clock.advance(1s);
    CHECK_THROWS_AS(clock.set(at(0ns)), InvalidArgument);
    CHECK_THROWS_AS(clock.advance(-1ns), InvalidArgument);
    CHECK(clock.now() == at(1s));
  }
}
