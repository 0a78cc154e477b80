// Tests of load_litellm_prices: real LiteLLM data (tests/data), exact conversion of per-token
// number text, rounding up, what is skipped, and every error. Built only with nlohmann-json.
// SPDX-License-Identifier: MIT
#include "support/reference.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <limits>
#include <random>
#include <safeguards/builtin_prices.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/price_json.hpp>
#include <safeguards/price_table.hpp>
#include <string>
#include <string_view>
#include <vector>

using namespace safeguards;
using namespace safeguards::literals;
using safeguards_test::what_of;

namespace Catch {
template <>
struct StringMaker<ModelPrice> {
  static std::string convert(const ModelPrice& p) { return fmt::format("{}", p); }
};
} // namespace Catch

namespace {

const std::filesystem::path subset_path =
    std::filesystem::path(SAFEGUARDS_TEST_DATA_DIR) / "litellm_prices_subset.json";

template <class F>
ParseError parse_error_of(F&& f) {
  try {
    f();
  } catch (const ParseError& e) {
    return e;
  }
  FAIL("no ParseError");
  return ParseError("", 0);
}

// One model whose input price has the given number text; its output price is 1e-06.
PriceTable one_model(std::string_view input_text) {
  return load_litellm_prices(fmt::format(
      R"({{"m": {{"input_cost_per_token": {}, "output_cost_per_token": 1e-06}}}})", input_text));
}

ModelPrice price(Decimal prompt, Decimal completion, std::optional<Decimal> cached = {}) {
  return {.prompt = prompt, .completion = completion, .cached_prompt = cached};
}

} // namespace

