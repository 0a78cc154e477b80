// Four threads of guarded calls on one SharedBudget and one agent: no limit is ever exceeded,
// every call's money is accounted for, and nothing stays held. Run under ThreadSanitizer in CI.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <mutex>
#include <random>
#include <safeguards/llm_guard.hpp>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace safeguards;
using namespace std::chrono_literals;

namespace {

using Shared = BasicSharedBudget<Decimal, ManualClock>;
using Ctx = BasicLlmCallContext<Shared>;
using Guard = BasicLlmCallGuard<Shared>;

const PriceTable prices{{"gpt-4o", {.prompt = Decimal("2.5"), .completion = Decimal("10")}}};

} // namespace

TEST_CASE("four threads of guarded calls never exceed a token, call, cost or money limit") {
  const auto seed = GENERATE(1u, 2u, 3u);
  CAPTURE(seed);
  ManualClock clock;
  const Decimal total_tokens(60'000), calls(150), run_usd("0.4");
  Shared run(BasicBudget<Decimal, ManualClock>(
      60s,
      {Consumption::token(total_tokens, "gpt-4o:total_tokens"), Consumption::call(calls, "gpt-4o"),
       Consumption::cost(run_usd, "gpt-4o")},
      {}, clock));
  BudgetCoordinator coord;
  auto pool = coord.create_pool({.name = "p", .initial_budget = Decimal(10), .priority = 5});
  const Decimal money("0.3");
  auto agent =
      coord.create_agent({.name = "shared", .initial_budget = money, .priority = 5, .pool = pool});
  const Ctx ctx{
      .run = &run, .coordinator = &coord, .agent = agent, .prices = &prices, .model = "gpt-4o"};

  std::mutex m;
  Decimal charged_by_records;
  std::int64_t made = 0, refused = 0, overspent = 0;
  auto worker = [&](unsigned id) {
    std::mt19937_64 rng(seed * 100 + id);
    auto pick = [&](std::int64_t lo, std::int64_t hi) {
      return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
    };
    Decimal mine;
    std::int64_t my_made = 0, my_refused = 0, my_overspent = 0;
    for (int i = 0; i < 200; ++i) {
      const LlmRequest req{.prompt_tokens = pick(50, 600), .max_completion_tokens = pick(10, 400)};
      auto g = Guard::try_begin(ctx, req);
      if (!g.ok()) {
        ++my_refused;
        continue;
      }
      ++my_made;
      LlmCallRecord rec;
      switch (pick(0, 3)) {
      case 0: // a whole reply that keeps to max_tokens
        rec = g.commit({.prompt_tokens = req.prompt_tokens,
                        .completion_tokens = pick(0, g.max_output_tokens())});
        break;
      case 1: { // a stream cut off at the limit
        g.add_usage({.prompt_tokens = req.prompt_tokens});
        while (!g.should_stop(5) && pick(0, 20) != 0)
          g.add_output_tokens(5);
        rec = g.commit_reported();
        break;
      }
      case 2: // usage lost: everything set aside is charged
        rec = g.commit_reserved();
        break;
      default: // the client throws mid-stream; the destructor records what streamed
        try {
          g.add_usage({.prompt_tokens = req.prompt_tokens});
          g.add_output_tokens(std::min<std::int64_t>(3, g.max_output_tokens()));
          throw std::runtime_error("connection reset");
        } catch (const std::runtime_error&) {
        }
        mine = mine + cost(*prices.find("gpt-4o"),
                           {.prompt_tokens = req.prompt_tokens,
                            .completion_tokens = std::min<std::int64_t>(3, g.max_output_tokens())});
        continue; // g's destructor commits
      }
      // Catch's assertions are not thread-safe: count here, check after the join.
      if (rec.money.overspent != Decimal())
        ++my_overspent;
      mine = mine + rec.cost;
    }
    std::lock_guard lock(m);
    charged_by_records = charged_by_records + mine;
    made += my_made;
    refused += my_refused;
    overspent += my_overspent;
  };
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t)
    threads.emplace_back(worker, t);
  for (auto& t : threads)
    t.join();

  auto books = run.snapshot();
  for (const auto& limit : books.remaining_limits())
    CHECK(Decimal() <= limit.value());
  for (const auto& h : books.held())
    CHECK(h == Decimal());
  CHECK_FALSE(run.is_expired());
  CHECK(overspent == 0);
  CHECK(made > 0);
  CHECK(refused > 0); // the limits were reached
  CHECK(books.remaining_limits()[1].value() == calls - Decimal(made));

  auto metrics = coord.agent_metrics(agent);
  CHECK(metrics.reserved_budget == Decimal());
  CHECK(metrics.used_budget == charged_by_records);
  CHECK(metrics.remaining_budget == money - charged_by_records);
  CHECK(Decimal() <= metrics.remaining_budget);
  CHECK(coord.check_invariants().empty());

  // The run budget's USD events add up to what the agent paid.
  Decimal usd;
  for (const auto& e : books.consumptions())
    if (e.consumption().unit() == "USD")
      usd = usd + e.consumption().value();
  CHECK(usd == charged_by_records);
}
