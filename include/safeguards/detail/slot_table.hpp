// safeguards: an index -> pointer table that readers use without locks.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <safeguards/detail/huge_pages.hpp>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Chunk c holds `base << c` slots, so 48 chunk pointers cover every index we can hand out and
// no chunk ever moves: a reader needs two acquire loads and no lock, while the (externally
// serialised) writer publishes new slots. Slots are never cleared, which is what lets readers
// skip reclamation schemes entirely: ids are never reused.
template <class T>
class SlotTable {
  static constexpr std::uint64_t base = 64;
  static constexpr std::size_t max_chunks = 48;

public:
  SlotTable() = default;
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;
  ~SlotTable() {
    static_assert(std::is_trivially_destructible_v<std::atomic<T*>>);
    for (auto& chunk : chunks_)
      ::operator delete(chunk.load(std::memory_order_relaxed));
  }

  T* find(std::uint64_t index) const noexcept {
    std::size_t c = 0;
    std::uint64_t offset = 0;
    if (!locate(index, c, offset))
      return nullptr;
    auto* chunk = chunks_[c].load(std::memory_order_acquire);
    return chunk ? chunk[offset].load(std::memory_order_acquire) : nullptr;
  }

  // Callers serialise publishes.
  void publish(std::uint64_t index, T* value) {
    std::size_t c = 0;
    std::uint64_t offset = 0;
    if (!locate(index, c, offset))
      throw std::length_error("safeguards: too many ids");
    auto* chunk = chunks_[c].load(std::memory_order_relaxed);
    if (!chunk) {
      // Advised before the zeroing touches it: chunks for ids past 262,144 are 2 MB or more.
      const auto n = static_cast<std::size_t>(base << c);
      void* raw = ::operator new(n * sizeof(std::atomic<T*>));
      advise_huge_pages(raw, n * sizeof(std::atomic<T*>));
      chunk = std::uninitialized_value_construct_n(static_cast<std::atomic<T*>*>(raw), n) - n;
      chunks_[c].store(chunk, std::memory_order_release);
    }
    chunk[offset].store(value, std::memory_order_release);
  }

private:
  static bool locate(std::uint64_t index, std::size_t& chunk, std::uint64_t& offset) noexcept {
    std::uint64_t q = index / base + 1;
    chunk = static_cast<std::size_t>(std::bit_width(q) - 1);
    if (chunk >= max_chunks)
      return false;
    offset = index - base * ((std::uint64_t{1} << chunk) - 1);
    return true;
  }

  std::array<std::atomic<std::atomic<T*>*>, max_chunks> chunks_{};
};

// A vector whose elements never move: storage comes in chunks of 16, 32, ... elements, doubling
// up to about 8 MB (at least 4096 elements), then of that size, so a small coordinator allocates
// little, a large one wastes at most one chunk, and an element costs its own size and no
// per-element node (a deque of 600-byte agents spends one 64-byte-aligned allocation per agent).
// The largest chunks are backed by huge pages where the OS allows it (a million agents in
// 4096-element chunks took ≈ 29,000 page faults). Not thread-safe: the coordinator's lock guards
// it; lock-free readers go through a SlotTable of pointers.
template <class T>
class StableVector {
  static constexpr std::size_t first = 16;
  static constexpr std::size_t largest_bytes = std::size_t{8} << 20;
  static constexpr std::size_t count_doublings() noexcept {
    std::size_t d = 8;
    while ((first << (d + 1)) * sizeof(T) <= largest_bytes)
      ++d;
    return d;
  }
  static constexpr std::size_t doublings = count_doublings(); // chunks first << 0 .. << doublings
  static constexpr std::size_t largest = first << doublings;
  static constexpr std::size_t growing_total = first * ((std::size_t{1} << (doublings + 1)) - 1);

public:
  StableVector() = default;
  StableVector(const StableVector&) = delete;
  StableVector& operator=(const StableVector&) = delete;
  ~StableVector() {
    while (size_ != 0)
      pop_back();
    for (T* chunk : chunks_)
      ::operator delete(
          chunk, std::align_val_t(alignof(T))); // unsized: clang 14 turns sized deallocation off
  }

  std::size_t size() const noexcept { return size_; }

  T& operator[](std::size_t index) noexcept {
    std::size_t c = 0;
    std::size_t offset = 0;
    locate(index, c, offset);
    return chunks_[c][offset];
  }
  const T& operator[](std::size_t index) const noexcept {
    return const_cast<StableVector&>(*this)[index];
  }

  // Strong guarantee: when it throws, nothing changed.
  template <class... Args>
  T& emplace_back(Args&&... args) {
    std::size_t c = 0;
    std::size_t offset = 0;
    locate(size_, c, offset);
    if (c == chunks_.size()) {
      chunks_.reserve(chunks_.size() + 1);
      const std::size_t bytes = chunk_size(c) * sizeof(T);
      chunks_.push_back(static_cast<T*>(::operator new(bytes, std::align_val_t(alignof(T)))));
      // Only the largest chunks: a smaller one may be half empty, and huge pages would make
      // the empty half resident too (a coordinator of 50,000 agents grew by 25 bytes per agent).
      if (c >= doublings)
        advise_huge_pages(chunks_.back(), bytes);
    }
    T* element = ::new (static_cast<void*>(chunks_[c] + offset)) T(std::forward<Args>(args)...);
    ++size_;
    return *element;
  }

  void pop_back() noexcept {
    (*this)[size_ - 1].~T();
    --size_;
  }

  template <class Self, class Element>
  class Iterator {
  public:
    Iterator(Self* v, std::size_t i) noexcept : v_(v), i_(i) {}
    Element& operator*() const noexcept { return (*v_)[i_]; }
    Element* operator->() const noexcept { return &(*v_)[i_]; }
    Iterator& operator++() noexcept {
      ++i_;
      return *this;
    }
    bool operator==(const Iterator& other) const noexcept { return i_ == other.i_; }

  private:
    Self* v_;
    std::size_t i_;
  };
  using iterator = Iterator<StableVector, T>;
  using const_iterator = Iterator<const StableVector, const T>;
  iterator begin() noexcept { return {this, 0}; }
  iterator end() noexcept { return {this, size_}; }
  const_iterator begin() const noexcept { return {this, 0}; }
  const_iterator end() const noexcept { return {this, size_}; }

private:
  static std::size_t chunk_size(std::size_t c) noexcept {
    return c <= doublings ? first << c : largest;
  }
  static void locate(std::size_t index, std::size_t& chunk, std::size_t& offset) noexcept {
    if (index < growing_total) {
      chunk = static_cast<std::size_t>(std::bit_width(index / first + 1) - 1);
      offset = index - first * ((std::size_t{1} << chunk) - 1);
    } else {
      chunk = doublings + 1 + (index - growing_total) / largest;
      offset = (index - growing_total) % largest;
    }
  }

  std::vector<T*> chunks_;
  std::size_t size_ = 0;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
