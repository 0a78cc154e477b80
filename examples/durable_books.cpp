// A runtime that survives its own restart: it saves the books to an SQLite file as it goes and,
// started again, resumes from the file with the same pools, agents and balances, so no agent can
// spend its budget a second time. Needs SQLite (Debian: libsqlite3-dev).
//
// expect: ^first run: research spent 12\.5 of 100\.0; writer spent 35\.0, reserved 5\.0 of 50\.0$
// expect: ^restarted: research spent 12\.5 of 100\.0; writer spent 40\.0, reserved 0\.0 of 50\.0$
// expect: ^writer asks for 20\.0: insufficient$
// expect: ^reserved before the crash, now counted as spent: 5\.0$
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <safeguards/safeguards.hpp>
#include <safeguards/sqlite_snapshot.hpp>
#include <string>

using namespace safeguards;

namespace {

void report(const char* when, const BudgetCoordinator& coord) {
  const auto research = coord.agent_metrics(*coord.find_agent("research"));
  const auto writer = coord.agent_metrics(*coord.find_agent("writer"));
  fmt::print("{}: research spent {} of {}; writer spent {}, reserved {} of {}\n", when,
             research.used_budget, research.initial_budget, writer.used_budget,
             writer.reserved_budget, writer.initial_budget);
}

// The process's first life: set up, spend, save after each step that matters, then "crash" with
// a reservation still open.
void first_run(const std::filesystem::path& file) {
  BudgetCoordinator coord;
  const PoolId team = coord.create_pool({.name = "team", .initial_budget = Decimal("200.0")});
  const AgentId research =
      coord.create_agent({.name = "research", .initial_budget = Decimal("100.0"), .pool = team});
  const AgentId writer =
      coord.create_agent({.name = "writer", .initial_budget = Decimal("50.0"), .pool = team});
  (void)coord.try_consume(research, Decimal("12.5"));
  (void)coord.try_consume(writer, Decimal("35.0"));
  auto call = coord.try_reserve(writer, Decimal("5.0")); // an LLM call in flight ...
  save_snapshot(coord, file);                            // ... when the last snapshot is taken
  report("first run", coord);
  call.release(); // (the process dies here; the snapshot still holds the 5.0 as reserved)
}

} // namespace

int main() {
  char pattern[] = "/tmp/safeguards-durable-XXXXXX";
  if (!::mkdtemp(pattern))
    return 1;
  const std::filesystem::path dir = pattern;
  const auto file = dir / "budgets.db";

  first_run(file);

  // The second life: resume from the file before serving anything.
  BudgetCoordinator coord;
  coord.restore(load_snapshot(file));
  report("restarted", coord);
  const AgentId writer = *coord.find_agent("writer");
  fmt::print("writer asks for 20.0: {}\n",
             to_string(coord.try_consume(writer, Decimal("20.0")).status()));
  fmt::print("reserved before the crash, now counted as spent: {}\n",
             load_snapshot(file).agents[1].reserved);
  save_snapshot(coord, file);

  std::filesystem::remove_all(dir);
  return coord.check_invariants().empty() ? 0 : 1;
}
