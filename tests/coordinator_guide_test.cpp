// The Safeguards guide's walk-through as a test, every error path of the management calls,
// monitor veto atomicity and the JSON-lines audit sink round trip.
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <safeguards/audit_file.hpp>
#include <safeguards/safeguards.hpp>
#include <string>
#include <unistd.h>

using namespace safeguards;
using Catch::Matchers::Contains;

namespace {
// A file under the temp directory, removed when the test ends.
struct TempFile {
  std::string path;
  TempFile()
      : path((std::filesystem::temp_directory_path() /
              fmt::format("safeguards-test-{}-{}.jsonl", ::getpid(), counter()++))
                 .string()) {
    std::filesystem::remove(path);
  }
  ~TempFile() { std::filesystem::remove(path); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  static int& counter() {
    static int n = 0;
    return n;
  }
};
} // namespace

TEST_CASE("the guide's walk-through: pools, agents, budgets, metrics", "[coordinator][guide]") {
  BudgetCoordinator coord;
  MemoryAuditLog audit;
  auto sink = coord.add_audit_sink(audit);

  PoolId high = coord.create_pool(
      {.name = "critical_services", .initial_budget = Decimal("1000.0"), .priority = 9});
  PoolId medium = coord.create_pool(
      {.name = "standard_services", .initial_budget = Decimal("2000.0"), .priority = 5});
  PoolId low = coord.create_pool(
      {.name = "background_tasks", .initial_budget = Decimal("500.0"), .priority = 2});
  CHECK(coord.pools() == std::vector<PoolId>{high, medium, low});

  AgentId critical = coord.create_agent(
      {.name = "critical_agent", .initial_budget = Decimal("200.0"), .priority = 8, .pool = high});
  AgentId standard = coord.create_agent({.name = "standard_agent",
                                         .initial_budget = Decimal("300.0"),
                                         .priority = 5,
                                         .pool = medium});
  CHECK(coord.get_budget(critical) == Decimal("200.0"));
  CHECK(coord.get_budget(standard) == Decimal("300.0"));
  CHECK(fmt::format("{}", coord.get_budget(critical)) == "200.0");
  CHECK(coord.agents() == std::vector<AgentId>{critical, standard});
  CHECK(coord.pool_agents(high) == std::vector<AgentId>{critical});
  CHECK(coord.pool_agents(low).empty());
  CHECK(coord.find_agent("standard_agent") == standard);
  CHECK(coord.find_pool("background_tasks") == low);
  CHECK_FALSE(coord.find_agent("nobody").has_value());
  CHECK(coord.agent_priority(critical) == 8);

  auto pm = coord.pool_metrics(high);
  CHECK(pm.initial_budget == 1000_d);
  CHECK(pm.unallocated_budget == 800_d);
  CHECK(pm.allocated_budget == 200_d);
  CHECK(pm.remaining_budget == 1000_d);
  CHECK(pm.agent_count == 1);

  coord.update_budget(critical, Decimal("150.0"), "reduce after review");
  CHECK(coord.get_budget(critical) == Decimal("150.0"));
  CHECK(coord.pool_metrics(high).unallocated_budget == 850_d);
  REQUIRE(audit.records().size() == 3);
  CHECK(fmt::format("{}", audit.records().back()) ==
        "Budget change for agent critical_agent (agent-1, priority 8): 200.0 \u2192 150.0 (-50.0). "
        "Reason: "
        "reduce after review");

  REQUIRE(coord.try_consume(critical, Decimal("10.0")).ok());
  auto m = coord.agent_metrics(critical);
  CHECK(m.initial_budget == 150_d);
  CHECK(m.used_budget == 10_d);
  CHECK(m.reserved_budget == 0_d);
  CHECK(m.remaining_budget == 140_d);
  CHECK(m.consumption_count == 1);
  // Pools are charged as their agents spend.
  pm = coord.pool_metrics(high);
  CHECK(pm.used_budget == 10_d);
  CHECK(pm.remaining_budget == 990_d);

  {
    auto res = coord.reserve(critical, Decimal("5.0"));
    CHECK(coord.agent_metrics(critical).reserved_budget == 5_d);
    auto settled = res.commit(Decimal("3.5"));
    CHECK(settled.charged == Decimal("3.5"));
    CHECK(settled.refunded == Decimal("1.5"));
  }
  CHECK(coord.get_budget(critical) == Decimal("136.5"));
  CHECK(coord.check_invariants().empty());

  SECTION("an agent without a pool gets an implicit pool of its own") {
    AgentId solo = coord.create_agent(
        {.name = "fixed_budget_agent", .initial_budget = Decimal("100.0"), .priority = 5});
    auto own = coord.agent_pool(solo);
    auto om = coord.pool_metrics(own);
    CHECK(om.implicit);
    CHECK(om.initial_budget == 100_d);
    CHECK(om.unallocated_budget == 0_d);
    CHECK(coord.check_invariants().empty());
  }
  SECTION("removing an agent returns its remaining budget to the pool") {
    coord.remove_agent(standard, "decommissioned");
    CHECK(coord.pool_metrics(medium).unallocated_budget == 2000_d);
    CHECK_FALSE(coord.find_agent("standard_agent").has_value());
    CHECK(coord.try_consume(standard, 1_d).status() == ConsumeStatus::unknown_agent);
    CHECK(coord.agents() == std::vector<AgentId>{critical});
    CHECK(audit.records().back().reason == "decommissioned");
    CHECK(coord.check_invariants().empty());
  }
  SECTION("metadata and the typed data slot") {
    coord.store_agent_metadata(critical, {{"team", "sre"}, {"tier", "gold"}});
    coord.set_agent_metadata(critical, "tier", "platinum");
    CHECK(coord.agent_metadata(critical) == Metadata{{"team", "sre"}, {"tier", "platinum"}});
    coord.set_agent_data(critical, 42);
    CHECK(coord.agent_data<int>(critical) == 42);
    CHECK_FALSE(coord.agent_data<std::string>(critical).has_value());
    coord.set_pool_metadata(high, "owner", "ops");
    CHECK(coord.pool_metadata(high).at("owner") == "ops");
  }
}

TEST_CASE("management errors name what is wrong and change nothing", "[coordinator][errors]") {
  BudgetCoordinator coord;
  PoolId pool = coord.create_pool({.name = "p", .initial_budget = 100_d, .priority = 5});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 60_d, .pool = pool});

  SECTION("priorities outside 1..10") {
    auto bad = GENERATE(0, 11, -1);
    CHECK_THROWS_AS(coord.create_pool({.name = "q", .initial_budget = 1_d, .priority = bad}),
                    InvalidPriority);
    CHECK_THROWS_WITH(coord.create_agent({.name = "b", .initial_budget = 1_d, .priority = bad}),
                      Contains(std::to_string(bad)) && Contains("1..10"));
    CHECK_THROWS_AS(coord.set_priority(a, bad), InvalidPriority);
  }
  SECTION("unknown ids") {
    CHECK_THROWS_AS(coord.get_budget(AgentId(99)), UnknownAgent);
    CHECK_THROWS_WITH(coord.agent_metrics(AgentId(99)), Contains("agent-99"));
    CHECK_THROWS_AS(coord.get_budget(AgentId{}), UnknownAgent);
    CHECK_THROWS_WITH(coord.pool_metrics(PoolId(7)), Contains("pool-7"));
    CHECK_THROWS_AS(coord.create_agent({.name = "b", .initial_budget = 1_d, .pool = PoolId(7)}),
                    UnknownPool);
    CHECK_THROWS_AS(coord.update_budget(AgentId(99), 1_d, "x"), UnknownAgent);
    CHECK_THROWS_AS(coord.consume(AgentId(99), 1_d), UnknownAgent);
    CHECK(coord.try_consume(AgentId(99), 1_d).status() == ConsumeStatus::unknown_agent);
  }
  SECTION("negative budgets and empty names") {
    CHECK_THROWS_WITH(coord.create_pool({.name = "q", .initial_budget = -1_d, .priority = 5}),
                      Contains("-1.0"));
    CHECK_THROWS_AS(coord.create_agent({.name = "b", .initial_budget = -1_d, .pool = pool}),
                    InvalidArgument);
    CHECK_THROWS_AS(coord.update_budget(a, -1_d, "x"), InvalidArgument);
    CHECK_THROWS_AS(coord.create_agent({.name = "", .initial_budget = 1_d}), InvalidArgument);
  }
  SECTION("duplicate names") {
    CHECK_THROWS_WITH(coord.create_agent({.name = "a", .initial_budget = 1_d, .pool = pool}),
                      Contains("\"a\""));
    CHECK_THROWS_AS(coord.create_pool({.name = "p", .initial_budget = 1_d}), DuplicateName);
    // The name is checked after the agent's record is filled in: nothing of it stays behind.
    CHECK_THROWS_AS(
        coord.create_agent(
            {.name = "a", .initial_budget = 1_d, .pool = pool, .metadata = {{"team", "sre"}}}),
        DuplicateName);
    CHECK(coord.agents() == std::vector<AgentId>{a});
    CHECK(coord.pool_metrics(pool).remaining_budget == 100_d);
    CHECK(coord.check_invariants().empty());
    const AgentId b = coord.create_agent({.name = "b", .initial_budget = 1_d, .pool = pool});
    CHECK(b == AgentId(a.value() + 1));
    CHECK(coord.find_agent("a") == a);
    CHECK(coord.find_agent("b") == b);
  }
  SECTION("a pool that cannot cover the budget") {
    CHECK_THROWS_AS(coord.create_agent({.name = "b", .initial_budget = 41_d, .pool = pool}),
                    PoolExhausted);
    CHECK_THROWS_WITH(coord.update_budget(a, 101_d, "too much"), Contains("40.0"));
    CHECK(coord.get_budget(a) == 60_d);
    CHECK_FALSE(coord.find_agent("b").has_value());
  }
  SECTION("amounts the hot path refuses") {
    CHECK(coord.try_consume(a, 0_d).status() == ConsumeStatus::invalid_amount);
    CHECK(coord.try_consume(a, -5_d).status() == ConsumeStatus::invalid_amount);
    CHECK(coord.try_consume(a, 61_d).status() == ConsumeStatus::insufficient);
    CHECK_THROWS_AS(coord.consume(a, 61_d), BudgetExceeded);
    CHECK_THROWS_AS(coord.consume(a, 0_d), InvalidArgument);
    CHECK_THROWS_AS(coord.reserve(a, 61_d), BudgetExceeded);
  }
  SECTION("transfers") {
    AgentId b = coord.create_agent({.name = "b", .initial_budget = 10_d, .pool = pool});
    AgentId other = coord.create_agent({.name = "o", .initial_budget = 10_d});
    CHECK_THROWS_AS(coord.transfer(a, other, 1_d, "x"), InvalidArgument);
    CHECK_THROWS_AS(coord.transfer(a, a, 1_d, "x"), InvalidArgument);
    CHECK_THROWS_AS(coord.transfer(a, b, 61_d, "x"), BudgetExceeded);
    coord.transfer(a, b, 20_d, "rebalance");
    CHECK(coord.get_budget(a) == 40_d);
    CHECK(coord.get_budget(b) == 30_d);
  }
  CHECK(coord.check_invariants().empty());
  CHECK(coord.pool_metrics(pool).initial_budget == 100_d);
}

