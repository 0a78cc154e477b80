// The audit-file reader check shared by the fuzzer (tests/fuzz/audit_lines_fuzz.cpp) and its
// replay test (tests/audit_lines_test.cpp). Arbitrary bytes go through `from_json_line` line by
// line and through `read_audit_log` as a whole file:
// - neither throws (IoError is documented only for a file that cannot be opened or read);
// - a line that is refused comes with a reason; a line that is read gives strings that are valid
//   UTF-8, and the record written back with `to_json_line` is one line that reads back to an
//   equal record and is written again byte for byte (for several amount types and clocks);
// - `read_audit_log` returns exactly the records and damaged line numbers that reading each line
//   on its own gives: blank lines skipped, a torn record followed by a whole one recovered, a
//   last line without a newline read like the others.
// SPDX-License-Identifier: MIT
#pragma once

#include "reference.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <fmt/format.h>
#include <optional>
#include <safeguards/audit_file.hpp>
#include <safeguards/clock.hpp>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <unistd.h>
#include <vector>

namespace safeguards_test {

// Well-formed UTF-8 by Unicode's Table 3-7, written out here rather than taken from the library.
inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      lo = c == 0xE0 ? 0xA0 : 0x80;
      hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      lo = c == 0xF0 ? 0x90 : 0x80;
      hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (s.size() - i <= n)
      return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF))
        return false;
    }
    i += n + 1;
  }
  return true;
}

// One line through `from_json_line` with the record type `Change`: what it read, or nothing.
// Sets `error` when a documented promise is broken.
template <class Amount, class TimePoint>
std::optional<safeguards::BasicBudgetChange<Amount, TimePoint>>
read_line_checked(std::string_view line, std::string& error) {
  using Change = safeguards::BasicBudgetChange<Amount, TimePoint>;
  const char* type = typeid(Change).name();
  std::optional<Change> change;
  std::string why;
  try {
    change = safeguards::from_json_line<Amount, TimePoint>(line, &why);
  } catch (const std::exception& e) {
    error = fmt::format("from_json_line<{}> threw {} ({}) on \"{}\"", type, typeid(e).name(),
                        e.what(), printable(line));
    return std::nullopt;
  }
  if (!change) {
    if (why.empty())
      error =
          fmt::format("from_json_line<{}> refused \"{}\" without a reason", type, printable(line));
    return std::nullopt;
  }
  if (!is_valid_utf8(change->reason) || !is_valid_utf8(change->agent_name)) {
    error = fmt::format("from_json_line<{}> gave a string that is not UTF-8 from \"{}\"", type,
                        printable(line));
    return std::nullopt;
  }
  std::string written;
  std::optional<Change> again;
  try {
    written = safeguards::to_json_line(*change);
    again = safeguards::from_json_line<Amount, TimePoint>(written, &why);
  } catch (const std::exception& e) {
    error = fmt::format("writing back or rereading threw {} ({}) for \"{}\"", typeid(e).name(),
                        e.what(), printable(line));
    return std::nullopt;
  }
  if (written.empty() || written.back() != '\n' || written.find('\n') != written.size() - 1 ||
      !written.starts_with(safeguards::detail::record_start) || !is_valid_utf8(written))
    error = fmt::format("to_json_line<{}> wrote \"{}\" for \"{}\": not one UTF-8 record line", type,
                        printable(written), printable(line));
  else if (!again)
    error = fmt::format("to_json_line<{}> wrote \"{}\", which reads as damaged ({}); input \"{}\"",
                        type, printable(written), why, printable(line));
  else if (!(*again == *change))
    error = fmt::format("\"{}\" read back to another record; input \"{}\"", printable(written),
                        printable(line));
  else if (safeguards::to_json_line(*again) != written)
    error = fmt::format("\"{}\" is written differently the second time; input \"{}\"",
                        printable(written), printable(line));
  return change;
}

