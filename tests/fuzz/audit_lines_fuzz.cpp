// libFuzzer target: bytes as an audit file, read line by line with from_json_line (records
// written back with to_json_line must read back equal) and whole with read_audit_log, which must
// agree with the lines (tests/support/audit_lines_check.hpp). CTest replays the seed corpus
// (tests/fuzz/corpus/audit_lines) through tests/audit_lines_test.cpp in every build.
// SPDX-License-Identifier: MIT
#include "../support/audit_lines_check.hpp"

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static safeguards_test::ScratchFile scratch;
  const std::string error = safeguards_test::check_audit_bytes({data, size}, scratch);
  if (!error.empty()) {
    std::fprintf(stderr, "audit reader check failed: %s\n", error.c_str());
    std::abort();
  }
  return 0;
}
