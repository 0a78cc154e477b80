// The LiteLLM price loader check shared by the fuzzer (tests/fuzz/price_json_text_fuzz.cpp) and
// its replay test (tests/price_json_text_test.cpp); both need nlohmann-json, as price_json.hpp
// does. Arbitrary text through `load_litellm_prices`:
// - it returns a table or throws `ParseError`, nothing else; the error's `line()` lies within the
//   text (0 only for empty text) and its message holds no C0 control character;
// - a loaded table has non-negative prices and no model whose prompt and completion prices are
//   both zero; loading is deterministic;
// - exact: the table written back as LiteLLM JSON, each per-token price as the exact decimal
//   text `<micro-USD per million>e-12`, loads to the same table;
// - against nlohmann's own DOM reading of the same text: every model in the table is a
//   top-level object (not `sample_spec`) with numeric input and output prices, each price within
//   one micro-USD per million tokens (plus 1e-9 relative, for the double) of the DOM's double,
//   rounded up, never down; and every such entry with a non-zero price is in the table.
// SPDX-License-Identifier: MIT
#pragma once

#include "price_csv_check.hpp"

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <safeguards/price_json.hpp>
#include <string>
#include <string_view>

namespace safeguards_test {

// `table` as LiteLLM JSON whose number text is exact: raw micro-USD per million tokens is
// raw × 10^-12 USD per token.
inline std::string to_litellm_json(const safeguards::PriceTable& table) {
  std::string out = "{";
  for (const auto& model : table.models()) {
    const auto& p = *table.find(model);
    if (out.size() > 1)
      out += ",";
    out += fmt::format("\n {}: {{\"input_cost_per_token\": {}e-12, \"output_cost_per_token\": "
                       "{}e-12",
                       nlohmann::json(model).dump(), p.prompt.raw(), p.completion.raw());
    if (p.cached_prompt)
      out += fmt::format(", \"cache_read_input_token_cost\": {}e-12", p.cached_prompt->raw());
    out += "}";
  }
  return out + "\n}\n";
}

// A loaded price (raw micro-USD per million tokens) against the DOM's double (USD per token).
inline bool close_to(safeguards::Decimal price, double per_token) {
  const double expected = per_token * 1e12; // micro-USD per million tokens
  const auto raw = static_cast<double>(price.raw());
  const double slack = 1e-9 * std::fabs(expected);
  return raw >= expected - slack - 1e-3 && raw <= expected + 1.0 + slack;
}

inline std::string check_against_dom(const safeguards::PriceTable& table, std::string_view text) {
  nlohmann::json dom;
  try {
    dom = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return fmt::format("nlohmann's DOM refuses what the loader read: {}", e.what());
  }
  if (!dom.is_object())
    return "the loader read a top level that is not an object";
  std::size_t models = 0;
  for (const auto& [model, entry] : dom.items()) {
    const safeguards::ModelPrice* p = table.contains(model) ? table.find(model) : nullptr;
    const bool priced =
        model != "sample_spec" && entry.is_object() && entry.contains("input_cost_per_token") &&
        entry.contains("output_cost_per_token") && entry["input_cost_per_token"].is_number() &&
        entry["output_cost_per_token"].is_number();
    if (p == nullptr) {
      if (priced && (entry["input_cost_per_token"].get<double>() > 0 ||
                     entry["output_cost_per_token"].get<double>() > 0))
        return fmt::format("model \"{}\" has prices but is not in the table", printable(model));
      continue;
    }
    ++models;
    if (!priced)
      return fmt::format("model \"{}\" is in the table without both prices", printable(model));
    if (!close_to(p->prompt, entry["input_cost_per_token"].get<double>()) ||
        !close_to(p->completion, entry["output_cost_per_token"].get<double>()))
      return fmt::format("model \"{}\": {} is not the file's {} and {} per token", printable(model),
                         *p, entry["input_cost_per_token"].dump(),
                         entry["output_cost_per_token"].dump());
    const auto cached = entry.find("cache_read_input_token_cost");
    const bool has_cached = cached != entry.end() && !cached->is_null();
    if (has_cached != p->cached_prompt.has_value() ||
        (has_cached && !close_to(*p->cached_prompt, cached->get<double>())))
      return fmt::format("model \"{}\": cached price {} is not the file's", printable(model), *p);
  }
  if (models != table.size())
    return fmt::format("the table holds {} models, the file {}", table.size(), models);
  return {};
}

// The whole JSON check. Returns an empty string when every promise held.
inline std::string check_price_json_text(std::string_view text) {
  std::string error;
  auto load = [](std::string_view t) { return safeguards::load_litellm_prices(t); };
  const LoadOutcome out = load_checked(load, text, error);
  if (!error.empty())
    return "load_litellm_prices " + error;
  if (auto problem = check_outcome(out, text); !problem.empty())
    return fmt::format("load_litellm_prices on \"{}\": {}", printable(text), problem);
  if (!out.table && (out.error_line == 0) != text.empty())
    return fmt::format("load_litellm_prices on \"{}\": {}", printable(text), describe(out));
  const LoadOutcome again = load_checked(load, text, error);
  if (!error.empty() || !same_outcome(out, again) || out.message != again.message)
    return fmt::format("load_litellm_prices on \"{}\" is not deterministic", printable(text));
  if (!out.table)
    return {};

  for (const auto& model : out.table->models()) {
    const auto& p = *out.table->find(model);
    if (p.prompt.raw() == 0 && p.completion.raw() == 0)
      return fmt::format("load_litellm_prices on \"{}\": model \"{}\" is free", printable(text),
                         printable(model));
  }
  const std::string written = to_litellm_json(*out.table);
  const LoadOutcome reread = load_checked(load, written, error);
  if (!error.empty() || !same_outcome(out, reread))
    return fmt::format("the table of \"{}\", written as \"{}\", reads back as {} {}",
                       printable(text), printable(written), describe(reread), error);
  if (auto problem = check_against_dom(*out.table, text); !problem.empty())
    return fmt::format("load_litellm_prices on \"{}\": {}", printable(text), problem);
  return {};
}

} // namespace safeguards_test