TEST_CASE("LiteLLM prices: the real subset loads, exactly", "[price][json]") {
  const PriceTable prices = load_litellm_prices_file(subset_path);
  // 49 entries: 38 priced per token, 11 skipped.
  CHECK(prices.models() == std::vector<std::string>{"claude-haiku-4-5",
                                                    "claude-haiku-4-5-20251001",
                                                    "claude-opus-4-1",
                                                    "claude-opus-4-1-20250805",
                                                    "claude-sonnet-4-5",
                                                    "claude-sonnet-4-5-20250929",
                                                    "gemini-1.5-flash-exp-0827",
                                                    "gemini-2.5-pro",
                                                    "gemini/gemini-2.5-flash",
                                                    "gemini/gemini-2.5-pro",
                                                    "gpt-4.1",
                                                    "gpt-4.1-2025-04-14",
                                                    "gpt-4.1-mini",
                                                    "gpt-4.1-mini-2025-04-14",
                                                    "gpt-4.1-nano",
                                                    "gpt-4.1-nano-2025-04-14",
                                                    "gpt-4o",
                                                    "gpt-4o-2024-05-13",
                                                    "gpt-4o-2024-08-06",
                                                    "gpt-4o-2024-11-20",
                                                    "gpt-4o-mini",
                                                    "gpt-4o-mini-2024-07-18",
                                                    "gpt-5",
                                                    "gpt-5-2025-08-07",
                                                    "gpt-5-mini",
                                                    "gpt-5-mini-2025-08-07",
                                                    "gpt-5-pro",
                                                    "luminous-supreme-control",
                                                    "moonshot/kimi-k2-thinking",
                                                    "o3",
                                                    "o3-2025-04-16",
                                                    "o4-mini",
                                                    "o4-mini-2025-04-16",
                                                    "openrouter/minimax/minimax-m2",
                                                    "openrouter/z-ai/glm-4.6",
                                                    "text-embedding-3-small",
                                                    "wandb/openai/gpt-oss-20b",
                                                    "watsonx/mistralai/mistral-large"});
  CHECK(!prices.fallback());

  // By hand, from the JSON text (per token × 10^6).
  // "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, cache read 1.25e-06
  CHECK(prices.at("gpt-4o") == price(2.5_d, 10_d, 1.25_d));
  // 1.5e-05, 1.2e-04; no cache_read_input_token_cost
  CHECK(prices.at("gpt-5-pro") == price(15_d, 120_d));
  // 5e-06, 1.5e-05, no cache read price
  CHECK(prices.at("gpt-4o-2024-05-13") == price(5_d, 15_d));
  // 0.00021875, 0.000240625: plain decimals
  CHECK(prices.at("luminous-supreme-control") == price(218.75_d, 240.625_d));
  // 3e-06, 10e-06
  CHECK(prices.at("watsonx/mistralai/mistral-large") == price(3_d, 10_d));
  // 4.0e-7, 1.75e-6
  CHECK(prices.at("openrouter/z-ai/glm-4.6") == price(0.4_d, 1.75_d));
  // 2.55e-7, 1.02e-6
  CHECK(prices.at("openrouter/minimax/minimax-m2") == price(0.255_d, 1.02_d));
  // 6e-7, 2.5e-6, cache read 1.5e-7
  CHECK(prices.at("moonshot/kimi-k2-thinking") == price(0.6_d, 2.5_d, 0.15_d));
  // 2e-08, "output_cost_per_token": 0.0 (an embedding model: loaded, output free)
  CHECK(prices.at("text-embedding-3-small") == price(0.02_d, Decimal()));
  // 0.005, 0.02: odd (5000 USD per million tokens) but what the file says
  CHECK(prices.at("wandb/openai/gpt-oss-20b") == price(5000_d, 20000_d));
  // 4.688e-09 is exactly 0.004688 per million; 4.6875e-09 is 0.0046875, rounded up
  CHECK(prices.at("gemini-1.5-flash-exp-0827") == price(0.004688_d, 0.004688_d));
  // Vertex AI and the Gemini API differ in the cached price: 1.25e-07 and 3.125e-07
  CHECK(prices.at("gemini-2.5-pro") == price(1.25_d, 10_d, 0.125_d));
  CHECK(prices.at("gemini/gemini-2.5-pro") == price(1.25_d, 10_d, 0.3125_d));

  // Skipped, each for its documented reason.
  for (std::string_view model : {
           "sample_spec",                         // the field documentation
           "mistral/mistral-embed",               // input price only
           "gpt-image-1-mini",                    // input price only
           "azure/standard/1024-x-1024/dall-e-3", // output price only
           "1024-x-1024/dall-e-2",                // per pixel
           "whisper-1",                           // per second
           "tts-1",                               // per character
           "dashscope/qwen-flash",                // prices only inside tiered_pricing
           "rerank-english-v3.0",                 // both zero (priced per query)
           "ollama/llama3",                       // both zero (local)
           "gemini-2.0-flash-thinking-exp",       // both the integer 0
       }) {
    CAPTURE(model);
    CHECK(!prices.contains(model));
    CHECK_THROWS_AS(prices.cost({.model = std::string(model), .prompt_tokens = 1}), UnknownModel);
  }
}

TEST_CASE("builtin_prices agrees with LiteLLM's table it was taken from", "[price][json]") {
  const PriceTable litellm = load_litellm_prices_file(subset_path);
  const PriceTable builtin = builtin_prices();
  for (const std::string& model : builtin.models()) {
    // The Gemini prices are those of the Gemini API's keys.
    const std::string key = model.starts_with("gemini-") ? "gemini/" + model : model;
    CAPTURE(model, key);
    REQUIRE(litellm.contains(key));
    CHECK(builtin.at(model) == litellm.at(key));
  }
}

