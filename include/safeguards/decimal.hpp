// safeguards: exact fixed-point amounts.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <boost/multiprecision/cpp_int.hpp>
#include <compare>
#include <concepts>
#include <cstdint>
#include <fmt/format.h>
#include <functional>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace safeguards {
inline namespace v1 {

/// How `Decimal::parse` treats input with more than six fractional digits.
enum class Rounding {
  reject,   ///< Throw: the default, because silently dropping money is a bug.
  half_even ///< Round to the nearest micro-unit, ties to even (banker's rounding).
};

namespace detail {

enum class ParseStatus { ok, empty, malformed, too_precise, out_of_range };

struct ParseResult {
  std::int64_t raw = 0;
  ParseStatus status = ParseStatus::ok;
};

inline constexpr std::int64_t decimal_scale = 1'000'000;
inline constexpr int decimal_digits = 6;

// Rounds |n / d| half-even and re-applies the sign. Division by zero is the caller's problem.
template <class Int>
constexpr Int div_round_half_even(const Int& n, const Int& d) {
  Int q = n / d;
  Int r = n % d;
  if (r == 0)
    return q;
  Int twice = r < 0 ? Int(-r) * 2 : r * 2;
  Int abs_d = d < 0 ? Int(-d) : d;
  bool negative = (n < 0) != (d < 0);
  if (twice > abs_d || (twice == abs_d && q % 2 != 0))
    q += negative ? -1 : 1;
  return q;
}

// constexpr so that the `_d` literal can reject bad input at compile time.
constexpr ParseResult parse_decimal(std::string_view s, Rounding rounding) noexcept {
  if (s.empty())
    return {0, ParseStatus::empty};
  std::size_t i = 0;
  bool negative = false;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    ++i;
  }
  // Accumulate as a non-negative magnitude in unsigned arithmetic; INT64_MIN is representable
  // because the limit is chosen by sign.
  const std::uint64_t limit =
      negative ? std::uint64_t{1} << 63 : std::uint64_t(std::numeric_limits<std::int64_t>::max());
  std::uint64_t mag = 0;
  bool any_digit = false;
  bool seen_point = false;
  int frac_digits = 0;
  int round_digit = -1; // first dropped digit when rounding
  bool sticky = false;  // any non-zero digit after the first dropped one
  auto push = [&](unsigned digit) {
    if (mag > (limit - digit) / 10)
      return false;
    mag = mag * 10 + digit;
    return true;
  };
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '.') {
      if (seen_point)
        return {0, ParseStatus::malformed};
      seen_point = true;
      continue;
    }
    if (c < '0' || c > '9')
      return {0, ParseStatus::malformed};
    any_digit = true;
    auto digit = static_cast<unsigned>(c - '0');
    if (seen_point && frac_digits == decimal_digits) {
      if (rounding == Rounding::reject) {
        if (digit != 0)
          return {0, ParseStatus::too_precise};
        continue; // trailing zeros lose nothing
      }
      if (round_digit < 0)
        round_digit = static_cast<int>(digit);
      else if (digit != 0)
        sticky = true;
      continue;
    }
    if (!push(digit))
      return {0, ParseStatus::out_of_range};
    if (seen_point)
      ++frac_digits;
  }
  if (!any_digit)
    return {0, ParseStatus::malformed};
  for (; frac_digits < decimal_digits; ++frac_digits)
    if (!push(0))
      return {0, ParseStatus::out_of_range};
  if (round_digit > 5 || (round_digit == 5 && (sticky || mag % 2 != 0))) {
    if (mag == limit)
      return {0, ParseStatus::out_of_range};
    ++mag;
  }
  if (negative)
    return {mag == (std::uint64_t{1} << 63) ? std::numeric_limits<std::int64_t>::min()
                                            : -static_cast<std::int64_t>(mag),
            ParseStatus::ok};
  return {static_cast<std::int64_t>(mag), ParseStatus::ok};
}

