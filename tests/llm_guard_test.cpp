// LlmCallGuard and guarded_call: every refusal, the exact boundaries of max_output_tokens, what a
// call records (council's consumptions, the agent's money), exceptions inside the call, streams
// cut off at the limit. Time is a ManualClock.
#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <safeguards/llm_guard.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

using Run = BasicBudget<Decimal, ManualClock>;
using Shared = BasicSharedBudget<Decimal, ManualClock>;
using Ctx = BasicLlmCallContext<Shared>;
using Guard = BasicLlmCallGuard<Shared>;
using LocalCtx = BasicLlmCallContext<Run>;

// gpt-4o's prices: 2.5 / 10 / 1.25 USD per million tokens.
const PriceTable prices{
    {"gpt-4o",
     {.prompt = Decimal("2.5"), .completion = Decimal("10"), .cached_prompt = Decimal("1.25")}},
    {"free", {.prompt = Decimal(0), .completion = Decimal(0)}}};

struct World {
  ManualClock clock;
  Shared run;
  BudgetCoordinator coord;
  PoolId pool;
  AgentId agent;

  explicit World(std::vector<Consumption> limits = {}, Decimal money = Decimal("10.0"),
                 ManualClock::duration run_for = 60s)
      : run(Run(run_for, std::move(limits), {}, clock)),
        pool(coord.create_pool({.name = "p", .initial_budget = Decimal("1000.0"), .priority = 5})),
        agent(coord.create_agent(
            {.name = "writer", .initial_budget = money, .priority = 5, .pool = pool})) {}

  Ctx ctx(std::string model = "gpt-4o") {
    return {.run = &run,
            .coordinator = &coord,
            .agent = agent,
            .prices = &prices,
            .model = std::move(model)};
  }
  Decimal limit_left(const std::string& unit, const std::string& kind) const {
    return *run.available(unit, kind);
  }
  bool nothing_held() const {
    auto s = run.snapshot();
    for (const auto& h : s.held())
      if (h != Decimal())
        return false;
    return coord.agent_metrics(agent).reserved_budget == Decimal();
  }
};

Decimal tokens(std::int64_t n) {
  return Decimal(n);
}

} // namespace

TEST_CASE("a guarded call records council's consumptions and settles the agent's money") {
  World w({Consumption::token(10'000, "gpt-4o:total_tokens"), Consumption::call(5, "gpt-4o")});
  Guard g(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 500});
  REQUIRE(g.ok());
  CHECK(g.max_output_tokens() == 500);
  // 1000 × 2.5 + 500 × 10 per million = 0.0075 set aside
  CHECK(g.reserved_cost() == Decimal("0.0075"));
  CHECK(w.coord.agent_metrics(w.agent).reserved_budget == Decimal("0.0075"));
  w.clock.advance(1500ms);
  auto rec = g.commit({.model = "gpt-4o-2024-08-06",
                       .prompt_tokens = 1000,
                       .completion_tokens = 300,
                       .cached_prompt_tokens = 400});
  // 600 × 2.5 + 400 × 1.25 + 300 × 10 = 5000 millionths of a dollar
  CHECK(rec.cost == Decimal("0.005"));
  CHECK(rec.seconds == Decimal("1.5"));
  CHECK(rec.usage.model == "gpt-4o-2024-08-06");
  CHECK(rec.money.charged == Decimal("0.005"));
  CHECK(rec.money.refunded == Decimal("0.0025"));
  CHECK_FALSE(g.active());
  CHECK(w.coord.get_budget(w.agent) == Decimal("9.995"));
  CHECK(w.nothing_held());

  auto events = w.run.snapshot().consumptions();
  REQUIRE(events.size() == 6);
  std::vector<Consumption> expected{Consumption::call(1, "gpt-4o"),
                                    Consumption::duration(Decimal("1.5"), "gpt-4o"),
                                    Consumption::token(1000, "gpt-4o:prompt_tokens"),
                                    Consumption::token(300, "gpt-4o:completion_tokens"),
                                    Consumption::token(1300, "gpt-4o:total_tokens"),
                                    Consumption::cost(Decimal("0.005"), "gpt-4o")};
  for (std::size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i].consumption() == expected[i]);
    CHECK(events[i].source() == "writer");
  }
  CHECK(w.limit_left("token", "gpt-4o:total_tokens") == tokens(8700));
  CHECK(w.limit_left("call", "gpt-4o") == tokens(4));
  // The coordinator's history has the agent's charge too.
  CHECK(w.coord.check_invariants().empty());
}

