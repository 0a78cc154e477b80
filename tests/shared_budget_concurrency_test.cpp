// SharedBudget under contention: no lost update, no overspend through try_consume, children
// sharing the parent's limits. Runs under ThreadSanitizer in CI.
#include <atomic>
#include <catch2/catch.hpp>
#include <safeguards/budget.hpp>
#include <thread>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {
constexpr int threads = 8;
constexpr int per_thread = 2000;

template <class F>
void run_threads(F f) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back(f, t);
  for (auto& th : pool)
    th.join();
}
} // namespace

TEST_CASE("if (can_consume) add_consumption never loses an update", "[shared][concurrency]") {
  // A limit large enough for every add: each one must be counted exactly once.
  SharedBudget run{Budget{60s, {Consumption::token(threads * per_thread, "m")}}};
  run_threads([&](int t) {
    for (int i = 0; i < per_thread; ++i)
      if (run.can_consume(Consumption::token(1, "m")))
        run.add_consumption(Consumption::token(1, "m"), fmt::format("thread-{}", t));
  });
  auto snap = run.snapshot();
  CHECK(snap.consumptions().size() == threads * per_thread);
  CHECK(snap.remaining_limits()[0].value() == 0_d);
  CHECK_FALSE(run.is_expired());
}

TEST_CASE("try_consume never overspends when demand exceeds the limit", "[shared][concurrency]") {
  const std::int64_t limit = 5000; // demand is threads * per_thread = 16000
  SharedBudget run{Budget{60s, {Consumption::call(limit, "api")}}};
  std::atomic<std::int64_t> granted{0};
  run_threads([&](int t) {
    for (int i = 0; i < per_thread; ++i)
      if (run.try_consume(Consumption::call(1, "api"), fmt::format("thread-{}", t)))
        granted.fetch_add(1);
  });
  CHECK(granted.load() == limit);
  CHECK(run.snapshot().remaining_limits()[0].value() == 0_d);
  CHECK_FALSE(run.is_expired()); // used up exactly, never below zero
}

TEST_CASE("children share the parent's limits across threads", "[shared][concurrency]") {
  SharedBudget parent{Budget{60s, {Consumption::token(10'000, "m")}}};
  std::vector<SharedBudget> children;
  for (int t = 0; t < threads; ++t)
    children.push_back(parent.child(std::chrono::seconds(5 + t)));
  std::atomic<std::int64_t> granted{0};
  run_threads([&](int t) {
    for (int i = 0; i < per_thread; ++i)
      if (children[static_cast<std::size_t>(t)].try_consume(Consumption::token(1, "m"), "child"))
        granted.fetch_add(1);
  });
  CHECK(granted.load() == 10'000);
  CHECK(parent.snapshot().consumptions().size() == 10'000);
  for (const auto& c : children)
    CHECK(c.deadline() <= parent.deadline());
}

TEST_CASE("try_consume never takes a second matching limit below zero across threads",
          "[shared][concurrency][overspend]") {
  // add_consumption charges every matching limit; try_consume must check them all.
  SharedBudget run{Budget{60s, {Consumption::token(10'000, "m"), Consumption::token(3'000, "m")}}};
  std::atomic<std::int64_t> granted{0};
  run_threads([&](int t) {
    for (int i = 0; i < per_thread; ++i)
      if (run.try_consume(Consumption::token(1, "m"), fmt::format("thread-{}", t)))
        granted.fetch_add(1);
  });
  CHECK(granted.load() == 3'000);
  auto left = run.snapshot().remaining_limits();
  CHECK(left[0].value() == 7'000_d);
  CHECK(left[1].value() == 0_d);
  CHECK_FALSE(run.is_expired());
}
