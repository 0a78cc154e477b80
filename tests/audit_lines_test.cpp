// The audit-file reader check without libFuzzer: the fuzzer's seed corpus, replayed, then seeded
// random and mutated files (some longer than read_audit_log's 64 KiB buffer), each through
// tests/support/audit_lines_check.hpp: from_json_line never throws, what it reads writes back
// and reads again to an equal record, and read_audit_log agrees with the lines one by one.
// SPDX-License-Identifier: MIT
#include "support/audit_lines_check.hpp"
#include "support/text_mutations.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace {

std::vector<std::uint8_t> to_bytes(const std::string& s) {
  return {s.begin(), s.end()};
}

// Sorted by name (text_mutations.hpp), so that the seeded inputs do not depend on the order the
// file system lists the files in.
std::vector<std::vector<std::uint8_t>> corpus() {
  std::vector<std::vector<std::uint8_t>> files;
  for (const auto& text : safeguards_test::corpus_files(SAFEGUARDS_FUZZ_CORPUS_DIR "/audit_lines"))
    files.push_back(to_bytes(text));
  return files;
}

} // namespace

TEST_CASE("the audit reader keeps its promises on every corpus file", "[audit][fuzz]") {
  safeguards_test::ScratchFile scratch;
  std::size_t files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(SAFEGUARDS_FUZZ_CORPUS_DIR "/audit_lines")) {
    INFO(entry.path().filename().string());
    const std::string bytes = safeguards_test::read_file_bytes(entry.path());
    CHECK(safeguards_test::check_audit_bytes(safeguards_test::as_bytes(bytes), scratch) == "");
    ++files;
  }
  CHECK(files >= 8);
}

TEST_CASE("the audit reader keeps its promises on seeded random and mutated files",
          "[audit][fuzz]") {
  safeguards_test::ScratchFile scratch;
  const auto seeds = corpus();
  REQUIRE_FALSE(seeds.empty());
  std::mt19937_64 rng(20261203);
  auto below = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  static constexpr std::string_view alphabet = "{}[]\":,\\u0123456789abcdefABCDEF-+.eE \t\r\n";
  for (int n = 0; n < 3000; ++n) {
    std::vector<std::uint8_t> bytes;
    switch (n % 3) {
    case 0: // random bytes, rich in what JSON cares about
      for (std::size_t i = below(600); i > 0; --i)
        bytes.push_back(static_cast<std::uint8_t>(
            below(3) == 0 ? below(256)
                          : static_cast<unsigned char>(alphabet[below(alphabet.size())])));
      break;
    case 1: { // a corpus file with a few bytes changed, inserted or removed
      bytes = seeds[below(seeds.size())];
      for (std::size_t k = below(4) + 1; k > 0; --k) {
        const std::size_t at = below(bytes.size() + 1);
        switch (below(3)) {
        case 0:
          if (at < bytes.size())
            bytes[at] = static_cast<std::uint8_t>(below(256));
          break;
        case 1:
          bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                       static_cast<std::uint8_t>(alphabet[below(alphabet.size())]));
          break;
        default:
          bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                      bytes.begin() +
                          static_cast<std::ptrdiff_t>(std::min(bytes.size(), at + below(30))));
        }
      }
      break;
    }
    default: { // corpus files and pieces of them spliced together
      for (std::size_t k = below(5) + 1; k > 0; --k) {
        const auto& s = seeds[below(seeds.size())];
        const std::size_t from = below(s.size() + 1);
        bytes.insert(bytes.end(), s.begin() + static_cast<std::ptrdiff_t>(from), s.end());
      }
    }
    }
    INFO("case " << n << ": \""
                 << safeguards_test::printable(
                        {reinterpret_cast<const char*>(bytes.data()), bytes.size()}, 2000)
                 << "\"");
    REQUIRE(safeguards_test::check_audit_bytes(bytes, scratch) == "");
  }
}

TEST_CASE("the audit reader agrees with the lines across its 64 KiB reads", "[audit][fuzz]") {
  // Records and torn records repeated past several buffer boundaries, each at its own offset.
  safeguards_test::ScratchFile scratch;
  const auto seeds = corpus();
  for (std::size_t shift = 0; shift < 4; ++shift) {
    std::string file(shift * 37, ' ');
    while (file.size() < 3 * 65536)
      for (const auto& s : seeds)
        file.append(s.begin(), s.end());
    INFO("shift " << shift);
    CHECK(safeguards_test::check_audit_bytes(to_bytes(file), scratch) == "");
  }
}