TEST_CASE("every limit that can refuse a call says which, and nothing is held after") {
  struct Case {
    const char* name;
    std::vector<Consumption> limits;
    Decimal money;
    LlmRequest request;
    LlmLimit what;
    std::string unit;
    std::string kind;
    Decimal limit;
    Decimal would_be;
  };
  // The prompt is 1000 tokens: 0.0025 USD. A completion token costs 0.00001.
  auto c = GENERATE(Case{"calls",
                         {Consumption::call(0, "gpt-4o")},
                         Decimal(10),
                         {1000, 100, 1},
                         LlmLimit::calls,
                         "call",
                         "gpt-4o",
                         Decimal(0),
                         Decimal(1)},
                    Case{"prompt tokens",
                         {Consumption::token(999, "gpt-4o:prompt_tokens")},
                         Decimal(10),
                         {1000, 100, 1},
                         LlmLimit::tokens,
                         "token",
                         "gpt-4o:prompt_tokens",
                         Decimal(999),
                         Decimal(1000)},
                    Case{"total tokens below the prompt + minimum",
                         {Consumption::token(1050, "gpt-4o:total_tokens")},
                         Decimal(10),
                         {1000, 100, 60},
                         LlmLimit::tokens,
                         "token",
                         "gpt-4o:total_tokens",
                         Decimal(1050),
                         Decimal(1060)},
                    Case{"completion tokens",
                         {Consumption::token(5, "gpt-4o:completion_tokens")},
                         Decimal(10),
                         {1000, 100, 6},
                         LlmLimit::tokens,
                         "token",
                         "gpt-4o:completion_tokens",
                         Decimal(5),
                         Decimal(6)},
                    Case{"the run's USD limit",
                         {Consumption::cost(Decimal("0.0025"), "gpt-4o")},
                         Decimal(10),
                         {1000, 100, 1},
                         LlmLimit::cost,
                         "USD",
                         "gpt-4o",
                         Decimal("0.0025"),
                         Decimal("0.00251")},
                    Case{"the agent's money",
                         {},
                         Decimal("0.0026"),
                         {1000, 100, 11},
                         LlmLimit::money,
                         "USD",
                         "writer",
                         Decimal("0.0026"),
                         Decimal("0.00261")});
  CAPTURE(c.name);
  World w(c.limits, c.money);
  bool called = false;
  try {
    guarded_call(w.ctx(), c.request, [&] {
      called = true;
      return LlmUsage{};
    });
    FAIL("the call was not refused");
  } catch (const LlmCallRefused& e) {
    const LlmRefusal& r = e.refusal();
    CHECK(r.what == c.what);
    CHECK(r.unit == c.unit);
    CHECK(r.kind == c.kind);
    CHECK(r.limit == c.limit);
    CHECK(r.would_be == c.would_be);
    CHECK_THAT(e.what(), Catch::Contains(c.kind));
  }
  CHECK_FALSE(called);
  CHECK(w.nothing_held());
  CHECK(w.coord.get_budget(w.agent) == c.money);
  CHECK(w.run.snapshot().consumptions().empty());
}

