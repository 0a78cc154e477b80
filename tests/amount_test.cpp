// Tests of the BudgetAmount concept and the four amount_traits that ship with safeguards.
// SPDX-License-Identifier: MIT
#include "support/reference.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <random>
#include <safeguards/amount.hpp>
#include <safeguards/big_decimal.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using safeguards::amount_to_string;
using safeguards::amount_traits;
using safeguards::amount_zero;
using safeguards::BigDecimal;
using safeguards::BudgetAmount;
using safeguards::Decimal;

// Not in an anonymous namespace: clang warns about the unused defaulted comparisons there.
namespace user_types {

struct NoTraits {
  int value = 0;
  friend auto operator<=>(const NoTraits&, const NoTraits&) = default;
};

// Has traits, but they are incomplete: the concept must notice the missing members.
struct HalfAmount {
  std::int64_t value = 0;
  friend auto operator<=>(const HalfAmount&, const HalfAmount&) = default;
};

// A complete user-defined amount: whole cents. Shows that bringing your own type works.
struct Cents {
  std::int64_t value = 0;
  friend auto operator<=>(const Cents&, const Cents&) = default;
};

} // namespace user_types

using user_types::Cents;
using user_types::HalfAmount;
using user_types::NoTraits;

namespace {

using safeguards_test::what_of;

template <BudgetAmount A>
constexpr bool accepts_amount() {
  return true;
}

} // namespace

template <>
struct safeguards::amount_traits<HalfAmount> {
  static constexpr bool exact = true;
  static HalfAmount from_integer(std::int64_t n) { return {n}; }
};

