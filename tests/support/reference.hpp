// Helpers shared by the tests and the fuzzers: an independent 128-bit arithmetic reference, a
// way to look at an exception's message, and bytes made printable for failure messages.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <fmt/format.h>
#include <limits>
#include <string>
#include <string_view>

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

// `s` with control bytes, non-ASCII bytes and backslashes as \xNN, cut at `limit` bytes: an input
// quoted in a failure message stays one readable line.
inline std::string printable(std::string_view s, std::size_t limit = 200) {
  std::string out;
  for (char ch : s.substr(0, limit)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '\\')
      out += fmt::format("\\x{:02x}", c);
    else
      out += ch;
  }
  if (s.size() > limit)
    out += fmt::format("... ({} bytes)", s.size());
  return out;
}

} // namespace safeguards_test