TEST_CASE("the deadline and the model's duration limit refuse a call") {
  SECTION("deadline") {
    World w({}, Decimal(10), 10s);
    w.clock.advance(10s);
    auto g = Guard::try_begin(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10});
    REQUIRE_FALSE(g.ok());
    CHECK(g.refusal()->what == LlmLimit::deadline);
    CHECK(fmt::format("{}", *g.refusal()) == "the run's deadline has passed");
    CHECK(w.nothing_held());
  }
  SECTION("duration limit used up") {
    World w({Consumption::duration(2, "gpt-4o")});
    w.run.add_consumption(Consumption::duration(2, "gpt-4o"), "earlier");
    auto g = Guard::try_begin(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10});
    REQUIRE_FALSE(g.ok());
    CHECK(g.refusal()->what == LlmLimit::duration);
    CHECK(g.refusal()->limit == Decimal(2));
    CHECK(w.nothing_held());
  }
  SECTION("time_left is the earlier of the deadline and the duration limit") {
    World w({Consumption::duration(5, "gpt-4o")}, Decimal(10), 60s);
    Guard g(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10});
    CHECK(g.time_left() == 5s);
    w.clock.advance(2s);
    CHECK(g.time_left() == 3s);
    CHECK_FALSE(g.should_stop());
    w.clock.advance(3s);
    CHECK(g.time_left() == 0s);
    CHECK(g.should_stop());
  }
  SECTION("time_left with only a deadline") {
    World w({}, Decimal(10), 30s);
    w.clock.advance(12s);
    Guard g(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10});
    CHECK(g.time_left() == 18s);
  }
}

TEST_CASE("a monitor's veto and an unknown agent refuse with the money's status") {
  World w;
  SECTION("a spending limit") {
    auto limit = w.coord.add_monitor(w.agent, SpendingLimit{Decimal("0.001")});
    auto g = Guard::try_begin(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 10});
    REQUIRE_FALSE(g.ok());
    CHECK(g.refusal()->what == LlmLimit::money);
    CHECK(g.refusal()->status == ConsumeStatus::denied_by_monitor);
    CHECK_THAT(fmt::format("{}", *g.refusal()), Catch::Contains("vetoed"));
  }
  SECTION("a removed agent") {
    w.coord.remove_agent(w.agent);
    auto g = Guard::try_begin(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 10});
    REQUIRE_FALSE(g.ok());
    CHECK(g.refusal()->status == ConsumeStatus::unknown_agent);
  }
  CHECK(w.run.snapshot().held() == std::vector<Decimal>{});
}

TEST_CASE("bad contexts and requests are errors, not refusals") {
  World w;
  SECTION("unknown model") {
    CHECK_THROWS_AS(Guard(w.ctx("gpt-9"), {.prompt_tokens = 1, .max_completion_tokens = 1}),
                    UnknownModel);
  }
  SECTION("a fallback price covers an unknown model") {
    PriceTable with_fallback = prices;
    with_fallback.set_fallback({.prompt = Decimal(1), .completion = Decimal(1)});
    auto ctx = w.ctx("gpt-9");
    ctx.prices = &with_fallback;
    Guard g(ctx, {.prompt_tokens = 1'000'000, .max_completion_tokens = 1});
    CHECK(g.reserved_cost() == Decimal("1.000001"));
  }
  SECTION("no model, no prices with a coordinator") {
    CHECK_THROWS_AS(Guard(w.ctx(""), {.prompt_tokens = 1, .max_completion_tokens = 1}),
                    InvalidArgument);
    auto ctx = w.ctx();
    ctx.prices = nullptr;
    CHECK_THROWS_AS(Guard(ctx, {.prompt_tokens = 1, .max_completion_tokens = 1}), InvalidArgument);
  }
  SECTION("requests") {
    auto bad =
        GENERATE(LlmRequest{-1, 10, 1}, LlmRequest{10, 0, 1}, LlmRequest{10, 5, 6},
                 LlmRequest{10, 10, 0}, LlmRequest{1, std::numeric_limits<std::int64_t>::max(), 1});
    CHECK_THROWS_AS(Guard(w.ctx(), bad), InvalidArgument);
  }
  CHECK(w.nothing_held());
}

