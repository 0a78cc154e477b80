// Tests of safeguards::Decimal: text, formatting, arithmetic against a 128-bit reference, errors.
// SPDX-License-Identifier: MIT
#include "support/reference.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <random>
#include <safeguards/decimal.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

using safeguards::Decimal;
using safeguards::Rounding;
using namespace safeguards::literals;

namespace {

using namespace safeguards_test;

constexpr std::int64_t scale = 1'000'000;

i128 pow10(int n) {
  i128 p = 1;
  while (n-- > 0)
    p *= 10;
  return p;
}

std::string i128_digits(i128 v) { // v >= 0
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  } while (v != 0);
  return s;
}

// Reference text of a raw value: `precision` < 0 means the shortest form with at least one
// fractional digit, else exactly that many digits, rounded half-even.
std::string ref_text(std::int64_t raw, int precision = -1) {
  i128 v = raw;
  int digits = 6;
  if (precision >= 0 && precision < 6) {
    v = div_half_even(v, pow10(6 - precision));
    digits = precision;
  }
  bool negative = v < 0;
  i128 mag = negative ? -v : v;
  std::string s = i128_digits(mag);
  if (s.size() <= static_cast<std::size_t>(digits))
    s.insert(0, static_cast<std::size_t>(digits) + 1 - s.size(), '0');
  std::string int_part = s.substr(0, s.size() - static_cast<std::size_t>(digits));
  std::string frac = s.substr(s.size() - static_cast<std::size_t>(digits));
  if (precision < 0) {
    while (frac.size() > 1 && frac.back() == '0')
      frac.pop_back();
  } else if (precision > 6) {
    frac.append(static_cast<std::size_t>(precision - 6), '0');
  }
  return std::string(negative && mag != 0 ? "-" : "") + int_part + (frac.empty() ? "" : ".") + frac;
}

// Raw values that exercise every length, both signs, the edges and trailing zeros.
class RawGenerator {
public:
  explicit RawGenerator(std::uint64_t seed) : rng_(seed) {}

  std::int64_t operator()() {
    switch (rng_() % 8) {
    case 0: // full range
      return static_cast<std::int64_t>(rng_());
    case 1: { // near an edge
      auto off = static_cast<std::int64_t>(rng_() % 1000);
      return rng_() % 2 ? std::numeric_limits<std::int64_t>::max() - off
                        : std::numeric_limits<std::int64_t>::min() + off;
    }
    case 2: // small
      return static_cast<std::int64_t>(rng_() % 2'000'001) - 1'000'000;
    case 3: { // a multiple of a power of ten, so that trailing zeros get trimmed
      auto v = bounded(60);
      auto p = static_cast<std::int64_t>(pow10(static_cast<int>(rng_() % 8)));
      return v / p * p;
    }
    default:
      return bounded(64);
    }
  }

  // A value of random bit length below `max_bits` with a random sign.
  std::int64_t bounded(unsigned max_bits) {
    auto bits = static_cast<unsigned>(rng_() % max_bits);
    auto mag = static_cast<std::int64_t>(bits == 0 ? 0 : rng_() >> (64 - bits));
    return rng_() % 2 ? -mag : mag;
  }

  std::mt19937_64& engine() { return rng_; }

private:
  std::mt19937_64 rng_;
};

} // namespace

// ---------------------------------------------------------------------------------------------
// Compile-time properties

static_assert(!std::is_convertible_v<double, Decimal>, "double must never convert silently");
static_assert(!std::is_convertible_v<float, Decimal>);
static_assert(!std::is_convertible_v<long double, Decimal>);
static_assert(!std::is_constructible_v<Decimal, double>, "use Decimal::from_double");
static_assert(!std::is_convertible_v<Decimal, double>, "use to_double()");
static_assert(!std::is_convertible_v<bool, Decimal>);
static_assert(!std::is_convertible_v<char, Decimal>, "'x' is not an amount");
static_assert(!std::is_convertible_v<const char*, Decimal>, "text parses only explicitly");
static_assert(std::is_constructible_v<Decimal, const char*>);
static_assert(std::is_constructible_v<Decimal, std::string>);
static_assert(std::is_convertible_v<int, Decimal>);
static_assert(std::is_convertible_v<std::int64_t, Decimal>);
static_assert(std::is_convertible_v<unsigned, Decimal>);
// A requires-expression only turns errors into `false` inside a template, hence the concepts.
template <class A, class B>
concept addable = requires(A a, B b) {
  a + b;
};
template <class A, class B>
concept comparable = requires(A a, B b) {
  a == b;
  a < b;
};
static_assert(!addable<Decimal, double>, "mixing Decimal and double must not compile");
static_assert(!addable<double, Decimal>);
static_assert(!addable<Decimal, float>);
static_assert(!comparable<Decimal, double>);
static_assert(addable<Decimal, int> && comparable<Decimal, int>, "integers mix exactly");
static_assert(std::is_trivially_copyable_v<Decimal> && sizeof(Decimal) == sizeof(std::int64_t),
              "one int64, so that the ledger can keep it in an atomic");
