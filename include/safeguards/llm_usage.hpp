// safeguards: LlmUsage, what one model call used, in the fields OpenAI-compatible APIs report.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <safeguards/errors.hpp>
#include <string>
#include <string_view>

namespace safeguards {
inline namespace v1 {

/// What one model call used, as an OpenAI-compatible API reports it in `usage`.
///
/// The cached and reasoning counts are parts of the prompt and completion counts, not additions
/// to them, exactly as the API reports them: `prompt_tokens_details.cached_tokens` is the part
/// of `prompt_tokens` read from the provider's cache (billed at the cached price), and
/// `completion_tokens_details.reasoning_tokens` the part of `completion_tokens` the model spent
/// thinking (billed as completion tokens).
///
/// **Example**
/// ```
/// LlmUsage u{.model = "gpt-4o", .prompt_tokens = 1200, .completion_tokens = 300,
///            .cached_prompt_tokens = 1024};
/// fmt::print("{}\n", u);   // gpt-4o: 1200 prompt (1024 cached) + 300 completion tokens
/// ```
struct LlmUsage {
  std::string model{};                   ///< the model that served the call, as reported
  std::int64_t prompt_tokens = 0;        ///< `usage.prompt_tokens`
  std::int64_t completion_tokens = 0;    ///< `usage.completion_tokens`
  std::int64_t cached_prompt_tokens = 0; ///< `usage.prompt_tokens_details.cached_tokens`
  std::int64_t reasoning_tokens = 0;     ///< `usage.completion_tokens_details.reasoning_tokens`

  /// Prompt plus completion tokens (`usage.total_tokens`); saturates at the largest `int64_t`
  /// instead of overflowing, so that a garbled report cannot wrap around to a small number.
  constexpr std::int64_t total_tokens() const noexcept {
    constexpr auto max = std::numeric_limits<std::int64_t>::max();
    return completion_tokens > max - prompt_tokens ? max : prompt_tokens + completion_tokens;
  }

  friend bool operator==(const LlmUsage&, const LlmUsage&) = default;
};

/// Why `u` cannot be a real report (a negative count, more cached tokens than prompt tokens,
/// more reasoning tokens than completion tokens), or an empty view when it can.
constexpr std::string_view usage_problem(const LlmUsage& u) noexcept {
  if (u.prompt_tokens < 0 || u.completion_tokens < 0 || u.cached_prompt_tokens < 0 ||
      u.reasoning_tokens < 0)
    return "a token count is negative";
  if (u.cached_prompt_tokens > u.prompt_tokens)
    return "more cached prompt tokens than prompt tokens";
  if (u.reasoning_tokens > u.completion_tokens)
    return "more reasoning tokens than completion tokens";
  return {};
}

/// Throws `InvalidArgument`, naming the problem and the report, unless `u` is a possible report.
inline void validate_usage(const LlmUsage& u) {
  if (auto problem = usage_problem(u); !problem.empty())
    throw InvalidArgument(fmt::format(
        "safeguards: impossible usage report for model \"{}\" ({}): prompt {} (cached {}), "
        "completion {} (reasoning {})",
        u.model, problem, u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens,
        u.reasoning_tokens));
}

} // namespace v1
} // namespace safeguards

/// `gpt-4o: 1200 prompt (1024 cached) + 300 completion (120 reasoning) tokens`; the parts in
/// parentheses appear only when they are not zero.
template <>
struct fmt::formatter<safeguards::LlmUsage> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::LlmUsage& u, FormatContext& ctx) const {
    std::string text =
        fmt::format("{}: {} prompt", u.model.empty() ? "?" : u.model, u.prompt_tokens);
    if (u.cached_prompt_tokens != 0)
      text += fmt::format(" ({} cached)", u.cached_prompt_tokens);
    text += fmt::format(" + {} completion", u.completion_tokens);
    if (u.reasoning_tokens != 0)
      text += fmt::format(" ({} reasoning)", u.reasoning_tokens);
    text += " tokens";
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
