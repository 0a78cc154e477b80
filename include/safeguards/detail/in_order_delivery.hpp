// safeguards: records made under a lock, delivered after it is released, in order.
// SPDX-License-Identifier: MIT
#pragma once

#include <list>
#include <mutex>
#include <utility>

namespace safeguards {
inline namespace v1 {
namespace detail {

// The audit trail's delivery. Records are made under the coordinator's writer lock, which must
// not be held while sinks (user code, which may call back into the coordinator) run. Handing each
// caller its own records to deliver after unlocking lets two callers deliver out of order; here
// records join one queue in the order they were made and a single thread at a time delivers the
// queue from its head, so sinks see records one at a time and in order.
//
// A caller that finds another thread delivering leaves its records to that thread, which goes on
// until the queue is empty; a sink that makes a change on the delivering thread thus sees its
// record after the one it is handling, not in the middle of it.
template <class Record>
class InOrderDelivery {
public:
  InOrderDelivery() = default;
  InOrderDelivery(const InOrderDelivery&) = delete;
  InOrderDelivery& operator=(const InOrderDelivery&) = delete;

  // Appends `batch` (emptied). Callers serialise pushes, so the queue's order is theirs. The
  // nodes were allocated by the caller, so this cannot fail.
  void push(std::list<Record>& batch) noexcept {
    std::lock_guard lock(mutex_);
    queue_.splice(queue_.end(), batch);
  }

  template <class Deliver>
  void deliver_all(Deliver&& deliver) noexcept {
    {
      std::lock_guard lock(mutex_);
      if (delivering_)
        return;
      delivering_ = true;
    }
    for (;;) {
      std::list<Record> next;
      {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) {
          delivering_ = false;
          return;
        }
        next.splice(next.end(), queue_, queue_.begin());
      }
      deliver(next.front());
    }
  }

private:
  std::mutex mutex_; // a leaf: no user code runs under it
  std::list<Record> queue_;
  bool delivering_ = false;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