TEST_CASE("per-token number text converts exactly", "[price][json]") {
  struct Case {
    std::string_view text;
    Decimal per_million;
  };
  const Case c = GENERATE(values<Case>({
      {"2.5e-06", 2.5_d},
      {"2.5E-06", 2.5_d},
      {"2.5e-6", 2.5_d},
      {"1.25E-7", 0.125_d},
      {"1.25e-07", 0.125_d},
      {"0.0000025", 2.5_d},
      {"0.000002500000000000000000", 2.5_d},
      {"25e-7", 2.5_d},
      {"0.25e-5", 2.5_d},
      {"0.00025e-2", 2.5_d},
      {"2.5e+0", 2500000_d},
      {"2.5E+1", 25000000_d},
      {"1e-12", Decimal::epsilon()},
      {"1", 1000000_d},
      {"7", 7000000_d},
      {"0", Decimal()},
      {"0.0", Decimal()},
      {"-0", Decimal()},
      {"-0.0", Decimal()},
      {"0e5", Decimal()},
      {"0.000e-999999999999999999999", Decimal()},
      {"9223372", 9223372000000_d},
      {"9223372.036854775807", Decimal::max()},
      {"9223372036854775807e-12", Decimal::max()},
      {"9223372036854775807000e-15", Decimal::max()},
      // More than six fractional digits per million: rounded up to the next micro-dollar.
      {"4.6875e-09", 0.004688_d},
      {"1e-13", Decimal::epsilon()},
      {"1e-400", Decimal::epsilon()},
      {"1E-99999999999999999999", Decimal::epsilon()},
      {"1.0000001e-6", 1.000001_d},
      {"2.5000000000001e-06", 2.500001_d},
      {"0.0000000000009", Decimal::epsilon()},
      {"9223372.0368547758069e0", Decimal::max()},
  }));
  CAPTURE(c.text);
  // Through the loader (a zero input price is loaded: the output price is not zero) and alone.
  CHECK(one_model(c.text).at("m").prompt == c.per_million);
  const auto direct = detail::per_token_text_to_per_million(c.text);
  CHECK(direct.status == detail::PerMillionStatus::ok);
  CHECK(direct.value == c.per_million);
}