[[noreturn]] inline void throw_parse_error(std::string_view input, ParseStatus status) {
  std::string quoted = "\"" + std::string(input) + "\"";
  switch (status) {
  case ParseStatus::empty:
    throw std::invalid_argument("safeguards::Decimal: empty string is not a number");
  case ParseStatus::too_precise:
    throw std::invalid_argument("safeguards::Decimal: " + quoted +
                                " has more than 6 fractional digits (use Rounding::half_even "
                                "to round)");
  case ParseStatus::out_of_range:
    throw std::invalid_argument("safeguards::Decimal: " + quoted +
                                " is out of range (|value| <= 9223372036854.775807)");
  default:
    throw std::invalid_argument("safeguards::Decimal: " + quoted +
                                " is not a decimal number (expected [+-]digits[.digits])");
  }
}

// Not constexpr on purpose: reaching it while evaluating the `_d` literal is a compile error.
inline void literal_is_not_a_valid_decimal() {}

} // namespace detail

/// An exact signed amount with six fractional digits: micro-dollars, or whole tokens and calls.
///
/// Stored as one `std::int64_t` counting millionths, so it fits in a lock-free atomic and
/// compares and adds exactly. Multiplication and division round half-even through a 128-bit
/// intermediate. Every operation that would leave the range throws `std::overflow_error`;
/// nothing wraps. There is deliberately no implicit conversion from `double`: use
/// `Decimal::from_double` when you really mean it.
///
/// **Example**
/// ```
/// using namespace safeguards;
/// Decimal price("0.000015");            // USD per token
/// Decimal cost = price * 1200;           // 0.018
/// fmt::print("{}\n", cost + 12.5_d);     // 12.518
/// ```
class Decimal {
public:
  using rep = std::int64_t;
  /// Number of fractional digits.
  static constexpr int digits = detail::decimal_digits;
  /// Raw units per 1: one raw unit is 1e-6.
  static constexpr rep scale = detail::decimal_scale;

  constexpr Decimal() noexcept = default;

  /// Integers convert implicitly and exactly; values beyond ±9223372036854 throw.
  template <std::integral I>
  requires(!std::same_as<I, bool>) constexpr Decimal(I value)
      : raw_(from_integer(value)) {} // NOLINT(google-explicit-constructor)

  /// Floating point never converts silently; see `from_double`.
  template <std::floating_point F>
  Decimal(F) = delete;

  /// Parses `[+-]digits[.digits]`; throws `std::invalid_argument` naming the input.
  explicit Decimal(std::string_view text) : Decimal(parse(text)) {}
  explicit Decimal(const char* text) : Decimal(std::string_view(text)) {}
  explicit Decimal(const std::string& text) : Decimal(std::string_view(text)) {}

  /// Parses text; with `Rounding::half_even` more than six fractional digits are rounded.
  static Decimal parse(std::string_view text, Rounding rounding = Rounding::reject) {
    auto result = detail::parse_decimal(text, rounding);
    if (result.status != detail::ParseStatus::ok)
      detail::throw_parse_error(text, result.status);
    return from_raw(result.raw);
  }

  /// Converts a `double`, rounding half-even to six digits. NaN, infinities and values out of
  /// range throw. The result is the decimal nearest the binary value: `from_double(0.1)` is 0.1.
  static Decimal from_double(double value) {
    if (!(value == value) || value == std::numeric_limits<double>::infinity() ||
        value == -std::numeric_limits<double>::infinity())
      throw std::invalid_argument("safeguards::Decimal::from_double: " + fmt::format("{}", value) +
                                  " is not finite");
    // fmt rounds the exact binary value to six digits in one step; value * 1e6 would round twice.
    auto text = fmt::format("{:.6f}", value);
    auto result = detail::parse_decimal(text, Rounding::half_even);
    if (result.status != detail::ParseStatus::ok)
      throw std::overflow_error("safeguards::Decimal::from_double: " + fmt::format("{}", value) +
                                " is out of range");
    return from_raw(result.raw);
  }

  /// Wraps a raw count of millionths.
  static constexpr Decimal from_raw(rep raw) noexcept {
    Decimal d;
    d.raw_ = raw;
    return d;
  }
  /// The raw count of millionths.
  constexpr rep raw() const noexcept { return raw_; }

  static constexpr Decimal zero() noexcept { return {}; }
  static constexpr Decimal max() noexcept { return from_raw(std::numeric_limits<rep>::max()); }
  static constexpr Decimal min() noexcept { return from_raw(std::numeric_limits<rep>::min()); }
  /// The smallest positive amount, 0.000001.
  static constexpr Decimal epsilon() noexcept { return from_raw(1); }