static_assert(std::regular<Decimal> && std::totally_ordered<Decimal>);
static_assert(Decimal().raw() == 0 && Decimal::zero().raw() == 0);
static_assert(Decimal::epsilon().raw() == 1);
static_assert(Decimal::max().raw() == std::numeric_limits<std::int64_t>::max());
static_assert(Decimal::min().raw() == std::numeric_limits<std::int64_t>::min());
static_assert((12.5_d).raw() == 12'500'000, "the literal is usable in constant expressions");
static_assert(Decimal(3) + Decimal(4) == Decimal(7));
static_assert(Decimal("-0.000015").raw() == -15, "parsing is usable in constant expressions");
static_assert(noexcept(Decimal::from_raw(1)) && noexcept(Decimal().raw()));

// ---------------------------------------------------------------------------------------------
// Text

TEST_CASE("to_string and parse round-trip over seeded random raw values", "[decimal][text]") {
  auto seed = GENERATE(1u, 2u, 0xdecafu);
  RawGenerator gen(seed);
  std::vector<std::int64_t> raws = {0,
                                    1,
                                    -1,
                                    999'999,
                                    -999'999,
                                    1'000'000,
                                    std::numeric_limits<std::int64_t>::max(),
                                    std::numeric_limits<std::int64_t>::min()};
  for (int i = 0; i < 5000; ++i)
    raws.push_back(gen());
  for (auto raw : raws) {
    INFO("seed " << seed << " raw " << raw);
    auto d = Decimal::from_raw(raw);
    auto text = d.to_string();
    REQUIRE(text == ref_text(raw));
    REQUIRE(Decimal::parse(text) == d);
    REQUIRE(Decimal(text) == d);
    REQUIRE(fmt::format("{}", d) == text);
    std::ostringstream os;
    os << d;
    REQUIRE(os.str() == text);
  }
}

TEST_CASE("the edges of the range print and parse exactly", "[decimal][text]") {
  CHECK(Decimal::max().to_string() == "9223372036854.775807");
  CHECK(Decimal::min().to_string() == "-9223372036854.775808");
  CHECK(Decimal::parse("9223372036854.775807") == Decimal::max());
  CHECK(Decimal::parse("-9223372036854.775808") == Decimal::min());
  CHECK(Decimal::epsilon().to_string() == "0.000001");
  CHECK(Decimal().to_string() == "0.0");
  CHECK_THROWS_AS(Decimal::parse("9223372036854.775808"), std::invalid_argument);
  CHECK_THROWS_AS(Decimal::parse("-9223372036854.775809"), std::invalid_argument);
}

