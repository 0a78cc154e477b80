// safeguards: the BudgetAmount concept and the traits that adapt a number type to it.
// SPDX-License-Identifier: MIT
#pragma once

#include <boost/multiprecision/cpp_dec_float.hpp>
#include <boost/multiprecision/cpp_int.hpp>
#include <charconv>
#include <concepts>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <safeguards/decimal.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace safeguards {
inline namespace v1 {

/// 50 significant decimal digits, no expression templates: for users who need more range than
/// `Decimal` and accept slower arithmetic. Division can still be inexact (1/3).
using BigDecimal = boost::multiprecision::number<boost::multiprecision::cpp_dec_float<50>,
                                                 boost::multiprecision::et_off>;

/// Adapts a number type to `BudgetAmount`. Specialise it to bring your own amount type; see
/// the four specialisations below for what each member means.
template <class T>
struct amount_traits;

/// A type the budget templates can count money, tokens or calls in.
///
/// Which one to pick:
/// - `Decimal` (default): exact money with micro-unit resolution, lock-free in the ledger.
/// - `std::int64_t`: pure token or call counts, lock-free, nothing fractional.
/// - `BigDecimal`: 50 significant digits for very large or very fine amounts; uses locks.
/// - `double`: interoperability only. It is **inexact**: sums drift and splits may not add
///   back to the total. Never use it for money.
///
/// Amounts of two different types never mix: every template takes exactly one.
template <class T>
concept BudgetAmount = std::regular<T> && std::totally_ordered<T> &&
    requires(const T& a, const T& b, std::int64_t n, std::string_view text) {
  { amount_traits<T>::exact } -> std::convertible_to<bool>;
  { amount_traits<T>::from_integer(n) } -> std::same_as<T>;
  { amount_traits<T>::parse(text) } -> std::same_as<T>;
  { amount_traits<T>::to_string(a) } -> std::same_as<std::string>;
  { amount_traits<T>::mul_div(a, n, n) } -> std::same_as<T>;
  { amount_traits<T>::add(a, b) } -> std::same_as<T>;
  { amount_traits<T>::sub(a, b) } -> std::same_as<T>;
  { amount_traits<T>::to_double(a) } -> std::same_as<double>;
};

namespace detail {

[[noreturn]] inline void throw_amount_parse_error(std::string_view type, std::string_view text) {
  throw std::invalid_argument(
      fmt::format("safeguards: \"{}\" is not a valid {} amount", text, type));
}

} // namespace detail

/// `Decimal`: exact, six fractional digits, one `int64_t` wide (so the ledger is lock-free).
template <>
struct amount_traits<Decimal> {
  /// Sums and integer shares are exact, so splits can be made to add up exactly.
  static constexpr bool exact = true;
  /// The smallest step; largest-remainder splits hand out leftovers in these.
  static constexpr Decimal quantum() noexcept { return Decimal::epsilon(); }

  static constexpr Decimal from_integer(std::int64_t n) { return Decimal(n); }
  static Decimal parse(std::string_view text) { return Decimal::parse(text); }
  static std::string to_string(Decimal a) { return a.to_string(); }
  /// `a * num / den`, rounded once, half-even.
  static Decimal mul_div(Decimal a, std::int64_t num, std::int64_t den) {
    return Decimal::mul_div(a, num, den);
  }
  static constexpr Decimal add(Decimal a, Decimal b) { return a + b; }
  static constexpr Decimal sub(Decimal a, Decimal b) { return a - b; }
  static constexpr double to_double(Decimal a) noexcept { return a.to_double(); }

  /// The lock-free representation: the ledger stores this in one `std::atomic<int64_t>`.
  static constexpr std::int64_t to_raw(Decimal a) noexcept { return a.raw(); }
  static constexpr Decimal from_raw(std::int64_t raw) noexcept { return Decimal::from_raw(raw); }
};

/// `std::int64_t`: whole tokens or calls. Overflow throws instead of being undefined.
template <>
struct amount_traits<std::int64_t> {
  static constexpr bool exact = true;
  static constexpr std::int64_t quantum() noexcept { return 1; }

  static constexpr std::int64_t from_integer(std::int64_t n) noexcept { return n; }
  static std::int64_t parse(std::string_view text) {
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || ptr != text.data() + text.size())
      detail::throw_amount_parse_error("int64", text);
    return value;
  }
  static std::string to_string(std::int64_t a) { return std::to_string(a); }
  static std::int64_t mul_div(std::int64_t a, std::int64_t num, std::int64_t den) {
    using wide = boost::multiprecision::int128_t;
    if (den == 0)
      throw std::domain_error("safeguards: mul_div by zero");
    wide q = detail::div_round_half_even(wide(a) * num, wide(den));
    if (q > std::numeric_limits<std::int64_t>::max() ||
        q < std::numeric_limits<std::int64_t>::min())
      throw std::overflow_error("safeguards: int64 amount overflows in mul_div");
    return static_cast<std::int64_t>(q);
  }
  static constexpr std::int64_t add(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r))
      throw std::overflow_error("safeguards: int64 amount addition overflows");
    return r;
  }
  static constexpr std::int64_t sub(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(a, b, &r))
      throw std::overflow_error("safeguards: int64 amount subtraction overflows");
    return r;
  }
  static constexpr double to_double(std::int64_t a) noexcept { return static_cast<double>(a); }

  static constexpr std::int64_t to_raw(std::int64_t a) noexcept { return a; }
  static constexpr std::int64_t from_raw(std::int64_t raw) noexcept { return raw; }
};

