// safeguards: an index -> pointer table that readers use without locks.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>

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

} // namespace detail
} // namespace v1
} // namespace safeguards