TEST_CASE("a vetoing monitor debits nothing", "[coordinator][monitor]") {
  BudgetCoordinator coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  std::vector<Violation> violations;
  auto sink = coord.add_violation_sink([&](const Violation& v) { violations.push_back(v); });
  auto limit = coord.add_monitor(a, SpendingLimit{Decimal("30.0")});
  CHECK(coord.try_consume(a, 20_d).ok());
  CHECK(coord.try_consume(a, 15_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_reserve(a, 15_d).status() == ConsumeStatus::denied_by_monitor);
  auto m = coord.agent_metrics(a);
  CHECK(m.remaining_budget == 80_d);
  CHECK(m.used_budget == 20_d);
  CHECK(m.reserved_budget == 0_d);
  CHECK(m.consumption_count == 1);
  REQUIRE(violations.size() == 1); // once per episode, not once per veto
  CHECK(violations[0].type == ViolationType::BudgetLimitExceeded);
  CHECK(violations[0].agent == a);
  CHECK(violations[0].details.at("overage") == "5.0");
  limit.reset();
  CHECK(coord.try_consume(a, 15_d).ok());
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("a spending limit counts reserved money as spent", "[coordinator][monitor]") {
  BudgetCoordinator coord;
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d});
  auto limit = coord.add_monitor(a, SpendingLimit{Decimal("30.0")});
  auto first = coord.try_reserve(a, 20_d);
  REQUIRE(first.ok());
  // 20 reserved + 15 asked would pass 30, even though nothing is used yet.
  CHECK(coord.try_reserve(a, 15_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(coord.try_consume(a, 15_d).status() == ConsumeStatus::denied_by_monitor);
  CHECK(first.commit(10_d).ok()); // 10 used, nothing reserved
  CHECK(coord.try_consume(a, 15_d).ok());
  CHECK(coord.agent_metrics(a).used_budget == 25_d);
}

TEST_CASE("the JSON-lines audit sink round-trips through read_audit_log", "[coordinator][audit]") {
  TempFile file;
  std::vector<BudgetChange> seen;
  {
    BudgetCoordinator coord;
    auto jsonl = coord.add_audit_sink(JsonLinesAuditSink(file.path, /*durable=*/true));
    auto memory = coord.add_audit_sink([&](const BudgetChange& c) { seen.push_back(c); });
    PoolId p = coord.create_pool({.name = "p", .initial_budget = 100_d, .priority = 5});
    AgentId a = coord.create_agent({.name = "a", .initial_budget = 50_d, .priority = 7, .pool = p});
    coord.update_budget(a, Decimal("12.345678"), "quote \" backslash \\ newline \n tab \t é");
    coord.remove_agent(a);
  }
  auto back = read_audit_log(file.path).records;
  REQUIRE(back.size() == seen.size());
  REQUIRE(back.size() == 3);
  for (std::size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].agent == seen[i].agent);
    CHECK(back[i].priority == seen[i].priority);
    CHECK(back[i].old_budget == seen[i].old_budget);
    CHECK(back[i].new_budget == seen[i].new_budget);
    CHECK(back[i].delta == seen[i].delta);
    CHECK(back[i].reason == seen[i].reason);
    CHECK(back[i].agent_name == "a");
    CHECK(back[i].sequence == seen[i].sequence);
    CHECK(
        std::chrono::duration_cast<std::chrono::microseconds>(back[i].timestamp - seen[i].timestamp)
            .count() == 0);
  }
  CHECK(back[1].new_budget == Decimal("12.345678"));
  // Every record is one whole line.
  std::ifstream in(file.path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    CHECK(line.front() == '{');
    CHECK(line.back() == '}');
  }
  CHECK(lines == 3);

  SECTION("a malformed line is reported by number; the records around it are still read") {
    std::ofstream(file.path, std::ios::app) << "{\"agent\":1,\"old\":\n";
    auto log = read_audit_log(file.path);
    CHECK(log.records == back);
    REQUIRE(log.damaged.size() == 1);
    CHECK(log.damaged[0].line == 4);
  }
  SECTION("a record with a missing field is a damaged line naming the field") {
    std::ofstream(file.path, std::ios::app) << "{\"agent\":1}\n";
    auto log = read_audit_log(file.path);
    CHECK(log.records.size() == 3);
    REQUIRE(log.damaged.size() == 1);
    CHECK(log.damaged[0].line == 4);
    CHECK_THAT(log.damaged[0].reason, Contains("\"priority\""));
  }
  SECTION("a file that cannot be opened is an IoError") {
    CHECK_THROWS_AS(JsonLinesAuditSink("/nonexistent-dir/x.jsonl"), IoError);
    CHECK_THROWS_AS(read_audit_log("/nonexistent-dir/x.jsonl"), IoError);
  }
}
