// safeguards: load_litellm_prices, a PriceTable from LiteLLM's model price file (optional part).
// SPDX-License-Identifier: MIT
// Optional because it needs nlohmann-json 3 (https://github.com/nlohmann/json), which the core
// does not; safeguards.hpp does not include it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <safeguards/decimal.hpp>
#include <safeguards/detail/text_input.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/price_table.hpp>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>

namespace safeguards {
inline namespace v1 {
namespace detail {

enum class PerMillionStatus { ok, malformed, negative, out_of_range };

struct PerMillion {
  Decimal value{};
  PerMillionStatus status = PerMillionStatus::ok;
  bool rounded = false; ///< the exact value had more than 6 fractional digits; `value` is above it
};

// A per-token price as JSON number text (`2.5e-06`, `1.25E-7`, `0.0000025`, `0`, `-0.0`) to the
// price per million tokens, exactly: the decimal point moves six places in the digits, never
// through a double, and what still lies beyond the sixth fractional digit rounds *up* to the
// next micro-dollar. The decimal point may be ',' too: nlohmann's lexer writes the C locale's
// decimal point into the number's text.
inline PerMillion per_token_text_to_per_million(std::string_view text) {
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0;
  bool negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
    negative = text[i] == '-';
    ++i;
  }
  std::string digits; // the mantissa's digits, the decimal point left out
  std::int64_t fraction_digits = 0;
  for (; i < text.size() && is_digit(text[i]); ++i)
    digits += text[i];
  const bool integer_part = !digits.empty();
  if (i < text.size() && (text[i] == '.' || text[i] == ',')) {
    ++i;
    for (; i < text.size() && is_digit(text[i]); ++i, ++fraction_digits)
      digits += text[i];
    if (!integer_part || fraction_digits == 0)
      return {.status = PerMillionStatus::malformed};
  }
  if (digits.empty())
    return {.status = PerMillionStatus::malformed};
  // The exponent saturates: far beyond ±10^9 the result no longer depends on it (zero rounds
  // up to one micro-dollar, anything else is out of range).
  constexpr std::int64_t exponent_limit = 1'000'000'000;
  std::int64_t exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool exponent_negative = false;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
      exponent_negative = text[i] == '-';
      ++i;
    }
    if (i == text.size() || !is_digit(text[i]))
      return {.status = PerMillionStatus::malformed};
    for (; i < text.size() && is_digit(text[i]); ++i)
      if (exponent < exponent_limit)
        exponent = exponent * 10 + (text[i] - '0');
    if (exponent_negative)
      exponent = -exponent;
  }
  if (i != text.size())
    return {.status = PerMillionStatus::malformed};

  const std::size_t first = digits.find_first_not_of('0');
  if (first == std::string::npos)
    return {}; // zero, whatever its sign
  if (negative)
    return {.status = PerMillionStatus::negative};
  const std::string_view significant = std::string_view(digits).substr(first);
  // value = significant × 10^(exponent - fraction_digits) USD per token, so the raw count of
  // micro-dollars per million tokens is significant × 10^shift:
  const std::int64_t shift = exponent - fraction_digits + 2 * std::int64_t{Decimal::digits};
  std::string_view kept = significant;
  bool rounded = false;
  std::string scaled;
  if (shift >= 0) {
    if (static_cast<std::int64_t>(significant.size()) + shift > 19)
      return {.status = PerMillionStatus::out_of_range};
    scaled.assign(significant);
    scaled.append(static_cast<std::size_t>(shift), '0');
    kept = scaled;
  } else {
    const auto dropped = static_cast<std::uint64_t>(-shift);
    if (dropped >= significant.size()) {
      kept = {};
      rounded = true; // `significant` is not zero
    } else {
      kept = significant.substr(0, significant.size() - dropped);
      rounded = significant.substr(kept.size()).find_first_not_of('0') != std::string_view::npos;
    }
  }
  if (kept.size() > 19)
    return {.status = PerMillionStatus::out_of_range};
  std::uint64_t raw = 0; // at most 19 digits: below 10^19 < 2^64
  for (char c : kept)
    raw = raw * 10 + static_cast<std::uint64_t>(c - '0');
  if (rounded)
    ++raw;
  if (raw > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return {.status = PerMillionStatus::out_of_range};
  return {.value = Decimal::from_raw(static_cast<std::int64_t>(raw)), .rounded = rounded};
}

// The input adapter nlohmann builds from these iterators reads one character at a time, so the
// last character dereferenced tells how far the parser has read: a handler's line number.
class TrackingIterator {
public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackingIterator() = default;
  TrackingIterator(const char* position, const char** last_read)
      : position_(position), last_read_(last_read) {}