/// `BigDecimal`: 50 significant digits. Sums of amounts of similar size are exact; shares are
/// rounded to 50 digits and the last share takes the remainder so splits still add up.
template <>
struct amount_traits<BigDecimal> {
  static constexpr bool exact = true;

  static BigDecimal from_integer(std::int64_t n) { return BigDecimal(n); }
  static BigDecimal parse(std::string_view text) {
    // Boost accepts exponents, "inf" and "nan"; a budget wants none of them.
    bool any_digit = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      bool sign = (c == '+' || c == '-') && i == 0;
      if (c >= '0' && c <= '9')
        any_digit = true;
      else if (c != '.' && !sign)
        detail::throw_amount_parse_error("BigDecimal", text);
    }
    if (!any_digit || text.find('.') != text.rfind('.'))
      detail::throw_amount_parse_error("BigDecimal", text);
    return BigDecimal(std::string(text));
  }
  static std::string to_string(const BigDecimal& a) {
    // 50 significant digits (the guard digits beyond are noise), never in exponent form.
    constexpr auto digits = std::numeric_limits<BigDecimal>::digits10;
    std::string s = a.str(digits, std::ios_base::fmtflags(0));
    if (s.find('e') != std::string::npos)
      s = a.str(digits, std::ios_base::fixed);
    if (s.find('.') == std::string::npos)
      s += ".0";
    while (s.back() == '0' && s[s.size() - 2] != '.')
      s.pop_back();
    return s;
  }
  static BigDecimal mul_div(const BigDecimal& a, std::int64_t num, std::int64_t den) {
    if (den == 0)
      throw std::domain_error("safeguards: mul_div by zero");
    return a * num / den;
  }
  static BigDecimal add(const BigDecimal& a, const BigDecimal& b) { return a + b; }
  static BigDecimal sub(const BigDecimal& a, const BigDecimal& b) { return a - b; }
  static double to_double(const BigDecimal& a) { return a.convert_to<double>(); }
};

/// `double`: **inexact**, offered for interoperability with code that already counts in
/// doubles. Sums drift and splits only add up approximately; never use it for money.
template <>
struct amount_traits<double> {
  static constexpr bool exact = false;

  static constexpr double from_integer(std::int64_t n) noexcept { return static_cast<double>(n); }
  static double parse(std::string_view text) {
    double value = 0;
    auto [ptr, ec] =
        std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
    if (text.empty() || ec != std::errc() || ptr != text.data() + text.size())
      detail::throw_amount_parse_error("double", text);
    return value;
  }
  static std::string to_string(double a) { return fmt::format("{}", a); }
  static double mul_div(double a, std::int64_t num, std::int64_t den) {
    if (den == 0)
      throw std::domain_error("safeguards: mul_div by zero");
    return a * static_cast<double>(num) / static_cast<double>(den);
  }
  static constexpr double add(double a, double b) noexcept { return a + b; }
  static constexpr double sub(double a, double b) noexcept { return a - b; }
  static constexpr double to_double(double a) noexcept { return a; }
};

/// Zero of any amount type.
template <BudgetAmount A>
A amount_zero() {
  return amount_traits<A>::from_integer(0);
}

/// Text form of any amount, as `fmt` and the audit trail print it.
template <BudgetAmount A>
std::string amount_to_string(const A& a) {
  return amount_traits<A>::to_string(a);
}

} // namespace v1
} // namespace safeguards
