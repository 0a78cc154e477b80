// safeguards: the audit trail on disk: one JSON line per budget change, a sink that appends them
// safely under crashes and full disks, and a reader that keeps every whole record.
// Separate from audit.hpp because it needs POSIX file calls (<fcntl.h>, <unistd.h>), which
// code that only runs a coordinator should not pull in.
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <fmt/format.h>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ratio>
#include <safeguards/amount.hpp>
#include <safeguards/audit.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// A line of an audit file that holds no whole record, as `read_audit_log` reports it: `line`
/// counts from 1, `reason` says briefly what is wrong ("column 151: the line ends inside a
/// string").
struct DamagedAuditLine {
  std::size_t line = 0;
  std::string reason;

  friend bool operator==(const DamagedAuditLine&, const DamagedAuditLine&) = default;
};

/// What `read_audit_log` found in a file: every whole record in file order, and the lines that
/// were not one.
template <class Change = BudgetChange>
struct BasicAuditLogContents {
  std::vector<Change> records;
  std::vector<DamagedAuditLine> damaged;
};

using AuditLogContents = BasicAuditLogContents<>;

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

// Appends a code point (at most U+10FFFF, not a surrogate) as UTF-8.
inline void append_utf8(std::string& out, std::uint32_t cp) {
  auto byte = [&](std::uint32_t b) { out += static_cast<char>(static_cast<unsigned char>(b)); };
  if (cp < 0x80) {
    byte(cp);
  } else if (cp < 0x800) {
    byte(0xC0 | (cp >> 6));
    byte(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    byte(0xE0 | (cp >> 12));
    byte(0x80 | ((cp >> 6) & 0x3F));
    byte(0x80 | (cp & 0x3F));
  } else {
    byte(0xF0 | (cp >> 18));
    byte(0x80 | ((cp >> 12) & 0x3F));
    byte(0x80 | ((cp >> 6) & 0x3F));
    byte(0x80 | (cp & 0x3F));
  }
}

// A value of a flat JSON object: a decoded string, or the text of an integer.
struct JsonValue {
  std::string text;
  bool is_string = false;
};

using JsonFields = std::map<std::string, JsonValue, std::less<>>;

// Parses the flat objects `to_json_line` writes: string keys, values that are strings or
// integers, nothing nested. Whatever the input (a torn line, random bytes), it returns false with
// a short description in `error()` rather than throwing, and it never recurses, so its time is
// linear in the line's length. Strings come out as valid UTF-8: `\uXXXX` escapes are decoded
// (surrogate pairs joined; a lone surrogate, which has no UTF-8 form, becomes U+FFFD) and raw
// ill-formed bytes are replaced as `append_json_string` replaces them.
class FlatJsonParser {
public:
  explicit FlatJsonParser(std::string_view text) noexcept : s_(text) {}

  bool parse(JsonFields& fields) {
    skip_space();
    if (!take('{'))
      return fail("not a JSON object");
    skip_space();
    if (take('}'))
      return finish();
    for (;;) {
      skip_space();
      if (!next_is('"'))
        return fail(at_end() ? "the line ends inside the object" : "expected a key");
      std::string key;
      if (!string(key))
        return false;
      skip_space();
      if (!take(':'))
        return fail("expected ':'");
      skip_space();
      JsonValue value;
      value.is_string = next_is('"');
      if (!(value.is_string ? string(value.text) : integer(value.text)))
        return false;
      if (fields.contains(key))
        return fail(fmt::format("\"{}\" appears twice", key));
      fields.emplace(std::move(key), std::move(value));
      skip_space();
      if (take(','))
        continue;
      if (take('}'))
        return finish();
      return fail(at_end() ? "the line ends inside the object" : "expected ',' or '}'");
    }
  }

  const std::string& error() const noexcept { return error_; }

private:
  bool at_end() const noexcept { return i_ >= s_.size(); }
  bool next_is(char c) const noexcept { return i_ < s_.size() && s_[i_] == c; }
  bool take(char c) noexcept {
    if (!next_is(c))
      return false;
    ++i_;
    return true;
  }
  void skip_space() noexcept {
    while (next_is(' ') || next_is('\t') || next_is('\r'))
      ++i_;
  }
  bool fail(std::string_view what) {
    error_ = fmt::format("column {}: {}", i_ + 1, what);
    return false;
  }
  bool finish() {
    skip_space();
    return at_end() || fail("text after the object");
  }

  bool string(std::string& out) {
    ++i_; // the opening quote
    for (;;) {
      if (at_end())
        return fail("the line ends inside a string");
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c == '\\') {
        if (!escape(out))
          return false;
      } else if (c >= 0x80) {
        bool valid = false;
        const std::size_t n = scan_utf8(s_, i_, valid);
        if (valid)
          out.append(s_.substr(i_, n));
        else
          out += replacement_character;
        i_ += n;
      } else {
        out += static_cast<char>(c);
        ++i_;
      }
    }
  }

  bool escape(std::string& out) {
    ++i_; // the backslash
    if (at_end())
      return fail("the line ends inside an escape");
    const char e = s_[i_++];
    switch (e) {
    case '"':
    case '\\':
    case '/':
      out += e;
      return true;
    case 'b':
      out += '\b';
      return true;
    case 'f':
      out += '\f';
      return true;
    case 'n':
      out += '\n';
      return true;
    case 'r':
      out += '\r';
      return true;
    case 't':
      out += '\t';
      return true;
    case 'u':
      break;
    default:
      --i_;
      return fail("invalid escape");
    }
    std::uint32_t cp = 0;
    if (!hex4(cp))
      return fail("invalid \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      // A high surrogate counts only with a low one right after it.
      const std::size_t pair = i_;
      std::uint32_t low = 0;
      if (take('\\') && take('u') && hex4(low) && low >= 0xDC00 && low <= 0xDFFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      } else {
        i_ = pair;
        cp = 0xFFFD;
      }
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      cp = 0xFFFD;
    }
    append_utf8(out, cp);
    return true;
  }

  bool hex4(std::uint32_t& out) noexcept {
    if (s_.size() - i_ < 4)
      return false;
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = s_[i_ + k];
      std::uint32_t digit = 0;
      if (c >= '0' && c <= '9')
        digit = static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        digit = static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        digit = static_cast<std::uint32_t>(c - 'A' + 10);
      else
        return false;
      v = v * 16 + digit;
    }
    i_ += 4;
    out = v;
    return true;
  }

  bool integer(std::string& out) {
    const std::size_t start = i_;
    take('-');
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9')
      ++i_;
    if (i_ == start || s_[i_ - 1] == '-')
      return fail(at_end() ? "the line ends before a value" : "expected a string or an integer");
    if (next_is('.') || next_is('e') || next_is('E'))
      return fail("a number that is not an integer");
    out.assign(s_.substr(start, i_ - start));
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string error_;
};

