// Snapshots in an SQLite file: the books come back exactly; a writer killed mid-snapshot and a
// disk that fills up mid-snapshot leave the previous snapshot whole; files that are not
// snapshots are refused with the file's name.
// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <safeguards/big_decimal.hpp>
#include <safeguards/safeguards.hpp>
#include <safeguards/sqlite_snapshot.hpp>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace safeguards;
namespace fs = std::filesystem;

namespace {

// A directory of the test's own, removed at the end.
struct TempDir {
  TempDir() {
    char pattern[] = "/tmp/safeguards-snapshot-XXXXXX";
    REQUIRE(::mkdtemp(pattern));
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  fs::path path;
};

// Books whose every number says which generation they are: `agents` agents of one pool, each
// given 1,000 and having used `g % 1000` of it.
CoordinatorState generation(std::uint64_t g, int agents) {
  CoordinatorState s;
  s.sequence = g;
  s.pools.push_back({PoolId(1), "p", 5, false, Decimal(1'000LL * agents), Decimal(0), {}});
  const auto used = Decimal(static_cast<std::int64_t>(g % 1000));
  for (int i = 0; i < agents; ++i)
    s.agents.push_back({AgentId(static_cast<std::uint64_t>(i + 1)),
                        "agent-" + std::to_string(i),
                        PoolId(1),
                        5,
                        false,
                        Decimal(1'000),
                        Decimal(1'000) - used,
                        used,
                        Decimal(0),
                        Decimal(0),
                        g,
                        {{"generation", std::to_string(g)}}});
  return s;
}

// The snapshot at `path` is one whole generation, and a coordinator takes it.
std::uint64_t check_whole(const fs::path& path, int agents) {
  const auto s = load_snapshot(path);
  REQUIRE(s.agents.size() == static_cast<std::size_t>(agents));
  for (const auto& a : s.agents) {
    REQUIRE(a.used == Decimal(static_cast<std::int64_t>(s.sequence % 1000)));
    REQUIRE(a.charges == s.sequence);
    REQUIRE(a.metadata.at("generation") == std::to_string(s.sequence));
  }
  BudgetCoordinator coord;
  coord.restore(s);
  REQUIRE(coord.check_invariants().empty());
  return s.sequence;
}

} // namespace

TEMPLATE_TEST_CASE("a snapshot file gives back the books exactly", "[snapshot][sqlite]", Decimal,
                   std::int64_t, BigDecimal) {
  using A = TestType;
  using traits = amount_traits<A>;
  TempDir dir;
  const fs::path file = dir.path / "books.db";
  BasicBudgetCoordinator<A> coord;
  const PoolId pool = coord.create_pool({.name = "team \"quoted\" 'and' ünïcode",
                                         .initial_budget = traits::from_integer(1'000),
                                         .metadata = {{"region", "eu"}}});
  const AgentId a = coord.create_agent(
      {.name = "a", .initial_budget = traits::from_integer(400), .priority = 8, .pool = pool});
  const AgentId b = coord.create_agent({.name = "b", .initial_budget = traits::from_integer(7)});
  coord.set_agent_metadata(a, "owner", "ops");
  REQUIRE(coord.try_consume(a, traits::from_integer(123)).ok());
  REQUIRE(coord.try_consume(b, traits::from_integer(7)).ok());
  save_snapshot(coord, file);

  const auto loaded = load_snapshot<A>(file);
  const auto taken = coord.snapshot();
  REQUIRE(loaded.agents.size() == taken.agents.size());
  CHECK(loaded.sequence == taken.sequence);
  for (std::size_t i = 0; i < taken.agents.size(); ++i) {
    CHECK(loaded.agents[i].name == taken.agents[i].name);
    CHECK(loaded.agents[i].used == taken.agents[i].used);
    CHECK(loaded.agents[i].remaining == taken.agents[i].remaining);
    CHECK(loaded.agents[i].charges == taken.agents[i].charges);
    CHECK(loaded.agents[i].metadata == taken.agents[i].metadata);
  }
  BasicBudgetCoordinator<A> resumed;
  resumed.restore(loaded);
  CHECK(resumed.check_invariants().empty());
  CHECK(resumed.find_pool("team \"quoted\" 'and' ünïcode") == pool);
  CHECK(resumed.pool_metadata(pool) == Metadata{{"region", "eu"}});
  CHECK(resumed.agent_metrics(a).used_budget == traits::from_integer(123));
  CHECK(resumed.agent_priority(a) == 8);
  CHECK(resumed.agent_metrics(b).remaining_budget == traits::from_integer(0));

  // A second snapshot replaces the first.
  coord.remove_agent(b);
  save_snapshot(coord, file);
  CHECK(load_snapshot<A>(file).agents[1].removed);
}

TEST_CASE("files that are not snapshots are refused, naming the file", "[snapshot][sqlite]") {
  TempDir dir;
  const fs::path missing = dir.path / "missing.db";
  CHECK_THROWS_AS(load_snapshot(missing), IoError);
  CHECK_FALSE(fs::exists(missing)); // reading never creates a file

  const fs::path text = dir.path / "notes.db";
  std::ofstream(text) << "not a database\n";
  CHECK_THROWS_WITH(load_snapshot(text), Catch::Contains("notes.db"));

  const fs::path other = dir.path / "other.db";
  {
    detail::SqliteFile f(other, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    f.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1);");
  }
  CHECK_THROWS_AS(load_snapshot(other), IoError);

  const fs::path damaged = dir.path / "damaged.db";
  save_snapshot(generation(3, 2), damaged);
  {
    detail::SqliteFile f(damaged, SQLITE_OPEN_READWRITE);
    f.exec("UPDATE safeguards_agents SET used = 'a lot' WHERE id = 1");
  }
  CHECK_THROWS_AS(load_snapshot(damaged), MalformedAmount);
  {
    detail::SqliteFile f(damaged, SQLITE_OPEN_READWRITE);
    f.exec("UPDATE safeguards_agents SET used = '999' WHERE id = 1");
  }
  BudgetCoordinator coord; // reads, but breaks the books: refused by restore
  CHECK_THROWS_AS(coord.restore(load_snapshot(damaged)), InvalidArgument);
}

TEST_CASE("a writer killed mid-snapshot leaves the previous snapshot whole", "[snapshot][sqlite]") {
  TempDir dir;
  const fs::path file = dir.path / "books.db";
  constexpr int agents = 2'000; // milliseconds a snapshot: a kill lands inside one
  save_snapshot(generation(1, agents), file);
  std::mt19937 rng(12345);
  std::uint64_t last_seen = 1;
  for (int round = 0; round < 15; ++round) {
    int done[2];
    REQUIRE(::pipe(done) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) { // the writer: snapshots of ever newer generations until killed
      ::close(done[0]);
      try {
        for (std::uint64_t g = last_seen + 1;; ++g) {
          save_snapshot(generation(g, agents), file);
          if (::write(done[1], "x", 1) != 1) // one more snapshot finished
            ::_exit(4);
        }
      } catch (...) {
        ::_exit(3);
      }
    }
    ::close(done[1]);
    // Killed at a random moment after its first snapshot of the round finished (waited for, not
    // timed: under a sanitizer a snapshot takes many times longer), while it writes the next.
    char seen = 0;
    REQUIRE(::read(done[0], &seen, 1) == 1);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20'000));
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    ::close(done[0]);
    REQUIRE(WIFSIGNALED(status)); // killed, not failed
    const std::uint64_t g = check_whole(file, agents);
    CHECK(g > last_seen); // at least the round's first snapshot, whole
    last_seen = g;
  }
}

TEST_CASE("a disk that fills up mid-snapshot leaves the previous snapshot whole",
          "[snapshot][sqlite]") {
  TempDir dir;
  const fs::path file = dir.path / "books.db";
  save_snapshot(generation(5, 10), file);
  const auto size = fs::file_size(file);
  // In a child, files may not grow past a little more than this one: a bigger snapshot fills
  // the "disk" part-way through its transaction.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN); // a write past the limit then fails with EFBIG
    const rlimit limit{static_cast<rlim_t>(size + 8'192), static_cast<rlim_t>(size + 8'192)};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0)
      ::_exit(4);
    try {
      save_snapshot(generation(6, 5'000), file);
    } catch (const IoError&) {
      ::_exit(0); // refused with an IoError, as documented
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(1); // it fit after all
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(check_whole(file, 10) == 5);
  save_snapshot(generation(7, 5'000), file); // with room again, the next snapshot goes through
  CHECK(check_whole(file, 5'000) == 7);
}
