// safeguards: what an agent keeps only when it is monitored or its history is kept.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <safeguards/detail/monitor_registry.hpp>
#include <safeguards/detail/serial_notifier.hpp>
#include <safeguards/detail/usage_history.hpp>
#include <type_traits>
#include <utility>

namespace safeguards {
inline namespace v1 {
namespace detail {

// A change's event as it waits for delivery: `stamped` is false when no monitor of the agent
// read timestamps when the change was made (see `MonitorOptions::reads_timestamp`), so that one
// registered meanwhile gets its timestamp read at delivery instead of the clock's epoch.
template <class Event>
struct StampedEvent {
  Event event;
  bool stamped = false;
};

// The monitored machinery of one agent: its turn, its monitor list and its usage history. An
// agent with no monitor and no history never has one, so it costs one pointer.
template <class Event, class Entry, class Amount, class TimePoint>
struct MonitoredAgent {
  using List = MonitorList<Entry>;
  using Reporter = typename Entry::reporter_type;
  explicit MonitoredAgent(std::size_t history_capacity) : history(history_capacity) {}

  SerialNotifier<StampedEvent<Event>, List> turn;
  UsageHistory<Amount, TimePoint> history;
  // The reporter of events without a timestamp (which stamps violations when they are
  // reported): the same for every such event of the agent, so made once, when the agent gets its
  // first monitor, instead of stored field by field for each event ahead of the locked
  // instruction that gives the turn up.
  std::optional<Reporter> unstamped_reporter;
};

// An owning pointer created at most once, under the coordinator's lock, and read without any
// lock once published: it is never replaced or freed before its owner.
template <class T>
class LazyPtr {
public:
  LazyPtr() = default;
  LazyPtr(const LazyPtr&) = delete;
  LazyPtr& operator=(const LazyPtr&) = delete;
  ~LazyPtr() { delete ptr_.load(std::memory_order_relaxed); }

  T* get() const noexcept { return ptr_.load(std::memory_order_acquire); }

  // Under the owner's lock, before anything reads it.
  T& adopt(std::unique_ptr<T> p) noexcept {
    delete ptr_.load(std::memory_order_relaxed);
    T* raw = p.release();
    ptr_.store(raw, std::memory_order_release);
    return *raw;
  }

  // Under the owner's lock; may throw (allocation).
  template <class... Args>
  T& ensure(Args&&... args) {
    if (T* p = ptr_.load(std::memory_order_relaxed))
      return *p;
    T* p = new T(std::forward<Args>(args)...);
    ptr_.store(p, std::memory_order_release);
    return *p;
  }

private:
  std::atomic<T*> ptr_{nullptr};
};

} // namespace detail
} // namespace v1
} // namespace safeguards
