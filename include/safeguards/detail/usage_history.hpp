// safeguards: the ring of an agent's most recent consumes and commits.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <safeguards/monitor.hpp>
#include <thread>
#include <type_traits>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// One usage record.
template <class Amount, class TimePoint>
struct UsageRecord {
  Amount amount{};
  UsageKind kind = UsageKind::consume;
  TimePoint at{};
};

// Keeps the last `capacity` usage records of one agent, for `usage_history` and for the usage
// aggregates allocation strategies read. Several threads may record for one agent at once, so an
// append is not single-producer; it takes no lock either:
//
// - a ticket from one counter (`fetch_add`) orders the records and picks the slot;
// - each slot carries a version, odd while a writer fills it and `2 * (ticket + 1)` once record
//   `ticket` is complete. A writer claims its slot with a compare-and-swap from the previous
//   lap's complete version, so two writers a lap apart never fill one slot together; one that
//   finds a newer record already there drops its own (it has left the window anyway);
// - a reader checks the version before and after copying (a seqlock) and skips a slot whose
//   version is not the complete one of the ticket it wants: never a torn entry, and a record
//   still being written (its ticket taken, its copy not finished) is treated as not yet made.
//
// Records are copied as words of relaxed atomics, so the amount type must be trivially
// copyable (`Decimal`, integers and `double` are); `LockedUsageHistory` below serves the others. An
// append costs two uncontended locked operations (the ticket and the claim), as the lock it
// replaces did, but no thread ever waits for another except a writer that catches up a whole lap
// with one still writing the same slot.
template <class Amount, class TimePoint>
class AtomicUsageHistory {
public:
  using Record = UsageRecord<Amount, TimePoint>;
  static_assert(std::is_trivially_copyable_v<Amount>,
                "usage history copies records as words: the amount type must be trivially "
                "copyable");

  AtomicUsageHistory() = default;
  explicit AtomicUsageHistory(std::size_t capacity)
      : slots_(capacity != 0 ? std::make_unique<Slot[]>(capacity) : nullptr), capacity_(capacity),
        mask_(capacity != 0 && (capacity & (capacity - 1)) == 0 ? capacity - 1 : 0) {}
  AtomicUsageHistory(const AtomicUsageHistory&) = delete;
  AtomicUsageHistory& operator=(const AtomicUsageHistory&) = delete;

  std::size_t capacity() const noexcept { return capacity_; }

  void record(const Amount& amount, UsageKind kind, TimePoint at) noexcept {
    if (capacity_ == 0)
      return;
    const std::uint64_t ticket = next_.fetch_add(1, std::memory_order_relaxed);
    Slot& slot = slots_[index(ticket)];
    const std::uint64_t complete = 2 * (ticket + 1);
    std::uint64_t version = slot.version.load(std::memory_order_relaxed);
    for (;;) {
      if (version & 1) { // a writer of an earlier lap is still copying: it is nearly done
        std::this_thread::yield();
        version = slot.version.load(std::memory_order_relaxed);
        continue;
      }
      if (version >= complete) // a newer record is already there: ours is out of the window
        return;
      if (slot.version.compare_exchange_weak(version, complete - 1, std::memory_order_relaxed))
        break;
    }
    // Each word is stored with release ordering, so the odd version comes before it: a reader
    // that sees any new word then sees the version move (a seqlock without fences, which
    // ThreadSanitizer cannot check). On x86 these are plain stores.
    // Field by field, each in whole words: a record built on the stack and read back as words
    // stalled on store-to-load forwarding (a byte store under a word load).
    std::uint64_t amount_words[amount_word_count]{};
    std::memcpy(amount_words, &amount, sizeof amount);
    for (std::size_t i = 0; i < amount_word_count; ++i)
      slot.amount[i].store(amount_words[i], std::memory_order_release);
    slot.kind.store(kind, std::memory_order_release);
    slot.at.store(at.time_since_epoch().count(), std::memory_order_release);
    slot.version.store(complete, std::memory_order_release);
  }