// Microseconds since the epoch as a `TimePoint`, the way `duration_cast` converts them, or
// nothing when the clock's duration cannot hold them (duration_cast would overflow).
template <class TimePoint>
std::optional<TimePoint> time_point_from_us(std::int64_t us) {
  using Duration = typename TimePoint::duration;
  using Rep = typename Duration::rep;
  if constexpr (std::is_integral_v<Rep>) {
    using TicksPerUs = std::ratio_divide<std::micro, typename Duration::period>;
    constexpr std::intmax_t num = TicksPerUs::num;
    constexpr std::intmax_t den = TicksPerUs::den;
    if constexpr (num > 1) {
      constexpr std::intmax_t max_us = std::numeric_limits<std::intmax_t>::max() / num;
      if (us > max_us || us < -max_us)
        return std::nullopt;
    }
    const std::intmax_t ticks = static_cast<std::intmax_t>(us) * num / den;
    if (std::cmp_greater(ticks, std::numeric_limits<Rep>::max()) ||
        std::cmp_less(ticks, std::numeric_limits<Rep>::min()))
      return std::nullopt;
    return TimePoint(Duration(static_cast<Rep>(ticks)));
  } else {
    return TimePoint(std::chrono::duration_cast<Duration>(std::chrono::microseconds(us)));
  }
}