TEST_CASE("max_output_tokens is exactly what the limits and the money allow") {
  SECTION("token limits: completion, and total minus the prompt") {
    World w({Consumption::token(1000, "gpt-4o:total_tokens"),
             Consumption::token(900, "gpt-4o:completion_tokens")});
    Guard g(w.ctx(), {.prompt_tokens = 200, .max_completion_tokens = 5000});
    CHECK(g.max_output_tokens() == 800);
    // the limit is held: a second call gets nothing
    auto second = Guard::try_begin(w.ctx(), {.prompt_tokens = 0, .max_completion_tokens = 1});
    CHECK_FALSE(second.ok());
  }
  SECTION("money: the last token that fits, at the exact micro-dollar") {
    // prompt 1000 = 0.0025; each completion token 0.00001 → 37 tokens cost 0.00037
    auto extra = GENERATE(0, 1, 9, 10);
    Decimal money = Decimal("0.0025") + Decimal("0.00037") + Decimal::from_raw(extra);
    World w({}, money);
    Guard g(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 1000});
    CHECK(g.max_output_tokens() == (extra == 10 ? 38 : 37));
    CHECK(g.reserved_cost() <= money);
    CHECK(cost(*prices.find("gpt-4o"),
               {.prompt_tokens = 1000, .completion_tokens = g.max_output_tokens() + 1}) > money);
  }
  SECTION("the run's USD limit") {
    World w({Consumption::cost(Decimal("0.003"), "gpt-4o")});
    Guard g(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 1000});
    CHECK(g.max_output_tokens() == 50);
  }
  SECTION("what was asked, when everything allows more") {
    World w;
    Guard g(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 42});
    CHECK(g.max_output_tokens() == 42);
  }
}

TEST_CASE("an exception inside the call counts the call, commits what was reported and "
          "propagates unchanged") {
  struct Timeout {
    int code;
  };
  World w({Consumption::token(10'000, "gpt-4o:total_tokens")});
  try {
    guarded_call(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 500},
                 [&](Guard& g) -> LlmUsage {
                   g.add_usage({.prompt_tokens = 1000});
                   g.add_output_tokens(20);
                   throw Timeout{7};
                 });
    FAIL("no exception");
  } catch (const Timeout& t) {
    CHECK(t.code == 7);
  }
  CHECK(w.nothing_held());
  auto events = w.run.snapshot().consumptions();
  REQUIRE(events.size() == 6);
  CHECK(events[0].consumption() == Consumption::call(1, "gpt-4o"));
  CHECK(events[3].consumption() == Consumption::token(20, "gpt-4o:completion_tokens"));
  // 1000 × 2.5 + 20 × 10 per million
  CHECK(w.coord.agent_metrics(w.agent).used_budget == Decimal("0.0027"));
  CHECK(w.limit_left("token", "gpt-4o:total_tokens") == tokens(10'000 - 1020));
}

TEST_CASE("a call that throws before any output is one call and nothing else") {
  World w;
  CHECK_THROWS_AS(guarded_call(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 500},
                               []() -> LlmUsage { throw std::runtime_error("HTTP 500"); }),
                  std::runtime_error);
  auto events = w.run.snapshot().consumptions();
  REQUIRE(events.size() == 6);
  CHECK(events[0].consumption() == Consumption::call(1, "gpt-4o"));
  CHECK(events[4].consumption() == Consumption::token(0, "gpt-4o:total_tokens"));
  CHECK(w.coord.agent_metrics(w.agent).used_budget == Decimal(0));
  CHECK(w.nothing_held());
}

TEST_CASE("a stream cut off by should_stop is charged exactly what it delivered") {
  auto chunk = GENERATE(1, 3, 7, 64);
  CAPTURE(chunk);
  // 100 completion tokens allowed by the total-token limit.
  World w({Consumption::token(1100, "gpt-4o:total_tokens")});
  Guard g(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 4000});
  REQUIRE(g.max_output_tokens() == 100);
  g.add_usage({.prompt_tokens = 1000});
  std::int64_t streamed = 0;
  Decimal balance_before = w.coord.get_budget(w.agent);
  while (!g.should_stop(chunk)) {
    g.add_output_tokens(chunk);
    streamed += chunk;
  }
  CHECK(streamed <= 100);
  CHECK(streamed + chunk > 100);
  // money was charged while streaming, not only at the end
  CHECK(w.coord.agent_metrics(w.agent).used_budget ==
        cost(*prices.find("gpt-4o"), {.prompt_tokens = 1000, .completion_tokens = streamed}));
  auto rec = g.commit_reported();
  CHECK(rec.usage.completion_tokens == streamed);
  CHECK(rec.cost ==
        cost(*prices.find("gpt-4o"), {.prompt_tokens = 1000, .completion_tokens = streamed}));
  CHECK(w.coord.get_budget(w.agent) == balance_before + g.reserved_cost() - rec.cost);
  CHECK(w.limit_left("token", "gpt-4o:total_tokens") == tokens(1100 - 1000 - streamed));
  CHECK(w.nothing_held());
}

TEST_CASE("a stream whose final usage arrives is charged the larger of report and stream") {
  World w;
  Guard g(w.ctx(), {.prompt_tokens = 100, .max_completion_tokens = 50});
  g.add_output_tokens(30);
  SECTION("report above the stream") {
    auto rec = g.commit({.prompt_tokens = 120, .completion_tokens = 35});
    CHECK(rec.usage.prompt_tokens == 120);
    CHECK(rec.usage.completion_tokens == 35);
  }
  SECTION("report below the stream: what was delivered is charged") {
    auto rec = g.commit({.prompt_tokens = 90, .completion_tokens = 20});
    CHECK(rec.usage.prompt_tokens == 100); // the estimate stood in once output arrived
    CHECK(rec.usage.completion_tokens == 30);
  }
  CHECK(w.nothing_held());
}

TEST_CASE("a prompt larger than estimated shrinks what may still stream") {
  World w({Consumption::token(1100, "gpt-4o:total_tokens")});
  Guard g(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 100});
  g.add_usage({.prompt_tokens = 1040});
  std::int64_t streamed = 0;
  while (!g.should_stop()) {
    g.add_output_tokens(1);
    ++streamed;
  }
  CHECK(streamed == 60);
  std::ignore = g.commit_reported();
  CHECK(w.limit_left("token", "gpt-4o:total_tokens") == tokens(0));
}

TEST_CASE("commit_reserved charges everything set aside") {
  World w;
  Guard g(w.ctx(), {.prompt_tokens = 1000, .max_completion_tokens = 500});
  auto rec = g.commit_reserved();
  CHECK(rec.usage.prompt_tokens == 1000);
  CHECK(rec.usage.completion_tokens == 500);
  CHECK(rec.cost == g.reserved_cost());
  CHECK(rec.money.refunded == Decimal(0));
}

TEST_CASE("a committed guard refuses further use - an impossible report leaves it active") {
  World w;
  Guard g(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10});
  CHECK_THROWS_AS(g.commit({.prompt_tokens = 5, .cached_prompt_tokens = 6}), InvalidArgument);
  CHECK_THROWS_AS(g.add_output_tokens(-1), InvalidArgument);
  CHECK(g.active());
  std::ignore = g.commit({.prompt_tokens = 10, .completion_tokens = 10});
  CHECK_THROWS_AS(g.commit({}), std::logic_error);
  CHECK_THROWS_AS(g.add_output_tokens(1), std::logic_error);
  CHECK(g.should_stop());
}