  // Calls `f(record)` for each complete record with `from <= at <= to`, oldest first. No lock is
  // held; `f` may do anything.
  template <class F>
  void for_each(TimePoint from, TimePoint to, F&& f) const {
    if (capacity_ == 0)
      return;
    const std::uint64_t end = next_.load(std::memory_order_acquire);
    const std::uint64_t begin = end > capacity_ ? end - capacity_ : 0;
    for (std::uint64_t ticket = begin; ticket < end; ++ticket) {
      Record r;
      if (read(ticket, r) && !(r.at < from) && !(to < r.at))
        f(r);
    }
  }

private:
  static constexpr std::size_t amount_word_count = (sizeof(Amount) + 7) / 8;
  using Rep = typename TimePoint::rep;
  struct Slot {
    std::atomic<std::uint64_t> version{0};
    std::atomic<std::uint64_t> amount[amount_word_count]{};
    std::atomic<UsageKind> kind{UsageKind::consume};
    std::atomic<Rep> at{};
  };

  // A division by the capacity costs more than the rest of an append; capacities that are a
  // power of two (64, the usual one) take a mask instead.
  std::size_t index(std::uint64_t ticket) const noexcept {
    return mask_ != 0 ? static_cast<std::size_t>(ticket & mask_)
                      : static_cast<std::size_t>(ticket % capacity_);
  }

  bool read(std::uint64_t ticket, Record& out) const noexcept {
    const Slot& slot = slots_[index(ticket)];
    const std::uint64_t complete = 2 * (ticket + 1);
    if (slot.version.load(std::memory_order_acquire) != complete)
      return false; // not written yet, or already replaced by a newer record
    std::uint64_t amount_words[amount_word_count];
    for (std::size_t i = 0; i < amount_word_count; ++i)
      amount_words[i] = slot.amount[i].load(std::memory_order_acquire);
    const UsageKind kind = slot.kind.load(std::memory_order_acquire);
    const Rep at = slot.at.load(std::memory_order_acquire);
    if (slot.version.load(std::memory_order_relaxed) != complete)
      return false; // overwritten while copying: torn, and out of the window by now
    std::memcpy(&out.amount, amount_words, sizeof out.amount);
    out.kind = kind;
    out.at = TimePoint(typename TimePoint::duration(at));
    return true;
  }

  std::unique_ptr<Slot[]> slots_;
  std::size_t capacity_ = 0;
  std::uint64_t mask_ = 0;             // capacity - 1 when it is a power of two above 1, else 0
  std::atomic<std::uint64_t> next_{0}; // tickets handed out
};

// The same ring behind a leaf lock, for amounts that cannot be copied as words (a
// multiprecision type owns memory): nothing else is taken and no user code runs while it is held.
template <class Amount, class TimePoint>
class LockedUsageHistory {
public:
  using Record = UsageRecord<Amount, TimePoint>;

  LockedUsageHistory() = default;
  explicit LockedUsageHistory(std::size_t capacity) : ring_(capacity) {}

  std::size_t capacity() const noexcept { return ring_.size(); }

  void record(const Amount& amount, UsageKind kind, TimePoint at) noexcept {
    const std::size_t cap = ring_.size();
    if (cap == 0)
      return;
    std::lock_guard lock(mutex_);
    try {
      ring_[next_] = {amount, kind, at};
    } catch (...) { // an amount that allocates: the record is lost, the balance is not
      return;
    }
    next_ = (next_ + 1) % cap;
    size_ = size_ + 1 < cap ? size_ + 1 : cap;
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

template <class Amount, class TimePoint>
using UsageHistory =
    std::conditional_t<std::is_trivially_copyable_v<UsageRecord<Amount, TimePoint>>,
                       AtomicUsageHistory<Amount, TimePoint>,
                       LockedUsageHistory<Amount, TimePoint>>;

} // namespace detail
} // namespace v1
} // namespace safeguards
