// safeguards: load_price_csv, a PriceTable from a CSV file of prices per million tokens.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <fmt/format.h>
#include <optional>
#include <safeguards/decimal.hpp>
#include <safeguards/detail/text_input.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/price_table.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

inline constexpr std::string_view price_csv_header = "model,prompt,completion,cached_prompt";

inline std::string_view trim_blanks(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// Splits one line into fields. An unquoted field is trimmed; a quoted one ("a, b" with ""
// for a quote inside) is taken verbatim between its quotes and may be surrounded by blanks.
// Returns the problem, or an empty string.
inline std::string split_csv_line(std::string_view line, std::vector<std::string>& fields) {
  fields.clear();
  std::size_t i = 0;
  while (true) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    std::string field;
    if (i < line.size() && line[i] == '"') {
      ++i;
      bool closed = false;
      while (i < line.size()) {
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        field += line[i++];
      }
      if (!closed)
        return "a quoted field has no closing quote (a field cannot span lines)";
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
        ++i;
      if (i < line.size() && line[i] != ',')
        return "text follows the closing quote of a field";
    } else {
      const std::size_t end = std::min(line.find(',', i), line.size());
      const std::string_view raw = trim_blanks(line.substr(i, end - i));
      if (raw.find('"') != std::string_view::npos)
        return "a quote inside an unquoted field (quote the whole field, doubling the quote)";
      field = raw;
      i = end;
    }
    fields.push_back(std::move(field));
    if (i >= line.size())
      return {};
    ++i; // the comma
  }
}

[[noreturn]] inline void throw_csv_error(std::string_view source, std::size_t line,
                                         std::string_view problem) {
  throw ParseError(fmt::format("safeguards: {}, line {}: {}", source, line, problem), line);
}

inline PriceTable parse_price_csv(std::string_view text, std::string_view source) {
  // Spreadsheets on Windows save UTF-8 with a byte order mark.
  if (text.starts_with("\xEF\xBB\xBF"))
    text.remove_prefix(3);
  PriceTable table;
  std::unordered_map<std::string, std::size_t> first_seen; // model -> line, for duplicates
  std::vector<std::string> fields;
  bool header_seen = false;
  std::size_t line_number = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t newline = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, newline - pos);
    pos = newline + 1;
    ++line_number;
    if (line.ends_with('\r'))
      line.remove_suffix(1);
    const std::string_view content = trim_blanks(line);
    if (content.empty() || content.front() == '#')
      continue;
    auto fail = [&](std::string_view problem) { throw_csv_error(source, line_number, problem); };
    if (auto problem = split_csv_line(content, fields); !problem.empty())
      fail(fmt::format("{}: {}", problem, quoted_excerpt(content)));
    if (!header_seen) {
      if (fields != std::vector<std::string>{"model", "prompt", "completion", "cached_prompt"})
        fail(fmt::format("expected the header row {}, got {}", price_csv_header,
                         quoted_excerpt(content)));
      header_seen = true;
      continue;
    }
    if (fields.size() != 4)
      fail(fmt::format("expected 4 fields ({}), got {}: {}", price_csv_header, fields.size(),
                       quoted_excerpt(content)));
    const std::string& model = fields[0];
    if (model.empty())
      fail(fmt::format("the model name is empty: {}", quoted_excerpt(content)));
    auto price = [&](std::string_view column, const std::string& field) {
      if (field.empty())
        fail(fmt::format("the {} price of model {} is empty", column, quoted_excerpt(model)));
      Decimal value;
      try {
        value = Decimal::parse(field); // Rounding::reject: a price is never silently altered
      } catch (const MalformedAmount&) {
        fail(fmt::format("the {} price of model {} is not a decimal number with at most 6 "
                         "fractional digits (USD per million tokens): {}",
                         column, quoted_excerpt(model), quoted_excerpt(field)));
      }
      if (value < Decimal())
        fail(fmt::format("the {} price of model {} is negative: {}", column, quoted_excerpt(model),
                         quoted_excerpt(field)));
      return value;
    };
    ModelPrice p{.prompt = price("prompt", fields[1]),
                 .completion = price("completion", fields[2])};
    if (!fields[3].empty())
      p.cached_prompt = price("cached_prompt", fields[3]);
    if (auto [it, inserted] = first_seen.try_emplace(model, line_number); !inserted)
      fail(fmt::format("model {} is listed twice (first on line {})", quoted_excerpt(model),
                       it->second));
    table.set(model, p);
  }
  if (!header_seen)
    throw ParseError(
        fmt::format("safeguards: {}: no header row (expected {})", source, price_csv_header), 0);
  return table;
}

} // namespace detail

/// Reads a price table from CSV text: a header row `model,prompt,completion,cached_prompt`,
/// then one row per model with its prices in USD **per million tokens** (see `ModelPrice`).
///
/// - Prices are decimal text as `Decimal::parse` reads it, never rounded: more than six
///   fractional digits, a negative price or anything that is not a number is an error.
///   `cached_prompt` may be left empty (the prompt price then applies to cached tokens).
/// - Blank lines and lines whose first non-blank character is `#` are skipped; blanks around
///   fields are trimmed; CRLF line ends and a UTF-8 byte order mark are accepted.
/// - A field may be double-quoted, to hold a comma (`"acme/model,v2",1,2,`) or to start a
///   model name with `#`; inside quotes, `""` is one quote and the text is taken verbatim. A
///   quoted field cannot span lines.
///
/// Every problem is a `ParseError` whose message names the line and the offending text, and
/// whose `line()` is that 1-based line: a missing or wrong header, a row without exactly four
/// fields, an empty model name, a malformed or negative price, a model listed twice. Input with
/// no header row at all (empty, or only blank lines and comments) has `line()` 0.
///
/// **Example**
/// ```
/// PriceTable prices = load_price_csv(
///     "model,prompt,completion,cached_prompt\n"
///     "# USD per million tokens\n"
///     "gpt-4o,2.5,10,1.25\n"
///     "my-local-model,0,0,\n");
/// prices.at("gpt-4o").cached_prompt;   // 1.25
/// ```
inline PriceTable load_price_csv(std::string_view text) {
  return detail::parse_price_csv(text, "price CSV");
}

/// `load_price_csv` on the contents of a file. Throws `IoError` naming the path when the file
/// cannot be read, and `ParseError` (naming the path and the line) when its text is not a price
/// table.
///
/// **Example**
/// ```
/// PriceTable prices = load_price_csv_file("/etc/agents/prices.csv");
/// ```
inline PriceTable load_price_csv_file(const std::filesystem::path& path) {
  const std::string text = detail::read_text_file(path, "price file");
  return detail::parse_price_csv(
      text, fmt::format("price file {}", detail::quoted_excerpt(path.string(), 400)));
}

} // namespace v1
} // namespace safeguards
