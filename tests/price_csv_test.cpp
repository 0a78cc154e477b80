// Tests of load_price_csv (every error with its line), load_price_csv_file and builtin_prices.
// SPDX-License-Identifier: MIT
#include "support/reference.hpp"

#include <catch2/catch.hpp>
#include <cstddef>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <optional>
#include <random>
#include <safeguards/builtin_prices.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/price_csv.hpp>
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

constexpr std::string_view header = "model,prompt,completion,cached_prompt\n";

// The ParseError `f` throws; fails the test when it throws nothing or something else.
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

// A file in the temporary directory, removed at the end of the test.
class TempFile {
public:
  explicit TempFile(std::string_view content) {
    std::random_device seed;
    path_ = std::filesystem::temp_directory_path() /
            fmt::format("safeguards_price_csv_test_{:x}.csv", std::mt19937_64(seed())());
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

} // namespace

TEST_CASE("a price CSV with comments, blank lines, CRLF, blanks and quotes", "[price][csv]") {
  const std::string text = "\xEF\xBB\xBF"
                           "# Prices in USD per million tokens.\r\n"
                           "\r\n"
                           "  model , prompt,completion ,\tcached_prompt\r\n"
                           "gpt-4o,2.5,10,1.25\r\n"
                           "   # indented comment\r\n"
                           "\t\r\n"
                           "  gpt-4o-mini ,\t0.15 , 0.6,  \r\n"
                           "\"acme/model, v2\",1,2,0.5\n"
                           "\"#hash\",0,0,\n"
                           " \"say \"\"hi\"\"\" , 1.000000 , +2 ,0\n"
                           "free-model,0,0,\n"
                           "last,0.000001,9223372036854.775807,"; // no newline at the end
  const PriceTable prices = load_price_csv(text);
  CHECK(prices.models() == std::vector<std::string>{"#hash", "acme/model, v2", "free-model",
                                                    "gpt-4o", "gpt-4o-mini", "last", "say \"hi\""});
  CHECK(prices.at("gpt-4o") ==
        ModelPrice{.prompt = 2.5_d, .completion = 10_d, .cached_prompt = 1.25_d});
  CHECK(prices.at("gpt-4o-mini") == ModelPrice{.prompt = 0.15_d, .completion = 0.6_d});
  CHECK(!prices.at("gpt-4o-mini").cached_prompt);
  CHECK(prices.at("acme/model, v2") ==
        ModelPrice{.prompt = 1_d, .completion = 2_d, .cached_prompt = 0.5_d});
  CHECK(prices.at("say \"hi\"") ==
        ModelPrice{.prompt = 1_d, .completion = 2_d, .cached_prompt = Decimal()});
  CHECK(prices.at("free-model") == ModelPrice{});
  CHECK(prices.at("last") ==
        ModelPrice{.prompt = Decimal::epsilon(), .completion = Decimal::max()});
  CHECK(!prices.fallback());
}

TEST_CASE("a quoted model name is taken verbatim", "[price][csv]") {
  const PriceTable prices = load_price_csv(std::string(header) + "\" padded \",1,2,\n");
  CHECK(prices.contains(" padded "));
  CHECK(!prices.contains("padded"));
}

TEST_CASE("a price CSV with only a header is an empty table", "[price][csv]") {
  CHECK(load_price_csv(header).empty());
  CHECK(load_price_csv("# comment\nmodel,prompt,completion,cached_prompt").empty());
}

TEST_CASE("every bad price CSV is a ParseError naming its line and text", "[price][csv]") {
  struct Case {
    std::string text;       // what follows two lines of preamble
    std::size_t line;       // the line of the problem, counting the preamble
    std::string_view shown; // text the message must quote
  };
  // Two lines come first (a comment and a blank line), so that the line numbers count them.
  const std::string h(header);
  const Case bad = GENERATE_COPY(values<Case>({
      // the header
      {"gpt-4o,2.5,10,1.25\n", 3, "gpt-4o,2.5,10,1.25"},
      {"model,prompt,completion\ngpt-4o,2.5,10\n", 3, "model,prompt,completion"},
      {"model,input,output,cached\n", 3, "model,input,output,cached"},
      {"Model,Prompt,Completion,Cached_prompt\n", 3, "Model,Prompt"},
      {"model,prompt,completion,cached_prompt,extra\n", 3, "cached_prompt,extra"},
      // the number of fields
      {h + "gpt-4o,2.5,10\n", 4, "gpt-4o,2.5,10"},
      {h + "gpt-4o,2.5,10,1.25,9\n", 4, "gpt-4o,2.5,10,1.25,9"},
      {h + "gpt-4o\n", 4, "gpt-4o"},
      {h + "ok,1,2,\n\n# c\r\ngpt-4o;2.5;10;1.25\r\n", 7, "gpt-4o;2.5;10;1.25"},
      // the model name
      {h + ",2.5,10,1.25\n", 4, ",2.5,10,1.25"},
      {h + "\"\",2.5,10,1.25\n", 4, "2.5,10,1.25"},
      // malformed numbers
      {h + "gpt-4o,2.5.1,10,\n", 4, "2.5.1"},
      {h + "gpt-4o,abc,10,\n", 4, "abc"},
      {h + "gpt-4o,2.5,1e-6,\n", 4, "1e-6"},
      {h + "gpt-4o,2.5,10,.5\n", 4, ".5"},
      {h + "gpt-4o,2.5,10,1.\n", 4, "1."},
      {h + "gpt-4o,$2.5,10,\n", 4, "$2.5"},
      {h + "gpt-4o,2 5,10,\n", 4, "2 5"},
      {h + "gpt-4o,0.0000001,10,\n", 4, "0.0000001"},
      {h + "gpt-4o,2.5,10000000000000,\n", 4, "10000000000000"},
      {h + "gpt-4o,,10,\n", 4, "gpt-4o"},
      {h + "gpt-4o,2.5,,\n", 4, "gpt-4o"},
      {h + "gpt-4o,\"2.5 \",10,\n", 4, "2.5 "},
      // negative numbers
      {h + "gpt-4o,-2.5,10,\n", 4, "-2.5"},
      {h + "gpt-4o,2.5,-0.000001,\n", 4, "-0.000001"},
      {h + "gpt-4o,2.5,10,-1\n", 4, "-1"},
      // a model listed twice
      {h + "gpt-4o,2.5,10,\n# again\ngpt-4o,2.5,10,\n", 6, "gpt-4o"},
      {h + "a,1,1,\r\n\"a\",1,1,\r\n", 5, "\"a\""},
      // quotes
      {h + "\"gpt-4o,2.5,10,\n", 4, "\\\"gpt-4o,2.5,10,"},
      {h + "\"gpt\"-4o,2.5,10,\n", 4, "-4o,2.5,10,"},
      {h + "gp\"t,2.5,10,\n", 4, "gp\\\"t,2.5,10,"},
      // control bytes are shown escaped
      {h + "gpt-4o,2.5\x01,10,\n", 4, "2.5\\x01"},
  }));
  const std::string text = "# prices\n\n" + bad.text;
  CAPTURE(text);
  const ParseError e = parse_error_of([&] { (void)load_price_csv(text); });
  CHECK(e.line() == bad.line);
  const std::string what = e.what();
  CHECK_THAT(what, Catch::Contains(fmt::format("line {}:", bad.line)));
  CHECK_THAT(what, Catch::Contains(std::string(bad.shown)));
  CHECK_THAT(what, Catch::StartsWith("safeguards: price CSV, line"));
}

TEST_CASE("a price CSV error says what is wrong", "[price][csv]") {
  const std::string h(header);
  auto message = [](const std::string& text) {
    return what_of([&] { (void)load_price_csv(text); });
  };
  CHECK_THAT(message(h + "gpt-4o,2.5,10\n"),
             Catch::Contains("expected 4 fields") && Catch::Contains("got 3"));
  CHECK_THAT(message("gpt-4o,2.5,10,\n"),
             Catch::Contains("expected the header row model,prompt,completion,cached_prompt"));
  CHECK_THAT(message(h + "a,1,1,\nb,1,1,\na,1,1,\n"),
             Catch::Contains("\"a\" is listed twice (first on line 2)"));
  CHECK_THAT(message(h + "a,-1,1,\n"), Catch::Contains("prompt price of model \"a\" is negative"));
  CHECK_THAT(message(h + "a,1,x,\n"),
             Catch::Contains("completion price of model \"a\" is not a decimal number"));
  CHECK_THAT(message(h + "a,1,1,0.1234567\n"),
             Catch::Contains("cached_prompt price of model \"a\"") &&
                 Catch::Contains("at most 6 fractional digits"));
  CHECK_THAT(message(h + ",1,1,\n"), Catch::Contains("the model name is empty"));
  CHECK_THAT(message(h + "\"a,1,1,\n"), Catch::Contains("no closing quote"));
  // A ParseError is an InvalidArgument, and a safeguards::Error.
  CHECK_THROWS_AS(load_price_csv("x"), InvalidArgument);
  CHECK_THROWS_AS(load_price_csv("x"), Error);
}

TEST_CASE("a price CSV without a header row is a ParseError at line 0", "[price][csv]") {
  const std::string text =
      GENERATE(as<std::string>{}, "", "\n", "\xEF\xBB\xBF", "# only\n\n  \r\n", "# a\n# b");
  CAPTURE(text);
  const ParseError e = parse_error_of([&] { (void)load_price_csv(text); });
  CHECK(e.line() == 0);
  CHECK_THAT(std::string(e.what()), Catch::Contains("no header row"));
}

TEST_CASE("load_price_csv_file reads a file and names it in errors", "[price][csv]") {
  SECTION("a good file") {
    const TempFile file(std::string(header) + "gpt-4o,2.5,10,1.25\r\n");
    const PriceTable prices = load_price_csv_file(file.path());
    CHECK(prices.at("gpt-4o").cached_prompt == 1.25_d);
  }
  SECTION("a bad file: ParseError with the path and the line") {
    const TempFile file(std::string(header) + "gpt-4o,2.5,10,1.25\ngpt-4o,2.5,10,1.25\n");
    const ParseError e = parse_error_of([&] { (void)load_price_csv_file(file.path()); });
    CHECK(e.line() == 3);
    CHECK_THAT(std::string(e.what()),
               Catch::Contains(fmt::format("price file \"{}\", line 3:", file.path().string())));
  }
  SECTION("a missing file: IoError with the path") {
    const auto missing = std::filesystem::temp_directory_path() / "safeguards-no-such-prices.csv";
    CHECK_THROWS_AS(load_price_csv_file(missing), IoError);
    CHECK_THAT(what_of([&] { (void)load_price_csv_file(missing); }),
               Catch::Contains(missing.string()) && Catch::Contains("cannot open"));
  }
  SECTION("a directory: IoError") {
    CHECK_THROWS_AS(load_price_csv_file(std::filesystem::temp_directory_path()), IoError);
  }
}

TEST_CASE("builtin_prices: common models, sane prices, dated names agree", "[price][builtin]") {
  const PriceTable prices = builtin_prices();
  REQUIRE(!prices.empty());
  CHECK(prices.size() == 27);
  CHECK(!prices.fallback());
  for (const std::string& model : prices.models()) {
    CAPTURE(model);
    const ModelPrice& p = prices.at(model);
    CHECK(p.prompt >= Decimal());
    CHECK(p.completion >= Decimal());
    REQUIRE(p.cached_prompt);
    CHECK(*p.cached_prompt >= Decimal());
    // What the table is for: completions cost more than prompts, cache reads less.
    CHECK(p.completion > p.prompt);
    CHECK(*p.cached_prompt < p.prompt);
  }
  CHECK(prices.at("gpt-4o") ==
        ModelPrice{.prompt = 2.5_d, .completion = 10_d, .cached_prompt = 1.25_d});
  for (std::string_view model :
       {"gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5",
        "gpt-5-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "gemini-2.5-pro",
        "gemini-2.5-flash"})
    CHECK(prices.contains(model));
  // A dated snapshot, as the API reports it, costs what its alias does.
  const std::pair<std::string_view, std::string_view> dated[] = {
      {"gpt-4o", "gpt-4o-2024-08-06"},
      {"gpt-4o", "gpt-4o-2024-11-20"},
      {"gpt-4o-mini", "gpt-4o-mini-2024-07-18"},
      {"gpt-4.1", "gpt-4.1-2025-04-14"},
      {"gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"},
      {"gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"},
      {"o3", "o3-2025-04-16"},
      {"o4-mini", "o4-mini-2025-04-16"},
      {"gpt-5", "gpt-5-2025-08-07"},
      {"gpt-5-mini", "gpt-5-mini-2025-08-07"},
      {"claude-sonnet-4-5", "claude-sonnet-4-5-20250929"},
      {"claude-haiku-4-5", "claude-haiku-4-5-20251001"},
      {"claude-opus-4-1", "claude-opus-4-1-20250805"},
  };
  for (const auto& [alias, snapshot] : dated) {
    CAPTURE(alias, snapshot);
    CHECK(prices.at(snapshot) == prices.at(alias));
  }
  // The documented example.
  CHECK(prices.cost(
            {.model = "gpt-4o-2024-08-06", .prompt_tokens = 1000, .completion_tokens = 100}) ==
        0.0035_d);
  CHECK_THROWS_AS(prices.at("gpt-3.5-turbo"), UnknownModel);
}