TEST_CASE("guards move - only the last owner records the call") {
  World w;
  std::vector<Guard> guards;
  guards.push_back(Guard(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10}));
  Guard moved = std::move(guards.back());
  CHECK_FALSE(guards.back().active());
  guards.clear(); // the moved-from guard records nothing
  CHECK(w.run.snapshot().consumptions().empty());
  Guard target(w.ctx(), {.prompt_tokens = 20, .max_completion_tokens = 20});
  target = std::move(moved); // target's own call is recorded as it is replaced
  CHECK(w.run.snapshot().consumptions().size() == 6);
  std::ignore = target.commit({.prompt_tokens = 10, .completion_tokens = 1});
  CHECK(w.run.snapshot().consumptions().size() == 12);
  CHECK(w.nothing_held());
}

TEST_CASE("guarded_call returns the record, or fn's own result") {
  World w;
  SECTION("fn returns the usage") {
    LlmCallRecord rec =
        guarded_call(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10}, [](Guard& g) {
          return LlmUsage{.prompt_tokens = 10, .completion_tokens = g.max_output_tokens()};
        });
    CHECK(rec.usage.completion_tokens == 10);
  }
  SECTION("fn returns something else and reports through the guard") {
    std::string text =
        guarded_call(w.ctx(), {.prompt_tokens = 10, .max_completion_tokens = 10}, [](Guard& g) {
          g.add_usage({.prompt_tokens = 10, .completion_tokens = 4});
          return std::string("four");
        });
    CHECK(text == "four");
    auto events = w.run.snapshot().consumptions();
    REQUIRE(events.size() == 6);
    CHECK(events[3].consumption() == Consumption::token(4, "gpt-4o:completion_tokens"));
  }
  CHECK(w.nothing_held());
}

