// safeguards: ModelPrice and PriceTable, what model calls cost, computed exactly and rounded up.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <boost/multiprecision/cpp_int.hpp>
#include <cstddef>
#include <cstdint>
#include <fmt/format.h>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <safeguards/decimal.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/llm_usage.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// What a model charges, in USD **per million tokens**: per-token prices such as 0.0000025 do
/// not fit `Decimal`'s six fractional digits, per-million prices (2.5) do, down to a millionth
/// of a dollar per million tokens.
///
/// **Example**
/// ```
/// ModelPrice gpt4o{.prompt = Decimal("2.5"), .completion = Decimal("10"),
///                  .cached_prompt = Decimal("1.25")};
/// ```
struct ModelPrice {
  Decimal prompt{};     ///< per million prompt tokens not read from the cache
  Decimal completion{}; ///< per million completion tokens (reasoning tokens included)
  /// Per million prompt tokens read from the provider's cache; the prompt price when absent.
  std::optional<Decimal> cached_prompt{};

  Decimal cached_prompt_or_prompt() const noexcept { return cached_prompt.value_or(prompt); }

  friend bool operator==(const ModelPrice&, const ModelPrice&) = default;
};

namespace detail {

// Prices are micro-USD per million tokens, so price.raw() × tokens counts units of 1e-12 USD
// (picodollars). Each product is below 2^126 and the sum of three below 2^128: exact.
using PicoUsd = boost::multiprecision::uint128_t;
inline constexpr std::int64_t tokens_per_million = 1'000'000;

inline void validate_price(std::string_view model, const ModelPrice& p) {
  const Decimal zero;
  auto bad = [&](const char* what, Decimal value) {
    throw InvalidArgument(
        fmt::format("safeguards: the {} price of model \"{}\" must not be negative, got {}", what,
                    model, value));
  };
  if (p.prompt < zero)
    bad("prompt", p.prompt);
  if (p.completion < zero)
    bad("completion", p.completion);
  if (p.cached_prompt && *p.cached_prompt < zero)
    bad("cached prompt", *p.cached_prompt);
}

inline PicoUsd pico(Decimal per_million, std::int64_t tokens) {
  return PicoUsd(static_cast<std::uint64_t>(per_million.raw())) *
         PicoUsd(static_cast<std::uint64_t>(tokens));
}

// The prompt part of a cost: uncached tokens at the prompt price, cached ones at theirs.
inline PicoUsd prompt_pico(const ModelPrice& p, std::int64_t prompt_tokens,
                           std::int64_t cached_tokens) {
  return pico(p.prompt, prompt_tokens - cached_tokens) +
         pico(p.cached_prompt_or_prompt(), cached_tokens);
}

} // namespace detail

/// The exact cost of `usage` at `price`, in units of 1e-12 USD: what `cost` rounds up.
/// Throws `InvalidArgument` for an impossible report or a negative price.
inline boost::multiprecision::uint128_t exact_cost_picodollars(const ModelPrice& price,
                                                               const LlmUsage& usage) {
  validate_usage(usage);
  detail::validate_price(usage.model, price);
  return detail::prompt_pico(price, usage.prompt_tokens, usage.cached_prompt_tokens) +
         detail::pico(price.completion, usage.completion_tokens);
}

