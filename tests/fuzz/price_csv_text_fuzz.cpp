// libFuzzer target: arbitrary text through load_price_csv (tests/support/price_csv_check.hpp):
// a table with exact, non-negative prices or a ParseError, nothing else. CTest replays the seed
// corpus (tests/fuzz/corpus/price_csv_text) through tests/price_csv_text_test.cpp.
// SPDX-License-Identifier: MIT
#include "../support/price_csv_check.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string error =
      safeguards_test::check_price_csv_text({reinterpret_cast<const char*>(data), size});
  if (!error.empty()) {
    std::fprintf(stderr, "price CSV loader check failed: %s\n", error.c_str());
    std::abort();
  }
  return 0;
}