template <BudgetAmount Amount, class TimePoint>
std::optional<BasicBudgetChange<Amount, TimePoint>> change_from_json(std::string_view line,
                                                                     std::string& why) {
  JsonFields fields;
  FlatJsonParser parser(line);
  if (!parser.parse(fields)) {
    why = parser.error();
    return std::nullopt;
  }
  // Each reader returns false with `why` set when the field is missing (and required) or holds
  // something else; an optional field that is missing leaves `out` as it is.
  auto find = [&](std::string_view key, bool is_string, bool required) -> const std::string* {
    auto it = fields.find(key);
    if (it == fields.end()) {
      if (required)
        why = fmt::format("no \"{}\"", key);
      return nullptr;
    }
    if (it->second.is_string != is_string) {
      why = fmt::format("\"{}\" is not {}", key, is_string ? "a string" : "an integer");
      return nullptr;
    }
    return &it->second.text;
  };
  auto integer = [&](std::string_view key, auto& out, bool required) {
    const std::string* text = find(key, false, required);
    if (text == nullptr)
      return why.empty();
    const char* end = text->data() + text->size();
    auto [stop, ec] = std::from_chars(text->data(), end, out);
    if (ec == std::errc() && stop == end)
      return true;
    why = fmt::format("\"{}\" is out of range: {}", key, *text);
    return false;
  };
  auto string = [&](std::string_view key, std::string& out, bool required) {
    const std::string* text = find(key, true, required);
    if (text == nullptr)
      return why.empty();
    out = *text;
    return true;
  };
  auto amount = [&](std::string_view key, Amount& out) {
    const std::string* text = find(key, true, true);
    if (text == nullptr)
      return false;
    try {
      out = amount_traits<Amount>::parse(*text);
      return true;
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception&) {
      why = fmt::format("\"{}\" is not an amount: {}", key, *text);
      return false;
    }
  };

  BasicBudgetChange<Amount, TimePoint> c;
  std::uint64_t agent = 0;
  std::int64_t us = 0;
  if (!integer("agent", agent, true) || !string("agent_name", c.agent_name, false) ||
      !integer("sequence", c.sequence, false) || !integer("priority", c.priority, true) ||
      !amount("old", c.old_budget) || !amount("new", c.new_budget) || !amount("delta", c.delta) ||
      !string("reason", c.reason, true) || !integer("timestamp_us", us, true))
    return std::nullopt;
  auto timestamp = time_point_from_us<TimePoint>(us);
  if (!timestamp) {
    why = fmt::format("\"timestamp_us\" is out of the clock's range: {}", us);
    return std::nullopt;
  }
  c.agent = AgentId(agent);
  c.timestamp = *timestamp;
  return c;
}

// Every line `to_json_line` writes starts with this, and no record holds it anywhere else (every
// quote inside a string is escaped), so in a damaged line it marks where a whole record begins.
inline constexpr std::string_view record_start = "{\"agent\":";

template <BudgetAmount Amount, class TimePoint>
void read_audit_line(std::string_view line, std::size_t number, bool has_newline,
                     BasicAuditLogContents<BasicBudgetChange<Amount, TimePoint>>& out) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos)
    return;
  std::string why;
  if (auto c = change_from_json<Amount, TimePoint>(line, why)) {
    out.records.push_back(std::move(*c));
    return;
  }
  // A torn record that some writer appended a whole one to before the line was ended (a process
  // that had the file open when another was killed, an older version of the sink): keep the
  // whole one.
  if (auto start = line.rfind(record_start); start != std::string_view::npos && start > 0) {
    std::string ignored;
    if (auto c = change_from_json<Amount, TimePoint>(line.substr(start), ignored)) {
      out.records.push_back(std::move(*c));
      out.damaged.push_back(
          {number,
           fmt::format("a torn record before column {}, the record after it was read", start + 1)});
      return;
    }
  }
  if (!has_newline)
    why += " (the last line, without a newline)";
  out.damaged.push_back({number, std::move(why)});
}

