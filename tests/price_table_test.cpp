// Tests of ModelPrice, PriceTable, cost and max_completion_tokens: exactness against a 128-bit
// reference, rounding up, impossible reports, unknown models, the fallback, the formatters.
// SPDX-License-Identifier: MIT
#include "support/reference.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <optional>
#include <random>
#include <safeguards/errors.hpp>
#include <safeguards/llm_usage.hpp>
#include <safeguards/price_table.hpp>
#include <string>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;
using safeguards_test::what_of;

// Failing cases print their inputs.
namespace Catch {
template <>
struct StringMaker<ModelPrice> {
  static std::string convert(const ModelPrice& p) { return fmt::format("{}", p); }
};
template <>
struct StringMaker<LlmUsage> {
  static std::string convert(const LlmUsage& u) { return fmt::format("{}", u); }
};
} // namespace Catch

namespace {

// The compiler's own 128-bit integer, not the Boost type the library uses: a bug shared by
// both could not hide.
__extension__ typedef unsigned __int128 u128;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr u128 pico_per_micro = 1'000'000;

u128 times(Decimal per_million, std::int64_t tokens) {
  return u128(static_cast<std::uint64_t>(per_million.raw())) * static_cast<std::uint64_t>(tokens);
}

// Picodollars: raw micro-USD per million tokens times tokens.
u128 reference_exact(const ModelPrice& p, const LlmUsage& u) {
  const Decimal cached = p.cached_prompt ? *p.cached_prompt : p.prompt;
  return times(p.prompt, u.prompt_tokens - u.cached_prompt_tokens) +
         times(cached, u.cached_prompt_tokens) + times(p.completion, u.completion_tokens);
}

u128 to_u128(const boost::multiprecision::uint128_t& v) {
  const auto high = static_cast<std::uint64_t>(v >> 64);
  const auto low = static_cast<std::uint64_t>(v & std::numeric_limits<std::uint64_t>::max());
  return (u128(high) << 64) | low;
}

std::string u128_text(u128 v) {
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  } while (v != 0);
  return s;
}

// Values that exercise zero, the small everyday range, the middle, the full range and the
// edge next to INT64_MAX.
class Generator {
public:
  explicit Generator(std::uint64_t seed) : rng_(seed) {}

  std::int64_t count() {
    switch (rng_() % 6) {
    case 0:
      return 0;
    case 1:
      return static_cast<std::int64_t>(rng_() % 1'000'000); // an ordinary call
    case 2:
      return static_cast<std::int64_t>(rng_() % (std::uint64_t{1} << 40));
    case 3:
      return static_cast<std::int64_t>(rng_() >> 1); // the full range
    case 4:
      return int64_max - static_cast<std::int64_t>(rng_() % 1000);
    default:
      return static_cast<std::int64_t>(rng_() % 100);
    }
  }
  // At most `limit`, with both ends likely.
  std::int64_t up_to(std::int64_t limit) {
    switch (rng_() % 4) {
    case 0:
      return 0;
    case 1:
      return limit;
    default:
      return static_cast<std::int64_t>(rng_() % (static_cast<std::uint64_t>(limit) + 1));
    }
  }
  Decimal price() {
    switch (rng_() % 5) {
    case 0:
      return Decimal();
    case 1:
      return Decimal::from_raw(static_cast<std::int64_t>(rng_() % 100'000'000)); // <= 100 USD/M
    default:
      return Decimal::from_raw(count());
    }
  }
  ModelPrice model_price() {
    ModelPrice p{.prompt = price(), .completion = price()};
    switch (rng_() % 3) {
    case 0:
      break; // no cached price: the prompt price applies
    case 1:
      p.cached_prompt = p.prompt;
      break;
    default:
      p.cached_prompt = price();
    }
    return p;
  }
  LlmUsage usage() {
    LlmUsage u{.model = "m", .prompt_tokens = count(), .completion_tokens = count()};
    u.cached_prompt_tokens = up_to(u.prompt_tokens);
    u.reasoning_tokens = up_to(u.completion_tokens);
    return u;
  }
  std::uint64_t next() { return rng_(); }

private:
  std::mt19937_64 rng_;
};

