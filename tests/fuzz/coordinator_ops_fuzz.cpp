// libFuzzer target: bytes decode into a sequence of coordinator operations, applied to the
// coordinator and to a reference model (tests/support/coordinator_model.hpp); any disagreement
// aborts with the step that broke. CTest replays the seed corpus (tests/fuzz/corpus/
// coordinator_ops) through tests/coordinator_ops_test.cpp in every build, fuzzers or not.
// SPDX-License-Identifier: MIT
#include "../support/coordinator_model.hpp"

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string error = safeguards_test::run_operation_sequence({data, size});
  if (!error.empty()) {
    std::fprintf(stderr, "coordinator and model disagree: %s\n", error.c_str());
    std::abort();
  }
  return 0;
}