TEST_CASE("a plain Budget, no coordinator, and a free model") {
  ManualClock clock;
  Run run(10s, {Consumption::call(2, "local"), Consumption::token(100, "local:total_tokens")}, {},
          clock);
  PriceTable local{{"local", {.prompt = Decimal(0), .completion = Decimal(0)}}};
  LocalCtx ctx{.run = &run, .prices = &local, .model = "local", .source = "planner"};
  for (int i = 0; i < 2; ++i) {
    auto rec = guarded_call(ctx, {.prompt_tokens = 10, .max_completion_tokens = 20},
                            [] { return LlmUsage{.prompt_tokens = 10, .completion_tokens = 20}; });
    CHECK(rec.cost == Decimal(0));
  }
  auto third =
      BasicLlmCallGuard<Run>::try_begin(ctx, {.prompt_tokens = 1, .max_completion_tokens = 1});
  REQUIRE_FALSE(third.ok());
  CHECK(third.refusal()->what == LlmLimit::calls);
  CHECK(run.consumptions().front().source() == "planner");
  CHECK(*run.available("token", "local:total_tokens") == tokens(40));
}

TEST_CASE("a free model still reserves a micro-dollar, so monitors and empty accounts see it") {
  World w({}, Decimal(0));
  auto g = Guard::try_begin(w.ctx("free"), {.prompt_tokens = 10, .max_completion_tokens = 10});
  REQUIRE_FALSE(g.ok());
  CHECK(g.refusal()->what == LlmLimit::money);
}

TEST_CASE("Budget holds: room set aside counts as taken, release and settle give it back") {
  ManualClock clock;
  Run run(10s, {Consumption::token(100, "m"), Consumption::token(80, "m")}, {}, clock);
  auto views = [](std::int64_t n) {
    return std::array{ConsumptionView(Decimal(n), units::token, "m")};
  };
  const auto hold = views(60);
  REQUIRE_FALSE(run.try_hold(hold));
  CHECK(*run.available("token", "m") == Decimal(20));
  CHECK_FALSE(run.can_consume_all(Consumption::token(21, "m")));
  CHECK_FALSE(run.can_consume(Consumption::token(41, "m")));
  auto refused = run.try_hold(views(30));
  REQUIRE(refused);
  CHECK(refused->limit == Consumption::token(80, "m"));
  CHECK(refused->would_be == Decimal(90));
  CHECK(fmt::format("{}", *refused) == "m token limit 80.0 would reach 90.0");
  CHECK(run.held() == std::vector<Decimal>{Decimal(60), Decimal(60)}); // the refusal held nothing
  run.settle_hold(hold, views(50), "call");
  CHECK(run.held() == std::vector<Decimal>{Decimal(0), Decimal(0)});
  CHECK(*run.available("token", "m") == Decimal(30));
  REQUIRE(run.consumptions().size() == 1);
  CHECK(run.consumptions()[0].consumption() == Consumption::token(50, "m"));
  CHECK(run.consumptions()[0].source() == "call");
  CHECK_FALSE(run.is_expired());
  // releasing more than is held cannot make room that was never there
  run.release_hold(views(1000));
  CHECK(*run.available("token", "m") == Decimal(30));
  CHECK_THROWS_AS(run.try_hold(views(-1)), InvalidArgument);
  CHECK_FALSE(run.available("token", "other"));
  // A hold from a Consumption views its strings; a view of a temporary would dangle.
  static_assert(std::is_constructible_v<ConsumptionView, const Consumption&>);
  static_assert(!std::is_constructible_v<ConsumptionView, Consumption&&>);
  const Consumption owned = Consumption::token(5, "m");
  const std::array from_owned{ConsumptionView(owned)};
  REQUIRE_FALSE(run.try_hold(from_owned));
  CHECK(*run.available("token", "m") == Decimal(25));
}

