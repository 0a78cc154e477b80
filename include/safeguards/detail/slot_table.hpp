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
#include <stdexcept>
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
    for (auto& chunk : chunks_)
      delete[] chunk.load(std::memory_order_relaxed);
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
      chunk = new std::atomic<T*>[base << c]();
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

// A vector whose elements never move: storage comes in chunks of 16, 32, ... up to 4096
// elements, then 4096 at a time, so a small coordinator allocates little, a large one wastes
// at most one chunk, and an element costs its own size and no per-element node (a deque of
// 600-byte agents spends one 64-byte-aligned allocation per agent). Not thread-safe: the
// coordinator's lock guards it; lock-free readers go through a SlotTable of pointers.
template <class T>
class StableVector {
  static constexpr std::size_t first = 16;
  static constexpr std::size_t doublings = 8; // the chunk sizes first << 0 .. first << 8
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
      chunks_.push_back(
          static_cast<T*>(::operator new(chunk_size(c) * sizeof(T), std::align_val_t(alignof(T)))));
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