  /// Lossy conversion for display and statistics only.
  constexpr double to_double() const noexcept {
    return static_cast<double>(raw_) / static_cast<double>(scale);
  }

  /// Shortest exact text with at least one fractional digit: "1000.0", "0.000015", "-3.5".
  std::string to_string() const {
    std::string out;
    append_to(out, -1);
    return out;
  }

  /// Exact text with `precision` fractional digits (0..), rounded half-even when shorter than 6.
  std::string to_string(int precision) const {
    std::string out;
    append_to(out, precision);
    return out;
  }

  friend constexpr bool operator==(Decimal, Decimal) noexcept = default;
  friend constexpr std::strong_ordering operator<=>(Decimal, Decimal) noexcept = default;

  constexpr Decimal operator+() const noexcept { return *this; }
  constexpr Decimal operator-() const {
    if (raw_ == std::numeric_limits<rep>::min())
      throw std::overflow_error("safeguards::Decimal: negation overflows");
    return from_raw(-raw_);
  }

  friend constexpr Decimal operator+(Decimal a, Decimal b) {
    rep r = 0;
    if (__builtin_add_overflow(a.raw_, b.raw_, &r))
      throw std::overflow_error("safeguards::Decimal: addition overflows");
    return from_raw(r);
  }
  friend constexpr Decimal operator-(Decimal a, Decimal b) {
    rep r = 0;
    if (__builtin_sub_overflow(a.raw_, b.raw_, &r))
      throw std::overflow_error("safeguards::Decimal: subtraction overflows");
    return from_raw(r);
  }
  friend Decimal operator*(Decimal a, Decimal b) {
    wide product = wide(a.raw_) * b.raw_; // |product| < 2^126: cannot overflow 128 bits
    return narrow(detail::div_round_half_even(product, wide(scale)), "multiplication");
  }
  friend Decimal operator/(Decimal a, Decimal b) {
    if (b.raw_ == 0)
      throw std::domain_error("safeguards::Decimal: division by zero");
    wide numerator = wide(a.raw_) * scale; // |numerator| < 2^83
    return narrow(detail::div_round_half_even(numerator, wide(b.raw_)), "division");
  }

  Decimal& operator+=(Decimal other) { return *this = *this + other; }
  Decimal& operator-=(Decimal other) { return *this = *this - other; }
  Decimal& operator*=(Decimal other) { return *this = *this * other; }
  Decimal& operator/=(Decimal other) { return *this = *this / other; }

  /// `a * num / den` with a single rounding (half-even): the building block for exact shares.
  static Decimal mul_div(Decimal a, rep num, rep den) {
    if (den == 0)
      throw std::domain_error("safeguards::Decimal::mul_div: division by zero");
    return narrow(detail::div_round_half_even(wide(a.raw_) * num, wide(den)), "mul_div");
  }

  friend std::ostream& operator<<(std::ostream& os, Decimal d) { return os << d.to_string(); }

private:
  using wide = boost::multiprecision::int128_t;

  template <std::integral I>
  static constexpr rep from_integer(I value) {
    rep r = 0;
    if (__builtin_mul_overflow(value, scale, &r))
      throw std::overflow_error("safeguards::Decimal: integer " + std::to_string(value) +
                                " is out of range");
    return r;
  }

  static Decimal narrow(const wide& value, const char* what) {
    if (value > std::numeric_limits<rep>::max() || value < std::numeric_limits<rep>::min())
      throw std::overflow_error(std::string("safeguards::Decimal: ") + what + " overflows");
    return from_raw(static_cast<rep>(value));
  }

  // precision < 0: shortest form with at least one fractional digit.
  void append_to(std::string& out, int precision) const {
    rep r = raw_;
    if (precision >= 0 && precision < digits) {
      rep unit = 1;
      for (int i = precision; i < digits; ++i)
        unit *= 10;
      r = static_cast<rep>(detail::div_round_half_even(wide(r), wide(unit)) * unit);
    }
    // Work on the unsigned magnitude so that INT64_MIN prints correctly.
    std::uint64_t mag =
        r < 0 ? std::uint64_t(0) - static_cast<std::uint64_t>(r) : static_cast<std::uint64_t>(r);
    if (r < 0)
      out += '-';
    out += std::to_string(mag / static_cast<std::uint64_t>(scale));
    std::string frac = std::to_string(mag % static_cast<std::uint64_t>(scale));
    frac.insert(0, static_cast<std::size_t>(digits) - frac.size(), '0');
    if (precision < 0) {
      while (frac.size() > 1 && frac.back() == '0')
        frac.pop_back();
    } else if (precision <= digits) {
      frac.resize(static_cast<std::size_t>(precision));
    } else {
      frac.append(static_cast<std::size_t>(precision - digits), '0');
    }
    if (!frac.empty()) {
      out += '.';
      out += frac;
    }
  }

