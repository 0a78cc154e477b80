// safeguards: a shared_ptr that many threads read and a few replace.
// SPDX-License-Identifier: MIT
#pragma once

#include <memory>
#include <mutex>
#include <utility>

namespace safeguards {
inline namespace v1 {
namespace detail {

// The `load` / `store` subset of `std::atomic<std::shared_ptr<const T>>`, behind a short leaf
// lock. libstdc++ 12's `atomic<shared_ptr>::load` drops its internal lock bit with a relaxed
// store, so a reader's copy of the raw pointer is not ordered before the next `store`: a data
// race under the C++ memory model (ThreadSanitizer reports it; on weakly ordered CPUs a reader
// can pair a new pointer with an old control block). A mutex costs the same two atomic
// operations a lock bit does and is correct everywhere.
//
// The lock is a leaf: no other lock is taken and no user code runs while it is held. The old
// value is released after unlocking, so destructors of what it held run outside the lock.
template <class T>
class SharedSlot {
public:
  using pointer = std::shared_ptr<const T>;

  SharedSlot() = default;
  explicit SharedSlot(pointer value) noexcept : value_(std::move(value)) {}
  SharedSlot(const SharedSlot&) = delete;
  SharedSlot& operator=(const SharedSlot&) = delete;

  pointer load() const noexcept {
    std::lock_guard lock(mutex_);
    return value_;
  }

  void store(pointer value) noexcept {
    {
      std::lock_guard lock(mutex_);
      value_.swap(value);
    }
    // `value` now holds the previous pointer and is released here, unlocked.
  }

  // Replaces the value and hands the previous one back, so the caller chooses where it is
  // released (outside its own locks, when what it holds is user code).
  pointer exchange(pointer value) noexcept {
    std::lock_guard lock(mutex_);
    value_.swap(value);
    return value;
  }

private:
  mutable std::mutex mutex_;
  pointer value_;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