TEST_CASE("atomically: reads and a hold as one step, on a Budget and a SharedBudget") {
  ManualClock clock;
  auto hold_what_is_left = [](auto& b) {
    auto left = b.available(units::token, "m");
    const std::array all{ConsumptionView(*left, units::token, "m")};
    return !b.try_hold(all);
  };
  Run run(10s, {Consumption::token(100, "m")}, {}, clock);
  CHECK(run.atomically(hold_what_is_left));
  CHECK(*run.available("token", "m") == Decimal(0));
  Shared shared(Run(10s, {Consumption::token(70, "m")}, {}, clock));
  CHECK(shared.atomically(hold_what_is_left));
  CHECK(*shared.available("token", "m") == Decimal(0));
  CHECK_FALSE(shared.try_consume(Consumption::token(1, "m"), "other"));
}

TEST_CASE("usage deltas add up - a delta is checked against the running total") {
  World w;
  Guard g(w.ctx(), {.prompt_tokens = 100, .max_completion_tokens = 50});
  g.add_usage({.prompt_tokens = 100});
  g.add_usage({.cached_prompt_tokens = 60}); // cached part of the prompt reported earlier
  g.add_usage({.completion_tokens = 10, .reasoning_tokens = 4});
  CHECK_THROWS_AS(g.add_usage({.cached_prompt_tokens = 50}), InvalidArgument); // 110 > 100
  CHECK_THROWS_AS(g.add_usage({.completion_tokens = -1}), InvalidArgument);
  auto u = g.reported_usage();
  CHECK(u.prompt_tokens == 100);
  CHECK(u.cached_prompt_tokens == 60);
  CHECK(u.completion_tokens == 10);
  CHECK(u.reasoning_tokens == 4);
  // A running total past the largest token count a cost can be computed for is refused whole.
  const std::int64_t most = std::numeric_limits<std::int64_t>::max() / 1'000'000;
  CHECK_THROWS_AS(g.add_usage({.completion_tokens = most}), InvalidArgument);
  CHECK(g.reported_usage().completion_tokens == 10);
  auto rec = g.commit_reported();
  // 40 × 2.5 + 60 × 1.25 + 10 × 10 per million = 0.000275
  CHECK(rec.cost == Decimal("0.000275"));
}

TEST_CASE("a commit past the largest token count is refused and the streamed tokens count too") {
  // `commit` charges the larger of each reported count and what was streamed, so a report that
  // is within the limit alone can pass it together with the stream: that must be caught too.
  const std::int64_t most = std::numeric_limits<std::int64_t>::max() / 1'000'000;
  World w;
  SECTION("refused whole; the guard stays active and records what was streamed") {
    Guard g(w.ctx(), {.prompt_tokens = 100, .max_completion_tokens = 50});
    g.add_usage({.prompt_tokens = 100, .completion_tokens = 10});
    CHECK_THROWS_AS(g.commit({.prompt_tokens = most, .completion_tokens = 1}), InvalidArgument);
    CHECK_THROWS_AS(g.commit({.completion_tokens = most + 1}), InvalidArgument);
    CHECK_THROWS_AS(g.commit({.prompt_tokens = most - 9}), InvalidArgument); // + 10 streamed
    CHECK(g.active());
    CHECK(w.run.snapshot().consumptions().empty());
    auto u = g.reported_usage();
    CHECK(u.prompt_tokens == 100);
    CHECK(u.completion_tokens == 10);
    auto rec = g.commit_reported();
    // 100 × 2.5 + 10 × 10 per million = 0.00035
    CHECK(rec.cost == Decimal("0.00035"));
    CHECK(w.nothing_held());
  }
  SECTION("exactly the largest count is a usage like any other") {
    Guard g(w.ctx("free"), {.prompt_tokens = 100, .max_completion_tokens = 50});
    g.add_usage({.completion_tokens = 10});
    auto rec = g.commit({.prompt_tokens = most - 10});
    CHECK(rec.usage.prompt_tokens == most - 10);
    CHECK(rec.usage.completion_tokens == 10);
    CHECK(rec.usage.total_tokens() == most);
    CHECK(rec.cost == Decimal(0));
    CHECK(w.nothing_held());
  }
}