  rep raw_ = 0;
};

/// Absolute value; throws `std::overflow_error` for `Decimal::min()`.
constexpr Decimal abs(Decimal d) {
  return d < Decimal() ? -d : d;
}

inline namespace literals {
/// `12.5_d`, `1000_d`: checked at compile time.
consteval Decimal operator""_d(const char* text) {
  std::string_view sv(text);
  auto result = detail::parse_decimal(sv, Rounding::reject);
  if (result.status != detail::ParseStatus::ok)
    detail::literal_is_not_a_valid_decimal();
  return Decimal::from_raw(result.raw);
}
} // namespace literals

} // namespace v1
} // namespace safeguards

template <>
struct std::hash<safeguards::Decimal> {
  std::size_t operator()(safeguards::Decimal d) const noexcept {
    return std::hash<std::int64_t>{}(d.raw());
  }
};

/// `{}` prints the shortest exact form ("1000.0"); also supports fill/align, sign (`+`, `-`,
/// space), `0`-padding, width and `.Nf` precision (rounded half-even).
template <>
struct fmt::formatter<safeguards::Decimal> {
  char fill = ' ';
  char align = '\0'; // '<', '>', '^'; numbers default to right
  char sign = '-';
  bool zero_pad = false;
  int width = 0;
  int precision = -1;

  constexpr auto parse(format_parse_context& ctx) {
    auto it = ctx.begin();
    auto end = ctx.end();
    auto is_align = [](char c) { return c == '<' || c == '>' || c == '^'; };
    if (it != end && it + 1 != end && is_align(it[1]) && *it != '}') {
      fill = *it;
      align = it[1];
      it += 2;
    } else if (it != end && is_align(*it)) {
      align = *it++;
    }
    if (it != end && (*it == '+' || *it == '-' || *it == ' '))
      sign = *it++;
    if (it != end && *it == '0') {
      zero_pad = true;
      ++it;
    }
    while (it != end && *it >= '0' && *it <= '9')
      width = width * 10 + (*it++ - '0');
    if (it != end && *it == '.') {
      ++it;
      if (it == end || *it < '0' || *it > '9')
        throw format_error("safeguards::Decimal: missing precision after '.'");
      precision = 0;
      while (it != end && *it >= '0' && *it <= '9')
        precision = precision * 10 + (*it++ - '0');
    }
    if (it != end && *it == 'f') {
      if (precision < 0)
        precision = 6;
      ++it;
    }
    if (it != end && *it != '}')
      throw format_error("safeguards::Decimal: invalid format specification");
    return it;
  }

  template <class FormatContext>
  auto format(safeguards::Decimal d, FormatContext& ctx) const {
    std::string body = precision < 0 ? d.to_string() : d.to_string(precision);
    std::string prefix;
    if (body.front() == '-') {
      prefix = "-";
      body.erase(0, 1);
    } else if (sign == '+' || sign == ' ') {
      prefix = std::string(1, sign);
    }
    auto size = prefix.size() + body.size();
    auto pad = static_cast<std::size_t>(width) > size ? static_cast<std::size_t>(width) - size : 0;
    auto out = ctx.out();
    if (zero_pad && align == '\0') {
      out = std::copy(prefix.begin(), prefix.end(), out);
      out = std::fill_n(out, pad, '0');
      return std::copy(body.begin(), body.end(), out);
    }
    std::size_t left = align == '<' ? 0 : align == '^' ? pad / 2 : pad;
    out = std::fill_n(out, left, fill);
    out = std::copy(prefix.begin(), prefix.end(), out);
    out = std::copy(body.begin(), body.end(), out);
    return std::fill_n(out, pad - left, fill);
  }
};
