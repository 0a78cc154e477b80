// A real OpenAI-compatible client under a budget: one answered call and one streamed call to
// {OPENAI_BASE_URL}/chat/completions, each through guarded_call, and what each was charged.
//
//   OPENAI_API_KEY   required; without it the program says so and exits 0 (a local server
//                    that needs no key, such as Ollama or llama.cpp, takes any value)
//   OPENAI_BASE_URL  default https://api.openai.com/v1
//   OPENAI_MODEL     default gpt-4o-mini
//
// The client itself is openai_client.hpp; tests/openai_http_test.cpp runs it against a local
// fake server, and CTest runs this program with the key emptied, so no test needs the internet.
#include "openai_client.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fmt/format.h>
#include <safeguards/builtin_prices.hpp>
#include <safeguards/safeguards.hpp>
#include <string>
#include <string_view>
#include <vector>

using namespace safeguards;

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

void print_record(const ChatResult& r) {
  const LlmCallRecord& rec = r.record;
  fmt::print("  charged {}: {}\n", to_string(r.charged), rec.usage);
  fmt::print(
      "  cost {} USD in {} s; the agent paid {}, got back {} of what was set aside{}\n", rec.cost,
      rec.seconds, rec.money.charged, rec.money.refunded,
      rec.money.overspent == Decimal() ? "" : fmt::format(", {} USD unpaid", rec.money.overspent));
}

} // namespace

int main() {
  const std::string key = env_or("OPENAI_API_KEY", "");
  if (key.empty()) {
    fmt::print("OPENAI_API_KEY is not set: no call made. Set it (and OPENAI_BASE_URL, "
               "OPENAI_MODEL for another OpenAI-compatible server) to run this example.\n");
    return 0;
  }
  const std::string base_url = env_or("OPENAI_BASE_URL", "https://api.openai.com/v1");
  const std::string model = env_or("OPENAI_MODEL", "gpt-4o-mini");

  // Calls are priced by the model asked for. A model the table does not know is refused rather
  // than priced at zero: add its price (per million tokens) with prices.set.
  const PriceTable prices = builtin_prices();
  if (prices.find(model) == nullptr) {
    fmt::print(stderr,
               "no price for model \"{}\": add one with prices.set(\"{}\", {{.prompt = ..., "
               ".completion = ...}})\n",
               model, model);
    return 1;
  }

  // The run: two minutes, a few calls, tokens and cents for this model. The agent's money comes
  // from a pool in the coordinator, which can serve many agents.
  SharedBudget run{Budget{std::chrono::minutes(2),
                          {Consumption::call(4, model),
                           Consumption::token(20'000, llm_kinds::total_tokens(model)),
                           Consumption::cost(Decimal("0.05"), model)}}};
  BudgetCoordinator coord;
  const PoolId pool =
      coord.create_pool({.name = "examples", .initial_budget = Decimal("1.0"), .priority = 5});
  const AgentId agent = coord.create_agent(
      {.name = "openai-example", .initial_budget = Decimal("0.10"), .priority = 5, .pool = pool});
  const LlmCallContext ctx{
      .run = &run, .coordinator = &coord, .agent = agent, .prices = &prices, .model = model};

  const OpenAiClient client(base_url, key, model);
  const std::vector<ChatMessage> messages{{"system", "You answer in one short paragraph."},
                                          {"user", "Why should an AI agent have a budget?"}};
  // The prompt is estimated before the call (only the reservation rests on it); the answer may
  // be cut at 200 tokens, or fewer if the limits or the money allow fewer.
  const LlmRequest request{.prompt_tokens = estimate_prompt_tokens(messages),
                           .max_completion_tokens = 200};

  try {
    fmt::print("== one call to {} at {}\n", model, client.url());
    ChatResult answer = guarded_call(
        ctx, request, [&](LlmCallGuard& guard) { return client.chat(guard, messages); });
    fmt::print("{}\n", answer.text);
    print_record(answer);

    fmt::print("== the same, streamed\n");
    ChatResult streamed = guarded_call(ctx, request, [&](LlmCallGuard& guard) {
      return client.chat_stream(guard, messages, [](std::string_view piece) {
        fmt::print("{}", piece);
        std::fflush(stdout);
      });
    });
    fmt::print("\n");
    print_record(streamed);
  } catch (const LlmCallRefused& e) {
    // No call was made: a limit or the agent's money would not allow it.
    fmt::print(stderr, "refused: {}\n", e.what());
    return 1;
  } catch (const OpenAiApiError& e) {
    // The call counted; no tokens were charged.
    fmt::print(stderr, "the API said no: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    // The message says what was charged when more than the call was.
    fmt::print(stderr, "failed: {}\n", e.what());
    return 1;
  }

  fmt::print("== the run: every call, recorded as council does\n");
  const Budget snapshot = run.snapshot(); // a copy: the events live as long as it does
  for (const auto& event : snapshot.consumptions())
    fmt::print("  {}\n", event);
  const auto m = coord.agent_metrics(agent);
  fmt::print("agent {}: used {} of {} USD, {} left\n", m.name, m.used_budget, m.initial_budget,
             m.remaining_budget);
  return 0;
}
