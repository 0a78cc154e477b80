// The LiteLLM price loader check without libFuzzer: the fuzzer's seed corpus and LiteLLM's real
// subset (tests/data), replayed, and seeded random, mutated and spliced texts, each through
// tests/support/price_json_check.hpp (a table with exact, non-negative prices that writes back to
// itself and agrees with nlohmann's DOM, or a ParseError within the text; deterministic).
// Built only when nlohmann-json is found, like price_json_test.
// SPDX-License-Identifier: MIT
#include "support/price_json_check.hpp"
#include "support/text_mutations.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

TEST_CASE("the LiteLLM loader keeps its promises on every corpus file and the real subset",
          "[price][json][fuzz]") {
  std::size_t files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(SAFEGUARDS_FUZZ_CORPUS_DIR "/price_json_text")) {
    INFO(entry.path().filename().string());
    CHECK(safeguards_test::check_price_json_text(safeguards_test::read_file_bytes(entry.path())) ==
          "");
    ++files;
  }
  CHECK(files >= 8);
  CHECK(safeguards_test::check_price_json_text(safeguards_test::read_file_bytes(
            SAFEGUARDS_TEST_DATA_DIR "/litellm_prices_subset.json")) == "");
}

TEST_CASE("the LiteLLM loader keeps its promises on seeded random and mutated texts",
          "[price][json][fuzz]") {
  auto seeds = safeguards_test::corpus_files(SAFEGUARDS_FUZZ_CORPUS_DIR "/price_json_text");
  seeds.push_back(
      safeguards_test::read_file_bytes(SAFEGUARDS_TEST_DATA_DIR "/litellm_prices_subset.json"));
  safeguards_test::TextMutator mutator(20261203, std::move(seeds),
                                       "{}[]\":,\\u0123456789.eE-+ \n\tnulltruefalse"
                                       "input_cost_per_token output_cost_per_token");
  for (int n = 0; n < 3000; ++n) {
    const std::string text = mutator.next(n);
    INFO("case " << n << ": \"" << safeguards_test::printable(text, 2000) << "\"");
    REQUIRE(safeguards_test::check_price_json_text(text) == "");
  }
}
