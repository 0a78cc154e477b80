// Ordering and liveness across threads: monitors of agents that spend from each other on several
// threads never hang the runtime (one of them is refused with `would_deadlock`, or, for a
// settlement that cannot be refused, made at once and delivered in turn), and audit records reach
// sinks one at a time, in the order the changes were made. CI runs this file under
// ThreadSanitizer.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <latch>
#include <mutex>
#include <optional>
#include <safeguards/coordinator.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

namespace {

using Event = BudgetCoordinator::UsageEvent;
using Change = BudgetCoordinator::BudgetChange;

// Holds every thread that arrives until `count` have: the observers below wait for each other
// so that each thread holds its own agent's turn when it asks for the other's. Without it the
// deadlock would need a lucky interleaving; with it, it happens every time.
class Rendezvous {
public:
  explicit Rendezvous(int count) : count_(count) {}
  void arrive_and_wait() {
    arrived_.fetch_add(1);
    while (arrived_.load() < count_)
      std::this_thread::yield();
  }

private:
  int count_;
  std::atomic<int> arrived_{0};
};

AgentId agent(BudgetCoordinator& coord, std::string name) {
  return coord.create_agent({.name = std::move(name), .initial_budget = 1000_d});
}

// Runs `body(i)` on `n` threads at once and waits for them.
template <class F>
void on_threads(int n, F body) {
  std::vector<std::thread> threads;
  std::latch start(n);
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      body(i);
    });
  for (auto& t : threads)
    t.join();
}

} // namespace

TEST_CASE("monitors of two agents spending from each other on two threads never deadlock",
          "[monitor][deadlock][concurrency]") {
  constexpr int rounds = 100;
  for (int round = 0; round < rounds; ++round) {
    BudgetCoordinator coord;
    const AgentId ids[2] = {agent(coord, "a"), agent(coord, "b")};
    Rendezvous both(2);
    ConsumeStatus nested[2] = {ConsumeStatus::ok, ConsumeStatus::ok};
    std::vector<MonitorHandle> handles;
    for (int i = 0; i < 2; ++i)
      handles.push_back(coord.add_monitor(ids[i], [&, i](const Event& e) {
        if (e.amount != 10_d) // the nested 1.0 spends are not passed on again
          return;
        both.arrive_and_wait();
        nested[i] = coord.try_consume(ids[1 - i], 1_d).status();
      }));
    ConsumeStatus outer[2] = {};
    on_threads(2, [&](int i) { outer[i] = coord.try_consume(ids[i], 10_d).status(); });
    CHECK(outer[0] == ConsumeStatus::ok);
    CHECK(outer[1] == ConsumeStatus::ok);
    // The last of the two to ask sees the cycle and is refused; the other waits and succeeds.
    INFO("round " << round);
    std::vector<ConsumeStatus> got{nested[0], nested[1]};
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<ConsumeStatus>{ConsumeStatus::ok, ConsumeStatus::would_deadlock});
    const int refused = nested[0] == ConsumeStatus::would_deadlock ? 0 : 1;
    // The refused monitor took nothing from the other agent; the other took 1 from its agent.
    CHECK(coord.get_budget(ids[refused]) == 989_d);
    CHECK(coord.get_budget(ids[1 - refused]) == 990_d);
    CHECK(coord.check_invariants().empty());
  }
}

TEST_CASE("a cycle of three agents' monitors on three threads refuses exactly one",
          "[monitor][deadlock][concurrency]") {
  constexpr int rounds = 50;
  for (int round = 0; round < rounds; ++round) {
    BudgetCoordinator coord;
    const AgentId ids[3] = {agent(coord, "a"), agent(coord, "b"), agent(coord, "c")};
    Rendezvous all(3);
    ConsumeStatus nested[3] = {};
    std::vector<MonitorHandle> handles;
    for (int i = 0; i < 3; ++i)
      handles.push_back(coord.add_monitor(ids[i], [&, i](const Event& e) {
        if (e.amount != 10_d)
          return;
        all.arrive_and_wait();
        nested[i] = coord.try_consume(ids[(i + 1) % 3], 1_d).status();
      }));
    ConsumeStatus outer[3] = {};
    on_threads(3, [&](int i) { outer[i] = coord.try_consume(ids[i], 10_d).status(); });
    CHECK(std::count(outer, outer + 3, ConsumeStatus::ok) == 3);
    INFO("round " << round);
    CHECK(std::count(nested, nested + 3, ConsumeStatus::would_deadlock) == 1);
    CHECK(std::count(nested, nested + 3, ConsumeStatus::ok) == 2);
    CHECK(coord.check_invariants().empty());
  }
}

