// Helpers shared by the tests and the fuzzers: an independent 128-bit arithmetic reference and
// a way to look at an exception's message.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <exception>
#include <limits>
#include <string>

namespace safeguards_test {

// The reference is the compiler's own 128-bit integer, deliberately not the Boost type that
// Decimal uses, so that a bug shared by both cannot hide.
__extension__ typedef __int128 i128;

inline constexpr i128 raw_max = std::numeric_limits<std::int64_t>::max();
inline constexpr i128 raw_min = std::numeric_limits<std::int64_t>::min();

inline bool in_raw_range(i128 v) {
  return v >= raw_min && v <= raw_max;
}

// n / d rounded half-even, written independently of the library: floor first, then look at the
// remainder, which is in [0, d). (The library truncates first.)
inline i128 div_half_even(i128 n, i128 d) {
  if (d < 0) {
    n = -n;
    d = -d;
  }
  i128 q = n / d;
  i128 r = n % d;
  if (r < 0) {
    q -= 1;
    r += d;
  }
  if (2 * r > d || (2 * r == d && (q & 1) != 0))
    q += 1;
  return q;
}

// The message of the exception `f` throws, or "<no exception>".
template <class F>
std::string what_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

} // namespace safeguards_test