const ModelPrice gpt_4o{.prompt = 2.5_d, .completion = 10_d, .cached_prompt = 1.25_d};

} // namespace

TEST_CASE("cost is the exact cost rounded up to the micro-dollar, or AmountOverflow",
          "[price][property]") {
  Generator gen(0x5eed'c057);
  int overflows = 0;
  int rounded = 0;
  for (int i = 0; i < 100'000; ++i) {
    const ModelPrice price = gen.model_price();
    const LlmUsage usage = gen.usage();
    const u128 exact = reference_exact(price, usage);
    const u128 micros = (exact + pico_per_micro - 1) / pico_per_micro;
    CAPTURE(i, price, usage, u128_text(exact));
    REQUIRE(to_u128(exact_cost_picodollars(price, usage)) == exact);
    if (micros > static_cast<u128>(int64_max)) {
      ++overflows;
      REQUIRE_THROWS_AS(cost(price, usage), AmountOverflow);
      continue;
    }
    const Decimal c = cost(price, usage);
    REQUIRE(c.raw() == static_cast<std::int64_t>(micros));
    // Never below the exact cost, and less than one micro-dollar above it.
    const u128 charged = u128(static_cast<std::uint64_t>(c.raw())) * pico_per_micro;
    REQUIRE(charged >= exact);
    REQUIRE(charged < exact + pico_per_micro);
    rounded += charged != exact ? 1 : 0;
    // Reasoning tokens are part of the completion tokens, not billed again.
    LlmUsage without_reasoning = usage;
    without_reasoning.reasoning_tokens = 0;
    REQUIRE(cost(price, without_reasoning) == c);
  }
  // The generator reaches every branch.
  CHECK(overflows > 1000);
  CHECK(rounded > 1000);
}

TEST_CASE("cost at the edges", "[price]") {
  const ModelPrice free{};
  const LlmUsage huge{.model = "m",
                      .prompt_tokens = int64_max,
                      .completion_tokens = int64_max,
                      .cached_prompt_tokens = int64_max,
                      .reasoning_tokens = int64_max};
  CHECK(cost(free, huge) == Decimal());

  SECTION("one token at the smallest price rounds up to one micro-dollar") {
    const ModelPrice tiny{.prompt = Decimal::epsilon(), .completion = Decimal::epsilon()};
    CHECK(cost(tiny, {.model = "m", .prompt_tokens = 1}) == Decimal::epsilon());
    CHECK(cost(tiny, {.model = "m", .prompt_tokens = 1'000'000}) == Decimal::epsilon());
    CHECK(cost(tiny, {.model = "m", .prompt_tokens = 1'000'001}) == Decimal::from_raw(2));
  }
  SECTION("cached tokens at the cached price, the prompt price when there is none") {
    const LlmUsage u{.model = "gpt-4o", .prompt_tokens = 2000, .cached_prompt_tokens = 1000};
    CHECK(cost(gpt_4o, u) == 0.00375_d); // 1000 × 2.5 + 1000 × 1.25 per million
    ModelPrice no_cache = gpt_4o;
    no_cache.cached_prompt.reset();
    CHECK(cost(no_cache, u) == 0.005_d);
  }
  SECTION("the largest cost Decimal holds, and one micro-dollar more") {
    // INT64_MAX micro-dollars = INT64_MAX × 10^6 picodollars = price.raw × tokens.
    const ModelPrice p{.prompt = Decimal::from_raw(1'000'000), .completion = Decimal()};
    CHECK(cost(p, {.model = "m", .prompt_tokens = int64_max}) == Decimal::max());
    const ModelPrice dearer{.prompt = Decimal::from_raw(1'000'001), .completion = Decimal()};
    CHECK_THROWS_AS(cost(dearer, {.model = "m", .prompt_tokens = int64_max}), AmountOverflow);
  }
  SECTION("a huge cost is AmountOverflow naming the report") {
    const ModelPrice max{.prompt = Decimal::max(), .completion = Decimal::max()};
    CHECK_THROWS_AS(cost(max, huge), AmountOverflow);
    CHECK_THAT(what_of([&] { (void)cost(max, huge); }), Catch::Contains("m: 9223372036854775807"));
  }
  SECTION("the documented examples") {
    CHECK(cost({.prompt = 2.5_d, .completion = 10_d},
               {.model = "gpt-4o", .prompt_tokens = 1000, .completion_tokens = 1}) == 0.00251_d);
    const PriceTable prices{{"gpt-4o", gpt_4o}};
    CHECK(prices.cost({.model = "gpt-4o", .prompt_tokens = 1200, .completion_tokens = 300}) ==
          0.006_d);
  }
}

TEST_CASE("an impossible usage report is InvalidArgument", "[price]") {
  const PriceTable prices{{"gpt-4o", gpt_4o}};
  const std::vector<LlmUsage> impossible = {
      {.model = "gpt-4o", .prompt_tokens = -1},
      {.model = "gpt-4o", .completion_tokens = -1},
      {.model = "gpt-4o", .prompt_tokens = 5, .cached_prompt_tokens = -1},
      {.model = "gpt-4o", .completion_tokens = 5, .reasoning_tokens = -1},
      {.model = "gpt-4o", .prompt_tokens = 5, .cached_prompt_tokens = 6},
      {.model = "gpt-4o", .completion_tokens = 5, .reasoning_tokens = 6},
      {.model = "gpt-4o",
       .prompt_tokens = std::numeric_limits<std::int64_t>::min(),
       .cached_prompt_tokens = std::numeric_limits<std::int64_t>::min()},
  };
  for (const LlmUsage& u : impossible) {
    CAPTURE(u);
    CHECK(!usage_problem(u).empty());
    CHECK_THROWS_AS(validate_usage(u), InvalidArgument);
    CHECK_THROWS_AS(cost(gpt_4o, u), InvalidArgument);
    CHECK_THROWS_AS(exact_cost_picodollars(gpt_4o, u), InvalidArgument);
    CHECK_THROWS_AS(prices.cost(u), InvalidArgument);
  }
  CHECK_THAT(what_of([&] { (void)cost(gpt_4o, impossible[4]); }),
             Catch::Contains("more cached prompt tokens than prompt tokens") &&
                 Catch::Contains("gpt-4o"));
  CHECK_THROWS_AS(max_completion_tokens(gpt_4o, -1, 0, 1_d), InvalidArgument);
  CHECK_THROWS_AS(max_completion_tokens(gpt_4o, 5, 6, 1_d), InvalidArgument);
  CHECK_THROWS_AS(max_completion_tokens(gpt_4o, 5, -1, 1_d), InvalidArgument);
  // Possible reports pass, the limits included.
  CHECK(usage_problem({.prompt_tokens = 5,
                       .completion_tokens = 5,
                       .cached_prompt_tokens = 5,
                       .reasoning_tokens = 5})
            .empty());
}

TEST_CASE("negative prices and empty model names are refused", "[price]") {
  const ModelPrice negatives[] = {
      {.prompt = -0.000001_d, .completion = 1_d},
      {.prompt = 1_d, .completion = -1_d},
      {.prompt = 1_d, .completion = 1_d, .cached_prompt = -1_d},
  };
  for (const ModelPrice& p : negatives) {
    CAPTURE(p);
    PriceTable table;
    CHECK_THROWS_AS(table.set("m", p), InvalidArgument);
    CHECK_THROWS_AS(table.set_fallback(p), InvalidArgument);
    CHECK_THROWS_AS((PriceTable{{"ok", gpt_4o}, {"m", p}}), InvalidArgument);
    CHECK_THROWS_AS(cost(p, {.model = "m", .prompt_tokens = 1}), InvalidArgument);
    CHECK_THROWS_AS(max_completion_tokens(p, 1, 0, 1_d), InvalidArgument);
    CHECK(table.empty());
    CHECK(!table.fallback());
  }
  CHECK_THAT(what_of([] { PriceTable().set("acme-1", {.prompt = -1_d}); }),
             Catch::Contains("prompt price of model \"acme-1\"") && Catch::Contains("-1.0"));
  PriceTable table;
  CHECK_THROWS_AS(table.set("", gpt_4o), InvalidArgument);
  CHECK_THROWS_AS((PriceTable{{"", gpt_4o}}), InvalidArgument);
  // Zero is a price.
  table.set("free", {});
  CHECK(table.at("free") == ModelPrice{});
}

TEST_CASE("an unknown model is UnknownModel unless there is a fallback", "[price]") {
  PriceTable prices{{"gpt-4o", gpt_4o}};
  const LlmUsage call{.model = "acme-9000", .prompt_tokens = 1000, .completion_tokens = 1000};
  CHECK_THROWS_AS(prices.at("acme-9000"), UnknownModel);
  CHECK_THROWS_AS(prices.cost(call), UnknownModel);
  CHECK_THAT(what_of([&] { (void)prices.cost(call); }), Catch::Contains("\"acme-9000\""));
  CHECK(prices.find("acme-9000") == nullptr);
  CHECK(!prices.contains("acme-9000"));

  const ModelPrice fallback{.prompt = 15_d, .completion = 75_d};
  prices.set_fallback(fallback);
  REQUIRE(prices.fallback() == fallback);
  CHECK(prices.at("acme-9000") == fallback);
  CHECK(prices.find("acme-9000") == &*prices.fallback());
  CHECK(prices.cost(call) == 0.09_d);   // 1000 × 15 + 1000 × 75 per million
  CHECK(!prices.contains("acme-9000")); // the fallback is not a listing
  // A listed model keeps its own price.
  CHECK(prices.at("gpt-4o") == gpt_4o);
  CHECK(prices.cost({.model = "gpt-4o", .prompt_tokens = 1000, .completion_tokens = 1000}) ==
        0.0125_d);

  prices.clear_fallback();
  CHECK_THROWS_AS(prices.cost(call), UnknownModel);
}

TEST_CASE("PriceTable: set replaces, erase removes, models are sorted", "[price]") {
  PriceTable prices{{"b", gpt_4o}, {"a", {.prompt = 1_d, .completion = 2_d}}};
  CHECK(prices.size() == 2);
  CHECK(prices.models() == std::vector<std::string>{"a", "b"});
  prices.set("a", {.prompt = 3_d, .completion = 4_d});
  CHECK(prices.at("a").prompt == 3_d);
  CHECK(prices.size() == 2);
  CHECK(prices.erase("a"));
  CHECK(!prices.erase("a"));
  CHECK(prices.models() == std::vector<std::string>{"b"});
  CHECK(!PriceTable().erase("x"));
  CHECK(PriceTable().empty());
}

TEST_CASE("max_completion_tokens: n tokens fit, n + 1 do not", "[price][property]") {
  Generator gen(0x6d61'78c7);
  int bounded = 0;
  for (int i = 0; i < 100'000; ++i) {
    const ModelPrice price = gen.model_price();
    const std::int64_t prompt = gen.next() % 2 == 0 ? gen.count() : gen.up_to(100'000);
    const std::int64_t cached = gen.up_to(prompt);
    const LlmUsage prompt_only{
        .model = "m", .prompt_tokens = prompt, .cached_prompt_tokens = cached};
    // Money around what the prompt costs, so that every outcome is common.
    const u128 base = reference_exact(price, prompt_only);
    const u128 base_micros = (base + pico_per_micro - 1) / pico_per_micro;
    Decimal money;
    switch (gen.next() % 4) {
    case 0:
      money = Decimal::from_raw(gen.count());
      break;
    case 1:
      money = -Decimal::from_raw(static_cast<std::int64_t>(gen.next() % 1000));
      break;
    default: {
      u128 m = base_micros + gen.next() % 10'000'000;
      m = m >= 5 ? m - 5 : 0;
      money = Decimal::from_raw(m > static_cast<u128>(int64_max) ? int64_max
                                                                 : static_cast<std::int64_t>(m));
    }
    }
    CAPTURE(i, price, prompt, cached, money);
    const std::optional<std::int64_t> n = max_completion_tokens(price, prompt, cached, money);

    // The reference: cost <= money <=> exact <= money × 10^6.
    std::optional<std::int64_t> expected;
    if (money >= Decimal()) {
      const u128 budget = u128(static_cast<std::uint64_t>(money.raw())) * pico_per_micro;
      if (base <= budget) {
        if (price.completion.raw() == 0) {
          expected = int64_max;
        } else {
          const u128 k = (budget - base) / static_cast<std::uint64_t>(price.completion.raw());
          expected = k > static_cast<u128>(int64_max) ? int64_max : static_cast<std::int64_t>(k);
        }
      }
    }
    REQUIRE(n == expected);

    // And what it means, through cost itself.
    if (!n) {
      if (money >= Decimal() && base_micros <= static_cast<u128>(int64_max))
        REQUIRE(cost(price, prompt_only) > money);
      continue;
    }
    LlmUsage call = prompt_only;
    call.completion_tokens = *n;
    REQUIRE(cost(price, call) <= money);
    if (*n == int64_max)
      continue;
    ++bounded;
    call.completion_tokens = *n + 1;
    const bool too_dear = [&] {
      try {
        return cost(price, call) > money;
      } catch (const AmountOverflow&) {
        return true; // beyond Decimal::max(), hence beyond any money
      }
    }();
    REQUIRE(too_dear);
  }
  CHECK(bounded > 10'000);
}

TEST_CASE("max_completion_tokens: free completions, a prompt too dear, no money", "[price]") {
  const ModelPrice free_completion{.prompt = 1_d, .completion = Decimal()};
  CHECK(max_completion_tokens(free_completion, 1000, 0, 1_d) == int64_max);
  CHECK(max_completion_tokens({}, int64_max, int64_max, Decimal()) == int64_max);
  // 1000 prompt tokens at 2.5 per million cost 0.0025.
  CHECK(max_completion_tokens(gpt_4o, 1000, 0, 0.002499_d) == std::nullopt);
  CHECK(max_completion_tokens(gpt_4o, 1000, 0, 0.0025_d) == 0);
  CHECK(max_completion_tokens(gpt_4o, 1000, 0, 0.0035_d) == 100); // 100 × 10 per million
  CHECK(max_completion_tokens(gpt_4o, 1000, 1000, 0.0035_d) == 225);
  CHECK(max_completion_tokens(gpt_4o, 0, 0, -1_d) == std::nullopt);
  CHECK(max_completion_tokens(gpt_4o, 0, 0, Decimal()) == 0);
  // One completion token costs 0.00001 here: money for 1.9 tokens buys one.
  const ModelPrice dear{.prompt = Decimal(), .completion = 10_d};
  CHECK(max_completion_tokens(dear, 0, 0, 0.000009_d) == 0);
  CHECK(max_completion_tokens(dear, 0, 0, 0.00001_d) == 1);
  CHECK(max_completion_tokens(dear, 0, 0, 0.000019_d) == 1);
  CHECK(max_completion_tokens(dear, 0, 0, Decimal::max()) == int64_max / 10);
}

TEST_CASE("ModelPrice and LlmUsage print for people", "[price][format]") {
  CHECK(fmt::format("{}", gpt_4o) ==
        "prompt 2.5, completion 10.0, cached prompt 1.25 USD per 1M tokens");
  CHECK(fmt::format("{}", ModelPrice{.prompt = 0.15_d, .completion = 0.6_d}) ==
        "prompt 0.15, completion 0.6 USD per 1M tokens");
  CHECK(fmt::format("[{:>46}]", ModelPrice{.prompt = 1_d, .completion = 2_d}) ==
        "[  prompt 1.0, completion 2.0 USD per 1M tokens]");
  CHECK(fmt::format("{}", LlmUsage{.model = "gpt-4o",
                                   .prompt_tokens = 1200,
                                   .completion_tokens = 300,
                                   .cached_prompt_tokens = 1024,
                                   .reasoning_tokens = 120}) ==
        "gpt-4o: 1200 prompt (1024 cached) + 300 completion (120 reasoning) tokens");
  CHECK(fmt::format("{}", LlmUsage{.prompt_tokens = 1, .completion_tokens = 2}) ==
        "?: 1 prompt + 2 completion tokens");
  CHECK(LlmUsage{.prompt_tokens = int64_max, .completion_tokens = 1}.total_tokens() == int64_max);
  CHECK(LlmUsage{.prompt_tokens = 1200, .completion_tokens = 300}.total_tokens() == 1500);
}
