// Graceful degradation over a simulated day: a support agent answers with a large model while
// most of its daily budget is left, switches to a small model when it runs low, and answers
// from a cache only at the end; at midnight its daily period resets the budget and the large
// model is back.
//
// The pieces: a `BudgetPeriods` with a daily period (reset at 00:00 UTC, driven by `tick()`), a
// `GracefulDegradation` with a three-level table whose features name the model to use, and a
// guarded call (`guarded_call`) that reserves each call's cost before it is made. Time is a
// `ManualClock`, so a day passes in a millisecond and the output is the same on every run.
//
// A level moves when a call's cost is set aside, before the call is made: the fourth large-model
// call of the day is still made on the large model, and the next question goes to the small one.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <map>
#include <safeguards/degradation.hpp>
#include <safeguards/llm.hpp>
#include <safeguards/period.hpp>
#include <safeguards/safeguards.hpp>
#include <string>

using namespace safeguards;
using namespace std::chrono_literals;

// What CTest requires of the output (see check_output.cmake):
// expect: ^01:00 support: large_model -> small_model \(20\.0 % of 0\.2 USD left\)$
// expect: ^06:00 support: small_model -> cached_only \(9\.2 % of 0\.2 USD left\)$
// expect: ^00:00 support: cached_only -> large_model \(100\.0 % of 0\.2 USD left\)$
// expect: ^00:00 period reset: 1 agent$
// expect: ^day 1: 4 x gpt-4o, 9 x gpt-4o-mini, 35 from the cache, 0\.1816 USD spent$
// expect: ^day 2 so far: 2 x gpt-4o, 0 x gpt-4o-mini, 0 from the cache, 0\.08 USD spent$

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    fmt::print(stderr, "degrade_model: check failed: {}\n", what);
    std::exit(1);
  }
}

using Coordinator = BasicBudgetCoordinator<Decimal, FixedAllocation, ManualClock>;
using Context = BasicLlmCallContext<Budget, Coordinator>;
using Guard = BasicLlmCallGuard<Budget, Coordinator>;

// Which model a service level uses: the first feature of the level, or none for the cache.
const ServiceLevels
    levels({{.name = "large_model", .min_remaining = 40, .features = {"gpt-4o"}},
            {.name = "small_model", .min_remaining = 10, .features = {"gpt-4o-mini"}},
            {.name = "cached_only", .min_remaining = 0, .features = {"cache"}}});

// Stands in for a chat API: every question takes an 8000-token prompt (the ticket and its
// history) and a 2000-token answer, on whichever model it is sent to.
LlmUsage answer(const std::string& model, const Guard& guard);

} // namespace

int main() {
  // 2026-03-02 00:00 UTC; the coordinator, its periods and the degradation share the clock.
  ManualClock clock(
      ManualClock::time_point(std::chrono::sys_days{2026y / 3 / 2}.time_since_epoch()));
  Coordinator coord({}, {}, clock);
  const AgentId support = coord.create_agent({.name = "support", .initial_budget = Decimal("0.2")});

  BasicBudgetPeriods periods(coord);
  periods.set_period(support, BudgetPeriod::daily());

  BasicGracefulDegradation degradation(coord, levels);
  auto hh_mm = [&] {
    const auto t = std::chrono::sys_time<std::chrono::nanoseconds>(clock.now().time_since_epoch());
    return fmt::format("{:%H:%M}", std::chrono::floor<std::chrono::minutes>(t));
  };
  auto changes = degradation.subscribe([&](const ServiceLevelChanged& c) {
    const auto m = coord.agent_metrics(c.agent);
    const Decimal allocation = m.initial_budget;
    // A share for people to read, to one decimal: a double is fine here, not for money.
    const double percent = allocation == Decimal()
                               ? 0.0
                               : 100.0 * m.remaining_budget.to_double() / allocation.to_double();
    fmt::print("{} {}: {} -> {} ({:.1f} % of {} USD left)\n", hh_mm(), c.agent_name, c.from, c.to,
               percent, allocation);
  });

  const PriceTable prices = builtin_prices();
  std::map<std::string, int> calls; // per model, and "cache"
  Decimal spent;

  // Two questions an hour, from 00:00 on day 1 to 02:00 on day 2.
  auto one_hour = [&] {
    for (int q = 0; q < 2; ++q) {
      const ServiceLevel level = degradation.service_level(support);
      const std::string& model = level.features.front();
      if (model == "cache") {
        ++calls["cache"]; // a canned answer: no call, no cost
        continue;
      }
      const Context ctx{.coordinator = &coord, .agent = support, .prices = &prices, .model = model};
      const LlmCallRecord r =
          guarded_call(ctx, {.prompt_tokens = 8000, .max_completion_tokens = 2000},
                       [&](Guard& guard) { return answer(model, guard); });
      ++calls[model];
      spent += r.cost;
    }
  };
  auto summary = [&](const char* day) {
    fmt::print("{}: {} x gpt-4o, {} x gpt-4o-mini, {} from the cache, {} USD spent\n", day,
               calls["gpt-4o"], calls["gpt-4o-mini"], calls["cache"], spent);
    calls.clear();
    spent = Decimal();
  };

  for (int hour = 0; hour < 24; ++hour) {
    one_hour();
    clock.advance(1h);
    if (std::size_t n = periods.tick(); n > 0) // a timer would call this; here, every hour
      fmt::print("{} period reset: {} agent{}\n", hh_mm(), n, n == 1 ? "" : "s");
  }
  summary("day 1");
  check(degradation.service_level(support).name == "large_model", "the reset restored the level");
  one_hour();
  summary("day 2 so far");
  check(coord.check_invariants().empty(), "money is conserved");
}

namespace {

LlmUsage answer(const std::string& model, const Guard& guard) {
  return {.model = model,
          .prompt_tokens = 8000,
          .completion_tokens = std::min<std::int64_t>(2000, guard.max_output_tokens())};
}

} // namespace
