// safeguards: asking the kernel to back large arrays with transparent huge pages.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace safeguards {
inline namespace v1 {
namespace detail {

// The size of a transparent huge page on x86-64 (and of the arm64 one with 4 KB base pages).
inline constexpr std::size_t huge_page = std::size_t{2} << 20;

// Asks that every whole, aligned huge page inside [p, p + bytes) be backed by a transparent
// huge page, before anything in it is touched. Creating a million agents touches ≈ 230 MB, and
// one 4 KB page fault per 4 KB (≈ 57,000 faults, several microseconds each in a VM) was the
// largest single cost; a 2 MB page costs one fault. Only arrays of at least one huge page are
// advised, and the callers' arrays reach that size only when they double what is already in use
// (or hold a million agents), so at most one huge page per array is resident beyond what is
// touched, and a small coordinator never has megabytes made resident for a few entries.
// Only advice: where THP is off (or elsewhere than Linux) nothing changes, and the memory stays
// the allocator's, counted and freed as before.
inline void advise_huge_pages([[maybe_unused]] void* p,
                              [[maybe_unused]] std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < huge_page)
    return;
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t first = (start + huge_page - 1) & ~std::uintptr_t{huge_page - 1};
  const std::uintptr_t last = (start + bytes) & ~std::uintptr_t{huge_page - 1};
  if (first < last)
    (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

} // namespace detail
} // namespace v1
} // namespace safeguards
