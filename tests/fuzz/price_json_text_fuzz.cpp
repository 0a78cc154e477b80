// libFuzzer target: arbitrary text through load_litellm_prices
// (tests/support/price_json_check.hpp): a table with exact, non-negative prices or a ParseError,
// nothing else. CTest replays the seed corpus (tests/fuzz/corpus/price_json_text) through
// tests/price_json_text_test.cpp. SPDX-License-Identifier: MIT
#include "../support/price_json_check.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string error =
      safeguards_test::check_price_json_text({reinterpret_cast<const char*>(data), size});
  if (!error.empty()) {
    std::fprintf(stderr, "price JSON loader check failed: %s\n", error.c_str());
    std::abort();
  }
  return 0;
}
