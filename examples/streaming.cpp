// Streaming: the answer arrives a few tokens at a time, and before reading each chunk the agent
// asks the guard whether the next one could cross a limit. When it could, the stream is cancelled
// and exactly what was streamed is charged: no more (the rest set aside goes back), no less.
//
// Two streams are cut off: one by the agent's money, one by the run's token limit.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <optional>
#include <safeguards/llm_guard.hpp>
#include <safeguards/safeguards.hpp>

using namespace safeguards;

// What CTest requires of the output (see check_output.cmake):
// expect: ^== a stream cut off by the agent's money$
// expect: ^  cut off after 148 tokens: the next chunk could cross the limit$
// expect: ^  charged 0\.00398 USD for gpt-4o: 1000 prompt \+ 148 completion tokens$
// expect: ^  writer's balance: 0\.004 -> 0\.00002$
// expect: ^== a stream cut off by the run's token limit$
// expect: ^  cut off after 316 tokens: the next chunk could cross the limit$
// expect: ^  charged 0\.00611 USD for gpt-4o: 1180 prompt \+ 316 completion tokens$
// expect: ^  run budget: 4\.0 of 1500 total tokens left$

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "streaming: check failed: {}\n", what);
    std::exit(1);
  }
}

// Stands in for a streaming chat API: it reports the prompt's size first (as Anthropic's
// message_start does), then sends the answer in chunks of 2 to 6 tokens.
class FakeStream {
public:
  static constexpr std::int64_t max_chunk = 6;

  FakeStream(std::int64_t prompt_tokens, std::int64_t answer_tokens)
      : prompt_(prompt_tokens), answer_(answer_tokens) {}

  std::int64_t prompt_tokens() const { return prompt_; }

  // The next chunk's size in tokens, or nothing at the end of the answer.
  std::optional<std::int64_t> next() {
    static constexpr std::array<std::int64_t, 5> sizes{3, 5, 2, 6, 4};
    if (sent_ == answer_)
      return std::nullopt;
    const std::int64_t n = std::min(sizes[chunks_++ % sizes.size()], answer_ - sent_);
    sent_ += n;
    return n;
  }

private:
  std::int64_t prompt_;
  std::int64_t answer_;
  std::int64_t sent_ = 0;
  std::size_t chunks_ = 0;
};

struct Streamed {
  LlmCallRecord record;
  std::int64_t tokens = 0;
  bool cut_off = false;
};

// The streaming loop an agent runtime would write around its client.
Streamed read_stream(LlmCallGuard& guard, FakeStream& stream) {
  // Report the prompt as soon as it is known: a prompt longer than estimated leaves less room
  // for the answer, and should_stop takes that into account.
  guard.add_usage({.prompt_tokens = stream.prompt_tokens()});
  Streamed s;
  for (;;) {
    // Asked with the largest chunk the API sends, so that no chunk that arrives can cross the
    // limit: the tokens in a chunk are already paid for once it is sent.
    if (guard.should_stop(FakeStream::max_chunk)) {
      s.cut_off = true; // a real client cancels the HTTP request here
      break;
    }
    auto chunk = stream.next();
    if (!chunk)
      break;
    guard.add_output_tokens(*chunk); // charged to the agent as it arrives
    s.tokens += *chunk;
  }
  // No final usage report from a cancelled stream: record what was reported along the way. (A
  // stream that ends normally would pass its final usage to commit().)
  s.record = guard.commit_reported();
  return s;
}

void report(const Streamed& s, const ModelPrice& price) {
  check(s.cut_off, "the guard, not the end of the answer, stopped the stream");
  fmt::print("  cut off after {} tokens: the next chunk could cross the limit\n", s.tokens);
  fmt::print("  charged {} USD for {}\n", s.record.cost, s.record.usage);
  check(s.record.usage.completion_tokens == s.tokens, "every streamed token is recorded");
  check(s.record.cost == cost(price, s.record.usage), "the charge is the cost of what streamed");
  check(s.record.money.charged == s.record.cost && s.record.money.overspent == Decimal(0),
        "the agent paid exactly that, all of it from what was set aside");
}

} // namespace

int main() {
  // USD per million tokens.
  const PriceTable prices{{"gpt-4o", {.prompt = Decimal("2.5"), .completion = Decimal("10")}}};
  const ModelPrice& price = *prices.find("gpt-4o");
  BudgetCoordinator coord;
  PoolId pool =
      coord.create_pool({.name = "writers", .initial_budget = Decimal("2.0"), .priority = 5});

  {
    fmt::print("== a stream cut off by the agent's money\n");
    AgentId writer = coord.create_agent(
        {.name = "writer", .initial_budget = Decimal("0.004"), .priority = 5, .pool = pool});
    const Decimal before = coord.get_budget(writer);
    // The 1000-token prompt costs 0.0025, which leaves 0.0015: 150 tokens of answer. This
    // server ignores max_tokens and would stream 1200, so the guard has to stop it.
    LlmCallGuard guard(
        {.coordinator = &coord, .agent = writer, .prices = &prices, .model = "gpt-4o"},
        {.prompt_tokens = 1000, .max_completion_tokens = 2000});
    fmt::print("  writer has {} USD: room for {} output tokens\n", before,
               guard.max_output_tokens());
    FakeStream stream(1000, 1200);
    const Streamed s = read_stream(guard, stream);
    report(s, price);
    fmt::print("  writer's balance: {} -> {}\n", before, coord.get_budget(writer));
    check(coord.get_budget(writer) == before - s.record.cost, "the rest went back");
  }

  {
    fmt::print("== a stream cut off by the run's token limit\n");
    AgentId reporter = coord.create_agent(
        {.name = "reporter", .initial_budget = Decimal("1.0"), .priority = 5, .pool = pool});
    SharedBudget run{Budget{std::chrono::minutes(1),
                            {Consumption::token(1500, llm_kinds::total_tokens("gpt-4o"))}}};
    const Decimal before = coord.get_budget(reporter);
    // The prompt was estimated at 1000 tokens (characters / 4), so 500 output tokens fit the
    // limit and that is what max_tokens is set to. The server then counts the prompt as 1180:
    // 180 of those 500 are gone before the answer starts.
    LlmCallGuard guard({.run = &run,
                        .coordinator = &coord,
                        .agent = reporter,
                        .prices = &prices,
                        .model = "gpt-4o"},
                       {.prompt_tokens = 1000, .max_completion_tokens = 800});
    fmt::print("  prompt estimated at {} tokens: room for {} output tokens\n",
               guard.prompt_estimate(), guard.max_output_tokens());
    FakeStream stream(1180, guard.max_output_tokens()); // this server honours max_tokens
    fmt::print("  the server counts the prompt as {} tokens\n", stream.prompt_tokens());
    const Streamed s = read_stream(guard, stream);
    report(s, price);
    fmt::print("  reporter's balance: {} -> {}\n", before, coord.get_budget(reporter));
    const Decimal left = *run.available("token", llm_kinds::total_tokens("gpt-4o"));
    fmt::print("  run budget: {} of 1500 total tokens left\n", left);
    check(left == Decimal(1500 - 1180 - s.tokens), "the run counted the prompt and the answer");
    check(coord.get_budget(reporter) == before - s.record.cost, "the rest went back");
  }

  check(coord.check_invariants().empty(), "money is conserved");
  return 0;
}
