// safeguards: one agent's changes, delivered to its observers one at a time and in order.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <safeguards/detail/order_lock.hpp>
#include <utility>

namespace safeguards {
inline namespace v1 {
namespace detail {

// The turn of one agent: whoever holds it makes a monitored change and tells the observers, so
// observers see each change once and in the order the changes were made.
//
// Some changes cannot wait for the turn and must not be lost: settling or releasing a reservation
// (money already set aside cannot be refused) from inside a monitor, either of the same agent on
// the same thread, or of an agent whose turn is held by a thread that is waiting for this one.
// Those are `defer`red: the change is made at once and its event queued; the holder of the turn
// delivers queued events after the event it is delivering, before it gives the turn up. An event
// queued just as the holder leaves is not stranded: the holder looks again after unlocking, and a
// deferring thread that finds the turn free takes it and delivers.
template <class Event>
class SerialNotifier {
public:
  using Entry = OrderLock::Result;

  SerialNotifier() = default;
  SerialNotifier(const SerialNotifier&) = delete;
  SerialNotifier& operator=(const SerialNotifier&) = delete;

  /// Takes the turn; `reentrant` and `would_deadlock` leave it as it was.
  Entry enter() noexcept { return lock_.lock(); }

  bool held_by_this_thread() const noexcept { return lock_.held_by_this_thread(); }

  /// True when no change waits for delivery. For the holder of the turn this also means that no
  /// change was made by anyone else since it took the turn (all of them queue their events).
  bool nothing_queued() const noexcept { return queued_.load(std::memory_order_acquire) == 0; }

  /// Delivers what was queued, then gives the turn up (the caller holds it).
  template <class Deliver>
  void leave(Deliver&& deliver) noexcept {
    for (;;) {
      if (queued_.load(std::memory_order_acquire) != 0)
        drain(deliver);
      lock_.unlock();
      if (queued_.load(std::memory_order_acquire) == 0 || !lock_.try_lock())
        return;
    }
  }

  /// The holder of the turn makes its own change: `apply()` changes the balance and returns its
  /// event (or nothing). With nothing queued before it the event goes straight to `deliver` (the
  /// common case: no queue traffic at all); otherwise it joins the queue behind the changes made
  /// before it, and `leave` delivers them all in order. Returns false when the event could not be
  /// queued (out of memory); the change itself is made either way.
  ///
  /// No lock is taken around `apply`: the only thread that changes this agent's balance through
  /// `defer` while another holds the turn is one that found the holder waiting for it (a wait
  /// cycle), and the holder stays blocked until that thread has finished; a deferral by the
  /// holder's own thread happens inside its monitors, never during `apply`.
  template <class Apply, class Deliver>
  bool record(Apply&& apply, Deliver&& deliver) noexcept {
    std::optional<Event> event = apply();
    if (!event)
      return true;
    if (queued_.load(std::memory_order_acquire) == 0) {
      deliver(*event);
      return true;
    }
    std::lock_guard guard(queue_mutex_);
    return push(std::move(*event));
  }

  /// Delivers what was queued while the turn is held.
  template <class Deliver>
  void drain(Deliver& deliver) noexcept {
    for (;;) {
      std::optional<Event> next;
      {
        std::lock_guard guard(queue_mutex_);
        if (queue_.empty())
          return;
        next.emplace(std::move(queue_.front()));
        queue_.pop_front();
        queued_.fetch_sub(1, std::memory_order_release);
      }
      deliver(*next);
    }
  }

  /// Makes a change that cannot wait for the turn, or is made while this thread is delivering
  /// (a monitor settling its own agent's reservation): `apply()` as for `record`, and the event
  /// always joins the queue, so observers are never called inside one another. Returns false
  /// when the event could not be queued (out of memory); the change itself is made either way.
  template <class Apply, class Deliver>
  bool defer(Apply&& apply, Deliver&& deliver) noexcept {
    bool queued = true;
    {
      std::lock_guard guard(queue_mutex_);
      if (std::optional<Event> event = apply())
        queued = push(std::move(*event));
    }
    if (!lock_.held_by_this_thread() && lock_.try_lock())
      leave(deliver);
    return queued;
  }

private:
  bool push(Event&& event) noexcept {
    try {
      queue_.push_back(std::move(event));
    } catch (...) {
      return false;
    }
    queued_.fetch_add(1, std::memory_order_release);
    return true;
  }

  OrderLock lock_;
  std::mutex queue_mutex_; // a leaf: no user code runs under it
  std::deque<Event> queue_;
  std::atomic<std::size_t> queued_{0};
};

} // namespace detail
} // namespace v1
} // namespace safeguards