TEST_CASE("per-token text: a property test against the digits themselves", "[price][json]") {
  // A raw count r of micro-dollars per million tokens is r × 10^-12 USD per token. Write it in
  // many ways; each must come back as r exactly, and with a further non-zero digit as r + 1.
  std::mt19937_64 rng(0x7e47'1e55);
  for (int i = 0; i < 20'000; ++i) {
    std::uint64_t raw = 0;
    switch (rng() % 4) {
    case 0:
      raw = rng() % 1000;
      break;
    case 1:
      raw = rng() % 100'000'000;
      break;
    case 2:
      raw = rng() >> 1;
      break;
    default:
      raw = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - rng() % 10;
    }
    const std::string digits = std::to_string(raw);
    // value = digits × 10^-12; put the point after `point` digits (may be outside the digits:
    // leading zeros are added) and make up the difference with the exponent.
    const int point = static_cast<int>(rng() % 30) - 10;
    std::string mantissa;
    if (point <= 0)
      mantissa = "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
    else if (static_cast<std::size_t>(point) >= digits.size())
      mantissa = digits + std::string(static_cast<std::size_t>(point) - digits.size(), '0') + ".0";
    else
      mantissa = digits.substr(0, static_cast<std::size_t>(point)) + "." +
                 digits.substr(static_cast<std::size_t>(point));
    mantissa += std::string(rng() % 3, '0'); // trailing zeros change nothing
    const long exponent = static_cast<long>(digits.size()) - point - 12;
    std::string text = mantissa;
    if (exponent != 0 || rng() % 2 == 0)
      text += fmt::format("{}{}{}", rng() % 2 == 0 ? "e" : "E",
                          exponent >= 0 && rng() % 2 == 0 ? "+" : "", exponent);
    CAPTURE(raw, text);
    const auto exact = detail::per_token_text_to_per_million(text);
    REQUIRE(exact.status == detail::PerMillionStatus::ok);
    REQUIRE(exact.value.raw() == static_cast<std::int64_t>(raw));
    REQUIRE(!exact.rounded);

    // A non-zero digit past the last one: more than r, so r + 1 (or out of range).
    const std::string over =
        mantissa + std::to_string(1 + rng() % 9) + text.substr(mantissa.size());
    CAPTURE(over);
    const auto up = detail::per_token_text_to_per_million(over);
    if (raw == static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      REQUIRE(up.status == detail::PerMillionStatus::out_of_range);
    } else {
      REQUIRE(up.status == detail::PerMillionStatus::ok);
      REQUIRE(up.value.raw() == static_cast<std::int64_t>(raw) + 1);
      REQUIRE(up.rounded);
    }
    if (raw != 0)
      REQUIRE(detail::per_token_text_to_per_million("-" + text).status ==
              detail::PerMillionStatus::negative);
  }
}

TEST_CASE("per-token text: what the converter refuses", "[price][json]") {
  using detail::PerMillionStatus;
  const auto status = [](std::string_view text) {
    return detail::per_token_text_to_per_million(text).status;
  };
  for (std::string_view text : {"", "-", ".5", "5.", "1e", "1e+", "e5", "1.2.3", "0x10", "1 ",
                                "NaN", "inf", "1e5x", "--1"}) {
    CAPTURE(text);
    CHECK(status(text) == PerMillionStatus::malformed);
  }
  CHECK(status("9223373") == PerMillionStatus::out_of_range);
  CHECK(status("9223372.036854775808") == PerMillionStatus::out_of_range);
  CHECK(status("1e7") == PerMillionStatus::out_of_range);
  CHECK(status("1e999999999999") == PerMillionStatus::out_of_range);
  CHECK(status("12345678901234567890123") == PerMillionStatus::out_of_range);
  CHECK(status("-1e-6") == PerMillionStatus::negative);
  CHECK(status("-1e-99") == PerMillionStatus::negative);
  // nlohmann writes the C locale's decimal point into the text it hands over.
  CHECK(detail::per_token_text_to_per_million("2,5e-06").value == 2.5_d);
}

TEST_CASE("LiteLLM prices: integers, nulls, nesting, skipped members", "[price][json]") {
  const PriceTable prices = load_litellm_prices(R"(
  {
    "int": {"input_cost_per_token": 0, "output_cost_per_token": 2},
    "unsigned": {"input_cost_per_token": 9223372, "output_cost_per_token": 1e-06},
    "null-cache": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                   "cache_read_input_token_cost": null},
    "null-input": {"input_cost_per_token": null, "output_cost_per_token": 2e-06},
    "both-zero": {"input_cost_per_token": 0.0, "output_cost_per_token": 0,
                  "cache_read_input_token_cost": 1e-06},
    "nested": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
               "tiered_pricing": [{"input_cost_per_token": "not read",
                                   "output_cost_per_token": -1}],
               "metadata": {"input_cost_per_token": {"deep": true}},
               "other": [1, "two", null, true, {"three": 3}]},
    "version": "1.0",
    "list": [{"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}],
    "number": 42,
    "sample_spec": {"input_cost_per_token": "described here", "output_cost_per_token": -1,
                    "max_tokens": "a string"}
  })");
  CHECK(prices.models() == std::vector<std::string>{"int", "nested", "null-cache", "unsigned"});
  CHECK(prices.at("int") == price(Decimal(), 2000000_d));
  CHECK(prices.at("unsigned") == price(9223372000000_d, 1_d));
  CHECK(prices.at("null-cache") == price(1_d, 2_d));
  CHECK(prices.at("nested") == price(1_d, 2_d));
  // An empty object and a UTF-8 byte order mark.
  CHECK(load_litellm_prices("{}").empty());
  CHECK(load_litellm_prices("\xEF\xBB\xBF{\"m\": {\"input_cost_per_token\": 1e-06, "
                            "\"output_cost_per_token\": 1e-06}}")
            .contains("m"));
}

TEST_CASE("LiteLLM prices: a price that is not a number is a ParseError naming model and field",
          "[price][json]") {
  struct Case {
    std::string_view value;
    std::string_view described;
  };
  const Case c = GENERATE(values<Case>({
      {R"("2.5e-06")", "a string"},
      {"true", "true"},
      {"false", "false"},
      {R"({"usd": 2.5e-06})", "an object"},
      {"[2.5e-06]", "an array"},
  }));
  const std::string_view field = GENERATE(as<std::string_view>{}, "input_cost_per_token",
                                          "output_cost_per_token", "cache_read_input_token_cost");
  const std::string json = fmt::format(R"({{
  "ok": {{"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}},
  "acme/model": {{
    "mode": "chat",
    "{}": {}
  }}
}})",
                                       field, c.value);
  CAPTURE(json);
  const ParseError e = parse_error_of([&] { (void)load_litellm_prices(json); });
  CHECK(e.line() == 5);
  const std::string what = e.what();
  CHECK_THAT(what, Catch::Contains("\"acme/model\"") && Catch::Contains(std::string(field)) &&
                       Catch::Contains(std::string(c.described)) && Catch::Contains("line 5:"));
}

