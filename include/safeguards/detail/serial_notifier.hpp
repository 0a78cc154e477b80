// safeguards: one agent's changes, delivered to its observers one at a time and in order.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <safeguards/detail/order_lock.hpp>
#include <safeguards/detail/turn_gate.hpp>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// A change's event, made under the gate and delivered or queued after it. Not `std::optional`:
// GCC 12 zero-fills an empty `std::optional` of an event (a `rep stos` of 96 bytes on every
// observed consume). Whether it holds an event is what the change that fills it says; only an
// event with a destructor to run keeps a flag of its own, since each store in front of the
// locked instruction that gives the turn up waits to drain (about 0.2 ns each here).
template <class Event>
class EventSlot {
  static constexpr bool trivial = std::is_trivially_destructible_v<Event>;

public:
  EventSlot() noexcept {} // NOLINT(modernize-use-equals-default): `= default` would zero-fill
  EventSlot(const EventSlot&) = delete;
  EventSlot& operator=(const EventSlot&) = delete;
  ~EventSlot() {
    if constexpr (!trivial)
      if (full_.value)
        event_.~Event();
  }

  template <class... Args>
  void emplace(Args&&... args) {
    ::new (static_cast<void*>(&event_)) Event(std::forward<Args>(args)...);
    if constexpr (!trivial)
      full_.value = true;
  }
  Event& operator*() noexcept { return event_; }

private:
  struct Flag {
    bool value = false;
  };
  struct NoFlag {};
  union {
    Event event_;
  };
  [[no_unique_address]] std::conditional_t<trivial, NoFlag, Flag> full_;
};

// The monitored changes of one agent and their delivery, kept apart:
//
// - The *gate* covers a change itself: the balance read before, the ledger operation and the
//   event's place in line. Every monitored change of the agent passes through it, so events are
//   made and queued in the order of the ledger changes, each with the numbers of its own change.
//   It is the agent's account hold when the ledger has one (`AccountGate`), a bit of the turn's
//   word otherwise (`TurnBitGate`); every method that needs it is given it.
// - The *turn* (an `OrderLock`) covers delivery: whoever holds it calls the observers, one event
//   at a time, and delivers the events queued behind its own before it gives the turn up.
//
// The turn's bits live in a `TurnWord` that the gate's holder writes (see there for the one
// write made without the gate). A change whose monitors only observe does not wait for the turn:
// it is made at once, and if the turn is free the thread takes it under the same gate and
// delivers; otherwise the event joins the queue and the thread returns, the holder delivers it.
// Consumers of one agent therefore never wait behind another's observers; only the few
// instructions of the gate are serialised. Uncontended, an observed change costs two locked
// instructions: the gate with the change and the turn, and one compare-and-swap of the turn's
// word to give the turn up, which fails when an event was queued meanwhile (so none is ever
// stranded). No protocol does with fewer: giving a turn up and seeing a queued event is a
// store followed by a load of another thread's store, which needs a locked instruction or a
// fence.
//
// Veto checks must run before the change and see the balance it would change, so a consume with
// a check (and any change made by a thread already running monitors, which must keep the
// `reentrant_call` / `would_deadlock` answers) `enter`s the turn first, blocking as before, and
// makes its change while holding it.
//
// The monitor list is read only by the holder of the turn, under the gate. It is replaced under
// the gate; a replaced list that the holder may still be reading is kept on a retired chain and
// freed by that holder when it gives the turn up (which then takes the gate), otherwise at once
// by whoever replaced it. Readers thus touch neither a reference count nor a lock of the list's
// own.
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
  template <class Gate>
  Entry enter(Gate& gate) noexcept {
    TurnMutex<Gate> turn(word_, gate);
    return order_.lock(turn);
  }

  bool held_by_this_thread() const noexcept { return order_.held_by_this_thread(); }

  /// Monitors with a veto in the current list; read unlocked, so a monitor registered during a
  /// change may not check it (it checks the changes that start after it).
  std::uint32_t checks() const noexcept { return checks_.load(std::memory_order_acquire); }

  /// Monitors in the current list that read events' timestamps; read unlocked like `checks`.
  std::uint32_t stamps() const noexcept { return stamps_.load(std::memory_order_acquire); }

  /// The current list, for the holder of the turn: it stays valid until the holder leaves.
  template <class Gate>
  const List* list(Gate& gate) noexcept {
    auto guard = gate.enter(word_);
    return list_;
  }

  /// Makes a change: `apply(account, event)` runs under the gate, with the account the gate
  /// lends, and fills `event` (an empty `EventSlot`) and returns true unless it changed nothing.
  /// `agent` gives the gate (`agent.gate()`) and delivers the events this thread delivers
  /// (`agent.deliver(list, event)`). Returns false when an event could not be queued (out of
  /// memory); the change is made either way.
  template <class Agent, class Apply>
  bool change(const Agent& agent, Route route, Apply&& apply) noexcept {
    EventSlot<Event> event;
    const List* list = nullptr;
    Then then = Then::done;
    bool queued = true;
    {
      auto gate = agent.gate();
      auto guard = gate.enter(word_);
      const std::uint32_t was = guard.was();
      if (!apply(guard.account(), event))
        return true;
      if (route == Route::claim && (was & TurnWord::turn) == 0) {
        guard.set(was | TurnWord::turn); // free: taken with the change, delivered here
        list = list_;
        then = Then::deliver_and_leave;
      } else if (route == Route::holder && (was & TurnWord::pending) == 0) {
        list = list_; // this thread holds the turn, and nothing is ahead of the event
        then = Then::deliver;
      } else {
        queued = push(std::move(*event));
        if (queued && (was & TurnWord::pending) == 0) {
          if (route != Route::claim) {
            guard.set(was | TurnWord::pending); // this thread holds the turn
          } else if (!guard.try_set(was | TurnWord::pending)) {
            // The holder gave the turn up before the event was in line: take it and deliver
            // the queue here.
            guard.set(guard.was() | TurnWord::turn | TurnWord::pending);
            then = Then::leave;
          }
        }
      }
    }
    switch (then) {
    case Then::done:
      return queued;
    case Then::deliver:
      agent.deliver(list, *event);
      return true;
    case Then::deliver_and_leave:
      order_.adopt();
      agent.deliver(list, *event);
      leave(agent);
      return true;
    case Then::leave:
      order_.adopt();
      leave(agent);
      return true;
    }
    return queued;
  }

  /// Delivers what was queued, then gives the turn up (the caller holds it). With nothing queued
  /// that is one compare-and-swap of the word, without the gate: an event queued at that moment
  /// is never stranded, since its maker sets `pending` with a compare-and-swap too, and takes the
  /// turn itself when it finds it given up.
  template <class Agent>
  void leave(const Agent& agent) noexcept {
    order_.disown();
    if (word_.try_give_up()) [[likely]]
      return;
    order_.adopt();
    leave_slowly(agent);
  }

