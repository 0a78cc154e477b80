// safeguards: the audit trail of budget changes and its sinks.
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <mutex>
#include <safeguards/amount.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// One change of an agent's budget that was not a plain consume: creation, update, transfer,
/// allocation, emergency grant, removal. `old_budget`/`new_budget` are the agent's remaining
/// budget before and after; `delta` is their difference.
///
/// `sequence` numbers a coordinator's changes 1, 2, 3, ... in the order they were made (it is
/// stamped under the coordinator's lock), and sinks receive them in that order.
template <class Amount = Decimal, class TimePoint = std::chrono::system_clock::time_point>
struct BasicBudgetChange {
  AgentId agent;
  int priority = 0;
  Amount old_budget;
  Amount new_budget;
  Amount delta;
  std::string reason;
  TimePoint timestamp{};
  /// The agent's name, for people reading logs; `agent` stays the key.
  std::string agent_name{};
  std::uint64_t sequence = 0;

  friend bool operator==(const BasicBudgetChange&, const BasicBudgetChange&) = default;
};

using BudgetChange = BasicBudgetChange<>;

/// Keeps the last `capacity` changes in memory, for tests, dashboards and debugging.
/// Thread-safe; copies of the log share one buffer, so a copy can be handed to a coordinator.
template <class Change = BudgetChange>
class BasicMemoryAuditLog {
public:
  explicit BasicMemoryAuditLog(std::size_t capacity = 10'000) : state_(std::make_shared<State>()) {
    state_->capacity = capacity;
  }

  void operator()(const Change& change) const {
    std::lock_guard lock(state_->mutex);
    if (state_->capacity == 0)
      return;
    if (state_->records.size() == state_->capacity)
      state_->records.pop_front();
    state_->records.push_back(change);
  }

  std::vector<Change> records() const {
    std::lock_guard lock(state_->mutex);
    return {state_->records.begin(), state_->records.end()};
  }

private:
  struct State {
    std::mutex mutex;
    std::size_t capacity = 0;
    std::deque<Change> records;
  };
  std::shared_ptr<State> state_;
};

using MemoryAuditLog = BasicMemoryAuditLog<>;

namespace detail {

// The replacement character U+FFFD, in UTF-8.
inline constexpr std::string_view replacement_character = "\xEF\xBF\xBD";

// Measures the UTF-8 sequence that starts at `s[i]` (a byte >= 0x80) by Unicode's table of
// well-formed sequences (Table 3-7): the lead byte fixes the length and the range of the second
// byte, which is what rules out overlong forms, surrogates and code points above U+10FFFF.
// Returns the sequence's length, or, with `valid` false, the length of its maximal ill-formed
// prefix (at least 1), which is the unit that Unicode's recommended practice, Python and
// browsers replace with one U+FFFD.
inline std::size_t scan_utf8(std::string_view s, std::size_t i, bool& valid) noexcept {
  const auto lead = static_cast<unsigned char>(s[i]);
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead == 0xE0) {
    length = 3;
    low = 0xA0;
  } else if (lead == 0xED) {
    length = 3;
    high = 0x9F;
  } else if (lead >= 0xE1 && lead <= 0xEF) {
    length = 3;
  } else if (lead == 0xF0) {
    length = 4;
    low = 0x90;
  } else if (lead == 0xF4) {
    length = 4;
    high = 0x8F;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    length = 4;
  } else {
    valid = lead < 0x80;
    return 1;
  }
  std::size_t n = 1;
  for (; n < length && i + n < s.size(); ++n) {
    const auto c = static_cast<unsigned char>(s[i + n]);
    if (c < low || c > high)
      break;
    low = 0x80;
    high = 0xBF;
  }
  valid = n == length;
  return n;
}

// Appends `s` as a JSON string that every JSON reader accepts: quotes, backslashes and control
// characters escaped, valid UTF-8 copied unchanged, each ill-formed sequence replaced by U+FFFD
// (a Latin-1 "caf\xe9" becomes "caf\uFFFD") because a JSON text must be Unicode and a reader
// such as Python's `json` or `jq` rejects the whole line otherwise.
inline void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      bool valid = false;
      const std::size_t n = scan_utf8(s, i, valid);
      if (valid)
        out.append(s.substr(i, n));
      else
        out += replacement_character;
      i += n;
      continue;
    }
    ++i;
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (c < 0x20)
        out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      else
        out += static_cast<char>(c);
    }
  }
  out += '"';
}