TEST_CASE("LiteLLM prices: every other error", "[price][json]") {
  struct Case {
    std::string_view json;
    std::size_t line;
    std::string_view says;
  };
  const Case c = GENERATE(values<Case>({
      // negative
      {"{\n\"m\": {\"input_cost_per_token\": -2.5e-06,\n\"output_cost_per_token\": 1e-06}}", 2,
       "model \"m\": input_cost_per_token is negative: -2.5e-06"},
      {"{\"m\": {\"output_cost_per_token\": -1}}", 1,
       "model \"m\": output_cost_per_token is negative: -1"},
      {"{\"m\": {\"cache_read_input_token_cost\": -0.5}}", 1,
       "cache_read_input_token_cost is negative"},
      // beyond Decimal per million tokens
      {"{\"m\": {\"input_cost_per_token\": 1e7, \"output_cost_per_token\": 0}}", 1,
       "input_cost_per_token is 1e7 USD per token, beyond"},
      {"{\"m\": {\"input_cost_per_token\": 18446744073709551615}}", 1,
       "input_cost_per_token is 18446744073709551615 USD per token"},
      // names
      {"{\"a\": {},\n\n\"a\": {}}", 3, "model \"a\" is listed twice"},
      {"{\"\": {\"input_cost_per_token\": 1e-06}}", 1, "a model name is empty"},
      {"{\"m\": {\"input_cost_per_token\": 1e-06,\n \"input_cost_per_token\": 1e-06}}", 2,
       "model \"m\": field input_cost_per_token is given twice"},
      // not LiteLLM's shape
      {"[{\"m\": {}}]", 1, "the top level is an array"},
      {"\n\n42", 3, "the top level is a number"},
      {"\"prices\"", 1, "the top level is a string"},
      {"null", 1, "the top level is null"},
      {"true", 1, "the top level is true"},
      // malformed JSON: nlohmann's message
      {"{\"m\": {\"input_cost_per_token\": 1e-06,}}", 1, "parse error at line 1"},
      {"{\n  \"m\": {\n    \"input_cost_per_token\": 2.5e-06\n  }", 4, "unexpected end of input"},
      {"{\"m\": 1e999}", 1, "number overflow"},
      {"{\"m\": {}} trailing", 1, "parse error"},
      {"{\"m\": NaN}", 1, "syntax error"},
      {"{\"m\":\n\"unterminated\n\"}", 2, "control character"},
      {"", 0, "unexpected end of input"},
  }));
  CAPTURE(c.json);
  const ParseError e = parse_error_of([&] { (void)load_litellm_prices(c.json); });
  CHECK(e.line() == c.line);
  CHECK_THAT(std::string(e.what()), Catch::Contains(std::string(c.says)) &&
                                        Catch::StartsWith("safeguards: LiteLLM prices"));
}

TEST_CASE("LiteLLM prices: the sample_spec entry is not read, whatever it holds", "[price][json]") {
  CHECK(load_litellm_prices(R"({"sample_spec": {"input_cost_per_token": "x",
                                                 "input_cost_per_token": [],
                                                 "output_cost_per_token": -1}})")
            .empty());
}

TEST_CASE("load_litellm_prices_file: IoError for a missing file, the path in a ParseError",
          "[price][json]") {
  const auto missing = std::filesystem::path(SAFEGUARDS_TEST_DATA_DIR) / "no-such-prices.json";
  CHECK_THROWS_AS(load_litellm_prices_file(missing), IoError);
  CHECK_THAT(what_of([&] { (void)load_litellm_prices_file(missing); }),
             Catch::Contains(missing.string()));
  // The data directory's README is not JSON.
  const auto readme = std::filesystem::path(SAFEGUARDS_TEST_DATA_DIR) / "README.md";
  const ParseError e = parse_error_of([&] { (void)load_litellm_prices_file(readme); });
  CHECK(e.line() == 1);
  CHECK_THAT(std::string(e.what()), Catch::Contains(readme.string()));
}
