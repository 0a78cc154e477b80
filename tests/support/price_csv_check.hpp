// The price-CSV loader check shared by the fuzzer (tests/fuzz/price_csv_text_fuzz.cpp) and its
// replay test (tests/price_csv_text_test.cpp). Arbitrary text through `load_price_csv`:
// - it returns a table or throws `ParseError`, nothing else; the error's `line()` lies within the
//   text, is 0 exactly when the text has no line that is not blank or a comment, and its message
//   holds no C0 control character (no newline to forge a log line, no NUL to cut it short);
// - a loaded table has non-negative prices, and written back as CSV (every field quoted, prices
//   as `Decimal::to_string`) loads to the same table: prices are exact, never rounded;
// - loading is deterministic, and the same text with CRLF line ends or with a byte order mark
//   gives the same table or the same error line.
// SPDX-License-Identifier: MIT
#pragma once

#include "reference.hpp"

#include <cstddef>
#include <cstring>
#include <exception>
#include <fmt/format.h>
#include <optional>
#include <safeguards/price_csv.hpp>
#include <string>
#include <string_view>
#include <typeinfo>
#include <variant>

namespace safeguards_test {

// What a loader made of a text: a table, or a ParseError's line and message.
struct LoadOutcome {
  std::optional<safeguards::PriceTable> table;
  std::size_t error_line = 0;
  std::string message;
};

// Runs `load` on `text`; sets `error` when it throws anything but ParseError.
template <class Load>
LoadOutcome load_checked(Load load, std::string_view text, std::string& error) {
  LoadOutcome out;
  try {
    out.table = load(text);
  } catch (const safeguards::ParseError& e) {
    out.error_line = e.line();
    out.message = e.what();
  } catch (const std::exception& e) {
    error = fmt::format("threw {} ({}) on \"{}\"", typeid(e).name(), e.what(), printable(text));
  }
  return out;
}

inline std::size_t count_lines(std::string_view text) {
  if (text.empty())
    return 0;
  std::size_t lines = 1;
  for (char c : text)
    lines += c == '\n' ? 1 : 0;
  return lines;
}

// The promises every loaded table and every error keep, whichever the loader.
inline std::string check_outcome(const LoadOutcome& out, std::string_view text) {
  if (out.table) {
    const safeguards::Decimal zero;
    for (const auto& model : out.table->models()) {
      const safeguards::ModelPrice* p = out.table->find(model);
      if (model.empty() || p == nullptr)
        return fmt::format("model \"{}\" is listed but has no price", printable(model));
      if (p->prompt < zero || p->completion < zero ||
          (p->cached_prompt && *p->cached_prompt < zero))
        return fmt::format("model \"{}\" has a negative price: {}", printable(model), *p);
    }
    if (out.table->fallback())
      return "a loaded table has a fallback price";
    return {};
  }
  if (out.error_line > count_lines(text))
    return fmt::format("ParseError at line {} of a text of {} lines: {}", out.error_line,
                       count_lines(text), printable(out.message));
  if (out.message.empty())
    return "a ParseError without a message";
  for (char ch : out.message)
    if (static_cast<unsigned char>(ch) < 0x20) // nlohmann's messages may hold a raw DEL
      return fmt::format("a control character in the message \"{}\"", printable(out.message));
  return {};
}

inline bool same_table(const safeguards::PriceTable& a, const safeguards::PriceTable& b) {
  if (a.models() != b.models())
    return false;
  for (const auto& model : a.models())
    if (!(*a.find(model) == *b.find(model)))
      return false;
  return a.fallback() == b.fallback();
}

inline bool same_outcome(const LoadOutcome& a, const LoadOutcome& b) {
  if (a.table.has_value() != b.table.has_value())
    return false;
  return a.table ? same_table(*a.table, *b.table) : a.error_line == b.error_line;
}

inline std::string describe(const LoadOutcome& o) {
  return o.table ? fmt::format("a table of {} models", o.table->size())
                 : fmt::format("ParseError at line {}: {}", o.error_line, printable(o.message));
}

// `table` as a price CSV that `load_price_csv` reads back: every field quoted.
inline std::string to_price_csv(const safeguards::PriceTable& table) {
  auto quoted = [](std::string_view s) {
    std::string out = "\"";
    for (char c : s)
      out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + '"';
  };
  std::string csv = "model,prompt,completion,cached_prompt\n";
  for (const auto& model : table.models()) {
    const auto& p = *table.find(model);
    csv += fmt::format("{},{},{},{}\n", quoted(model), quoted(p.prompt.to_string()),
                       quoted(p.completion.to_string()),
                       p.cached_prompt ? quoted(p.cached_prompt->to_string()) : "");
  }
  return csv;
}

// Whether the CSV loader must find no header: every line blank or a comment, as its
// documentation describes them (after a byte order mark; CR before LF and blanks are ignored).
inline bool csv_has_no_content(std::string_view text) {
  if (text.starts_with("\xEF\xBB\xBF"))
    text.remove_prefix(3);
  while (!text.empty()) {
    const auto newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    if (line.ends_with('\r'))
      line.remove_suffix(1);
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string_view::npos && line[first] != '#')
      return false;
  }
  return true;
}

// The whole CSV check. Returns an empty string when every promise held.
inline std::string check_price_csv_text(std::string_view text) {
  std::string error;
  auto load = [](std::string_view t) { return safeguards::load_price_csv(t); };
  const LoadOutcome out = load_checked(load, text, error);
  if (!error.empty())
    return "load_price_csv " + error;
  if (auto problem = check_outcome(out, text); !problem.empty())
    return fmt::format("load_price_csv on \"{}\": {}", printable(text), problem);
  if (!out.table && (out.error_line == 0) != csv_has_no_content(text))
    return fmt::format("load_price_csv on \"{}\": {}, but the text {} lines that are not blank "
                       "or comments",
                       printable(text), describe(out), csv_has_no_content(text) ? "has no" : "has");
  const LoadOutcome again = load_checked(load, text, error);
  if (!error.empty() || !same_outcome(out, again) || out.message != again.message)
    return fmt::format("load_price_csv on \"{}\" is not deterministic", printable(text));

  if (out.table) {
    const std::string written = to_price_csv(*out.table);
    const LoadOutcome reread = load_checked(load, written, error);
    if (!error.empty() || !same_outcome(out, reread))
      return fmt::format("the table of \"{}\", written as \"{}\", reads back as {} {}",
                         printable(text), printable(written), describe(reread), error);
  }
  // Line ends and a byte order mark do not change what the text says.
  if (text.find('\r') == std::string_view::npos) {
    std::string crlf;
    for (char c : text)
      crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
    const LoadOutcome with_crlf = load_checked(load, crlf, error);
    if (!error.empty() || !same_outcome(out, with_crlf))
      return fmt::format("load_price_csv on \"{}\" gives {}, with CRLF {} {}", printable(text),
                         describe(out), describe(with_crlf), error);
  }
  if (!text.starts_with("\xEF\xBB\xBF")) {
    const LoadOutcome with_bom = load_checked(load, "\xEF\xBB\xBF" + std::string(text), error);
    if (!error.empty() || !same_outcome(out, with_bom))
      return fmt::format("load_price_csv on \"{}\" gives {}, after a BOM {} {}", printable(text),
                         describe(out), describe(with_bom), error);
  }
  return {};
}

} // namespace safeguards_test