TEST_CASE("commits that cannot wait are made at once and every observer still sees each change",
          "[monitor][deadlock][concurrency]") {
  // Each agent's observer settles a reservation of the other agent while both threads hold their
  // own agent's turn. A settlement cannot be refused: the one that would close the cycle is made
  // at once, and the thread holding the other turn delivers its event after its own.
  constexpr int rounds = 100;
  for (int round = 0; round < rounds; ++round) {
    BudgetCoordinator coord;
    const AgentId ids[2] = {agent(coord, "a"), agent(coord, "b")};
    std::optional<BudgetCoordinator::Reservation> held[2];
    for (int i = 0; i < 2; ++i)
      held[i].emplace(coord.reserve(ids[i], 20_d));
    Rendezvous both(2);
    std::mutex seen_mutex;
    std::vector<std::pair<int, UsageKind>> seen[2];
    ConsumeStatus committed[2] = {ConsumeStatus::not_active, ConsumeStatus::not_active};
    std::vector<MonitorHandle> handles;
    for (int i = 0; i < 2; ++i)
      handles.push_back(coord.add_monitor(ids[i], [&, i](const Event& e) {
        {
          std::lock_guard lock(seen_mutex);
          seen[i].emplace_back(i, e.kind);
        }
        if (e.kind != UsageKind::consume)
          return;
        both.arrive_and_wait();
        // Settles the other agent's reservation: 15 of 20 used.
        committed[i] = held[1 - i]->commit(15_d).status;
      }));
    ConsumeStatus outer[2] = {};
    on_threads(2, [&](int i) { outer[i] = coord.try_consume(ids[i], 10_d).status(); });
    CHECK(outer[0] == ConsumeStatus::ok);
    CHECK(outer[1] == ConsumeStatus::ok);
    CHECK(committed[0] == ConsumeStatus::ok);
    CHECK(committed[1] == ConsumeStatus::ok);
    INFO("round " << round);
    for (int i = 0; i < 2; ++i) {
      auto m = coord.agent_metrics(ids[i]);
      CHECK(m.used_budget == 25_d);
      CHECK(m.reserved_budget == 0_d);
      CHECK(m.remaining_budget == 975_d);
      // Exactly two changes, each seen once, in the order they were made: the consume and the
      // commit (which of the two came first depends on the threads).
      REQUIRE(seen[i].size() == 2);
      std::vector<UsageKind> kinds{seen[i][0].second, seen[i][1].second};
      std::sort(kinds.begin(), kinds.end());
      CHECK(kinds == std::vector<UsageKind>{UsageKind::consume, UsageKind::commit});
    }
    CHECK(coord.check_invariants().empty());
  }
}

TEST_CASE("audit sinks see records one at a time, in the order the changes were made",
          "[audit][order][concurrency]") {
  BudgetCoordinator coord;
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100'000_d});
  const AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d, .pool = pool});
  const AgentId b = coord.create_agent({.name = "b", .initial_budget = 100_d, .pool = pool});
  std::vector<Change> delivered; // no lock: sinks are never called concurrently
  std::atomic<int> in_sink{0};
  std::atomic<int> overlaps{0};
  auto sink = coord.add_audit_sink([&](const Change& c) {
    if (in_sink.fetch_add(1) != 0)
      overlaps.fetch_add(1);
    delivered.push_back(c);
    in_sink.fetch_sub(1);
  });
  constexpr int per_thread = 2000;
  on_threads(4, [&](int t) {
    for (int k = 0; k < per_thread; ++k) {
      const AgentId target = t % 2 == 0 ? a : b;
      coord.update_budget(target, Decimal(100 + (t * per_thread + k) % 97), "tick");
      if (k % 100 == 0)
        coord.transfer(a, b, 1_d, "nudge");
    }
  });
  CHECK(overlaps.load() == 0);
  // Every change, numbered without gaps, delivered in that order; and for each agent, each
  // record starts from the budget the previous one left: the order really is the changes' order.
  REQUIRE(delivered.size() == 4 * per_thread + 4 * (per_thread / 100) * 2);
  std::optional<Decimal> last[2];
  for (std::size_t i = 0; i < delivered.size(); ++i) {
    const auto& c = delivered[i];
    INFO("record " << i << ": " << fmt::format("{}", c));
    REQUIRE(c.sequence == i + 3); // 1 and 2 were the agents' creation, delivered before
    const int k = c.agent == a ? 0 : 1;
    if (last[k])
      REQUIRE(c.old_budget == *last[k]);
    last[k] = c.new_budget;
  }
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("an audit sink added while agents are being created sees every later creation, whole",
          "[audit][order][concurrency]") {
  BudgetCoordinator coord;
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100'000_d});
  std::mutex seen_mutex; // the sink runs on the creating thread, read on this one
  std::vector<Change> seen;
  std::atomic<bool> added{false};
  std::atomic<int> created{0};
  std::vector<char> after_add; // written by the creating thread only, read after the join
  // Creates agents until 500 of them began after the sink was added.
  std::thread creator([&] {
    for (int since = 0; since < 500;) {
      const bool after = added.load();
      after_add.push_back(after ? 1 : 0);
      (void)coord.create_agent({.name = "agent-" + std::to_string(after_add.size() - 1),
                                .initial_budget = 1_d,
                                .pool = pool});
      created.fetch_add(1);
      if (after)
        ++since;
    }
  });
  while (created.load() < 200)
    std::this_thread::yield();
  auto sink = coord.add_audit_sink([&](const Change& c) {
    std::lock_guard lock(seen_mutex);
    seen.push_back(c);
  });
  added.store(true);
  creator.join();
  std::lock_guard lock(seen_mutex);
  REQUIRE(seen.size() >= 500);
  // From the first record on, every creation, numbered without gaps; each record whole.
  for (std::size_t k = 0; k < seen.size(); ++k) {
    const auto& c = seen[k];
    INFO("record " << k << ": " << fmt::format("{}", c));
    REQUIRE(c.sequence == seen[0].sequence + k);
    REQUIRE(c.agent.value() == c.sequence); // only creations: agent n is change n
    REQUIRE(c.agent_name == "agent-" + std::to_string(c.agent.value() - 1));
    REQUIRE(c.reason == "agent created");
    REQUIRE(c.new_budget == 1_d);
    REQUIRE(c.old_budget == 0_d);
  }
  // Every creation that began after the sink was added is among them, up to the last.
  const auto first_after = static_cast<std::uint64_t>(
      std::find(after_add.begin(), after_add.end(), 1) - after_add.begin());
  CHECK(seen.back().sequence == after_add.size());
  CHECK(seen[0].sequence <= first_after + 1);
  CHECK(coord.check_invariants().empty());
}
