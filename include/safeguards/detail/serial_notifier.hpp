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

// Waits a little for a holder of a few instructions: spins, then lets a preempted holder run.
inline void spin_pause(int spins) noexcept {
  if (spins >= 64)
    std::this_thread::yield();
}

// One agent's gate and turn in one word, so that the common cases cost one locked instruction
// each: taking the gate and a free turn together, and giving the turn up when nothing waits.
//
// - `gate`: a spin lock of a few loads and stores (never held while user code runs or while
//   waiting for anything else). Its holder is the only thread that writes the word while it is
//   set: every other writer compare-and-swaps from a value without it, so the holder gives it
//   up (and sets or clears the bits below) with a plain store.
// - `turn`: who delivers the agent's events (and runs its checks). It is a mutex for
//   `OrderLock::lock`, which blocks on it (`waiters` set, `std::atomic::wait`) unless that
//   would close a cycle.
// - `pending`: events are queued. Only set while the turn is held, so a free turn means an
//   empty queue.
// - `retired`: a replaced monitor list waits for the holder of the turn to free it. Only set
//   while the turn is held.
// - `waiters`: some thread sleeps until the turn is free. Only set while the turn is held.
class TurnWord {
public:
  static constexpr std::uint32_t gate = 1;
  static constexpr std::uint32_t turn = 2;
  static constexpr std::uint32_t pending = 4;
  static constexpr std::uint32_t retired = 8;
  static constexpr std::uint32_t waiters = 16;

  /// Takes the gate, and the turn too when `want_turn` (== `turn`) and it is free. Returns the
  /// word as it was (without `gate`): whether the turn was taken is `!(was & turn)`.
  std::uint32_t take_gate(std::uint32_t want_turn) noexcept {
    std::uint32_t w = 0; // the usual state: nothing held, so no load before the first attempt
    for (int spins = 0;; ++spins) {
      if ((w & gate) == 0) {
        const std::uint32_t desired = w | gate | ((w & turn) != 0 ? 0 : want_turn);
        if (bits_.compare_exchange_weak(w, desired, std::memory_order_acquire,
                                        std::memory_order_relaxed))
          return w;
        continue;
      }
      spin_pause(spins);
      w = bits_.load(std::memory_order_relaxed);
    }
  }

  /// Gives the gate up, leaving the word `next` (without `gate`); the caller holds the gate.
  void release_gate(std::uint32_t next) noexcept { bits_.store(next, std::memory_order_release); }

  /// Gives the turn up if the word says nothing but that the turn is held: no queued event, no
  /// retired list, no sleeper, no gate holder. Otherwise false and nothing changed.
  bool try_leave() noexcept {
    std::uint32_t expected = turn;
    return bits_.compare_exchange_strong(expected, 0, std::memory_order_release,
                                         std::memory_order_relaxed);
  }

  /// Wakes the threads sleeping in `lock` (after the turn was given up with `waiters` set).
  void wake() noexcept { bits_.notify_all(); }

  // ---- the turn as a mutex, for OrderLock ----

  void lock() noexcept {
    std::uint32_t w = 0;
    for (int spins = 0;; ++spins) {
      if ((w & gate) == 0) {
        if ((w & turn) == 0) {
          if (bits_.compare_exchange_weak(w, w | turn, std::memory_order_acquire,
                                          std::memory_order_relaxed))
            return;
          continue;
        }
        if (spins >= 64) { // the holder runs monitors, which may take long: sleep
          if ((w & waiters) == 0 &&
              !bits_.compare_exchange_weak(w, w | waiters, std::memory_order_relaxed,
                                           std::memory_order_relaxed))
            continue;
          bits_.wait(w | waiters, std::memory_order_relaxed);
          w = bits_.load(std::memory_order_relaxed);
          continue;
        }
      }
      spin_pause(spins);
      w = bits_.load(std::memory_order_relaxed);
    }
  }

  bool try_lock() noexcept {
    std::uint32_t w = 0;
    for (int spins = 0;; ++spins) {
      if ((w & turn) != 0)
        return false;
      if ((w & gate) == 0) {
        if (bits_.compare_exchange_weak(w, w | turn, std::memory_order_acquire,
                                        std::memory_order_relaxed))
          return true;
        continue;
      }
      spin_pause(spins);
      w = bits_.load(std::memory_order_relaxed);
    }
  }

private:
  std::atomic<std::uint32_t> bits_{0};
};

