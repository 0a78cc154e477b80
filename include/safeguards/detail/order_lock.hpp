// safeguards: a mutex that refuses to close a cycle of threads waiting for each other.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Serialises the monitored changes of one agent. Monitors run while it is held and may spend
// from other agents, so one thread can hold several, and two threads can each hold one and want
// the other's: agent A's monitor spends from B on one thread while B's spends from A on another.
// With plain mutexes both threads would hang for ever.
//
// A thread that holds none of these locks blocks as usual: it cannot be part of a cycle. A thread
// that already holds one records what it is about to wait for in a process-wide wait-for graph
// first, and if the lock's owner is (through that graph) waiting for this thread, the cycle would
// close: `lock` returns `would_deadlock` instead of blocking. Joining the graph and checking it
// happen under one mutex, so of the threads forming a cycle the last to join sees it: exactly one
// backs out and the others go on. Threads of different coordinators share the graph, since a
// monitor may spend through another coordinator just as well.
//
// The lock itself lives elsewhere: `lock` takes any `Mutex` with `lock()` and `try_lock()`, and
// the owner releases it by its own means after `disown()` (`SerialNotifier` keeps the turn in one
// word with its gate, so that taking both, or giving the turn up when nothing is queued, is one
// locked instruction). What this class keeps is who owns it and how many this thread holds.
//
// Cost: taking or giving it up adds one relaxed store and a thread-local count to the mutex's
// own; the graph is only touched by a thread that already holds a lock and finds the next one
// taken.
class OrderLock {
public:
  enum class Result {
    locked,        ///< this thread holds it now
    reentrant,     ///< this thread already held it; nothing changed
    would_deadlock ///< waiting would close a cycle; nothing changed
  };

  OrderLock() = default;
  OrderLock(const OrderLock&) = delete;
  OrderLock& operator=(const OrderLock&) = delete;

  /// Takes `mutex` (which this lock stands for), blocking unless that would close a cycle.
  template <class Mutex>
  Result lock(Mutex& mutex) noexcept {
    if (held_by_this_thread())
      return Result::reentrant;
    if (held_count() == 0) {
      mutex.lock();
      adopt();
      return Result::locked;
    }
    if (mutex.try_lock()) {
      adopt();
      return Result::locked;
    }
    auto& graph = waits();
    {
      std::lock_guard guard(graph.mutex);
      if (closes_cycle(graph))
        return Result::would_deadlock;
      try {
        graph.edges.emplace_back(self(), this);
      } catch (...) { // no room to record the wait: refusing is safe, hanging is not
        return Result::would_deadlock;
      }
    }
    mutex.lock();
    {
      // Owning and no longer waiting become visible to checkers in one step.
      std::lock_guard guard(graph.mutex);
      owner_.store(self(), std::memory_order_relaxed);
      std::erase_if(graph.edges, [](const Edge& e) { return e.first == self(); });
    }
    ++held_count();
    return Result::locked;
  }

  /// This thread has just taken the mutex (by other means than `lock`).
  void adopt() noexcept {
    owner_.store(self(), std::memory_order_relaxed);
    ++held_count();
  }

  /// This thread is about to give the mutex up; `adopt` again if it ends up keeping it.
  void disown() noexcept {
    owner_.store(nullptr, std::memory_order_relaxed);
    --held_count();
  }

  // Only the owner ever stores its own token, so a relaxed load cannot see it spuriously.
  bool held_by_this_thread() const noexcept {
    return owner_.load(std::memory_order_relaxed) == self();
  }

  /// True while this thread holds any `OrderLock` (it is running some agent's monitors).
  static bool this_thread_holds_any() noexcept { return held_count() != 0; }

private:
  using Token = const void*;
  using Edge = std::pair<Token, const OrderLock*>; // thread -> the lock it waits for

  struct Graph {
    std::mutex mutex;
    std::vector<Edge> edges;
  };

  // Never destroyed: threads may still lock while static destructors run at exit.
  static Graph& waits() noexcept {
    // A mutex and an empty vector, once per process: if even that cannot be allocated, the
    // process ends here (noexcept).
    static auto* graph = new Graph; // NOLINT(bugprone-unhandled-exception-at-new)
    return *graph;
  }

  // The address of a thread-local object tells threads apart; it is compared, never read.
  static Token self() noexcept {
    thread_local const char token = 0;
    return &token;
  }

  static int& held_count() noexcept {
    thread_local int count = 0;
    return count;
  }

  // Follows owner -> what the owner waits for -> its owner ... under the graph's mutex. Bounded:
  // a stale edge (a waiter that has just acquired and not yet erased itself) cannot loop us.
  // The owner's token is stored after the mutex is taken: a checker may miss an owner that has
  // just locked and not yet stored, but such a thread is not waiting yet; when it later waits it
  // joins the graph under the graph's mutex, after its store, and sees the cycle itself.
  bool closes_cycle(const Graph& graph) const noexcept {
    const OrderLock* current = this;
    for (std::size_t steps = 0; steps <= graph.edges.size(); ++steps) {
      Token owner = current->owner_.load(std::memory_order_relaxed);
      if (owner == nullptr)
        return false;
      if (owner == self())
        return true;
      auto edge = std::find_if(graph.edges.begin(), graph.edges.end(),
                               [owner](const Edge& e) { return e.first == owner; });
      if (edge == graph.edges.end())
        return false;
      current = edge->second;
    }
    return false;
  }

  std::atomic<Token> owner_{nullptr};
};

} // namespace detail
} // namespace v1
} // namespace safeguards
