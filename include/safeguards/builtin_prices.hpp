// safeguards: builtin_prices, a small table of common models' prices to start from.
// SPDX-License-Identifier: MIT
#pragma once

#include <safeguards/decimal.hpp>
#include <safeguards/price_table.hpp>

namespace safeguards {
inline namespace v1 {

/// Prices, in USD per million tokens, of 14 widely used models from OpenAI, Anthropic and
/// Google, each under the name you request it by and, for OpenAI and Anthropic, under the
/// dated snapshot name the API reports in `usage.model` (which is what `LlmUsage::model`
/// holds). No fallback is set.
///
/// Prices change and this table does not: it is a starting point and a test fixture, not a
/// price feed. Check it against your provider's invoices, override what differs with
/// `PriceTable::set`, or load a maintained table (`load_price_csv`, `load_litellm_prices`).
///
/// What the table cannot express, because `ModelPrice` has one price per kind of token:
/// the dearer long-context tier (Gemini 2.5 Pro and Claude Sonnet 4.5 charge more for a prompt
/// over 200k tokens: such calls are undercharged here), and Anthropic's prompt-cache writes
/// (billed above the prompt price).
///
/// **Example**
/// ```
/// PriceTable prices = builtin_prices();
/// prices.set_fallback({.prompt = Decimal("15"), .completion = Decimal("75")});  // unlisted
/// Decimal usd = prices.cost({.model = "gpt-4o-2024-08-06", .prompt_tokens = 1000,
///                            .completion_tokens = 100});   // 0.0035
/// ```
inline PriceTable builtin_prices() {
  using namespace literals;
  auto price = [](Decimal prompt, Decimal completion, Decimal cached_prompt) {
    return ModelPrice{.prompt = prompt, .completion = completion, .cached_prompt = cached_prompt};
  };
  // Source: LiteLLM's model_prices_and_context_window.json (github.com/BerriAI/litellm, MIT) at
  // commit caddc6dd0fc26931b3fcc4e91e81a3d90080f3ef, the head of main on 2025-11-21 (the file
  // last changed in be9f2e026c24a108e740f8a19bd8cfc1ec535523, the same day). Each number is
  // that file's input_cost_per_token, output_cost_per_token and cache_read_input_token_cost
  // times one million, under the same model key, except that the Gemini prices are those of
  // the keys "gemini/gemini-2.5-pro" and "gemini/gemini-2.5-flash" (Google's Gemini API; the
  // Vertex AI keys without the prefix list a lower cached price for 2.5 Pro, and a budget
  // would rather overcharge than undercharge). price_json_test checks every entry against a
  // copy of those keys in tests/data/litellm_prices_subset.json.
  const ModelPrice gpt_4o = price(2.5_d, 10_d, 1.25_d);
  const ModelPrice gpt_4o_mini = price(0.15_d, 0.6_d, 0.075_d);
  const ModelPrice gpt_4_1 = price(2_d, 8_d, 0.5_d);
  const ModelPrice gpt_4_1_mini = price(0.4_d, 1.6_d, 0.1_d);
  const ModelPrice gpt_4_1_nano = price(0.1_d, 0.4_d, 0.025_d);
  const ModelPrice o3 = price(2_d, 8_d, 0.5_d);
  const ModelPrice o4_mini = price(1.1_d, 4.4_d, 0.275_d);
  const ModelPrice gpt_5 = price(1.25_d, 10_d, 0.125_d);
  const ModelPrice gpt_5_mini = price(0.25_d, 2_d, 0.025_d);
  const ModelPrice claude_sonnet_4_5 = price(3_d, 15_d, 0.3_d);
  const ModelPrice claude_haiku_4_5 = price(1_d, 5_d, 0.1_d);
  const ModelPrice claude_opus_4_1 = price(15_d, 75_d, 1.5_d);
  return PriceTable{
      // OpenAI
      {"gpt-4o", gpt_4o},
      {"gpt-4o-2024-08-06", gpt_4o},
      {"gpt-4o-2024-11-20", gpt_4o},
      {"gpt-4o-mini", gpt_4o_mini},
      {"gpt-4o-mini-2024-07-18", gpt_4o_mini},
      {"gpt-4.1", gpt_4_1},
      {"gpt-4.1-2025-04-14", gpt_4_1},
      {"gpt-4.1-mini", gpt_4_1_mini},
      {"gpt-4.1-mini-2025-04-14", gpt_4_1_mini},
      {"gpt-4.1-nano", gpt_4_1_nano},
      {"gpt-4.1-nano-2025-04-14", gpt_4_1_nano},
      {"o3", o3},
      {"o3-2025-04-16", o3},
      {"o4-mini", o4_mini},
      {"o4-mini-2025-04-16", o4_mini},
      {"gpt-5", gpt_5},
      {"gpt-5-2025-08-07", gpt_5},
      {"gpt-5-mini", gpt_5_mini},
      {"gpt-5-mini-2025-08-07", gpt_5_mini},
      // Anthropic
      {"claude-sonnet-4-5", claude_sonnet_4_5},
      {"claude-sonnet-4-5-20250929", claude_sonnet_4_5},
      {"claude-haiku-4-5", claude_haiku_4_5},
      {"claude-haiku-4-5-20251001", claude_haiku_4_5},
      {"claude-opus-4-1", claude_opus_4_1},
      {"claude-opus-4-1-20250805", claude_opus_4_1},
      // Google
      {"gemini-2.5-pro", price(1.25_d, 10_d, 0.3125_d)},
      {"gemini-2.5-flash", price(0.3_d, 2.5_d, 0.03_d)},
  };
}

} // namespace v1
} // namespace safeguards