// The text of `errno` after open, read, write or fsync. Their codes are all known ones, whose
// text glibc keeps in a constant table; only an unknown code is formatted into strerror's buffer
// that other threads share.
inline const char* errno_text(int error) noexcept {
  return std::strerror(error); // NOLINT(concurrency-mt-unsafe): see above
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

/// Appends every change to a file as one JSON line (`to_json_line`). Copies share the file; with
/// `durable` each record is also `fsync`ed before the call returns.
///
/// Each record is one `write` to a file opened with `O_APPEND`, so records of concurrent writers
/// (threads, other sinks, other processes) never interleave. A write can still be cut short: by
/// SIGKILL (the kernel stops between pages), by a full disk or a file-size limit. The cut record
/// stays in the file as a damaged line, and the sink makes sure that nothing is glued onto it:
/// - After a short write it ends the torn line with a newline and writes the whole record again
///   as one `write`; it never appends the rest, since another writer may have appended in
///   between. If that second write is cut too, the call throws `IoError`.
/// - If even the newline cannot be written (ENOSPC, EFBIG), it throws `IoError` and remembers
///   that the line is open: the next record first writes the pending newline.
/// - On opening a file that is not empty and does not end in a newline (a writer was killed
///   mid-record), it starts a new line before its first record. When it cannot read the file's
///   last byte it assumes a torn line: a blank line, which `read_audit_log` skips, is harmless;
///   a record glued onto a torn one is not.
/// A write that fails with nothing written throws `IoError` (EINTR is retried). `read_audit_log`
/// reports the damaged lines and returns every whole record.
///
/// Two sinks on the same path in one process each have their own lock and their own memory of an
/// open line, as two processes do: if one's write is cut while the other appends, the other's
/// record lands on the torn line, and `read_audit_log` recovers it from there.
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
    File(std::string path_, bool durable_) : path(std::move(path_)), durable(durable_) {
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0)
        throw IoError(fmt::format("safeguards: cannot open audit file {}: {}", path,
                                  detail::errno_text(errno)));
      line_open = ends_inside_a_line();
    }
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    ~File() { ::close(fd); }

    void write(std::string_view record) {
      std::lock_guard lock(mutex);
      if (line_open)
        end_line();
      std::size_t written = write_some(record);
      if (written < record.size()) {
        line_open = true;
        end_line();
        written = write_some(record);
        if (written < record.size()) {
          line_open = true;
          end_line();
          throw IoError(fmt::format("safeguards: audit file {}: a record was cut short twice ({} "
                                    "of {} bytes written); it is not in the file",
                                    path, written, record.size()));
        }
      }
      if (durable && ::fsync(fd) != 0)
        throw IoError(fmt::format("safeguards: audit file {}: fsync failed: {}", path,
                                  detail::errno_text(errno)));
    }

    // One `write` of `bytes`, retried only while it is interrupted before writing anything.
    // Returns how much was written, at least 1; throws when nothing could be.
    std::size_t write_some(std::string_view bytes) {
      for (;;) {
        const auto n = ::write(fd, bytes.data(), bytes.size());
        if (n > 0)
          return static_cast<std::size_t>(n);
        if (n < 0 && errno == EINTR)
          continue;
        throw IoError(fmt::format("safeguards: cannot write to audit file {}: {}", path,
                                  n < 0 ? detail::errno_text(errno) : "nothing was written"));
      }
    }

    void end_line() {
      try {
        write_some("\n");
      } catch (const IoError& e) {
        throw IoError(fmt::format("{}; a torn line stays open and the next record will end it "
                                  "first",
                                  e.what()));
      }
      line_open = false;
    }

    // Whether the file holds a line without its newline, left by a writer that died mid-record.
    // Read through a descriptor of its own, as `fd` may not be readable; when the answer cannot be
    // known, yes (see the class comment).
    bool ends_inside_a_line() const noexcept {
      struct stat written {};
      if (::fstat(fd, &written) != 0 || !S_ISREG(written.st_mode) || written.st_size == 0)
        return false;
      const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (rfd < 0)
        return true;
      struct stat tail {};
      char last = 0;
      const bool known = ::fstat(rfd, &tail) == 0 && tail.st_dev == written.st_dev &&
                         tail.st_ino == written.st_ino && tail.st_size > 0 &&
                         ::pread(rfd, &last, 1, tail.st_size - 1) == 1;
      ::close(rfd);
      return !known || last != '\n';
    }

    std::mutex mutex;
    std::string path;
    int fd = -1;
    bool durable = false;
    bool line_open = false; // the file ends in a torn line: end it before the next record
  };
  std::shared_ptr<File> file_;
};

