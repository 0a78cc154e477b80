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

  /// Delivers what was queued, then gives the turn up (the caller holds it).
  template <class Deliver>
  void leave(Deliver&& deliver) noexcept {
    for (;;) {
      drain(deliver);
      lock_.unlock();
      if (queued_.load(std::memory_order_acquire) == 0 || !lock_.try_lock())
        return;
    }
  }

  /// Delivers what was queued while the turn is held, so that a change made during a veto check
  /// reaches observers before the change that the check was about.
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

  /// Makes a change that cannot wait for the turn: `apply()` changes the balance and returns its
  /// event (or nothing), under the queue's lock so that queued events follow their changes'
  /// order. Returns false when the event could not be queued (out of memory); the change itself
  /// is made either way.
  template <class Apply, class Deliver>
  bool defer(Apply&& apply, Deliver&& deliver) noexcept {
    bool queued = true;
    {
      std::lock_guard guard(queue_mutex_);
      std::optional<Event> event = apply();
      if (event) {
        try {
          queue_.push_back(std::move(*event));
          queued_.fetch_add(1, std::memory_order_release);
        } catch (...) {
          queued = false;
        }
      }
    }
    if (!lock_.held_by_this_thread() && lock_.try_lock())
      leave(deliver);
    return queued;
  }

private:
  OrderLock lock_;
  std::mutex queue_mutex_; // a leaf: no user code runs under it
  std::deque<Event> queue_;
  std::atomic<std::size_t> queued_{0};
};

} // namespace detail
} // namespace v1
} // namespace safeguards
