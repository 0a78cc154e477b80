// A council-style run budget around a tool-using agent: one deadline plus limits on the model's
// calls, tokens and dollars and on tool calls. Before every step the agent asks the budget, and
// when a limit is reached it stops cleanly, between steps, and says which limit stopped it.
//
// The same agent runs five times, under five budgets, so that each limit gets its turn. Time is a
// ManualClock moved by a fixed amount per step, so the output is the same on every machine.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <safeguards/budget.hpp>
#include <safeguards/llm_guard.hpp>
#include <string>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

// What CTest requires of the output (see check_output.cmake):
// expect: ^== enough budget: 4 searches wanted$
// expect: ^  finished: answered after 4 searches$
// expect: ^  stopped by calls: the search call limit of 2\.0 is used up$
// expect: ^  stopped by tokens: the gpt-4o:total_tokens token limit of 8000\.0 would reach 10840
// expect: ^  stopped by cost: the gpt-4o USD limit of 0\.02 would reach 0\.0292$
// expect: ^  stopped by deadline: the run's deadline has passed$
// expect: ^  remaining: Budget\(expires in 0\.0s, limits: \[

namespace {

// A run budget on a clock we move by hand. With std::chrono::steady_clock (the default, plain
// `Budget`) the code is the same.
using Run = BasicBudget<Decimal, ManualClock>;
using Guard = BasicLlmCallGuard<Run>;

constexpr auto model_time = 3s;  // what one model call takes
constexpr auto search_time = 2s; // and one search

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "run_budget: check failed: {}\n", what);
    std::exit(1);
  }
}

// Stands in for the model: it asks for one search per turn until it has the results it wants,
// then writes its answer. Its prompt grows with every search result it has been given.
struct Reply {
  LlmUsage usage;
  bool wants_search = false;
};

Reply fake_model(std::int64_t prompt_tokens, std::int64_t max_tokens, int results, int wanted) {
  const bool search = results < wanted;
  const std::int64_t tokens = search ? 60 : 400; // a tool call is short, an answer is not
  return {{.model = "gpt-4o",
           .prompt_tokens = prompt_tokens,
           .completion_tokens = std::min(tokens, max_tokens)},
          search};
}

// The agent loop. Returns which limit stopped it, or "finished". `clock` is a copy of the run's:
// copies of a ManualClock share one time.
std::string run_agent(Run& run, ManualClock clock, const PriceTable& prices, int wanted) {
  // No coordinator here: the run budget's USD limit is the only money limit. With one, the
  // agent's account would be charged too (see quickstart.cpp).
  const BasicLlmCallContext<Run> ctx{
      .run = &run, .prices = &prices, .model = "gpt-4o", .source = "researcher"};
  const Consumption search = Consumption::call(1, "search");
  const auto t = [&] {
    return std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch());
  };
  int results = 0;
  for (;;) {
    // The system prompt and question, then each search's request and result.
    const std::int64_t prompt = 1500 + 760 * std::int64_t{results};
    // A reply needs room for at least a tool call; the guard refuses a call that would not
    // have it, rather than cut the model off mid-sentence.
    auto guard = Guard::try_begin(
        ctx, {.prompt_tokens = prompt, .max_completion_tokens = 600, .min_completion_tokens = 100});
    if (!guard)
      return fmt::format("{}: {}", guard.refusal()->what, *guard.refusal());
    // A real client would use guard.time_left() as its timeout and guard.max_output_tokens()
    // as the request's max_tokens.
    clock.advance(model_time);
    const Reply reply = fake_model(prompt, guard.max_output_tokens(), results, wanted);
    const LlmCallRecord rec = guard.commit(reply.usage);
    fmt::print("  t={:>2}s model  {}, {} USD -> {}\n", t().count(), rec.usage, rec.cost,
               reply.wants_search ? "search" : "answer");
    if (!reply.wants_search)
      return fmt::format("finished: answered after {} searches", results);

    // The tool is not a model call, so the guard does not see it: count it by hand, asking
    // every limit it matches first (can_consume_all), so that none goes below zero.
    if (run.time_left() <= Run::duration::zero())
      return "deadline: the run's deadline has passed";
    if (!run.can_consume_all(search)) {
      auto limit = std::ranges::find_if(run.limits(),
                                        [&](const Consumption& l) { return l.matches(search); });
      return fmt::format("calls: the search call limit of {} is used up", limit->value());
    }
    clock.advance(search_time);
    run.add_consumption(search, "researcher");
    ++results;
    fmt::print("  t={:>2}s search #{}\n", t().count(), results);
  }
}

struct Scenario {
  const char* name;
  std::chrono::seconds run_for;
  std::int64_t total_tokens;
  const char* usd;
  int searches;
  const char* stopped_by; // what the run must print first
};

} // namespace

int main() {
  // USD per million tokens.
  const PriceTable prices{{"gpt-4o", {.prompt = Decimal("2.5"), .completion = Decimal("10")}}};
  const Scenario scenarios[] = {
      {"enough budget", 60s, 40'000, "0.10", 5, "finished"},
      {"two searches allowed", 60s, 40'000, "0.10", 2, "calls"},
      {"8000 tokens", 60s, 8000, "0.10", 5, "tokens"},
      {"0.02 USD", 60s, 40'000, "0.02", 5, "cost"},
      {"10 seconds", 10s, 40'000, "0.10", 5, "deadline"},
  };
  for (const Scenario& s : scenarios) {
    fmt::print("== {}: 4 searches wanted\n", s.name);
    ManualClock clock;
    // council's Budget(duration, limits, consumptions), on our clock.
    Run run(s.run_for,
            {Consumption::call(10, "gpt-4o"),
             Consumption::token(s.total_tokens, llm_kinds::total_tokens("gpt-4o")),
             Consumption::cost(Decimal(s.usd), "gpt-4o"), Consumption::call(s.searches, "search")},
            {}, clock);
    const std::string outcome = run_agent(run, clock, prices, 4);
    fmt::print("  {}{}\n", outcome.starts_with("finished") ? "" : "stopped by ", outcome);
    fmt::print("  remaining: {}\n", run.remaining());

    check(outcome.starts_with(s.stopped_by), "the expected limit stopped the run");
    for (const auto& limit : run.remaining_limits())
      check(limit.value() >= Decimal(0), "no limit is overdrawn");
    for (const auto& held : run.held())
      check(held == Decimal(0), "nothing is left held after the run");
    check(!run.is_expired() || run.time_left() == Run::duration::zero(),
          "only the deadline can expire a run: no limit went below zero");
  }
  return 0;
}
