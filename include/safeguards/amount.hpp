// safeguards: the BudgetAmount concept and the traits that adapt a number type to it.
// SPDX-License-Identifier: MIT
#pragma once

#include <boost/multiprecision/cpp_int.hpp>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <optional>
#include <safeguards/decimal.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace safeguards {
inline namespace v1 {

/// Adapts a number type to `BudgetAmount`. Specialise it to bring your own amount type; see
/// the four specialisations below for what each member means.
template <class T>
struct amount_traits;

/// A type the budget templates can count money, tokens or calls in.
///
/// Which one to pick:
/// - `Decimal` (default): exact money with micro-unit resolution, lock-free in the ledger.
/// - `std::int64_t`: pure token or call counts, lock-free, nothing fractional.
/// - `BigDecimal` (include <safeguards/big_decimal.hpp>): 50 significant digits for very large
///   or very fine amounts; uses locks.
/// - `double`: interoperability only. It is **inexact**: sums drift and splits may not add
///   back to the total. Never use it for money.
///
/// Amounts of two different types never mix: every template takes exactly one.
template <class T>
concept BudgetAmount = std::regular<T> && std::totally_ordered<T> &&
    requires(const T& a, const T& b, std::int64_t n, std::string_view text) {
  // True when add and sub never round and mul_div rounds to a whole number of `quantum()`s, so
  // that the remainder of any split is exact and can be handed out step by step.
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
  throw MalformedAmount(fmt::format("safeguards: \"{}\" is not a valid {} amount", text, type));
}

// Every amount type reads the same grammar as `Decimal`, `[+-]digits[.digits]` (no fraction for
// integers), so a budget file means the same whichever type reads it. The number parsers
// underneath accept more: exponents, "inf", "nan", ".5"; a budget wants none of them.
constexpr bool is_plain_number(std::string_view s, bool allow_fraction) noexcept {
  std::size_t i = s.empty() || (s[0] != '+' && s[0] != '-') ? 0 : 1;
  std::size_t int_digits = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i)
    ++int_digits;
  if (int_digits == 0)
    return false;
  if (i == s.size())
    return true;
  if (!allow_fraction || s[i] != '.' || ++i == s.size())
    return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

// std::from_chars refuses a leading '+', which the grammar above allows.
constexpr std::string_view without_plus(std::string_view s) noexcept {
  return !s.empty() && s[0] == '+' ? s.substr(1) : s;
}

// Results that left the finite range: the `double` analogue of integer overflow.
constexpr double finite_or_throw(double value, const char* operation) {
  if (!(value >= -std::numeric_limits<double>::max() &&
        value <= std::numeric_limits<double>::max()))
    throw AmountOverflow(std::string("safeguards: double amount ") + operation + " is not finite");
  return value;
}

} // namespace detail

/// `Decimal`: exact, six fractional digits, one `int64_t` wide (so the ledger is lock-free).
template <>
struct amount_traits<Decimal> {
  /// Sums and integer shares are exact, so splits can be made to add up exactly.
  static constexpr bool exact = true;
  /// The smallest step; largest-remainder splits hand out leftovers in these.
  static constexpr Decimal quantum() noexcept { return Decimal::epsilon(); }

  static constexpr Decimal from_integer(std::int64_t n) { return {n}; }
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
  /// `[+-]digits`; out-of-range values throw `MalformedAmount` like any other bad text.
  static std::int64_t parse(std::string_view text) {
    if (!detail::is_plain_number(text, /*allow_fraction=*/false))
      detail::throw_amount_parse_error("int64", text);
    auto digits = detail::without_plus(text);
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || ptr != digits.data() + digits.size())
      detail::throw_amount_parse_error("int64", text);
    return value;
  }
  static std::string to_string(std::int64_t a) { return std::to_string(a); }
  static std::int64_t mul_div(std::int64_t a, std::int64_t num, std::int64_t den) {
    using wide = boost::multiprecision::int128_t;
    if (den == 0)
      throw DivisionByZero("safeguards: mul_div by zero");
    wide q = detail::div_round_half_even(wide(a) * num, wide(den));
    if (q > std::numeric_limits<std::int64_t>::max() ||
        q < std::numeric_limits<std::int64_t>::min())
      throw AmountOverflow("safeguards: int64 amount overflows in mul_div");
    return static_cast<std::int64_t>(q);
  }
  static constexpr std::int64_t add(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r))
      throw AmountOverflow("safeguards: int64 amount addition overflows");
    return r;
  }
  static constexpr std::int64_t sub(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(a, b, &r))
      throw AmountOverflow("safeguards: int64 amount subtraction overflows");
    return r;
  }
  static constexpr double to_double(std::int64_t a) noexcept { return static_cast<double>(a); }

  static constexpr std::int64_t to_raw(std::int64_t a) noexcept { return a; }
  static constexpr std::int64_t from_raw(std::int64_t raw) noexcept { return raw; }
};

