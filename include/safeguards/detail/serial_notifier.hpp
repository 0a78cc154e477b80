// safeguards: one agent's changes, delivered to its observers one at a time and in order.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <safeguards/detail/order_lock.hpp>
#include <thread>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// A lock for a few loads and stores, never held while user code runs or while waiting for
// anything else: one locked exchange to take, a plain store to give up.
class SpinLock {
public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire))
      for (int spins = 0; locked_.load(std::memory_order_relaxed); ++spins)
        if (spins >= 64) // the holder was preempted: let it run
          std::this_thread::yield();
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
  std::atomic<bool> locked_{false};
};

// The monitored changes of one agent and their delivery, kept apart:
//
// - The *gate* (a spin lock, a leaf) covers a change itself: the balance read before, the ledger
//   operation, the balance read after, and the event's place in line. Every monitored change of
//   the agent passes through it, so events are made and queued in the order of the ledger
//   changes, each with the numbers of its own change.
// - The *turn* (an `OrderLock`) covers delivery: whoever holds it calls the observers, one event
//   at a time, and delivers the events queued behind its own before it gives the turn up.
//
// A change whose monitors only observe does not wait for the turn: it is made at once, and if its
// event is first in line and the turn is free the thread takes the turn and delivers; otherwise
// the event joins the queue and the thread returns, the holder delivers it. Consumers of one
// agent therefore never wait behind another's observers; only the few instructions of the gate
// are serialised. Uncontended, a change costs the gate twice (one exchange each) and the turn's
// mutex once (try_lock and unlock).
//
// Veto checks must run before the change and see the balance it would change, so a consume with
// a check (and any change made by a thread already running monitors, which must keep the
// `reentrant_call` / `would_deadlock` answers) `enter`s the turn first, blocking as before, and
// makes its change while holding it.
//
// The monitor list is read only by the holder of the turn, under the gate. It is replaced under
// the gate; a replaced list that the holder may still be reading is kept on a retired chain and
// freed by that holder when it gives the turn up (under the gate again), otherwise at once by
// whoever replaced it. Readers thus touch neither a reference count nor a lock of the list's own.
template <class Event, class List>
class SerialNotifier {
public:
  using Entry = OrderLock::Result;

  /// How a change's event is routed: `claim` (this thread holds no turn of this agent: deliver
  /// it if first in line and the turn is free, else queue it), `holder` (this thread holds the
  /// turn and is not delivering: deliver it if first in line), `queue` (this thread holds the turn
  /// and is inside a monitor: always queue, so observers are never called inside one another).
  enum class Route { claim, holder, queue };

  SerialNotifier() = default;
  SerialNotifier(const SerialNotifier&) = delete;
  SerialNotifier& operator=(const SerialNotifier&) = delete;
  ~SerialNotifier() {
    free_chain(list_);
    free_chain(retired_);
  }

  /// Takes the turn, blocking; `reentrant` and `would_deadlock` leave it as it was.
  Entry enter() noexcept { return turn_.lock(); }

  bool held_by_this_thread() const noexcept { return turn_.held_by_this_thread(); }

  /// Monitors with a veto in the current list; read unlocked, so a monitor registered during a
  /// change may not check it (it checks the changes that start after it).
  std::uint32_t checks() const noexcept { return checks_.load(std::memory_order_acquire); }

  /// The current list, for the holder of the turn: it stays valid until the holder leaves.
  const List* list() noexcept {
    std::lock_guard gate(gate_);
    return list_;
  }

  /// Makes a change: `apply()` runs under the gate and returns its event, or nothing when it
  /// changed nothing. `deliver(list, event)` is called for events this thread delivers. Returns
  /// false when an event could not be queued (out of memory); the change is made either way.
  template <class Apply, class Deliver>
  bool change(Route route, Apply&& apply, Deliver&& deliver) noexcept {
    std::optional<Event> event;
    const List* list = nullptr;
    bool mine = false;
    bool queued = true;
    {
      std::lock_guard gate(gate_);
      event = apply();
      if (!event)
        return true;
      if (route != Route::queue && pending_.empty() &&
          (route == Route::holder || turn_.try_lock())) {
        mine = true;
        list = list_;
      } else {
        queued = push(std::move(*event));
      }
    }
    if (mine) {
      deliver(list, *event);
      if (route == Route::claim)
        leave(deliver);
    }
    return queued;
  }

  /// Delivers what was queued, then gives the turn up (the caller holds it). The turn is given up
  /// under the gate once nothing is queued, so an event queued at that moment is never stranded:
  /// its maker either saw the turn held and queued before this check, or finds it free after.
  template <class Deliver>
  void leave(Deliver&& deliver) noexcept {
    List* dead = nullptr;
    for (;;) {
      std::vector<Event> batch;
      const List* list = nullptr;
      {
        std::lock_guard gate(gate_);
        if (pending_.empty()) {
          dead = std::exchange(retired_, nullptr);
          turn_.unlock();
          break;
        }
        batch.swap(pending_);
        list = list_;
      }
      for (const Event& e : batch)
        deliver(list, e);
    }
    free_chain(dead); // the last reference to a user's monitor may be here: no lock is held
  }

  /// Installs `fresh` (owned from now on; may be null) and returns what must be freed by the
  /// caller once it holds no lock: the previous list unless the holder of the turn may be reading
  /// it, in which case the holder frees it when it leaves.
  [[nodiscard]] List* replace(List* fresh, std::uint32_t checks) noexcept {
    std::lock_guard gate(gate_);
    List* old = std::exchange(list_, fresh);
    checks_.store(checks, std::memory_order_release);
    if (old && turn_.held()) {
      old->retired_next = retired_;
      retired_ = old;
      return nullptr;
    }
    return old;
  }

  static void free_chain(List* head) noexcept {
    while (head) {
      List* next = head->retired_next;
      delete head;
      head = next;
    }
  }

private:
  bool push(Event&& event) noexcept {
    try {
      pending_.push_back(std::move(event));
      return true;
    } catch (...) {
      return false;
    }
  }

  SpinLock gate_;
  std::atomic<std::uint32_t> checks_{0};
  List* list_ = nullptr;       // guarded by gate_
  List* retired_ = nullptr;    // guarded by gate_; freed by the holder of the turn
  std::vector<Event> pending_; // guarded by gate_; in the order of the changes
  OrderLock turn_;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
