// libFuzzer target for safeguards::Decimal: parsing, printing, arithmetic and format specs.
// SPDX-License-Identifier: MIT
//
// Input layout: `A[,B][|SPEC]`. A and B are parsed in both rounding modes; whatever is accepted
// must print and parse back to itself and agree with an independent 128-bit reference, and
// every operation on A and B must either give the reference result or throw the exception the
// documentation promises. SPEC is used as `{:SPEC}`: formatting succeeds or throws
// fmt::format_error. Anything else (another exception, a wrong value, a sanitizer report) is a
// finding.
#include "../support/reference.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <optional>
#include <safeguards/decimal.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace {

using safeguards::Decimal;
using safeguards::Rounding;

using namespace safeguards_test;

[[noreturn]] void fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "decimal_parse_fuzz: %s for input \"%.*s\"\n", what,
               static_cast<int>(input.size()), input.data());
  std::abort();
}

enum class Ref { ok, rejected, unknown };

// An independent reading of `[+-]digits[.digits]`: all digits into one 128-bit integer, then a
// single division. Inputs with too many significant digits for 128 bits are `unknown`.
Ref reference_parse(std::string_view s, Rounding rounding, std::int64_t& out) {
  std::size_t i = 0;
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    i = 1;
  }
  i128 value = 0;
  int significant = 0;
  int int_digits = 0;
  int frac_digits = 0;
  bool point = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '.' && !point && int_digits > 0) {
      point = true;
      continue;
    }
    if (c < '0' || c > '9')
      return Ref::rejected;
    (point ? frac_digits : int_digits)++;
    if (value != 0 || c != '0')
      ++significant;
    if (significant > 36)
      return Ref::unknown;
    value = value * 10 + (c - '0');
  }
  if (int_digits == 0 || (point && frac_digits == 0))
    return Ref::rejected;
  if (negative)
    value = -value;
  i128 raw = 0;
  if (frac_digits <= 6) {
    for (int k = frac_digits; k < 6; ++k) {
      if (value > raw_max * 10 || value < raw_min * 10) // stays far below the 128-bit limit
        return Ref::rejected;
      value *= 10;
    }
    raw = value;
  } else {
    i128 unit = 1;
    for (int k = 6; k < frac_digits; ++k) {
      if (unit > raw_max)
        return Ref::unknown; // not worth a bigger reference; value is tiny or digits are zeros
      unit *= 10;
    }
    if (rounding == Rounding::reject && value % unit != 0)
      return Ref::rejected;
    raw = div_half_even(value, unit);
  }
  if (raw > raw_max || raw < raw_min)
    return Ref::rejected;
  out = static_cast<std::int64_t>(raw);
  return Ref::ok;
}

std::optional<Decimal> parse_checked(std::string_view text, Rounding rounding) {
  std::optional<Decimal> parsed;
  try {
    parsed = Decimal::parse(text, rounding);
  } catch (const std::invalid_argument&) {
    // Documented: every rejection is an invalid_argument. Any other exception escapes and
    // libFuzzer reports it.
  }
  std::int64_t expected = 0;
  switch (reference_parse(text, rounding, expected)) {
  case Ref::ok:
    if (!parsed || parsed->raw() != expected)
      fail("parse disagrees with the reference", text);
    break;
  case Ref::rejected:
    if (parsed)
      fail("parse accepted what the reference rejects", text);
    break;
  case Ref::unknown:
    break;
  }
  if (parsed) {
    auto printed = parsed->to_string();
    if (Decimal::parse(printed) != *parsed)
      fail("to_string does not parse back", text);
    if (fmt::format("{}", *parsed) != printed)
      fail("fmt and to_string disagree", text);
  }
  return parsed;
}

template <class Op>
void expect(i128 reference, Op op, std::string_view input, const char* name) {
  bool in_range = reference >= raw_min && reference <= raw_max;
  try {
    Decimal result = op();
    if (!in_range || result.raw() != static_cast<std::int64_t>(reference))
      fail(name, input);
  } catch (const std::overflow_error&) {
    if (in_range)
      fail(name, input);
  }
}

void check_arithmetic(Decimal a, Decimal b, std::string_view input) {
  i128 x = a.raw();
  i128 y = b.raw();
  expect(
      x + y, [&] { return a + b; }, input, "addition");
  expect(
      x - y, [&] { return a - b; }, input, "subtraction");
  expect(
      -x, [&] { return -a; }, input, "negation");
  expect(
      div_half_even(x * y, 1'000'000), [&] { return a * b; }, input, "multiplication");
  if (y == 0) {
    try {
      (void)(a / b);
      fail("division by zero did not throw", input);
    } catch (const std::domain_error&) {
    }
  } else {
    expect(
        div_half_even(x * 1'000'000, y), [&] { return a / b; }, input, "division");
    expect(
        div_half_even(x * 3, y), [&] { return Decimal::mul_div(a, 3, b.raw()); }, input, "mul_div");
  }
  expect(
      x < 0 ? -x : x, [&] { return abs(a); }, input, "abs");
}

// Widths and precisions are honoured as asked, so a spec like `{:999999999}` legitimately asks for
// a gigabyte; such specs are skipped, while those too big for an int must still throw.
bool affordable(std::string_view spec) {
  std::size_t run = 0;
  for (char c : spec) {
    run = c >= '0' && c <= '9' ? run + 1 : 0;
    if (run > 5 && run <= 10)
      return false;
  }
  return run <= 5 || run > 10;
}

void check_spec(std::string_view spec) {
  if (!affordable(spec))
    return;
  try {
    (void)fmt::format(fmt::runtime("{:" + std::string(spec) + "}"), Decimal(-1) / 3);
  } catch (const fmt::format_error&) {
    // Documented for invalid specs; any other exception escapes and is reported.
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto bar = input.find('|');
  std::string_view numbers = input.substr(0, bar);
  if (bar != std::string_view::npos)
    check_spec(input.substr(bar + 1));
  auto comma = numbers.find(',');
  std::string_view first = numbers.substr(0, comma);
  std::optional<std::string_view> second;
  if (comma != std::string_view::npos)
    second = numbers.substr(comma + 1);
  for (auto rounding : {Rounding::reject, Rounding::half_even}) {
    auto a = parse_checked(first, rounding);
    auto b = second ? parse_checked(*second, rounding) : std::optional<Decimal>(Decimal(7) / 3);
    if (a && b) {
      check_arithmetic(*a, *b, input);
      check_arithmetic(*b, *a, input);
    }
  }
  return 0;
}
