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
#include <safeguards/errors.hpp>
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

// Character types are integers to the language but never amounts: `Decimal d = 'x';` is a bug.
template <class T>
concept character_type = std::same_as<T, char> || std::same_as<T, wchar_t> ||
    std::same_as<T, char8_t> || std::same_as<T, char16_t> || std::same_as<T, char32_t>;

// constexpr so that the `_d` literal can reject bad input at compile time. The grammar is strict,
// `[+-]digits[.digits]`: "1." and ".5" are refused like any other text a human may have cut
// short. `literal` skips the C++ digit separator, which only a `_d` literal can contain (the
// lexer has already checked where it stands).
constexpr ParseResult parse_decimal(std::string_view s, Rounding rounding,
                                    bool literal = false) noexcept {
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
  int int_digits = 0;
  int all_frac_digits = 0; // including those beyond the sixth
  bool seen_point = false;
  int frac_digits = 0;  // kept in `mag`
  int round_digit = -1; // first dropped digit when rounding
  bool sticky = false;  // any non-zero digit after the first dropped one
  // Scanning goes on after a range or precision problem so that garbage is always reported as
  // garbage, whatever came before it.
  ParseStatus problem = ParseStatus::ok;
  auto push = [&](unsigned digit) {
    if (mag > (limit - digit) / 10)
      return false;
    mag = mag * 10 + digit;
    return true;
  };
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (literal && c == '\'')
      continue;
    if (c == '.') {
      if (seen_point || int_digits == 0)
        return {0, ParseStatus::malformed};
      seen_point = true;
      continue;
    }
    if (c < '0' || c > '9')
      return {0, ParseStatus::malformed};
    auto digit = static_cast<unsigned>(c - '0');
    if (!seen_point) {
      ++int_digits;
    } else {
      ++all_frac_digits;
    }
    if (problem != ParseStatus::ok)
      continue;
    if (seen_point && frac_digits == decimal_digits) {
      if (rounding == Rounding::reject) {
        if (digit != 0) // trailing zeros lose nothing
          problem = ParseStatus::too_precise;
      } else if (round_digit < 0) {
        round_digit = static_cast<int>(digit);
      } else if (digit != 0) {
        sticky = true;
      }
      continue;
    }
    if (!push(digit))
      problem = ParseStatus::out_of_range;
    if (seen_point)
      ++frac_digits;
  }
  if (int_digits == 0 || (seen_point && all_frac_digits == 0))
    return {0, ParseStatus::malformed};
  if (problem != ParseStatus::ok)
    return {0, problem};
  for (; frac_digits < decimal_digits; ++frac_digits)
    if (!push(0))
      return {0, ParseStatus::out_of_range};
  // Half-even on the magnitude is half-even on the value: the rule is symmetric around zero.
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
  // The message names the input so that a bad line in a budget file can be found, but a
  // megabyte of garbage does not belong in a log line.
  constexpr std::size_t shown = 100;
  // Control bytes are escaped: a NUL would end what() early, and a newline would forge a log line.
  std::string quoted = "\"";
  for (char c : input.substr(0, shown)) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f)
      quoted += fmt::format("\\x{:02x}", byte);
    else
      quoted += c;
  }
  quoted += '"';
  if (input.size() > shown)
    quoted += "... (" + std::to_string(input.size()) + " bytes)";
  switch (status) {
  case ParseStatus::empty:
    throw MalformedAmount("safeguards::Decimal: " + quoted + " is empty, not a number");
  case ParseStatus::too_precise:
    throw MalformedAmount("safeguards::Decimal: " + quoted +
                          " has more than 6 fractional digits (use Rounding::half_even "
                          "to round)");
  case ParseStatus::out_of_range:
    throw MalformedAmount("safeguards::Decimal: " + quoted +
                          " is out of range (|value| <= 9223372036854.775807)");
  default:
    throw MalformedAmount("safeguards::Decimal: " + quoted +
                          " is not a decimal number (expected [+-]digits[.digits])");
  }
}

// Not constexpr on purpose: reaching one of these while evaluating a `_d` literal makes the
// program ill-formed, and the compiler's diagnostic names the function, hence the reason.
inline void decimal_literal_is_malformed() {}
inline void decimal_literal_has_more_than_6_fractional_digits() {}
inline void decimal_literal_is_out_of_range() {}
inline void decimal_literal_with_a_leading_zero_is_octal_in_cpp() {}

// C++ reads an integer literal with a leading zero (`010`, `0'7`) as octal; a floating literal
// (`010.5`) is decimal whatever its leading zeros.
constexpr bool is_octal_literal(std::string_view s) noexcept {
  if (s.size() < 2 || s[0] != '0' || s.find('.') != std::string_view::npos)
    return false;
  return s.find_first_of("0123456789", 1) != std::string_view::npos;
}

} // namespace detail

