// Seeded inputs for the replay tests of the text fuzzers: random text over an alphabet, a seed
// with a few bytes changed, inserted or removed, and pieces of seeds spliced together.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace safeguards_test {

inline std::string read_file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The bytes of `text`, for the checks that take raw bytes as libFuzzer hands them over.
inline std::span<const std::uint8_t> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// Every file of a corpus directory, sorted by name so that the seeded inputs do not depend on
// the order the file system lists them in.
inline std::vector<std::string> corpus_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> files;
  for (const auto& p : paths)
    files.push_back(read_file_bytes(p));
  return files;
}

class TextMutator {
public:
  TextMutator(std::uint64_t seed, std::vector<std::string> seeds, std::string_view alphabet)
      : rng_(seed), seeds_(std::move(seeds)), alphabet_(alphabet) {}

  // Input number `n`: random text, a mutated seed or a splice, in turn.
  std::string next(int n) {
    std::string s;
    switch (n % 3) {
    case 0:
      for (std::size_t i = below(400); i > 0; --i)
        s += below(4) == 0 ? static_cast<char>(below(256)) : alphabet_[below(alphabet_.size())];
      break;
    case 1:
      s = seeds_[below(seeds_.size())];
      for (std::size_t k = below(4) + 1; k > 0; --k) {
        const std::size_t at = below(s.size() + 1);
        switch (below(3)) {
        case 0:
          if (at < s.size())
            s[at] =
                below(2) == 0 ? static_cast<char>(below(256)) : alphabet_[below(alphabet_.size())];
          break;
        case 1:
          s.insert(at, std::string(below(3) + 1, alphabet_[below(alphabet_.size())]));
          break;
        default:
          s.erase(at, below(20));
        }
      }
      break;
    default:
      for (std::size_t k = below(3) + 1; k > 0; --k) {
        const auto& seed = seeds_[below(seeds_.size())];
        const std::size_t from = below(seed.size() + 1);
        s += seed.substr(from, below(seed.size() + 1));
      }
    }
    return s;
  }

private:
  std::size_t below(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }

  std::mt19937_64 rng_;
  std::vector<std::string> seeds_;
  std::string_view alphabet_;
};

} // namespace safeguards_test
