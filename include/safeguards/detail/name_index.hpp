// safeguards: name -> id for agents, without a second copy of the names.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <safeguards/detail/huge_pages.hpp>
#include <stdexcept>
#include <string_view>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Starts loading the cache line at `p` (a hint: nothing where the compiler has no builtin).
inline void prefetch_line([[maybe_unused]] const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#endif
}

// An open-addressing table of 8-byte entries, {32-bit hash of the name, 32-bit id}, with linear
// probing and at most 3/4 full. The names stay where they already are (in the agents): a lookup
// compares one only when the hash matches. A std::unordered_map<std::string, id> kept a second
// copy of each name in a node of its own plus a bucket (≈ 76 bytes per agent, and creating a
// million agents was dominated by its lookups and rehashing); this costs 8 to 16 bytes and grows
// without reading a name, since the entries keep the hash their position comes from.
//
// Ids are 1 .. 2^32 - 1 (0 marks an empty entry). Not thread-safe: the coordinator's lock
// guards it.
class NameIndex {
public:
  NameIndex() = default;
  NameIndex(const NameIndex&) = delete;
  NameIndex& operator=(const NameIndex&) = delete;

  std::size_t size() const noexcept { return count_; }

  /// What `find` and `insert` position `name` by: a caller computes it once, before taking the
  /// lock, for the duplicate check and the insert.
  static std::uint32_t hash(std::string_view name) noexcept {
    const std::uint64_t h = std::hash<std::string_view>{}(name);
    return static_cast<std::uint32_t>(h ^ (h >> 32));
  }

  /// Starts loading the entry a name of hash `h` is probed from, so that a caller can overlap
  /// the cache miss with other work before it calls `find` or `insert`.
  void prefetch(std::uint32_t h) const noexcept {
    if (capacity_ != 0)
      prefetch_line(&slots_[home(h)]);
  }

  /// The id of `name`, or 0. `name_of(id)` gives the name of an id in the index.
  template <class NameOf>
  std::uint64_t find(std::string_view name, const NameOf& name_of) const noexcept {
    return find(name, hash(name), name_of);
  }

  /// The same, with `h == hash(name)`.
  template <class NameOf>
  std::uint64_t find(std::string_view name, std::uint32_t h, const NameOf& name_of) const noexcept {
    if (count_ == 0)
      return 0;
    for (std::size_t pos = home(h);; pos = (pos + 1) & mask()) {
      const std::uint64_t e = slots_[pos];
      if (e == 0)
        return 0;
      if (hash_of(e) == h && std::string_view(name_of(id_of(e))) == name)
        return id_of(e);
    }
  }

  /// Adds `name` (which must not be there yet) for `id`. Throws `std::length_error` for an id
  /// beyond 2^32 - 1, or `std::bad_alloc`; then nothing changed.
  void insert(std::string_view name, std::uint64_t id) { insert(hash(name), id); }

  /// The same, with `h == hash(name)`.
  void insert(std::uint32_t h, std::uint64_t id) {
    if (id == 0 || id > 0xffff'ffffu)
      throw std::length_error("safeguards: too many agents for the name index");
    if (4 * (count_ + 1) > 3 * capacity_)
      grow();
    place(entry(h, id));
    ++count_;
  }

  /// Removes `name`, which `id` has.
  void erase(std::string_view name, std::uint64_t id) noexcept {
    if (count_ == 0)
      return;
    const std::uint64_t wanted = entry(hash(name), id);
    std::size_t pos = home(hash_of(wanted));
    while (slots_[pos] != wanted) {
      if (slots_[pos] == 0)
        return;
      pos = (pos + 1) & mask();
    }
    // Backward shift: entries after the hole that may live there move up, so that no probe
    // sequence is cut short and no tombstones accumulate.
    std::size_t hole = pos;
    for (std::size_t next = (hole + 1) & mask(); slots_[next] != 0; next = (next + 1) & mask()) {
      const std::size_t h = home(hash_of(slots_[next]));
      // `next` may move to `hole` unless its home lies cyclically in (hole, next].
      const bool stays = hole < next ? (hole < h && h <= next) : (hole < h || h <= next);
      if (!stays) {
        slots_[hole] = slots_[next];
        hole = next;
      }
    }
    slots_[hole] = 0;
    --count_;
  }

private:
  static std::uint64_t entry(std::uint32_t h, std::uint64_t id) noexcept {
    return (std::uint64_t{h} << 32) | id;
  }
  static std::uint32_t hash_of(std::uint64_t e) noexcept {
    return static_cast<std::uint32_t>(e >> 32);
  }
  static std::uint64_t id_of(std::uint64_t e) noexcept { return e & 0xffff'ffffu; }

  std::size_t mask() const noexcept { return capacity_ - 1; }
  // The top bits of the hash: growing spreads each run of entries over twice the room in order.
  std::size_t home(std::uint32_t h) const noexcept {
    return static_cast<std::size_t>((std::uint64_t{h} << 32) >> (64 - bits_));
  }

  void place(std::uint64_t e) noexcept {
    std::size_t pos = home(hash_of(e));
    while (slots_[pos] != 0)
      pos = (pos + 1) & mask();
    slots_[pos] = e;
  }

  void grow() {
    const std::size_t capacity = capacity_ == 0 ? 16 : 2 * capacity_;
    // Not zeroed by the allocation: advised first, so that the zeroing faults huge pages in.
    auto slots = std::unique_ptr<std::uint64_t[]>(new std::uint64_t[capacity]);
    advise_huge_pages(slots.get(), capacity * sizeof(std::uint64_t));
    std::fill_n(slots.get(), capacity, std::uint64_t{0}); // all empty
    auto old = std::move(slots_);
    const std::size_t old_capacity = capacity_;
    slots_ = std::move(slots);
    capacity_ = capacity;
    bits_ = static_cast<unsigned>(std::bit_width(capacity) - 1);
    for (std::size_t i = 0; i < old_capacity; ++i)
      if (old[i] != 0)
        place(old[i]);
  }

  std::unique_ptr<std::uint64_t[]> slots_;
  std::size_t capacity_ = 0; // a power of two, or 0
  unsigned bits_ = 0;        // log2(capacity_)
  std::size_t count_ = 0;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