/// What `usage` costs at `price`: computed exactly, then rounded **up** to the micro-dollar once
/// for the whole call, so a budget is never undercharged and is overcharged by less than
/// 0.000001 USD per call.
///
/// Throws `InvalidArgument` for an impossible report (negative counts, more cached than prompt
/// tokens) or a negative price, and `AmountOverflow` for a cost beyond `Decimal::max()`.
///
/// **Example**
/// ```
/// ModelPrice p{.prompt = Decimal("2.5"), .completion = Decimal("10")};
/// cost(p, {.model = "gpt-4o", .prompt_tokens = 1000, .completion_tokens = 1});  // 0.00251
/// ```
inline Decimal cost(const ModelPrice& price, const LlmUsage& usage) {
  const auto exact = exact_cost_picodollars(price, usage);
  const auto micros = (exact + (detail::tokens_per_million - 1)) / detail::tokens_per_million;
  if (micros > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    throw AmountOverflow(fmt::format(
        "safeguards: the cost of {} is beyond the largest amount Decimal can hold", usage));
  return Decimal::from_raw(static_cast<std::int64_t>(micros));
}

/// The most completion tokens a call with this prompt can return while its cost (`cost`, rounded
/// up) stays within `money`; `std::nullopt` when the prompt alone costs more than `money`, the
/// largest `int64_t` when completions are free. Never throws for valid inputs: counts must
/// satisfy 0 <= cached <= prompt and the price must not be negative (else `InvalidArgument`).
inline std::optional<std::int64_t> max_completion_tokens(const ModelPrice& price,
                                                         std::int64_t prompt_tokens,
                                                         std::int64_t cached_prompt_tokens,
                                                         Decimal money) {
  validate_usage({.prompt_tokens = prompt_tokens, .cached_prompt_tokens = cached_prompt_tokens});
  detail::validate_price({}, price);
  if (money < Decimal())
    return std::nullopt;
  // cost <= money  <=>  ceil(pico / 1e6) <= money.raw  <=>  pico <= money.raw * 1e6
  const auto budget = detail::pico(money, detail::tokens_per_million);
  const auto base = detail::prompt_pico(price, prompt_tokens, cached_prompt_tokens);
  if (base > budget)
    return std::nullopt;
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  if (price.completion.raw() == 0)
    return max;
  const auto n = (budget - base) / static_cast<std::uint64_t>(price.completion.raw());
  return n > static_cast<std::uint64_t>(max) ? max : static_cast<std::int64_t>(n);
}

/// Prices by model name, with an optional fallback for models it does not list.
///
/// A model with no price and no fallback is an `UnknownModel` error, never a silent zero: a call
/// priced at nothing could spend without limit. Lookups take a `std::string_view` and allocate
/// nothing. Reads are safe from any number of threads; changes are not (build the table first,
/// then share it as `const`).
///
/// **Example**
/// ```
/// PriceTable prices{{"gpt-4o", {.prompt = Decimal("2.5"), .completion = Decimal("10"),
///                               .cached_prompt = Decimal("1.25")}}};
/// Decimal usd = prices.cost({.model = "gpt-4o", .prompt_tokens = 1200,
///                            .completion_tokens = 300});   // 0.006
/// ```
class PriceTable {
public:
  PriceTable() = default;
  /// Throws `InvalidArgument` for an empty model name or a negative price.
  PriceTable(std::initializer_list<std::pair<std::string_view, ModelPrice>> prices) {
    for (const auto& [model, price] : prices)
      set(std::string(model), price);
  }

  /// Adds or replaces the price of `model`. Throws `InvalidArgument` for an empty model name or
  /// a negative price.
  void set(std::string model, const ModelPrice& price) {
    if (model.empty())
      throw InvalidArgument("safeguards: a price needs a model name");
    detail::validate_price(model, price);
    prices_.insert_or_assign(std::move(model), price);
  }

  /// Removes `model`'s price; returns whether there was one.
  bool erase(std::string_view model) {
    auto it = prices_.find(model);
    if (it == prices_.end())
      return false;
    prices_.erase(it);
    return true;
  }

  /// The price of every model the table does not list. Throws `InvalidArgument` if negative.
  void set_fallback(const ModelPrice& price) {
    detail::validate_price("(fallback)", price);
    fallback_ = price;
  }
  void clear_fallback() noexcept { fallback_.reset(); }
  const std::optional<ModelPrice>& fallback() const noexcept { return fallback_; }

  /// True when `model` has a price of its own (the fallback does not count).
  bool contains(std::string_view model) const noexcept {
    return prices_.find(model) != prices_.end();
  }

  /// `model`'s price, else the fallback, else null.
  const ModelPrice* find(std::string_view model) const noexcept {
    if (auto it = prices_.find(model); it != prices_.end())
      return &it->second;
    return fallback_ ? &*fallback_ : nullptr;
  }

  /// `model`'s price, else the fallback; throws `UnknownModel` when there is neither.
  const ModelPrice& at(std::string_view model) const {
    if (const ModelPrice* p = find(model))
      return *p;
    throw UnknownModel(fmt::format("safeguards: no price for model \"{}\" and no fallback price "
                                   "(add it with PriceTable::set or set_fallback)",
                                   model));
  }

  /// What `usage` costs at its model's price; see the free function `cost`.
  Decimal cost(const LlmUsage& usage) const { return safeguards::cost(at(usage.model), usage); }

  std::size_t size() const noexcept { return prices_.size(); }
  bool empty() const noexcept { return prices_.empty(); }

  /// The models the table lists, sorted.
  std::vector<std::string> models() const {
    std::vector<std::string> names;
    names.reserve(prices_.size());
    for (const auto& entry : prices_)
      names.push_back(entry.first);
    std::sort(names.begin(), names.end());
    return names;
  }

private:
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::unordered_map<std::string, ModelPrice, NameHash, std::equal_to<>> prices_;
  std::optional<ModelPrice> fallback_;
};

} // namespace v1
} // namespace safeguards

/// `prompt 2.5, completion 10.0, cached prompt 1.25 USD per 1M tokens`.
template <>
struct fmt::formatter<safeguards::ModelPrice> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::ModelPrice& p, FormatContext& ctx) const {
    auto text =
        p.cached_prompt
            ? fmt::format("prompt {}, completion {}, cached prompt {} USD per 1M tokens", p.prompt,
                          p.completion, *p.cached_prompt)
            : fmt::format("prompt {}, completion {} USD per 1M tokens", p.prompt, p.completion);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