  reference operator*() const {
    *last_read_ = position_;
    return *position_;
  }
  TrackingIterator& operator++() {
    ++position_;
    return *this;
  }
  TrackingIterator operator++(int) {
    auto before = *this;
    ++position_;
    return before;
  }
  friend bool operator==(const TrackingIterator& a, const TrackingIterator& b) noexcept {
    return a.position_ == b.position_;
  }

private:
  const char* position_ = nullptr;
  const char** last_read_ = nullptr;
};

// nlohmann's SAX events for LiteLLM's file: the top level is an object of entries, each entry
// an object whose three price fields this reads; everything deeper is passed over.
class LitellmPriceHandler {
public:
  using json = nlohmann::json;

  LitellmPriceHandler(std::string_view text, std::string_view source)
      : text_(text), source_(source) {}

  const char* last_read = nullptr; // written by TrackingIterator

  PriceTable table;
  std::optional<ParseError> error;

  bool null() { return price_value_null(); }
  bool boolean(bool value) { return not_a_number(value ? "true" : "false"); }
  bool number_integer(json::number_integer_t value) {
    return price_value_number(std::to_string(value));
  }
  bool number_unsigned(json::number_unsigned_t value) {
    return price_value_number(std::to_string(value));
  }
  bool number_float(json::number_float_t, const json::string_t& text) {
    return price_value_number(text);
  }
  bool string(json::string_t&) { return not_a_number("a string"); }
  bool binary(json::binary_t&) { return not_a_number("binary data"); }