/// Reads one line written by `to_json_line` (with or without its newline), or returns nothing and,
/// when `error` is given, says why in it. Never throws on the line's content, whatever it is.
/// Lines written before `agent_name` and `sequence` existed read with an empty name and
/// sequence 0; keys it does not know are ignored.
///
/// **Example**
/// ```
/// std::string why;
/// if (auto change = from_json_line(line, &why)) use(*change); else log(why);
/// ```
template <BudgetAmount Amount = Decimal, class TimePoint = std::chrono::system_clock::time_point>
std::optional<BasicBudgetChange<Amount, TimePoint>> from_json_line(std::string_view line,
                                                                   std::string* error = nullptr) {
  if (!line.empty() && line.back() == '\n')
    line.remove_suffix(1);
  std::string why;
  auto change = detail::change_from_json<Amount, TimePoint>(line, why);
  if (!change && error != nullptr)
    *error = std::move(why);
  return change;
}

/// Reads back a file written by `JsonLinesAuditSink`. A crash or a full disk can leave damaged
/// lines in such a file (a record cut short, and in files from older versions the next record
/// glued onto it); they do not hide the rest: every whole record is returned, in file order, and
/// every damaged line is reported with its number and what is wrong with it. A last line without
/// a newline is a record when it is whole. Blank lines are skipped. When a damaged line ends with a
/// whole record (a torn record that another writer appended to), that record is read too and the
/// line is still reported. Strings come back as valid UTF-8: `\uXXXX` escapes are decoded, and a
/// lone surrogate or a raw ill-formed byte sequence becomes U+FFFD. Throws `IoError` only when the
/// file cannot be opened or read; no content, however garbled, makes it throw.
///
/// **Example**
/// ```
/// auto log = read_audit_log("budget_changes.jsonl");
/// for (const auto& d : log.damaged)
///   fmt::print(stderr, "line {}: {}\n", d.line, d.reason);
/// for (const auto& change : log.records)
///   fmt::print("{}\n", change);
/// ```
template <BudgetAmount Amount = Decimal, class TimePoint = std::chrono::system_clock::time_point>
BasicAuditLogContents<BasicBudgetChange<Amount, TimePoint>>
read_audit_log(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw IoError(
        fmt::format("safeguards: cannot open audit file {}: {}", path, detail::errno_text(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};

  BasicAuditLogContents<BasicBudgetChange<Amount, TimePoint>> out;
  std::vector<char> buffer(std::size_t{1} << 16);
  std::string line; // the start of a line that the last read cut
  std::size_t number = 0;
  for (;;) {
    const auto n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw IoError(fmt::format("safeguards: cannot read audit file {}: {}", path,
                                detail::errno_text(errno)));
    if (n == 0)
      break;
    std::string_view chunk(buffer.data(), static_cast<std::size_t>(n));
    for (auto end = chunk.find('\n'); end != std::string_view::npos; end = chunk.find('\n')) {
      ++number;
      if (line.empty()) {
        detail::read_audit_line(chunk.substr(0, end), number, true, out);
      } else {
        line.append(chunk.substr(0, end));
        detail::read_audit_line(std::string_view(line), number, true, out);
        line.clear();
      }
      chunk.remove_prefix(end + 1);
    }
    line.append(chunk);
  }
  if (!line.empty())
    detail::read_audit_line(std::string_view(line), number + 1, false, out);
  return out;
}

} // namespace v1
} // namespace safeguards
