// The operation-sequence check without libFuzzer: the fuzzer's seed corpus, replayed, and
// seeded random byte strings, each run against the reference model of
// tests/support/coordinator_model.hpp (statuses, every balance, conservation, invariants).
// SPDX-License-Identifier: MIT
#include "support/coordinator_model.hpp"
#include "support/text_mutations.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

TEST_CASE("the model's account limit is the ledger's", "[model]") {
  // The model states the documented limit itself; this ties the two together.
  CHECK(safeguards::InMemoryLedger<safeguards::Decimal>::max_balance()->raw() ==
        safeguards_test::OperationSequence::max_account);
}

TEST_CASE("the coordinator agrees with the reference model on every corpus file", "[model][fuzz]") {
  const std::filesystem::path dir = SAFEGUARDS_FUZZ_CORPUS_DIR "/coordinator_ops";
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string bytes = safeguards_test::read_file_bytes(entry.path());
    INFO(entry.path().filename().string());
    CHECK(safeguards_test::run_operation_sequence(safeguards_test::as_bytes(bytes)) == "");
    ++files;
  }
  CHECK(files >= 8);
}

TEST_CASE("the coordinator agrees with the reference model on seeded random sequences",
          "[model][fuzz]") {
  // Each seed gives one sequence; the failing seed is in the message.
  std::mt19937_64 rng(20261203);
  for (int n = 0; n < 3000; ++n) {
    const std::uint64_t seed = rng();
    std::mt19937_64 bytes_rng(seed);
    std::vector<std::uint8_t> bytes(64 + seed % 960);
    for (auto& b : bytes)
      b = static_cast<std::uint8_t>(bytes_rng());
    const std::string error = safeguards_test::run_operation_sequence(bytes);
    INFO("seed " << seed);
    REQUIRE(error == "");
  }
}
