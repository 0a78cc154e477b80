// safeguards: a list of callbacks that may be added and removed while it is being called.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <safeguards/detail/shared_slot.hpp>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// The violation and audit sinks of a coordinator. Delivery reads the current list without
// blocking writers; adding or removing copies the list (sinks are few and change rarely).
// Entries are held by pointer, so changing the list never copies the user's callback, and
// `active` is cleared first on removal, so a removal that cannot finish (no memory for the new
// list) still stops the sink. Old lists are released after the write lock, because the last
// reference to a user's callback may be among them and its destructor may do anything.
template <class Fn>
class Subscribers {
public:
  struct Entry {
    explicit Entry(Fn f) : fn(std::move(f)) {}
    Fn fn;
    mutable std::atomic<bool> active{true};
  };

  // The caller keeps the returned pointer weak (in a handle): the list owns the entry.
  std::weak_ptr<const Entry> add(Fn fn) {
    auto entry = std::make_shared<const Entry>(std::move(fn));
    std::shared_ptr<const List> replaced; // released after unlocking
    std::lock_guard lock(write_mutex_);
    auto current = list_.load();
    auto list = current ? std::make_shared<List>(*current) : std::make_shared<List>();
    list->push_back(entry);
    replaced = list_.exchange(std::move(list));
    count_.fetch_add(1);
    return entry;
  }

  void remove(const std::weak_ptr<const Entry>& weak) noexcept {
    auto entry = weak.lock();
    if (!entry)
      return;
    if (entry->active.exchange(false, std::memory_order_acq_rel))
      count_.fetch_sub(1); // once, though a removal that could not finish may be retried
    std::shared_ptr<const List> replaced; // released after unlocking
    try {
      std::lock_guard lock(write_mutex_);
      auto current = list_.load();
      if (!current)
        return;
      auto remaining = std::make_shared<List>(*current);
      std::erase(*remaining, entry);
      replaced = list_.exchange(std::move(remaining));
    } catch (...) { // inactive already: it never runs again
    }
  }

  // Calls every active sink with `record`; `on_failure()` counts each one that throws.
  template <class Record, class OnFailure>
  void deliver(const Record& record, OnFailure&& on_failure) const noexcept {
    const auto list = list_.load();
    if (!list)
      return;
    for (const auto& entry : *list) {
      if (!entry->active.load(std::memory_order_acquire))
        continue;
      try {
        entry->fn(record);
      } catch (...) {
        on_failure();
      }
    }
  }

  // Drops every sink (the coordinator's destructor); their destructors run here, unlocked.
  void clear() noexcept { list_.store(nullptr); }

  // True when no sink is active: a record made now would reach nobody, so the coordinator need
  // not make it. A sink whose `add` returned before this call is counted (one atomic, so every
  // later call sees it too, until it is removed).
  bool empty() const noexcept { return count_.load() == 0; }

private:
  using List = std::vector<std::shared_ptr<const Entry>>;
  std::mutex write_mutex_;
  SharedSlot<List> list_;
  std::atomic<std::size_t> count_{0}; // active entries
};

} // namespace detail
} // namespace v1
} // namespace safeguards