template <>
struct safeguards::amount_traits<Cents> {
  static constexpr bool exact = true;
  static Cents from_integer(std::int64_t n) {
    return {amount_traits<std::int64_t>::mul_div(n, 100, 1)};
  }
  static Cents parse(std::string_view text) { return {Decimal::parse(text).raw() / 10'000}; }
  static std::string to_string(Cents c) { return Decimal::from_raw(c.value * 10'000).to_string(); }
  static Cents mul_div(Cents c, std::int64_t num, std::int64_t den) {
    return {amount_traits<std::int64_t>::mul_div(c.value, num, den)};
  }
  static Cents add(Cents a, Cents b) {
    return {amount_traits<std::int64_t>::add(a.value, b.value)};
  }
  static Cents sub(Cents a, Cents b) {
    return {amount_traits<std::int64_t>::sub(a.value, b.value)};
  }
  static double to_double(Cents c) { return static_cast<double>(c.value) / 100; }
};

static_assert(BudgetAmount<Decimal>);
static_assert(BudgetAmount<std::int64_t>);
static_assert(BudgetAmount<BigDecimal>);
static_assert(BudgetAmount<double>);
static_assert(BudgetAmount<Cents>, "a user type with complete traits is an amount");
static_assert(accepts_amount<Cents>());
static_assert(!BudgetAmount<std::string>);
static_assert(!BudgetAmount<int*>);
static_assert(!BudgetAmount<const char*>);
static_assert(!BudgetAmount<bool>);
static_assert(!BudgetAmount<std::nullptr_t>);
static_assert(!BudgetAmount<float>, "only the four shipped types (and yours) are amounts");
static_assert(!BudgetAmount<int>);
static_assert(!BudgetAmount<unsigned long long>);
static_assert(!BudgetAmount<NoTraits>);
static_assert(!BudgetAmount<HalfAmount>, "traits without the operations are not enough");
static_assert(!BudgetAmount<void>);
static_assert(!BudgetAmount<Decimal&>);
static_assert(amount_traits<Decimal>::exact && amount_traits<std::int64_t>::exact &&
              !amount_traits<BigDecimal>::exact && !amount_traits<double>::exact);
static_assert(amount_traits<Decimal>::to_raw(Decimal("0.5")) == 500'000 &&
              amount_traits<Decimal>::from_raw(7) == Decimal::from_raw(7));

namespace {

// What each type prints for 42 and for 2.5 (int64 has no 2.5).
template <class T>
std::string text_of_42() {
  return std::is_same_v<T, std::int64_t> ? "42" : "42.0";
}
template <class T>
constexpr bool fractional = !std::is_same_v<T, std::int64_t>;

} // namespace

TEMPLATE_TEST_CASE("amount_traits basics", "[amount]", Decimal, std::int64_t, BigDecimal, double) {
  using traits = amount_traits<TestType>;
  const TestType zero = amount_zero<TestType>();
  const TestType forty_two = traits::from_integer(42);

  SECTION("from_integer and zero") {
    CHECK(zero == traits::from_integer(0));
    CHECK(zero < forty_two);
    CHECK(traits::from_integer(-42) < zero);
    CHECK(traits::to_double(forty_two) == 42.0);
    CHECK(traits::to_double(traits::from_integer(-7)) == -7.0);
    CHECK(traits::to_string(zero) == (std::is_same_v<TestType, std::int64_t> ? "0" : "0.0"));
  }
  SECTION("to_string and parse agree") {
    CHECK(traits::to_string(forty_two) == text_of_42<TestType>());
    CHECK(amount_to_string(forty_two) == text_of_42<TestType>());
    CHECK(traits::parse("42") == forty_two);
    CHECK(traits::parse("+42") == forty_two);
    CHECK(traits::parse("0042") == forty_two);
    CHECK(traits::parse("-42") == traits::from_integer(-42));
    CHECK(traits::parse("-0") == zero);
    if constexpr (fractional<TestType>) {
      CHECK(traits::parse("42.0") == forty_two);
      auto half = traits::parse("2.5");
      CHECK(traits::to_string(half) == "2.5");
      CHECK(traits::to_double(half) == 2.5);
      CHECK(traits::to_string(traits::parse("-0.125")) == "-0.125");
      CHECK(traits::parse(traits::to_string(half)) == half);
    }
  }
  SECTION("bad text throws invalid_argument naming the input") {
    std::vector<std::string> bad = {"",    "abc",  "1.2.3", "1e5", "1e400", " 1", "1 ",
                                    "+-1", "0x10", "-",     "+",   ".",     ".5", "1.",
                                    "nan", "inf",  "-inf",  "1,5", "--1",   "1-", "infinity"};
    if constexpr (!fractional<TestType>)
      bad.push_back("1.5");
    if constexpr (std::is_same_v<TestType, Decimal> || std::is_same_v<TestType, std::int64_t>) {
      bad.push_back("99999999999999999999");
      bad.push_back("-99999999999999999999");
    }
    if constexpr (std::is_same_v<TestType, Decimal>)
      bad.push_back("0.0000001");
    for (const auto& text : bad) {
      INFO("input: '" << text << "'");
      CHECK_THROWS_AS(traits::parse(text), std::invalid_argument);
      CHECK_THAT(what_of([&] { (void)traits::parse(text); }), Catch::Contains('"' + text + '"'));
    }
  }
  SECTION("add and sub") {
    auto five = traits::from_integer(5);
    auto three = traits::from_integer(3);
    CHECK(traits::add(five, three) == traits::from_integer(8));
    CHECK(traits::sub(three, five) == traits::from_integer(-2));
    CHECK(traits::sub(five, five) == zero);
  }
  SECTION("mul_div") {
    auto ten = traits::from_integer(10);
    CHECK(traits::mul_div(ten, 3, 2) == traits::from_integer(15));
    CHECK(traits::mul_div(ten, -1, 1) == traits::from_integer(-10));
    CHECK(traits::mul_div(ten, 0, 7) == zero);
    CHECK_THROWS_AS(traits::mul_div(ten, 1, 0), std::domain_error);
    auto third = traits::mul_div(ten, 1, 3);
    if constexpr (std::is_same_v<TestType, std::int64_t>)
      CHECK(third == 3);
    else if constexpr (std::is_same_v<TestType, Decimal>)
      CHECK(third == Decimal("3.333333"));
    else if constexpr (std::is_same_v<TestType, BigDecimal>)
      CHECK(traits::to_string(third) == "3." + std::string(49, '3'));
    else
      CHECK(third == Approx(10.0 / 3));
  }
  SECTION("ordering is total and consistent with to_double") {
    std::mt19937_64 rng(17);
    for (int i = 0; i < 200; ++i) {
      auto a = static_cast<std::int64_t>(rng() % 2'000'001) - 1'000'000;
      auto b = static_cast<std::int64_t>(rng() % 2'000'001) - 1'000'000;
      auto x = traits::from_integer(a);
      auto y = traits::from_integer(b);
      REQUIRE((x < y) == (a < b));
      REQUIRE(traits::to_double(traits::add(x, y)) == static_cast<double>(a + b));
    }
  }
}

TEST_CASE("the exact amounts round mul_div half-even", "[amount][rounding]") {
  using I = amount_traits<std::int64_t>;
  using D = amount_traits<Decimal>;
  CHECK(I::mul_div(5, 1, 2) == 2);
  CHECK(I::mul_div(7, 1, 2) == 4);
  CHECK(I::mul_div(-5, 1, 2) == -2);
  CHECK(I::mul_div(-7, 1, 2) == -4);
  CHECK(I::mul_div(5, -1, 2) == -2);
  CHECK(I::mul_div(2, 1, 3) == 1);
  CHECK(I::mul_div(1, 1, 3) == 0);
  CHECK(D::mul_div(Decimal("0.000005"), 1, 2) == Decimal("0.000002"));
  CHECK(D::mul_div(Decimal("0.000007"), 1, 2) == Decimal("0.000004"));
  CHECK(D::mul_div(Decimal("-0.000007"), 1, 2) == Decimal("-0.000004"));
  // The 128-bit intermediate: neither a * num nor the result fits the naive way.
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  CHECK(I::mul_div(max, max, max) == max);
  CHECK_THROWS_AS(I::mul_div(max, 2, 1), std::overflow_error);
  CHECK_THROWS_AS(D::mul_div(Decimal::max(), 2, 1), std::overflow_error);
  SECTION("shares of a split add back up after the remainder is handed out") {
    // What the allocation strategies rely on: floor-ish shares plus a remainder in quanta.
    auto total = Decimal("100.0");
    Decimal sum;
    for (int i = 0; i < 3; ++i)
      sum = D::add(sum, D::mul_div(total, 1, 3));
    CHECK(sum == Decimal("99.999999"));
    CHECK(D::sub(total, sum) == amount_traits<Decimal>::quantum()); // one quantum left to give
    CHECK(amount_traits<Decimal>::quantum() == Decimal::epsilon());
    CHECK(amount_traits<std::int64_t>::quantum() == 1);
  }
}

// `exact` promises that add and sub never round and that mul_div rounds to whole quanta, which
// is what lets a split hand out its remainder step by step and add up to the last digit. Each
// type's flag is checked against what its arithmetic does, over magnitudes far apart.
TEMPLATE_TEST_CASE("the exact flag tells the truth", "[amount][exact]", Decimal, std::int64_t,
                   BigDecimal, double) {
  using T = amount_traits<TestType>;
  auto parse = [](std::string s) {
    if constexpr (std::is_same_v<TestType, std::int64_t>)
      s = s.substr(0, s.find('.'));
    return T::parse(s);
  };
  // Pairs whose sum an exact type must not round: small beside the largest it can hold (for
  // the unbounded BigDecimal, 80 digits apart).
  const std::string big = std::is_same_v<TestType, Decimal>        ? "9000000000000.0"
                          : std::is_same_v<TestType, std::int64_t> ? "9000000000000000000"
                                                                   : "1" + std::string(80, '0');
  const std::string small = std::is_same_v<TestType, std::int64_t> ? "1" : "0.000001";
  auto a = parse(big);
  auto b = parse(small);
  const bool sums_exact = T::sub(T::add(a, b), a) == b;
  // 1/3 of a total, three times, plus the remainder must be the total; the remainder must be
  // whole quanta (for the quantum types) so that it can be handed out.
  auto total = parse("100.0");
  auto third = T::mul_div(total, 1, 3);
  auto rest = T::sub(total, T::add(T::add(third, third), third));
  const bool shares_exact = T::add(T::add(T::add(third, third), third), rest) == total;
  if constexpr (T::exact) {
    CHECK(sums_exact);
    CHECK(shares_exact);
    CHECK(T::mul_div(rest, 1, 1) == rest);
    CHECK(!(rest < amount_zero<TestType>()));
    CHECK(T::mul_div(T::quantum(), 1, 1) == T::quantum());
  } else {
    // An inexact type must really lose something somewhere, or its flag would be pessimistic.
    CHECK_FALSE((sums_exact && shares_exact));
  }
}

TEST_CASE("overflow throws for the bounded amounts", "[amount][overflow]") {
  using I = amount_traits<std::int64_t>;
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  constexpr auto min = std::numeric_limits<std::int64_t>::min();
  CHECK_THROWS_AS(I::add(max, 1), std::overflow_error);
  CHECK_THROWS_AS(I::add(min, -1), std::overflow_error);
  CHECK_THROWS_AS(I::sub(min, 1), std::overflow_error);
  CHECK_THROWS_AS(I::sub(0, min), std::overflow_error);
  CHECK(I::add(max, min) == -1);
  CHECK(I::sub(-1, min) == max);
  CHECK(I::parse("9223372036854775807") == max);
  CHECK(I::parse("-9223372036854775808") == min);
  CHECK_THROWS_AS(I::parse("9223372036854775808"), std::invalid_argument);

  using D = amount_traits<Decimal>;
  CHECK_THROWS_AS(D::add(Decimal::max(), Decimal::epsilon()), std::overflow_error);
  CHECK_THROWS_AS(D::sub(Decimal::min(), Decimal::epsilon()), std::overflow_error);
  CHECK_THROWS_AS(D::from_integer(max), std::overflow_error);

  // double cannot wrap, but it can leave the finite range, which is the same accident.
  using F = amount_traits<double>;
  constexpr auto big = std::numeric_limits<double>::max();
  CHECK_THROWS_AS(F::add(big, big), std::overflow_error);
  CHECK_THROWS_AS(F::sub(-big, big), std::overflow_error);
  CHECK_THROWS_AS(F::mul_div(big, 4, 2), std::overflow_error);
  CHECK(F::add(big, -big) == 0.0);

  // BigDecimal has room to spare.
  using B = amount_traits<BigDecimal>;
  auto huge = B::parse("1" + std::string(60, '0'));
  CHECK(B::to_string(B::add(huge, huge)) == "2" + std::string(60, '0') + ".0");
}

TEST_CASE("double amounts print text that parses back to the same double", "[amount][double]") {
  using F = amount_traits<double>;
  CHECK(F::to_string(0.1) == "0.1");
  CHECK(F::to_string(1e20) == "100000000000000000000.0");
  CHECK(F::to_string(-2.0) == "-2.0");
  CHECK(F::to_string(1e-7) == "0.0000001");
  CHECK(F::parse("0.1") == 0.1);
  CHECK(F::to_string(0.1 + 0.2) == "0.30000000000000004"); // the reason it is not for money
  CHECK_THROWS_AS(F::parse("1" + std::string(400, '0')), std::invalid_argument);
  CHECK_THROWS_AS(F::parse("0." + std::string(400, '0') + "1"), std::invalid_argument);
  std::mt19937_64 rng(23);
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  for (int i = 0; i < 2000; ++i) {
    double x = std::ldexp(mantissa(rng), static_cast<int>(rng() % 200) - 100);
    INFO(x);
    auto text = F::to_string(x);
    REQUIRE(text.find('e') == std::string::npos);
    REQUIRE(F::parse(text) == x);
  }
}

TEST_CASE("BigDecimal prints plain text with 50 significant digits", "[amount][bigdecimal]") {
  using B = amount_traits<BigDecimal>;
  const std::vector<std::string> texts = {
      "0.1",
      "123.456",
      "-0.000000000000000000000000000000000000000000000000000000000001234",
      "1" + std::string(60, '0') + ".0",
      "-98765432109876543210987654321098765432109876543210.0",
      "0.00000000000000000000000000000000012345678901234567890123456789012345678901234567891"};
  for (const auto& text : texts) {
    INFO(text);
    auto value = B::parse(text);
    CHECK(B::to_string(value) == text);
    CHECK(B::parse(B::to_string(value)) == value);
  }
  CHECK(B::to_string(B::parse("-0.0")) == "0.0");
  CHECK(B::to_string(B::mul_div(B::from_integer(2), 1, 3)) == "0." + std::string(49, '6') + "7");
  CHECK(B::to_double(B::parse("2.5")) == 2.5);
  // Non-finite values print as double's do (this used to read past the end of the text).
  CHECK(B::to_string(std::numeric_limits<BigDecimal>::infinity()) == "inf");
  CHECK(B::to_string(-std::numeric_limits<BigDecimal>::infinity()) == "-inf");
  CHECK(B::to_string(std::numeric_limits<BigDecimal>::quiet_NaN()) == "nan");
  CHECK_FALSE(safeguards::amount_is_finite(std::numeric_limits<BigDecimal>::infinity()));
  CHECK(safeguards::amount_is_finite(B::parse("1.5")));
  CHECK_FALSE(safeguards::amount_is_finite(std::numeric_limits<double>::quiet_NaN()));
  CHECK(safeguards::amount_is_finite(Decimal::max()));
}

TEST_CASE("a user-defined amount works through the generic helpers", "[amount][custom]") {
  using C = amount_traits<Cents>;
  CHECK(amount_zero<Cents>() == Cents{0});
  CHECK(amount_to_string(C::parse("12.34")) == "12.34");
  CHECK(C::mul_div(C::from_integer(1), 1, 3) == Cents{33});
  CHECK_THROWS_AS(C::add(Cents{std::numeric_limits<std::int64_t>::max()}, Cents{1}),
                  std::overflow_error);
}