// Reads the flat objects `to_json_line` writes: string values and integers, nothing nested.
inline std::map<std::string, std::string> parse_flat_json(std::string_view line) {
  std::map<std::string, std::string> out;
  std::size_t i = 0;
  auto fail = [&] {
    throw IoError(fmt::format("safeguards: malformed audit line at column {}: {}", i, line));
  };
  auto skip_ws = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
  };
  auto read_string = [&] {
    if (i >= line.size() || line[i] != '"')
      fail();
    ++i;
    std::string s;
    while (i < line.size() && line[i] != '"') {
      char c = line[i++];
      if (c != '\\') {
        s += c;
        continue;
      }
      if (i >= line.size())
        fail();
      char e = line[i++];
      switch (e) {
      case 'n':
        s += '\n';
        break;
      case 'r':
        s += '\r';
        break;
      case 't':
        s += '\t';
        break;
      case 'u': {
        if (i + 4 > line.size())
          fail();
        s += static_cast<char>(std::stoi(std::string(line.substr(i, 4)), nullptr, 16));
        i += 4;
        break;
      }
      default:
        s += e;
      }
    }
    if (i >= line.size())
      fail();
    ++i;
    return s;
  };
  skip_ws();
  if (i >= line.size() || line[i++] != '{')
    fail();
  skip_ws();
  while (i < line.size() && line[i] != '}') {
    std::string key = read_string();
    skip_ws();
    if (i >= line.size() || line[i++] != ':')
      fail();
    skip_ws();
    std::string value;
    if (i < line.size() && line[i] == '"') {
      value = read_string();
    } else {
      while (i < line.size() && line[i] != ',' && line[i] != '}' && line[i] != ' ')
        value += line[i++];
    }
    out[key] = value;
    skip_ws();
    if (i < line.size() && line[i] == ',')
      ++i;
    skip_ws();
  }
  if (i >= line.size())
    fail();
  return out;
}

} // namespace detail

/// One JSON object per change, ending in a newline:
/// `{"agent":1,"agent_name":"critical_agent","sequence":3,"priority":8,"old":"200.0",
/// "new":"150.0","delta":"-50.0","reason":"reduce after review","timestamp_us":3000000}`.
/// Amounts are strings so that no JSON reader turns them into doubles; the timestamp is
/// microseconds since the clock's epoch. The line is always valid UTF-8 JSON: in `reason` and
/// `agent_name`, control characters are escaped, valid UTF-8 (any code point) is copied as it is,
/// and each ill-formed byte sequence (Latin-1 `caf\xe9`, a cut-off multi-byte character, an
/// encoded surrogate) becomes one U+FFFD, the replacement Unicode recommends and Python and
/// browsers make. Such a string does not round-trip; valid UTF-8 does, byte for byte.
///
/// **Example**
/// ```
/// std::string line = to_json_line(change); // what JsonLinesAuditSink appends
/// ```
template <class Amount, class TimePoint>
std::string to_json_line(const BasicBudgetChange<Amount, TimePoint>& c) {
  std::string out;
  out.reserve(160 + c.reason.size() + c.agent_name.size());
  out += fmt::format("{{\"agent\":{},\"agent_name\":", c.agent.value());
  detail::append_json_string(out, c.agent_name);
  out += fmt::format(",\"sequence\":{},\"priority\":{},\"old\":", c.sequence, c.priority);
  detail::append_json_string(out, amount_to_string(c.old_budget));
  out += ",\"new\":";
  detail::append_json_string(out, amount_to_string(c.new_budget));
  out += ",\"delta\":";
  detail::append_json_string(out, amount_to_string(c.delta));
  out += ",\"reason\":";
  detail::append_json_string(out, c.reason);
  out += fmt::format(
      ",\"timestamp_us\":{}}}\n",
      std::chrono::duration_cast<std::chrono::microseconds>(c.timestamp.time_since_epoch())
          .count());
  return out;
}