private:
  // What a change does once it has given the gate up.
  enum class Then { done, deliver, deliver_and_leave, leave };

  // The rest of `leave` (events were queued, a list retired or a thread sleeps on the turn), kept
  // out of line so that the usual case above stays a few instructions in its caller: under the
  // gate, gives the turn up if nothing is queued, else takes the queue and delivers it. `agent`
  // by value: a reference would make its caller keep a copy in memory on every path.
  template <class Agent>
  [[gnu::noinline]] void leave_slowly(Agent agent) noexcept {
    for (;;) {
      std::vector<Event> batch;
      const List* list = nullptr;
      List* dead = nullptr;
      bool wake = false;
      {
        auto gate = agent.gate();
        auto guard = gate.enter(word_);
        const std::uint32_t was = guard.was();
        if (pending_.empty()) {
          dead = std::exchange(retired_, nullptr);
          wake = (was & TurnWord::waiters) != 0;
          order_.disown();
          guard.set(was & ~(TurnWord::turn | TurnWord::retired | TurnWord::waiters));
        } else {
          batch.swap(pending_);
          list = list_;
          guard.set(was & ~TurnWord::pending);
        }
      }
      if (batch.empty()) {
        if (wake)
          word_.wake();
        free_chain(dead); // the last reference to a user's monitor may be here: no lock is held
        return;
      }
      for (const Event& e : batch)
        agent.deliver(list, e);
    }
  }

public:
  /// Installs `fresh` (owned from now on; may be null) and returns what must be freed by the
  /// caller once it holds no lock: the previous list unless the holder of the turn may be reading
  /// it, in which case the holder frees it when it leaves.
  template <class Gate>
  [[nodiscard]] List* replace(Gate& gate, List* fresh, std::uint32_t checks) noexcept {
    const std::uint32_t stamps = fresh ? fresh->stamps() : 0;
    if (fresh)
      fresh->stamp_count = stamps;
    auto guard = gate.enter(word_);
    const std::uint32_t was = guard.was();
    List* old = std::exchange(list_, fresh);
    checks_.store(checks, std::memory_order_release);
    stamps_.store(stamps, std::memory_order_release);
    if (old && (was & TurnWord::turn) != 0) {
      // `retired` is set exactly while the chain is not empty, and a holder that finds it set
      // frees the chain under the gate, so the chain is this gate holder's to extend.
      old->retired_next = retired_;
      retired_ = old;
      if ((was & TurnWord::retired) != 0 || guard.try_set(was | TurnWord::retired))
        return nullptr;
      retired_ = old->retired_next; // the holder left meanwhile: nobody reads `old` any more
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
  [[gnu::noinline]] bool push(Event&& event) noexcept {
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
