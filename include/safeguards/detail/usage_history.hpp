// safeguards: the ring of an agent's most recent consumes and commits.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <safeguards/monitor.hpp>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Keeps the last `capacity` usage records of one agent, for `usage_history` and for the usage
// aggregates allocation strategies read. Its size is fixed before the agent is published and
// never changes, so `capacity()` is read without the lock: with history off (capacity 0) a
// monitored consume does not lock and unlock for nothing. The lock is a leaf: nothing else is
// taken and no user code runs while it is held.
template <class Amount, class TimePoint>
class UsageHistory {
public:
  struct Record {
    Amount amount{};
    UsageKind kind = UsageKind::consume;
    TimePoint at{};
  };

  UsageHistory() = default;
  // Before the agent is published only.
  explicit UsageHistory(std::size_t capacity) : ring_(capacity) {}
  UsageHistory& operator=(UsageHistory&& other) noexcept {
    ring_ = std::move(other.ring_);
    next_ = std::exchange(other.next_, 0);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  std::size_t capacity() const noexcept { return ring_.size(); }

  void record(const Amount& amount, UsageKind kind, TimePoint at) noexcept {
    const std::size_t cap = ring_.size();
    if (cap == 0)
      return;
    std::lock_guard lock(mutex_);
    ring_[next_] = {amount, kind, at};
    next_ = (next_ + 1) % cap;
    size_ = std::min(size_ + 1, cap);
  }

  // Calls `f(record)` for each record with `from <= at <= to`, oldest first, under the lock:
  // `f` must not call back into the coordinator.
  template <class F>
  void for_each(TimePoint from, TimePoint to, F&& f) const {
    const std::size_t cap = ring_.size();
    if (cap == 0)
      return;
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < size_; ++i) {
      const Record& r = ring_[(next_ + cap - size_ + i) % cap];
      if (!(r.at < from) && !(to < r.at))
        f(r);
    }
  }

private:
  mutable std::mutex mutex_;
  std::vector<Record> ring_;
  std::size_t next_ = 0;
  std::size_t size_ = 0;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