  bool start_object(std::size_t) {
    if (depth_ == 0) {
      depth_ = 1;
      return true;
    }
    if (depth_ == 1) {
      // Only an object can be an entry: any other value at this level is passed over.
      in_entry_ = true;
      entry_ = {};
      entry_.skip = model_ == "sample_spec"; // LiteLLM's documentation of the fields
    } else if (!not_a_number("an object")) {
      return false;
    }
    ++depth_;
    return true;
  }
  bool end_object() {
    --depth_;
    if (depth_ == 1 && in_entry_) {
      in_entry_ = false;
      finish_entry();
    }
    return true;
  }
  bool start_array(std::size_t) {
    if (depth_ == 0)
      return fail("the top level is an array, not an object of models (LiteLLM's "
                  "model_prices_and_context_window.json)");
    if (!not_a_number("an array"))
      return false;
    ++depth_;
    return true;
  }
  bool end_array() {
    --depth_;
    return true;
  }
  bool key(json::string_t& name) {
    if (depth_ == 1) {
      if (name.empty())
        return fail("a model name is empty");
      if (!models_seen_.insert(name).second)
        return fail(fmt::format("model {} is listed twice", quoted_excerpt(name)));
      model_ = name;
    } else if (depth_ == 2 && in_entry_) {
      field_ = field_index(name);
      if (field_ && entry_.present[*field_] && !entry_.skip)
        return fail(fmt::format("model {}: field {} is given twice", quoted_excerpt(model_),
                                field_names[*field_]));
      if (field_)
        entry_.present[*field_] = true;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error.emplace(fmt::format("safeguards: {}: {}", source_, e.what()), current_line());
    return false;
  }

private:
  static constexpr std::array<std::string_view, 3> field_names = {
      "input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost"};

  struct Entry {
    std::array<std::optional<Decimal>, 3> price{};
    std::array<bool, 3> present{};
    bool skip = false;
  };

  static std::optional<std::size_t> field_index(std::string_view name) {
    for (std::size_t i = 0; i < field_names.size(); ++i)
      if (name == field_names[i])
        return i;
    return std::nullopt;
  }

  // 1-based line of the last character the parser read. Counted only for an error, so the
  // scan runs once.
  std::size_t current_line() const {
    if (last_read == nullptr)
      return text_.empty() ? 0 : 1;
    const auto upto = static_cast<std::size_t>(last_read - text_.data());
    std::size_t line = 1;
    // The last character read may be the lookahead that ended a number; a newline there
    // belongs to the next line.
    for (std::size_t i = 0; i < upto; ++i)
      if (text_[i] == '\n')
        ++line;
    return line;
  }

  bool fail(std::string_view problem) {
    const std::size_t line = current_line();
    error.emplace(fmt::format("safeguards: {}, line {}: {}", source_, line, problem), line);
    return false;
  }

  // The value that follows a key at the entry level: a price field's, or another's.
  std::optional<std::size_t> take_price_field() {
    if (depth_ != 2 || !in_entry_ || entry_.skip)
      return std::nullopt;
    return std::exchange(field_, std::nullopt);
  }

  bool not_a_number(std::string_view what) {
    if (depth_ == 0)
      return fail(fmt::format("the top level is {}, not an object of models (LiteLLM's "
                              "model_prices_and_context_window.json)",
                              what));
    if (auto field = take_price_field())
      return fail(fmt::format("model {}: {} must be a number (USD per token), not {}",
                              quoted_excerpt(model_), field_names[*field], what));
    return true;
  }

  bool price_value_null() {
    if (depth_ == 0)
      return not_a_number("null");
    take_price_field(); // null is a price that is not there
    return true;
  }

  bool price_value_number(std::string_view text) {
    if (depth_ == 0)
      return not_a_number("a number");
    auto field = take_price_field();
    if (!field)
      return true;
    const PerMillion converted = per_token_text_to_per_million(text);
    const auto name = field_names[*field];
    switch (converted.status) {
    case PerMillionStatus::ok:
      break;
    case PerMillionStatus::negative:
      return fail(fmt::format("model {}: {} is negative: {}", quoted_excerpt(model_), name, text));
    case PerMillionStatus::out_of_range:
      return fail(fmt::format("model {}: {} is {} USD per token, beyond the largest price "
                              "per million tokens a Decimal holds",
                              quoted_excerpt(model_), name, text));
    case PerMillionStatus::malformed:
      return fail(fmt::format("model {}: {} is not a decimal number: {}", quoted_excerpt(model_),
                              name, quoted_excerpt(text)));
    }
    entry_.price[*field] = converted.value;
    return true;
  }

  void finish_entry() {
    const Entry& e = entry_;
    if (e.skip || !e.price[0] || !e.price[1])
      return; // priced otherwise (per image, second, character, query) or not at all
    // Both zero: free, or priced per query or by the hour, or not known to LiteLLM. A silent
    // zero lets a call spend without limit, so such a model stays unknown to the table.
    if (e.price[0]->raw() == 0 && e.price[1]->raw() == 0)
      return;
    table.set(model_,
              {.prompt = *e.price[0], .completion = *e.price[1], .cached_prompt = e.price[2]});
  }

  std::string_view text_;
  std::string_view source_;
  int depth_ = 0; // containers open around the next event
  bool in_entry_ = false;
  std::string model_;
  std::optional<std::size_t> field_;
  Entry entry_;
  std::unordered_set<std::string> models_seen_;
};

inline PriceTable parse_litellm_prices(std::string_view json, std::string_view source) {
  LitellmPriceHandler handler(json, source);
  const char* begin = json.data();
  const char* end = begin + json.size();
  const bool ok = nlohmann::json::sax_parse(TrackingIterator(begin, &handler.last_read),
                                            TrackingIterator(end, &handler.last_read), &handler);
  if (handler.error)
    // The handler stops the parse by returning false and keeps the error for here.
    throw *handler.error; // NOLINT(misc-throw-by-value-catch-by-reference): a copy of it
  if (!ok) // every way sax_parse fails goes through the handler; this is a safety net
    throw ParseError(fmt::format("safeguards: {}: not valid JSON", source), 0);
  return std::move(handler.table);
}

} // namespace detail

/// Reads the price table LiteLLM maintains, `model_prices_and_context_window.json`
/// (https://github.com/BerriAI/litellm): an object whose members are models, each an object of
/// which three fields are read, in USD **per token**:
///
/// | LiteLLM field                 | `ModelPrice`    |
/// |-------------------------------|-----------------|
/// | `input_cost_per_token`        | `prompt`        |
/// | `output_cost_per_token`       | `completion`    |
/// | `cache_read_input_token_cost` | `cached_prompt` |
///
/// **Exact.** A price is taken from the number's decimal text, never through a `double`, and
/// multiplied by one million by moving the decimal point. A per-million price with more than
/// six fractional digits (a per-token price with more than twelve, e.g. `4.6875e-09`) is
/// rounded **up** to the next 0.000001 USD per million tokens: it is never undercharged, and
/// overcharged by less than 0.000001 USD per million tokens, i.e. by less than one
/// micro-dollar per call for any call of up to a million tokens of each kind.
///
/// **Skipped**, without error (the model is then simply not in the table):
/// - the entry `sample_spec`, LiteLLM's description of the fields, without looking at it;
/// - an entry lacking `input_cost_per_token` or `output_cost_per_token` (models priced per
///   image, pixel, second or character: image generation, audio, some embeddings);
/// - an entry whose prompt and completion prices are both zero: free models, local ones, and
///   models LiteLLM prices per query or cannot price. A zero price would let them spend
///   without limit; they stay unknown, so `PriceTable::at` throws `UnknownModel` (or the
///   fallback applies) until you `set` a price on purpose;
/// - a top-level member that is not an object.
///
/// A price field that is JSON `null` counts as absent. Every other field, and anything nested
/// deeper (`tiered_pricing`, `*_above_200k_tokens`, `output_cost_per_reasoning_token`,
/// `cache_creation_input_token_cost`, ...), is ignored: calls that those prices would make
/// dearer (long prompts, reasoning tokens on a few models, cache writes) are undercharged.
///
/// Throws `ParseError` for malformed JSON (with nlohmann's message), for a top level that is not
/// an object, for an empty or repeated model name, for a field given twice in one entry, and
/// for a price field that is present but is not a number (a string, `true`, an object, an
/// array), is negative, or is beyond `Decimal`'s range per million tokens. The message names
/// the model and the field; `line()` is the 1-based line of the offending token (0 for empty
/// input).
///
/// **Example**
/// ```
/// PriceTable prices = load_litellm_prices(R"({
///   "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
///              "cache_read_input_token_cost": 1.25e-06, "mode": "chat"}
/// })");
/// prices.at("gpt-4o").prompt;   // 2.5 (USD per million tokens)
/// ```
inline PriceTable load_litellm_prices(std::string_view json) {
  return detail::parse_litellm_prices(json, "LiteLLM prices");
}

/// `load_litellm_prices` on the contents of a file. Throws `IoError` naming the path when the
/// file cannot be read, and `ParseError` (naming the path) when its text is not a price table.
///
/// **Example**
/// ```
/// PriceTable prices = load_litellm_prices_file("model_prices_and_context_window.json");
/// ```
inline PriceTable load_litellm_prices_file(const std::filesystem::path& path) {
  const std::string text = detail::read_text_file(path, "LiteLLM price file");
  return detail::parse_litellm_prices(
      text, fmt::format("LiteLLM price file {}", detail::quoted_excerpt(path.string(), 400)));
}

} // namespace v1
} // namespace safeguards