// The monitored changes of one agent and their delivery, kept apart:
//
// - The *gate* covers a change itself: the balance read before, the ledger operation and the
//   event's place in line. Every monitored change of the agent
//   passes through it, so events are made and queued in the order of the ledger changes, each
//   with the numbers of its own change.
// - The *turn* (an `OrderLock`) covers delivery: whoever holds it calls the observers, one event
//   at a time, and delivers the events queued behind its own before it gives the turn up.
//
// Both live in one word (`TurnWord`). A change whose monitors only observe does not wait for the
// turn: it is made at once, and if the turn is free the thread takes it together with the gate
// (one compare-and-swap) and delivers; otherwise the event joins the queue and the thread
// returns, the holder delivers it. Consumers of one agent therefore never wait behind another's
// observers; only the few instructions of the gate are serialised. Uncontended, a change costs
// two locked instructions here (taking the gate and the turn; giving the turn up) and a plain
// store (giving the gate up).
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
  /// it if the turn is free, else queue it), `holder` (this thread holds the turn and is not
  /// delivering: deliver it if nothing is queued), `queue` (this thread holds the turn and is
  /// inside a monitor: always queue, so observers are never called inside one another).
  enum class Route { claim, holder, queue };

  SerialNotifier() = default;
  SerialNotifier(const SerialNotifier&) = delete;
  SerialNotifier& operator=(const SerialNotifier&) = delete;
  ~SerialNotifier() {
    free_chain(list_);
    free_chain(retired_);
  }

  /// Takes the turn, blocking; `reentrant` and `would_deadlock` leave it as it was.
  Entry enter() noexcept { return order_.lock(word_); }

  bool held_by_this_thread() const noexcept { return order_.held_by_this_thread(); }

  /// Monitors with a veto in the current list; read unlocked, so a monitor registered during a
  /// change may not check it (it checks the changes that start after it).
  std::uint32_t checks() const noexcept { return checks_.load(std::memory_order_acquire); }

  /// Monitors in the current list that read events' timestamps; read unlocked like `checks`.
  std::uint32_t stamps() const noexcept { return stamps_.load(std::memory_order_acquire); }

  /// The current list, for the holder of the turn: it stays valid until the holder leaves.
  const List* list() noexcept {
    const std::uint32_t was = word_.take_gate(0);
    const List* list = list_;
    word_.release_gate(was);
    return list;
  }

  /// Makes a change: `apply()` runs under the gate and returns its event, or nothing when it
  /// changed nothing. `deliver(list, event)` is called for events this thread delivers. Returns
  /// false when an event could not be queued (out of memory); the change is made either way.
  template <class Apply, class Deliver>
  bool change(Route route, Apply&& apply, Deliver&& deliver) noexcept {
    const std::uint32_t was = word_.take_gate(route == Route::claim ? TurnWord::turn : 0);
    const bool took = route == Route::claim && (was & TurnWord::turn) == 0;
    std::optional<Event> event = apply();
    if (!event) {
      word_.release_gate(was); // and the turn, if it was taken with the gate
      return true;
    }
    if (took || (route == Route::holder && (was & TurnWord::pending) == 0)) {
      const List* list = list_;
      word_.release_gate(was | TurnWord::turn);
      if (took)
        order_.adopt();
      deliver(list, *event);
      if (took)
        leave(deliver);
      return true;
    }
    const bool queued = push(std::move(*event));
    word_.release_gate(pending_.empty() ? was : was | TurnWord::pending);
    return queued;
  }

  /// Delivers what was queued, then gives the turn up (the caller holds it). The turn is given up
  /// in the same instruction that finds nothing queued, so an event queued at that moment is
  /// never stranded: its maker either queued before (and the instruction fails) or finds the
  /// turn free after.
  template <class Deliver>
  void leave(Deliver&& deliver) noexcept {
    order_.disown();
    if (word_.try_leave())
      return;
    order_.adopt();
    for (;;) {
      std::vector<Event> batch;
      const std::uint32_t was = word_.take_gate(0);
      if (pending_.empty()) {
        List* dead = std::exchange(retired_, nullptr);
        order_.disown();
        word_.release_gate(was & ~(TurnWord::turn | TurnWord::retired | TurnWord::waiters));
        if ((was & TurnWord::waiters) != 0)
          word_.wake();
        free_chain(dead); // the last reference to a user's monitor may be here: no lock is held
        return;
      }
      batch.swap(pending_);
      const List* list = list_;
      word_.release_gate(was & ~TurnWord::pending);
      for (const Event& e : batch)
        deliver(list, e);
    }
  }

  /// Installs `fresh` (owned from now on; may be null) and returns what must be freed by the
  /// caller once it holds no lock: the previous list unless the holder of the turn may be reading
  /// it, in which case the holder frees it when it leaves.
  [[nodiscard]] List* replace(List* fresh, std::uint32_t checks) noexcept {
    const std::uint32_t stamps = fresh ? fresh->stamps() : 0;
    if (fresh)
      fresh->stamp_count = stamps;
    const std::uint32_t was = word_.take_gate(0);
    List* old = std::exchange(list_, fresh);
    checks_.store(checks, std::memory_order_release);
    stamps_.store(stamps, std::memory_order_release);
    if (old && (was & TurnWord::turn) != 0) {
      old->retired_next = retired_;
      retired_ = old;
      word_.release_gate(was | TurnWord::retired);
      return nullptr;
    }
    word_.release_gate(was);
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

  TurnWord word_;
  OrderLock order_;
  std::atomic<std::uint32_t> checks_{0};
  std::atomic<std::uint32_t> stamps_{0};
  List* list_ = nullptr;       // guarded by the gate
  List* retired_ = nullptr;    // guarded by the gate; freed by the holder of the turn
  std::vector<Event> pending_; // guarded by the gate; in the order of the changes
};

} // namespace detail
} // namespace v1
} // namespace safeguards