// Reads `line` as one audit line with the default record type and a few others (whole tokens,
// a nanosecond clock that refuses far timestamps, a clock counting seconds that truncates).
inline std::optional<safeguards::BudgetChange> check_one_line(std::string_view line,
                                                              std::string& error) {
  auto change =
      read_line_checked<safeguards::Decimal, std::chrono::system_clock::time_point>(line, error);
  if (error.empty())
    read_line_checked<std::int64_t, std::chrono::system_clock::time_point>(line, error);
  if (error.empty())
    read_line_checked<safeguards::Decimal, safeguards::ManualClock::time_point>(line, error);
  if (error.empty())
    read_line_checked<safeguards::Decimal, std::chrono::sys_seconds>(line, error);
  return change;
}

// What `read_audit_log` must return for `bytes`, worked out line by line with `from_json_line`.
// Sets `error` when a line breaks a promise of its own.
inline safeguards::AuditLogContents expected_contents(std::string_view bytes, std::string& error) {
  safeguards::AuditLogContents out;
  std::size_t number = 0;
  while (error.empty() && !bytes.empty()) {
    const auto newline = bytes.find('\n');
    const bool last = newline == std::string_view::npos;
    const std::string_view line = bytes.substr(0, newline);
    bytes.remove_prefix(last ? bytes.size() : newline + 1);
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos)
      continue;
    std::string why;
    if (auto change = check_one_line(line, error)) {
      out.records.push_back(std::move(*change));
      continue;
    }
    if (!error.empty())
      break;
    (void)safeguards::from_json_line(line, &why);
    const auto start = line.rfind(safeguards::detail::record_start);
    if (start != std::string_view::npos && start > 0) {
      if (auto change = check_one_line(line.substr(start), error)) {
        out.records.push_back(std::move(*change));
        out.damaged.push_back({number, "(recovered)"});
        continue;
      }
    }
    out.damaged.push_back({number, last ? why + " (the last line, without a newline)" : why});
  }
  return out;
}

// A file of its own for `read_audit_log`, created once and rewritten for each input.
class ScratchFile {
public:
  ScratchFile() {
    const char* dir = std::getenv("TMPDIR");
    path_ = fmt::format("{}/safeguards-audit-lines-XXXXXX", dir != nullptr && *dir ? dir : "/tmp");
    fd_ = ::mkstemp(path_.data());
  }
  ~ScratchFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(path_.c_str());
    }
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  // Replaces the file's content with `bytes`; false when that failed.
  bool write(std::string_view bytes) {
    if (fd_ < 0 || ::ftruncate(fd_, 0) != 0)
      return false;
    std::size_t done = 0;
    while (done < bytes.size()) {
      const auto n =
          ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n <= 0)
        return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
  int fd_ = -1;
};

// The whole check. Returns an empty string when every promise held, else the first broken one.
inline std::string check_audit_bytes(std::span<const std::uint8_t> data, ScratchFile& scratch) {
  const std::string_view bytes(reinterpret_cast<const char*>(data.data()), data.size());
  std::string error;
  const auto expected = expected_contents(bytes, error);
  if (!error.empty())
    return error;
  if (!scratch.write(bytes))
    return fmt::format("cannot write the scratch file {}", scratch.path());
  safeguards::AuditLogContents got;
  try {
    got = safeguards::read_audit_log(scratch.path());
  } catch (const std::exception& e) {
    return fmt::format("read_audit_log threw {} ({})", typeid(e).name(), e.what());
  }
  if (got.records.size() != expected.records.size())
    return fmt::format("read_audit_log returned {} records, the lines hold {}", got.records.size(),
                       expected.records.size());
  for (std::size_t i = 0; i < got.records.size(); ++i)
    if (!(got.records[i] == expected.records[i]))
      return fmt::format("record {} of read_audit_log differs from its line's", i);
  if (got.damaged.size() != expected.damaged.size())
    return fmt::format("read_audit_log reported {} damaged lines, expected {}", got.damaged.size(),
                       expected.damaged.size());
  for (std::size_t i = 0; i < got.damaged.size(); ++i) {
    const auto& g = got.damaged[i];
    const auto& e = expected.damaged[i];
    if (g.line != e.line)
      return fmt::format("damaged line {} reported as line {}", e.line, g.line);
    if (e.reason == "(recovered)" ? !g.reason.starts_with("a torn record before column")
                                  : g.reason != e.reason)
      return fmt::format("line {}: reason \"{}\", expected \"{}\"", g.line, printable(g.reason),
                         printable(e.reason));
  }
  return {};
}

} // namespace safeguards_test