/// An exact signed amount with six fractional digits: micro-dollars, or whole tokens and calls.
///
/// Stored as one `std::int64_t` counting millionths, so it fits in a lock-free atomic and
/// compares and adds exactly. Multiplication and division round half-even through a 128-bit
/// intermediate. Every operation that would leave the range throws `AmountOverflow` (a
/// `std::overflow_error`);
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

  /// Integers convert implicitly and exactly; values beyond ±9223372036854 throw
  /// `AmountOverflow`. `bool` and character types are not amounts and do not convert.
  template <std::integral I>
  requires(!std::same_as<I, bool> && !detail::character_type<I>) constexpr Decimal(I value)
      : raw_(from_integer(value)) {} // NOLINT(google-explicit-constructor)

  /// Floating point never converts silently; see `from_double`.
  template <std::floating_point F>
  Decimal(F) = delete;

  /// Parses `[+-]digits[.digits]`; throws `MalformedAmount` (a
  /// `std::invalid_argument` and a `safeguards::Error`) naming the input. Usable in
  /// constant expressions, where bad text is a compile error.
  constexpr explicit Decimal(std::string_view text) : Decimal(parse(text)) {}
  constexpr explicit Decimal(const char* text) : Decimal(checked_view(text)) {}
  constexpr explicit Decimal(const std::string& text) : Decimal(std::string_view(text)) {}

  /// Parses text; with `Rounding::half_even` more than six fractional digits are rounded.
  static constexpr Decimal parse(std::string_view text, Rounding rounding = Rounding::reject) {
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
      throw InvalidArgument("safeguards::Decimal::from_double: " + fmt::format("{}", value) +
                            " is not finite");
    // fmt rounds the exact binary value to six digits in one step; value * 1e6 would round twice.
    auto text = fmt::format("{:.6f}", value);
    auto result = detail::parse_decimal(text, Rounding::half_even);
    if (result.status != detail::ParseStatus::ok)
      throw AmountOverflow("safeguards::Decimal::from_double: " + fmt::format("{}", value) +
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
  // The 0 that `<` compares the result with is the language's, not ours: a false positive of
  // clang-tidy 14 (llvm-project#53961).
  // NOLINTNEXTLINE(modernize-use-nullptr)
  friend constexpr std::strong_ordering operator<=>(Decimal, Decimal) noexcept = default;

  constexpr Decimal operator+() const noexcept { return *this; }
  constexpr Decimal operator-() const {
    if (raw_ == std::numeric_limits<rep>::min())
      throw AmountOverflow("safeguards::Decimal: negation overflows");
    return from_raw(-raw_);
  }

  friend constexpr Decimal operator+(Decimal a, Decimal b) {
    rep r = 0;
    if (__builtin_add_overflow(a.raw_, b.raw_, &r))
      throw AmountOverflow("safeguards::Decimal: addition overflows");
    return from_raw(r);
  }
  friend constexpr Decimal operator-(Decimal a, Decimal b) {
    rep r = 0;
    if (__builtin_sub_overflow(a.raw_, b.raw_, &r))
      throw AmountOverflow("safeguards::Decimal: subtraction overflows");
    return from_raw(r);
  }
  friend Decimal operator*(Decimal a, Decimal b) {
    wide product = wide(a.raw_) * b.raw_; // |product| < 2^126: cannot overflow 128 bits
    return narrow(detail::div_round_half_even(product, wide(scale)), "multiplication");
  }
  friend Decimal operator/(Decimal a, Decimal b) {
    if (b.raw_ == 0)
      throw DivisionByZero("safeguards::Decimal: division by zero");
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
      throw DivisionByZero("safeguards::Decimal::mul_div: division by zero");
    return narrow(detail::div_round_half_even(wide(a.raw_) * num, wide(den)), "mul_div");
  }

  friend std::ostream& operator<<(std::ostream& os, Decimal d) { return os << d.to_string(); }

private:
  using wide = boost::multiprecision::int128_t;

  // A null pointer would be undefined behaviour in std::string_view; make it a parse error.
  static constexpr std::string_view checked_view(const char* text) {
    if (text == nullptr)
      throw MalformedAmount("safeguards::Decimal: null pointer is not a number");
    return text;
  }

  template <std::integral I>
  static constexpr rep from_integer(I value) {
    rep r = 0;
    if (__builtin_mul_overflow(value, scale, &r))
      throw AmountOverflow("safeguards::Decimal: integer " + std::to_string(value) +
                           " is out of range");
    return r;
  }

  static Decimal narrow(const wide& value, const char* what) {
    if (value > std::numeric_limits<rep>::max() || value < std::numeric_limits<rep>::min())
      throw AmountOverflow(std::string("safeguards::Decimal: ") + what + " overflows");
    return from_raw(static_cast<rep>(value));
  }

  // precision < 0: shortest form with at least one fractional digit.
  void append_to(std::string& out, int precision) const {
    // Work on the unsigned magnitude: INT64_MIN has no positive counterpart, and rounding max()
    // to fewer digits leaves the int64 range (9223372036854.775807 -> 9223372036854.78).
    std::uint64_t mag = raw_ < 0 ? std::uint64_t(0) - static_cast<std::uint64_t>(raw_)
                                 : static_cast<std::uint64_t>(raw_);
    if (precision >= 0 && precision < digits) {
      std::uint64_t unit = 1;
      for (int i = precision; i < digits; ++i)
        unit *= 10;
      std::uint64_t q = mag / unit;
      std::uint64_t r = mag % unit;
      // Half-even on the magnitude is half-even on the value: the rule is symmetric.
      if (r * 2 > unit || (r * 2 == unit && q % 2 != 0))
        ++q;
      mag = q * unit; // at most 9223372036855000000, below 2^64
    }
    // A value rounded to zero prints as "0.00", not "-0.00": fixed point has no negative zero.
    if (raw_ < 0 && mag != 0)
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

/// Absolute value; throws `AmountOverflow` for `Decimal::min()`.
constexpr Decimal abs(Decimal d) {
  return d < Decimal() ? -d : d;
}

inline namespace literals {
/// `12.5_d`, `1000_d`: checked at compile time.
/// Digit separators are allowed (`1'000'000.0_d`); more than six fractional digits, values out of
/// range and integer literals in other bases (`0x10_d`, `0b1_d`, and octal `010_d`, which C++
/// reads as 8) do not compile.
consteval Decimal operator""_d(const char* text) {
  if (detail::is_octal_literal(text))
    detail::decimal_literal_with_a_leading_zero_is_octal_in_cpp();
  auto result = detail::parse_decimal(text, Rounding::reject, /*literal=*/true);
  switch (result.status) {
  case detail::ParseStatus::ok:
    break;
  case detail::ParseStatus::too_precise:
    detail::decimal_literal_has_more_than_6_fractional_digits();
    break;
  case detail::ParseStatus::out_of_range:
    detail::decimal_literal_is_out_of_range();
    break;
  default:
    detail::decimal_literal_is_malformed();
    break;
  }
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

/// `{}` prints the shortest exact form ("1000.0"). The spec follows fmt's for numbers:
/// `[[fill]align][sign][0][width][.precision][f]`, where fill is one code point (UTF-8), align is
/// `<`, `>` or `^` (right by default), sign is `+`, `-` or space, `0` pads with zeros after the
/// sign (ignored when an align is given), and a precision rounds half-even or pads with zeros;
/// `f` alone means six digits. Anything else throws `fmt::format_error` (at compile time for
/// checked format strings).
template <>
struct fmt::formatter<safeguards::Decimal> {
  char fill[4] = {' ', '\0', '\0', '\0'};
  int fill_size = 1;
  char align = '\0'; // '<', '>', '^'; numbers default to right
  char sign = '-';
  bool zero_pad = false;
  int width = 0;
  int precision = -1;

  constexpr auto parse(format_parse_context& ctx) {
    auto it = ctx.begin();
    auto end = ctx.end();
    auto is_align = [](char c) { return c == '<' || c == '>' || c == '^'; };
    // Without a bound, `{:99999999999}` would overflow int: undefined behaviour, not an error.
    auto parse_number = [&](int& value) {
      value = 0;
      while (it != end && *it >= '0' && *it <= '9') {
        if (value > (std::numeric_limits<int>::max() - 9) / 10)
          throw format_error("safeguards::Decimal: number is too big in format specification");
        value = value * 10 + (*it++ - '0');
      }
    };
    if (it != end && *it != '{' && *it != '}') {
      auto lead = static_cast<unsigned char>(*it);
      int len = lead < 0x80           ? 1
                : (lead >> 5) == 0x6  ? 2
                : (lead >> 4) == 0xE  ? 3
                : (lead >> 3) == 0x1E ? 4
                                      : 1;
      if (end - it > len && is_align(it[len])) {
        for (int k = 0; k < len; ++k)
          fill[k] = it[k];
        fill_size = len;
        it += len;
        align = *it++;
      }
    }
    if (align == '\0' && it != end && is_align(*it))
      align = *it++;
    if (it != end && (*it == '+' || *it == '-' || *it == ' '))
      sign = *it++;
    if (it != end && *it == '0') {
      zero_pad = true;
      ++it;
    }
    parse_number(width);
    if (it != end && *it == '.') {
      ++it;
      if (it == end || *it < '0' || *it > '9')
        throw format_error("safeguards::Decimal: missing precision after '.'");
      parse_number(precision);
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
    auto fill_n = [&](std::size_t n) {
      for (; n > 0; --n)
        out = std::copy(fill, fill + fill_size, out);
    };
    std::size_t left = align == '<' ? 0 : align == '^' ? pad / 2 : pad;
    fill_n(left);
    out = std::copy(prefix.begin(), prefix.end(), out);
    out = std::copy(body.begin(), body.end(), out);
    fill_n(pad - left);
    return out;
  }
};
