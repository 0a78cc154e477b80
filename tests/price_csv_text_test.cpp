// The price-CSV loader check without libFuzzer: the fuzzer's seed corpus, replayed, and seeded
// random, mutated and spliced texts, each through tests/support/price_csv_check.hpp (a table
// with exact, non-negative prices that writes back to itself, or a ParseError within the text;
// deterministic; CRLF and a byte order mark change nothing).
// SPDX-License-Identifier: MIT
#include "support/price_csv_check.hpp"
#include "support/text_mutations.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

TEST_CASE("the price CSV loader keeps its promises on every corpus file", "[price][csv][fuzz]") {
  std::size_t files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(SAFEGUARDS_FUZZ_CORPUS_DIR "/price_csv_text")) {
    INFO(entry.path().filename().string());
    CHECK(safeguards_test::check_price_csv_text(safeguards_test::read_file_bytes(entry.path())) ==
          "");
    ++files;
  }
  CHECK(files >= 8);
}

TEST_CASE("the price CSV loader keeps its promises on seeded random and mutated texts",
          "[price][csv][fuzz]") {
  safeguards_test::TextMutator mutator(
      20261203, safeguards_test::corpus_files(SAFEGUARDS_FUZZ_CORPUS_DIR "/price_csv_text"),
      "model,prompt,completion,cached_prompt\"#\r\n \t0123456789.-+e");
  for (int n = 0; n < 3000; ++n) {
    const std::string text = mutator.next(n);
    INFO("case " << n << ": \"" << safeguards_test::printable(text, 2000) << "\"");
    REQUIRE(safeguards_test::check_price_csv_text(text) == "");
  }
}
