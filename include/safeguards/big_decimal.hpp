// safeguards: BigDecimal, 50 significant digits, as an amount type. Opt-in: include this
// header to use it, so that code counting in Decimal or int64 does not compile Boost's
// cpp_dec_float.
// SPDX-License-Identifier: MIT
#pragma once

#include <boost/multiprecision/cpp_dec_float.hpp>
#include <cstdint>
#include <limits>
#include <safeguards/amount.hpp>
#include <string>
#include <string_view>

namespace safeguards {
inline namespace v1 {

/// 50 significant decimal digits, no expression templates: for users who need more range than
/// `Decimal` and accept slower arithmetic. Division can still be inexact (1/3).
using BigDecimal = boost::multiprecision::number<boost::multiprecision::cpp_dec_float<50>,
                                                 boost::multiprecision::et_off>;

/// `BigDecimal`: 50 significant digits, and therefore **not** `exact`: a sum whose operands
/// differ by more than 50 digits rounds (10^40 + 10^-20 - 10^40 is 0), and a share such as
/// 1/3 is rounded to 50 significant digits rather than to a fixed quantum, so the remainder of
/// a split cannot always be handed out in whole steps. Splits of `BigDecimal` amounts add up to
/// 50 significant digits, not to the last digit.
template <>
struct amount_traits<BigDecimal> {
  static constexpr bool exact = false;

  static BigDecimal from_integer(std::int64_t n) { return {n}; }
  /// `[+-]digits[.digits]`; digits beyond the 50th significant one are rounded.
  static BigDecimal parse(std::string_view text) {
    if (!detail::is_plain_number(text, /*allow_fraction=*/true))
      detail::throw_amount_parse_error("BigDecimal", text);
    return BigDecimal(std::string(text));
  }
  /// Plain decimal text (never exponent form) with 50 significant digits, at least one of them
  /// fractional: "1000.0", "0.333...", so that `parse` reads back what `to_string` wrote.
  static std::string to_string(const BigDecimal& a) {
    // The guard digits beyond 50 are noise. Boost's fixed format would count digits after the
    // point instead of significant ones and print 1e-60 as zero, so the scientific form is
    // taken apart and the point placed here.
    // NaN and the infinities have no digits to place; they print as `double` prints them, so an
    // error message about a non-finite amount can name it.
    if (!boost::multiprecision::isfinite(a))
      return boost::multiprecision::isnan(a) ? "nan" : a < 0 ? "-inf" : "inf";
    constexpr auto digits = std::numeric_limits<BigDecimal>::digits10;
    std::string sci = a.str(digits - 1, std::ios_base::scientific); // -d.ddd...e+XX
    auto e = sci.find('e');
    bool negative = sci[0] == '-';
    std::string mantissa;
    for (std::size_t i = negative ? 1 : 0; i < e; ++i)
      if (sci[i] != '.')
        mantissa += sci[i];
    if (mantissa.find_first_not_of('0') == std::string::npos)
      return "0.0";
    long exponent = std::stol(sci.substr(e + 1));
    std::string out = negative ? "-" : "";
    if (exponent < 0) {
      out += "0.";
      out.append(static_cast<std::size_t>(-exponent - 1), '0');
      out += mantissa;
    } else {
      auto int_digits = static_cast<std::size_t>(exponent) + 1;
      if (mantissa.size() < int_digits + 1)
        mantissa.append(int_digits + 1 - mantissa.size(), '0');
      out += mantissa.substr(0, int_digits);
      out += '.';
      out += mantissa.substr(int_digits);
    }
    while (out.back() == '0' && out[out.size() - 2] != '.')
      out.pop_back();
    return out;
  }
  static BigDecimal mul_div(const BigDecimal& a, std::int64_t num, std::int64_t den) {
    if (den == 0)
      throw DivisionByZero("safeguards: mul_div by zero");
    return a * num / den;
  }
  static BigDecimal add(const BigDecimal& a, const BigDecimal& b) { return a + b; }
  static BigDecimal sub(const BigDecimal& a, const BigDecimal& b) { return a - b; }
  static double to_double(const BigDecimal& a) { return a.convert_to<double>(); }
  static bool is_finite(const BigDecimal& a) noexcept { return boost::multiprecision::isfinite(a); }
};

} // namespace v1
} // namespace safeguards