TEST_CASE("parse accepts the documented grammar", "[decimal][text]") {
  CHECK(Decimal("1000.0").raw() == 1'000'000'000);
  CHECK(Decimal("1000").raw() == 1'000'000'000);
  CHECK(Decimal("+1.5").raw() == 1'500'000);
  CHECK(Decimal("-1.5").raw() == -1'500'000);
  CHECK(Decimal("-0").raw() == 0);
  CHECK(Decimal("-0.000000").raw() == 0);
  CHECK(Decimal("007.250").raw() == 7'250'000);
  CHECK(Decimal("0.000015").raw() == 15);
  CHECK(Decimal(std::string("2.5")).raw() == 2'500'000);
  CHECK(Decimal(std::string_view("3.25xyz").substr(0, 4)).raw() == 3'250'000);
  SECTION("zeros beyond the sixth fractional digit lose nothing and are accepted") {
    CHECK(Decimal("1.0000000000").raw() == 1'000'000);
    CHECK(Decimal("-0.1234560").raw() == -123'456);
  }
}

TEST_CASE("every bad input throws invalid_argument naming the input", "[decimal][text]") {
  std::string bad = GENERATE(as<std::string>{}, "", "abc", "1.2.3", "1e400", "1e5", "0.0000001",
                             "12345678901234567890", "-12345678901234567890",
                             "99999999999999999999.5", "-", "+", ".", " 1", "1 ", "+-1", "--1",
                             "1-", "0x10", ".5", "1.", "-.5", "1..2", "1,5", "1_000", "nan", "inf",
                             "\xd9\xa1", std::string("1\0", 2), "1.0000001", "-0.0000001x");
  INFO("input: " << bad);
  REQUIRE_THROWS_AS(Decimal::parse(bad), std::invalid_argument);
  REQUIRE_THROWS_AS(Decimal(bad), std::invalid_argument);
  auto message = what_of([&] { (void)Decimal::parse(bad); });
  // Control bytes are shown escaped; everything else as it is.
  std::string shown;
  for (char c : bad)
    shown += static_cast<unsigned char>(c) < 0x20 ? fmt::format("\\x{:02x}", c) : std::string(1, c);
  CHECK(message.find('"' + shown + '"') != std::string::npos);
}

TEST_CASE("Decimal's errors are safeguards::Error and the standard exception",
          "[decimal][errors]") {
  // One catch clause for everything the library throws, without losing the standard types.
  auto kind_of = [](auto&& f) {
    try {
      f();
    } catch (const safeguards::Error& e) {
      const auto* std_base = dynamic_cast<const std::exception*>(&e);
      return std::string(std_base ? "safeguards::Error+std" : "safeguards::Error");
    } catch (const std::exception&) {
      return std::string("std only");
    }
    return std::string("nothing");
  };
  CHECK(kind_of([] { (void)Decimal("12,5"); }) == "safeguards::Error+std");
  CHECK(kind_of([] { (void)(Decimal::max() + Decimal::epsilon()); }) == "safeguards::Error+std");
  CHECK(kind_of([] { (void)(1_d / Decimal()); }) == "safeguards::Error+std");
  CHECK(kind_of([] { (void)Decimal::from_double(1e300); }) == "safeguards::Error+std");
  CHECK(kind_of([] { (void)Decimal::from_double(std::nan("")); }) == "safeguards::Error+std");
  CHECK_THROWS_AS(Decimal("12,5"), safeguards::MalformedAmount);
  CHECK_THROWS_AS(Decimal("12,5"), std::invalid_argument);
  CHECK_THROWS_AS(Decimal::max() * 2_d, safeguards::AmountOverflow);
  CHECK_THROWS_AS(Decimal::max() * 2_d, std::overflow_error);
  CHECK_THROWS_AS(1_d / Decimal(), safeguards::DivisionByZero);
  CHECK_THROWS_AS(1_d / Decimal(), std::domain_error);
  // Never ambiguous: exactly one std::exception base.
  CHECK_THROWS_AS(Decimal("x"), std::exception);
  CHECK_THROWS_WITH(Decimal("x"), Catch::Contains("\"x\""));
}

TEST_CASE("parse errors say what is wrong", "[decimal][text]") {
  CHECK_THAT(what_of([] { (void)Decimal("1.0000001"); }),
             Catch::Contains("more than 6 fractional digits"));
  CHECK_THAT(what_of([] { (void)Decimal("12345678901234567890"); }),
             Catch::Contains("out of range"));
  CHECK_THAT(what_of([] { (void)Decimal("1.5x"); }), Catch::Contains("not a decimal number"));
  // Garbage is reported as garbage even after a range or precision problem.
  CHECK_THAT(what_of([] { (void)Decimal("1.0000001x"); }), Catch::Contains("not a decimal number"));
  CHECK_THAT(what_of([] { (void)Decimal("99999999999999999999x"); }),
             Catch::Contains("not a decimal number"));
  CHECK_THAT(what_of([] { (void)Decimal(static_cast<const char*>(nullptr)); }),
             Catch::Contains("null"));
  std::string huge(100'000, '7');
  auto message = what_of([&] { (void)Decimal(huge); });
  CHECK(message.size() < 400);
  CHECK_THAT(message, Catch::Contains("100000 bytes"));
}

TEST_CASE("Rounding::half_even rounds excess digits", "[decimal][text][rounding]") {
  auto round = [](const char* text) { return Decimal::parse(text, Rounding::half_even); };
  SECTION("ties go to the even neighbour") {
    CHECK(round("0.0000005").raw() == 0);
    CHECK(round("0.0000015").raw() == 2);
    CHECK(round("0.0000025").raw() == 2);
    CHECK(round("0.0000035").raw() == 4);
    CHECK(round("1.00000050000").raw() == 1'000'000);
  }
  SECTION("anything beyond the tie decides") {
    CHECK(round("0.00000250000001").raw() == 3);
    CHECK(round("0.0000024999999").raw() == 2);
    CHECK(round("0.0000026").raw() == 3);
    CHECK(round("0.0000014").raw() == 1);
  }
  SECTION("negative values round symmetrically") {
    CHECK(round("-0.0000015").raw() == -2);
    CHECK(round("-0.0000025").raw() == -2);
    CHECK(round("-0.00000250001").raw() == -3);
    CHECK(round("-0.0000004").raw() == 0);
  }
  SECTION("a carry ripples into the integer part") {
    CHECK(round("0.9999995") == Decimal(1));
    CHECK(round("9.9999999") == Decimal(10));
    CHECK(round("-99.99999951") == Decimal(-100));
  }
  SECTION("rounding at the edge of the range") {
    CHECK(round("9223372036854.7758074999") == Decimal::max());
    CHECK(round("-9223372036854.7758075") == Decimal::min()); // up to the even 775808
    CHECK(round("-9223372036854.7758085") == Decimal::min()); // down to the even 775808
    CHECK_THROWS_AS(round("9223372036854.7758075"), std::invalid_argument);
    CHECK_THROWS_AS(round("-9223372036854.7758086"), std::invalid_argument);
  }
  SECTION("the default rejects what half_even would round") {
    CHECK_THROWS_AS(Decimal::parse("0.0000015"), std::invalid_argument);
    CHECK_THROWS_AS(Decimal::parse("0.0000015", Rounding::reject), std::invalid_argument);
  }
  SECTION("garbage is not rounded into a number") {
    CHECK_THROWS_AS(round("0.00000015x"), std::invalid_argument);
    CHECK_THROWS_AS(round("1.2.3"), std::invalid_argument);
  }
}

TEST_CASE("half_even parsing matches the reference over random inputs", "[decimal][rounding]") {
  RawGenerator gen(42);
  int ties = 0;
  for (int i = 0; i < 5000; ++i) {
    // A value with 7..12 fractional digits; a third of them exact ties.
    int extra = 1 + static_cast<int>(gen.engine()() % 6);
    i128 unit = pow10(extra);
    i128 v = static_cast<i128>(gen.bounded(60)) * unit;
    if (gen.engine()() % 3 == 0) {
      v += (v < 0 ? -1 : 1) * unit / 2;
      ++ties;
    } else {
      v += (v < 0 ? -1 : 1) * static_cast<i128>(gen.engine()() % static_cast<std::uint64_t>(unit));
    }
    bool negative = v < 0;
    std::string digits = i128_digits(negative ? -v : v);
    auto frac = static_cast<std::size_t>(6 + extra);
    if (digits.size() <= frac)
      digits.insert(0, frac + 1 - digits.size(), '0');
    std::string text = std::string(negative ? "-" : "") + digits.substr(0, digits.size() - frac) +
                       "." + digits.substr(digits.size() - frac);
    INFO(text);
    i128 expected = div_half_even(v, unit);
    REQUIRE(in_raw_range(expected));
    REQUIRE(Decimal::parse(text, Rounding::half_even).raw() == static_cast<std::int64_t>(expected));
    if (v % unit != 0)
      REQUIRE_THROWS_AS(Decimal::parse(text), std::invalid_argument);
    else
      REQUIRE(Decimal::parse(text).raw() == static_cast<std::int64_t>(expected));
  }
  CHECK(ties > 1000);
}

// ---------------------------------------------------------------------------------------------
// Formatting

TEST_CASE("fmt prints the shortest exact form", "[decimal][format]") {
  CHECK(fmt::format("{}", Decimal("1000.0")) == "1000.0");
  CHECK(fmt::format("{}", Decimal("1000")) == "1000.0");
  CHECK(fmt::format("{}", Decimal("12.500")) == "12.5");
  CHECK(fmt::format("{}", Decimal("0.000015")) == "0.000015");
  CHECK(fmt::format("{}", Decimal("-3.50")) == "-3.5");
  CHECK(fmt::format("{}", Decimal("-0.0")) == "0.0");
  CHECK(fmt::format("{}", Decimal(7)) == "7.0");
}

TEST_CASE("fmt sign, precision, width, fill and alignment", "[decimal][format]") {
  auto d = Decimal("1.5");
  auto n = Decimal("-1.5");
  SECTION("sign") {
    CHECK(fmt::format("{:+}", d) == "+1.5");
    CHECK(fmt::format("{:+}", n) == "-1.5");
    CHECK(fmt::format("{:+}", Decimal()) == "+0.0");
    CHECK(fmt::format("{:-}", d) == "1.5");
    CHECK(fmt::format("{: }", d) == " 1.5");
    CHECK(fmt::format("{: }", n) == "-1.5");
  }
  SECTION("precision rounds half-even and pads") {
    CHECK(fmt::format("{:.2f}", Decimal("1.005")) == "1.00");
    CHECK(fmt::format("{:.2f}", Decimal("1.015")) == "1.02");
    CHECK(fmt::format("{:.2f}", Decimal("1.025")) == "1.02");
    CHECK(fmt::format("{:.2f}", Decimal("1.025001")) == "1.03");
    CHECK(fmt::format("{:.2f}", Decimal("-1.015")) == "-1.02");
    CHECK(fmt::format("{:.2f}", Decimal("-0.001")) == "0.00");
    CHECK(fmt::format("{:.0f}", Decimal("2.5")) == "2");
    CHECK(fmt::format("{:.0f}", Decimal("3.5")) == "4");
    CHECK(fmt::format("{:.2f}", Decimal("9.995")) == "10.00");
    CHECK(fmt::format("{:.2f}", Decimal(3)) == "3.00");
    CHECK(fmt::format("{:.8f}", Decimal("0.000015")) == "0.00001500");
    CHECK(fmt::format("{:f}", d) == "1.500000");
    CHECK(fmt::format("{:.3}", Decimal("2.0005")) == "2.000");
    CHECK(fmt::format("{:+.1f}", d) == "+1.5");
  }
  SECTION("precision at the edges of the range does not overflow") {
    CHECK(fmt::format("{:.2f}", Decimal::max()) == "9223372036854.78");
    CHECK(fmt::format("{:.0f}", Decimal::max()) == "9223372036855");
    CHECK(fmt::format("{:.2f}", Decimal::min()) == "-9223372036854.78");
    CHECK(fmt::format("{:.6f}", Decimal::min()) == "-9223372036854.775808");
  }
  SECTION("width, fill and alignment") {
    CHECK(fmt::format("{:8}", d) == "     1.5");
    CHECK(fmt::format("{:>8}", d) == "     1.5");
    CHECK(fmt::format("{:<8}|", d) == "1.5     |");
    CHECK(fmt::format("{:^8}", d) == "  1.5   ");
    CHECK(fmt::format("{:*^9}", n) == "**-1.5***");
    CHECK(fmt::format("{:_>+8.2f}", d) == "___+1.50");
    CHECK(fmt::format("{:2}", Decimal("1234.5")) == "1234.5");
    CHECK(fmt::format("{:\u00b7>6}", d) == "\u00b7\u00b7\u00b71.5");
    CHECK(fmt::format("{:\u20ac<5}", d) == "1.5\u20ac\u20ac");
  }
  SECTION("zero padding goes after the sign, and an align switches it off") {
    CHECK(fmt::format("{:08}", d) == "000001.5");
    CHECK(fmt::format("{:08}", n) == "-00001.5");
    CHECK(fmt::format("{:+08.2f}", d) == "+0001.50");
    CHECK(fmt::format("{:<08}", d) == "1.5     ");
    CHECK(fmt::format("{:0>8}", d) == "000001.5");
  }
}

TEST_CASE("fmt precision matches the reference over random values", "[decimal][format]") {
  RawGenerator gen(7);
  for (int i = 0; i < 3000; ++i) {
    auto raw = gen();
    for (int precision = 0; precision <= 8; ++precision) {
      INFO("raw " << raw << " precision " << precision);
      auto spec = fmt::format("{{:.{}f}}", precision);
      REQUIRE(fmt::format(fmt::runtime(spec), Decimal::from_raw(raw)) == ref_text(raw, precision));
    }
  }
}

TEST_CASE("invalid format specifications throw fmt::format_error", "[decimal][format]") {
  auto spec = GENERATE(as<std::string>{}, "{:x}", "{:d}", "{:.}", "{:.f}", "{:#}", "{:L}", "{:.2e}",
                       "{:5x}", "{:++}", "{:{}}", "{:99999999999}", "{:.99999999999f}", "{:<<<}");
  INFO(spec);
  CHECK_THROWS_AS(fmt::format(fmt::runtime(spec), Decimal(1), 5), fmt::format_error);
}

// ---------------------------------------------------------------------------------------------
// Arithmetic

TEST_CASE("arithmetic matches a 128-bit reference", "[decimal][arithmetic]") {
  auto seed = GENERATE(11u, 12u);
  RawGenerator gen(seed);
  int overflows = 0, exact = 0, inexact = 0;
  for (int i = 0; i < 20'000; ++i) {
    // Mostly moderate magnitudes, so that products and quotients are often in range.
    std::int64_t a = gen.engine()() % 4 == 0 ? gen() : gen.bounded(48);
    std::int64_t b = gen.engine()() % 4 == 0 ? gen() : gen.bounded(48);
    Decimal x = Decimal::from_raw(a);
    Decimal y = Decimal::from_raw(b);
    INFO("seed " << seed << " a " << a << " b " << b);

    auto check = [&](i128 expected, auto&& op) {
      if (in_raw_range(expected)) {
        REQUIRE(op().raw() == static_cast<std::int64_t>(expected));
      } else {
        ++overflows;
        REQUIRE_THROWS_AS(op(), std::overflow_error);
      }
    };
    check(i128(a) + b, [&] { return x + y; });
    check(i128(a) - b, [&] { return x - y; });
    check(div_half_even(i128(a) * b, scale), [&] { return x * y; });
    ((i128(a) * b) % scale == 0 ? exact : inexact)++;
    if (b == 0) {
      REQUIRE_THROWS_AS(x / y, std::domain_error);
    } else {
      check(div_half_even(i128(a) * scale, b), [&] { return x / y; });
    }
    check(-i128(a), [&] { return -x; });

    // Compound assignment does the same, and leaves the target untouched when it throws.
    Decimal z = x;
    if (in_raw_range(i128(a) + b)) {
      z += y;
      REQUIRE(z == x + y);
    } else {
      REQUIRE_THROWS_AS(z += y, std::overflow_error);
      REQUIRE(z == x);
    }
  }
  CHECK(overflows > 100);
  CHECK(exact > 100);
  CHECK(inexact > 1000);
}

TEST_CASE("multiplication and division round exact ties half-even", "[decimal][arithmetic]") {
  SECTION("examples") {
    CHECK(Decimal("1.000001") * Decimal("0.5") == Decimal("0.5"));
    CHECK(Decimal("1.000003") * Decimal("0.5") == Decimal("0.500002"));
    CHECK(Decimal("-1.000003") * Decimal("0.5") == Decimal("-0.500002"));
    CHECK(Decimal("-1.000001") * Decimal("0.5") == Decimal("-0.5"));
    CHECK(Decimal("0.000005") * Decimal("0.1") == Decimal(0));
    CHECK(Decimal("0.000015") * Decimal("0.1") == Decimal("0.000002"));
    CHECK(Decimal("0.000001") / Decimal(2) == Decimal(0));
    CHECK(Decimal("0.000003") / Decimal(2) == Decimal("0.000002"));
    CHECK(Decimal("-0.000003") / Decimal(2) == Decimal("-0.000002"));
    CHECK(Decimal("0.000003") / Decimal(-2) == Decimal("-0.000002"));
    CHECK(Decimal(1) / Decimal(3) == Decimal("0.333333"));
    CHECK(Decimal(2) / Decimal(3) == Decimal("0.666667"));
    CHECK(Decimal(-2) / Decimal(3) == Decimal("-0.666667"));
    CHECK(Decimal("0.000015") * 1200 == Decimal("0.018"));
  }
  SECTION("random ties against the reference, in both directions") {
    std::mt19937_64 rng(99);
    int up = 0, down = 0;
    for (int i = 0; i < 5000; ++i) {
      // odd * 0.5 and odd / 2 are exact ties at the sixth digit.
      auto odd = static_cast<std::int64_t>(rng() >> 20) | 1;
      if (rng() % 2)
        odd = -odd;
      INFO(odd);
      auto expected = static_cast<std::int64_t>(div_half_even(odd, 2));
      REQUIRE((Decimal::from_raw(odd) * Decimal("0.5")).raw() == expected);
      REQUIRE((Decimal::from_raw(odd) / Decimal(2)).raw() == expected);
      REQUIRE((Decimal("0.5") * Decimal::from_raw(odd)).raw() == expected);
      (expected * 2 > odd ? up : down)++;
    }
    CHECK(up > 1000);
    CHECK(down > 1000);
  }
}

TEST_CASE("overflow throws instead of wrapping", "[decimal][arithmetic][overflow]") {
  const auto max = Decimal::max();
  const auto min = Decimal::min();
  const auto eps = Decimal::epsilon();
  CHECK_THROWS_AS(max + eps, std::overflow_error);
  CHECK_THROWS_AS(min - eps, std::overflow_error);
  CHECK_THROWS_AS(min + -eps, std::overflow_error);
  CHECK_THROWS_AS(max - -eps, std::overflow_error);
  CHECK_THROWS_AS(-min, std::overflow_error);
  CHECK_THROWS_AS(max * Decimal(2), std::overflow_error);
  CHECK_THROWS_AS(min * Decimal(-1), std::overflow_error);
  CHECK_THROWS_AS(min / Decimal(-1), std::overflow_error);
  CHECK_THROWS_AS(max / Decimal("0.5"), std::overflow_error);
  CHECK_THROWS_AS(Decimal(1) / eps * Decimal(10'000'000), std::overflow_error);
  CHECK((max + min).raw() == -1);
  CHECK(-max == min + eps);
  CHECK(max * Decimal(1) == max);
  CHECK(min / Decimal(1) == min);
  CHECK(max * Decimal(-1) == -max);
  auto d = max;
  CHECK_THROWS_AS(d *= Decimal(2), std::overflow_error);
  CHECK_THROWS_AS(d /= Decimal("0.1"), std::overflow_error);
  CHECK_THROWS_AS(d -= Decimal(-1), std::overflow_error);
  CHECK(d == max);
  SECTION("integer construction beyond the range") {
    CHECK(Decimal(9'223'372'036'854LL).raw() == 9'223'372'036'854'000'000);
    CHECK(Decimal(-9'223'372'036'854LL).raw() == -9'223'372'036'854'000'000);
    CHECK_THROWS_AS(Decimal(9'223'372'036'855LL), std::overflow_error);
    CHECK_THROWS_AS(Decimal(-9'223'372'036'855LL), std::overflow_error);
    CHECK_THROWS_AS(Decimal(std::numeric_limits<std::int64_t>::min()), std::overflow_error);
    CHECK_THROWS_AS(Decimal(std::numeric_limits<std::uint64_t>::max()), std::overflow_error);
    CHECK_THAT(what_of([] { (void)Decimal(9'223'372'036'855LL); }),
               Catch::Contains("9223372036855"));
    CHECK(Decimal(std::uint8_t{255}) == Decimal("255"));
    CHECK(Decimal(short{-7}) == Decimal("-7"));
  }
}

TEST_CASE("division by zero throws domain_error", "[decimal][arithmetic]") {
  CHECK_THROWS_AS(Decimal(1) / Decimal(0), std::domain_error);
  CHECK_THROWS_AS(Decimal(0) / Decimal(0), std::domain_error);
  CHECK_THROWS_AS(Decimal::min() / Decimal(), std::domain_error);
  auto d = Decimal(5);
  CHECK_THROWS_AS(d /= 0, std::domain_error);
  CHECK(d == Decimal(5));
  CHECK_THROWS_AS(Decimal::mul_div(Decimal(1), 1, 0), std::domain_error);
}

TEST_CASE("mul_div rounds once, half-even", "[decimal][arithmetic]") {
  CHECK(Decimal::mul_div(Decimal(1), 1, 3) == Decimal("0.333333"));
  CHECK(Decimal::mul_div(Decimal(2), 1, 3) == Decimal("0.666667"));
  CHECK(Decimal::mul_div(Decimal(100), 7, -10) == Decimal(-70));
  CHECK(Decimal::mul_div(Decimal("0.000005"), 1, 2) == Decimal("0.000002"));
  CHECK(Decimal::mul_div(Decimal("0.000007"), 1, 2) == Decimal("0.000004"));
  CHECK(Decimal::mul_div(Decimal("-0.000005"), 1, 2) == Decimal("-0.000002"));
  // The intermediate exceeds 64 bits without the result doing so.
  CHECK(Decimal::mul_div(Decimal::max(), 3, 3) == Decimal::max());
  CHECK(Decimal::mul_div(Decimal::min(), std::numeric_limits<std::int64_t>::max(),
                         std::numeric_limits<std::int64_t>::max()) == Decimal::min());
  CHECK_THROWS_AS(Decimal::mul_div(Decimal::max(), 3, 2), std::overflow_error);
  CHECK_THROWS_AS(Decimal::mul_div(Decimal::min(), -1, 1), std::overflow_error);

  RawGenerator gen(5);
  for (int i = 0; i < 10'000; ++i) {
    auto a = gen();
    auto num = gen.bounded(64);
    auto den = gen.bounded(64);
    if (den == 0)
      continue;
    INFO("a " << a << " num " << num << " den " << den);
    i128 expected = div_half_even(i128(a) * num, den);
    if (in_raw_range(expected))
      REQUIRE(Decimal::mul_div(Decimal::from_raw(a), num, den).raw() ==
              static_cast<std::int64_t>(expected));
    else
      REQUIRE_THROWS_AS(Decimal::mul_div(Decimal::from_raw(a), num, den), std::overflow_error);
  }
}

// ---------------------------------------------------------------------------------------------
// Conversions, literal, comparisons, hashing

TEST_CASE("from_double rounds the binary value half-even to six digits", "[decimal][double]") {
  CHECK(Decimal::from_double(0.1) == Decimal("0.1"));
  CHECK(Decimal::from_double(0.1).to_string() == "0.1");
  CHECK(Decimal::from_double(0.3) == Decimal("0.3"));
  CHECK(Decimal::from_double(0.1 + 0.2) == Decimal("0.3"));
  CHECK(Decimal::from_double(-2.5) == Decimal("-2.5"));
  CHECK(Decimal::from_double(1e-7) == Decimal(0));
  CHECK(Decimal::from_double(-0.0) == Decimal(0));
  CHECK(Decimal::from_double(1.5e-6) == Decimal("0.000002")); // the double is just above 1.5e-6
  CHECK(Decimal::from_double(5e-7) == Decimal(0));            // ... and this one just below
  // 1/128 and 3/128 are exact binary ties at the seventh digit.
  CHECK(Decimal::from_double(0.0078125) == Decimal("0.007812"));
  CHECK(Decimal::from_double(0.0234375) == Decimal("0.023438"));
  CHECK(Decimal::from_double(-0.0078125) == Decimal("-0.007812"));
  CHECK(Decimal::from_double(9.2e12) == Decimal(9'200'000'000'000LL));
  SECTION("non-finite values are invalid") {
    CHECK_THROWS_AS(Decimal::from_double(std::numeric_limits<double>::quiet_NaN()),
                    std::invalid_argument);
    CHECK_THROWS_AS(Decimal::from_double(std::numeric_limits<double>::infinity()),
                    std::invalid_argument);
    CHECK_THROWS_AS(Decimal::from_double(-std::numeric_limits<double>::infinity()),
                    std::invalid_argument);
    CHECK_THAT(what_of([] { (void)Decimal::from_double(std::nan("")); }), Catch::Contains("nan"));
  }
  SECTION("values out of range overflow") {
    CHECK_THROWS_AS(Decimal::from_double(9.3e12), std::overflow_error);
    CHECK_THROWS_AS(Decimal::from_double(-9.3e12), std::overflow_error);
    CHECK_THROWS_AS(Decimal::from_double(1e300), std::overflow_error);
    CHECK_THROWS_AS(Decimal::from_double(std::numeric_limits<double>::max()), std::overflow_error);
  }
  SECTION("to_double and back is the identity where doubles are finer than 1e-6") {
    RawGenerator gen(3);
    for (int i = 0; i < 5000; ++i) {
      auto raw = gen.bounded(51); // |value| < 2^50 * 1e-6, about 1.1e9
      INFO(raw);
      auto d = Decimal::from_raw(raw);
      REQUIRE(Decimal::from_double(d.to_double()) == d);
    }
  }
}

TEST_CASE("the _d literal", "[decimal][literal]") {
  CHECK(12.5_d == Decimal("12.5"));
  CHECK(1000_d == Decimal(1000));
  CHECK(0_d == Decimal());
  CHECK(0.000001_d == Decimal::epsilon());
  CHECK(-3.25_d == Decimal("-3.25"));
  CHECK(1'000'000.50_d == Decimal("1000000.5"));
  CHECK(9223372036854.775807_d == Decimal::max());
  CHECK(1.0000000_d == Decimal(1));
  constexpr auto price = 0.000015_d;
  static_assert(price.raw() == 15);
}

TEST_CASE("comparisons follow the value", "[decimal][compare]") {
  CHECK(Decimal("1.0") == Decimal(1));
  CHECK(Decimal("1.000001") > Decimal(1));
  CHECK(Decimal("-1.000001") < Decimal(-1));
  CHECK(Decimal(1) < 2);
  CHECK(2 > Decimal(1));
  CHECK(Decimal(2) != 3);
  CHECK((Decimal(1) <=> Decimal(2)) == std::strong_ordering::less);
  CHECK(Decimal::min() < Decimal::max());
  RawGenerator gen(8);
  for (int i = 0; i < 5000; ++i) {
    auto a = gen();
    auto b = gen();
    auto x = Decimal::from_raw(a);
    auto y = Decimal::from_raw(b);
    REQUIRE((x < y) == (a < b));
    REQUIRE((x == y) == (a == b));
    REQUIRE((x >= y) == (a >= b));
  }
}

TEST_CASE("std::hash agrees with equality", "[decimal][hash]") {
  std::hash<Decimal> h;
  CHECK(h(Decimal("1.0")) == h(Decimal("1.000000")));
  CHECK(h(Decimal("-0")) == h(Decimal()));
  std::unordered_set<Decimal> set{Decimal("1.5"), Decimal("1.50"), 1.5_d, Decimal(2)};
  CHECK(set.size() == 2);
  CHECK(set.count(Decimal("2.0")) == 1);
  CHECK(set.count(Decimal("2.000001")) == 0);
}

TEST_CASE("abs", "[decimal]") {
  CHECK(abs(Decimal("-1.5")) == Decimal("1.5"));
  CHECK(abs(Decimal("1.5")) == Decimal("1.5"));
  CHECK(abs(Decimal()) == Decimal());
  CHECK(abs(Decimal::max()) == Decimal::max());
  CHECK(abs(Decimal::min() + Decimal::epsilon()) == Decimal::max());
  CHECK_THROWS_AS(abs(Decimal::min()), std::overflow_error);
  static_assert(abs(Decimal(-3)) == Decimal(3));
}