/// Appends every change to a file as one JSON line. Each record is written with a single
/// `write` to a file opened with `O_APPEND` and retried until complete, so a reader never sees
/// a torn line from this process; with `durable` each record is also `fsync`ed before the call
/// returns. Copies share the file.
///
/// **Example**
/// ```
/// auto sink = coord.add_audit_sink(JsonLinesAuditSink("budget_changes.jsonl"));
/// ```
class JsonLinesAuditSink {
public:
  explicit JsonLinesAuditSink(const std::string& path, bool durable = false)
      : file_(std::make_shared<File>(path, durable)) {}

  template <class Amount, class TimePoint>
  void operator()(const BasicBudgetChange<Amount, TimePoint>& change) const {
    file_->write(to_json_line(change));
  }

private:
  struct File {
    File(const std::string& path, bool durable_) : durable(durable_) {
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0)
        throw IoError(
            fmt::format("safeguards: cannot open audit file {}: {}", path, std::strerror(errno)));
    }
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    ~File() { ::close(fd); }

    void write(const std::string& line) {
      std::lock_guard lock(mutex);
      std::size_t done = 0;
      while (done < line.size()) {
        auto n = ::write(fd, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR)
          continue;
        if (n < 0)
          throw IoError(fmt::format("safeguards: audit write failed: {}", std::strerror(errno)));
        done += static_cast<std::size_t>(n);
      }
      if (durable && ::fsync(fd) != 0)
        throw IoError(fmt::format("safeguards: audit fsync failed: {}", std::strerror(errno)));
    }

    std::mutex mutex;
    int fd = -1;
    bool durable = false;
  };
  std::shared_ptr<File> file_;
};

/// Reads back a file written by `JsonLinesAuditSink`; throws `Error` on a malformed line.
template <BudgetAmount Amount = Decimal, class TimePoint = std::chrono::system_clock::time_point>
std::vector<BasicBudgetChange<Amount, TimePoint>> read_audit_log(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw IoError(fmt::format("safeguards: cannot read audit file {}", path));
  std::vector<BasicBudgetChange<Amount, TimePoint>> out;
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty())
      continue;
    try {
      auto f = detail::parse_flat_json(line);
      using traits = amount_traits<Amount>;
      out.push_back({AgentId(std::stoull(f.at("agent"))), std::stoi(f.at("priority")),
                     traits::parse(f.at("old")), traits::parse(f.at("new")),
                     traits::parse(f.at("delta")), f.at("reason"),
                     TimePoint(std::chrono::duration_cast<typename TimePoint::duration>(
                         std::chrono::microseconds(std::stoll(f.at("timestamp_us")))))});
    } catch (const std::exception& e) {
      // Missing keys and bad numbers surface as one error type, naming where.
      throw IoError(fmt::format("safeguards: {} line {} is not an audit record ({}): {}", path,
                                number, e.what(), line));
    }
  }
  return out;
}

} // namespace v1
} // namespace safeguards

/// The guide's log line, with the agent's name where it is known: `Budget change for agent
/// critical_agent (agent-1, priority 8): 200.0 → 150.0 (-50.0). Reason: ...`
template <class Amount, class TimePoint>
struct fmt::formatter<safeguards::BasicBudgetChange<Amount, TimePoint>>
    : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicBudgetChange<Amount, TimePoint>& c, FormatContext& ctx) const {
    using safeguards::amount_to_string;
    std::string delta = amount_to_string(c.delta);
    if (!delta.empty() && delta.front() != '-')
      delta.insert(0, "+");
    auto who = c.agent_name.empty()
                   ? fmt::format("{} (priority {})", c.agent, c.priority)
                   : fmt::format("{} ({}, priority {})", c.agent_name, c.agent, c.priority);
    auto text = fmt::format("Budget change for agent {}: {} \u2192 {} ({}). Reason: {}", who,
                            amount_to_string(c.old_budget), amount_to_string(c.new_budget), delta,
                            c.reason);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
