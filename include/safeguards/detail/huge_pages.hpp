// safeguards: asking the kernel to back large arrays with transparent huge pages.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace safeguards {
inline namespace v1 {
namespace detail {

// The size of a transparent huge page on x86-64 (and of the arm64 one with 4 KB base pages).
inline constexpr std::size_t huge_page = std::size_t{2} << 20;

// Asks that [p, p + bytes) be backed by transparent huge pages, before anything in it is
// touched. Creating a million agents touches ≈ 230 MB, and one fault per 4 KB page (≈ 57,000
// faults, several microseconds each in a VM) was the largest single cost; a 2 MB page costs one
// fault. The whole range (to 4 KB pages) is advised, not only the aligned 2 MB pages inside it:
// the kernel merges it with an advised neighbour (the previous chunk, mostly, allocated just
// before it), so that the 2 MB pages straddling the two are huge too. Only arrays of at least
// one huge page are advised, and the callers' arrays reach that size only when they double what
// is already in use (or hold a million agents), so at most one huge page per array is resident
// beyond what is touched, and a small coordinator never has megabytes made resident for a few
// entries. Only advice: where THP is off (or elsewhere than Linux) nothing changes, and the
// memory stays the allocator's, counted and freed as before.
inline void advise_huge_pages([[maybe_unused]] void* p,
                              [[maybe_unused]] std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < huge_page)
    return;
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t first = (start + page - 1) & ~(page - 1);
  const std::uintptr_t last = (start + bytes) & ~(page - 1);
  if (first < last)
    (void)::madvise(static_cast<char*>(p) + (first - start), last - first, MADV_HUGEPAGE);
#endif
}

// std::allocator, but advising what it hands out (see above): for a vector that grows large,
// a pool's list of a million agents.
template <class T>
struct HugePageAllocator {
  using value_type = T;

  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    if (n > std::size_t(-1) / sizeof(T))
      throw std::bad_array_new_length();
    void* p = ::operator new(n * sizeof(T));
    advise_huge_pages(p, n * sizeof(T));
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p); }

  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

} // namespace detail
} // namespace v1
} // namespace safeguards