/// `double`: **inexact**, offered for interoperability with code that already counts in
/// doubles. Sums drift and splits only add up approximately; never use it for money.
template <>
struct amount_traits<double> {
  static constexpr bool exact = false;

  static constexpr double from_integer(std::int64_t n) noexcept { return static_cast<double>(n); }
  /// `[+-]digits[.digits]`; "inf", "nan", exponents and values beyond the range of `double`
  /// (including those that would underflow to zero) throw `MalformedAmount`.
  static double parse(std::string_view text) {
    if (!detail::is_plain_number(text, /*allow_fraction=*/true))
      detail::throw_amount_parse_error("double", text);
    auto digits = detail::without_plus(text);
    double value = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value,
                                     std::chars_format::fixed);
    if (ec != std::errc() || ptr != digits.data() + digits.size())
      detail::throw_amount_parse_error("double", text);
    return value;
  }
  /// The shortest text that reads back as the same `double`, in the grammar `parse` accepts:
  /// 1e20 prints as "100000000000000000000.0", never in exponent form.
  static std::string to_string(double a) {
    // Fixed notation of the extremes: 309 integer digits, or 0. and 323 zeros and 17 digits.
    char buffer[400];
    auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof buffer, a, std::chars_format::fixed);
    std::string out(buffer, ec == std::errc() ? ptr : buffer);
    if (out.find_first_not_of("+-0123456789") == std::string::npos) // not "nan" or "inf"
      out += ".0";
    return out;
  }
  /// Throws `AmountOverflow` when the result is not finite.
  static double mul_div(double a, std::int64_t num, std::int64_t den) {
    if (den == 0)
      throw DivisionByZero("safeguards: mul_div by zero");
    return detail::finite_or_throw(a * static_cast<double>(num) / static_cast<double>(den),
                                   "mul_div");
  }
  /// Throws `AmountOverflow` when the result is not finite (the `double` form of overflow).
  static constexpr double add(double a, double b) {
    return detail::finite_or_throw(a + b, "addition");
  }
  static constexpr double sub(double a, double b) {
    return detail::finite_or_throw(a - b, "subtraction");
  }
  static constexpr double to_double(double a) noexcept { return a; }
  static bool is_finite(double a) noexcept { return std::isfinite(a); }
};

/// `T` may be passed where an amount of type `A` is expected: `A` itself, or, when `A` counts
/// whole units (`std::int64_t`), a signed integer type no wider than it. Entry points that take
/// an `A` refuse every other type at compile time: a `std::int64_t` token count passed where
/// `Decimal` dollars are expected would otherwise convert silently and charge dollars.
template <class T, class A>
concept AmountArgument = std::same_as<std::remove_cvref_t<T>, A> ||
    (std::same_as<A, std::int64_t>&& std::signed_integral<std::remove_cvref_t<T>> &&
     !detail::character_type<std::remove_cvref_t<T>> &&
     !std::same_as<std::remove_cvref_t<T>, signed char> && sizeof(T) <= sizeof(A));

namespace detail {

// Stored as a whole number of int64 quanta (`to_raw` / `from_raw` in its traits): `Decimal` and
// `std::int64_t`. The ledger keeps such amounts in one atomic; exact splits count in quanta.
template <class A>
concept RawAmount = BudgetAmount<A> && requires(const A& a, std::int64_t raw) {
  { amount_traits<A>::to_raw(a) } -> std::same_as<std::int64_t>;
  { amount_traits<A>::from_raw(raw) } -> std::same_as<A>;
};

} // namespace detail

/// Zero of any amount type.
template <BudgetAmount A>
A amount_zero() {
  return amount_traits<A>::from_integer(0);
}

/// False for NaN and the infinities of the floating amount types; always true for the others.
/// Traits may say how with `static bool is_finite(const T&)`; without it, a value that does not
/// equal itself (NaN) is the only one refused.
template <BudgetAmount A>
bool amount_is_finite(const A& a) noexcept {
  if constexpr (requires {
                  { amount_traits<A>::is_finite(a) } -> std::convertible_to<bool>;
                })
    return amount_traits<A>::is_finite(a);
  else
    return a == a; // NOLINT(misc-redundant-expression): false only for NaN
}

/// `a + b`, or nothing when the result would not fit the amount type: for code that must not
/// throw (a `noexcept` settle) and decides itself what an overflow means.
template <BudgetAmount A>
std::optional<A> checked_add(const A& a, const A& b) noexcept {
  try {
    return amount_traits<A>::add(a, b);
  } catch (...) {
    return std::nullopt;
  }
}

/// Text form of any amount, as `fmt` and the audit trail print it.
template <BudgetAmount A>
std::string amount_to_string(const A& a) {
  return amount_traits<A>::to_string(a);
}

} // namespace v1
} // namespace safeguards
