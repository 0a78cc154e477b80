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

inline void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
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
    default:
      if (static_cast<unsigned char>(c) < 0x20)
        out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      else
        out += c;
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

/// One JSON object per change. Amounts are strings so that no JSON reader turns them into
/// doubles; the timestamp is microseconds since the clock's epoch.
template <class Amount, class TimePoint>
std::string to_json_line(const BasicBudgetChange<Amount, TimePoint>& c) {
  std::string out =
      fmt::format("{{\"agent\":{},\"priority\":{},\"old\":", c.agent.value(), c.priority);
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
