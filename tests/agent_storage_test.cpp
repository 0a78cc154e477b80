// How the coordinator stores agents: the name index (an open-addressing table over the agents'
// own names), the chunked vector the agents live in, and the rarely used parts (metadata, the
// data slot) allocated on first use. Many agents, names removed and reused, nothing may be lost.
// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <safeguards/safeguards.hpp>
#include <string>
#include <unordered_map>
#include <vector>

using namespace safeguards;

TEST_CASE("NameIndex agrees with a std::unordered_map through inserts and erases",
          "[agents][names]") {
  std::vector<std::string> names(5000);
  for (std::size_t i = 0; i < names.size(); ++i)
    names[i] = "n" + std::to_string(i * 7919 % 100003);
  const auto name_of = [&](std::uint64_t id) -> const std::string& { return names[id - 1]; };
  detail::NameIndex index;
  std::unordered_map<std::string, std::uint64_t> shadow;
  std::mt19937_64 rng(12);
  for (int step = 0; step < 40000; ++step) {
    const std::uint64_t id = 1 + rng() % names.size();
    const std::string& name = names[id - 1];
    if (shadow.contains(name)) {
      index.erase(name, id);
      shadow.erase(name);
    } else {
      index.insert(name, id);
      shadow.emplace(name, id);
    }
    if (step % 997 == 0) {
      REQUIRE(index.size() == shadow.size());
      for (std::uint64_t i = 1; i <= names.size(); ++i) {
        const auto it = shadow.find(names[i - 1]);
        REQUIRE(index.find(names[i - 1], name_of) == (it == shadow.end() ? 0 : it->second));
      }
    }
  }
  CHECK(index.find("absent", name_of) == 0);
  CHECK_THROWS_AS(index.insert("too far", std::uint64_t{1} << 32), std::length_error);
}

TEST_CASE("StableVector never moves its elements", "[agents][storage]") {
  detail::StableVector<std::string> v;
  std::vector<const std::string*> addresses;
  for (int i = 0; i < 20000; ++i) {
    addresses.push_back(&v.emplace_back(std::to_string(i) + " long enough to live on the heap"));
  }
  REQUIRE(v.size() == 20000);
  for (std::size_t i = 0; i < v.size(); ++i) {
    REQUIRE(&v[i] == addresses[i]);
    REQUIRE(v[i] == std::to_string(i) + " long enough to live on the heap");
  }
  v.pop_back();
  v.emplace_back("again");
  CHECK(&v[19999] == addresses[19999]);
  std::size_t seen = 0;
  for (const auto& s : v)
    seen += s.empty() ? 0u : 1u;
  CHECK(seen == 20000);
}

TEST_CASE("100,000 agents in one pool: every lookup by name and by id succeeds",
          "[agents][names]") {
  constexpr int n = 100'000;
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = Decimal(10 * n)});
  std::vector<AgentId> ids;
  ids.reserve(n);
  for (int i = 0; i < n; ++i)
    ids.push_back(coord.create_agent(
        {.name = "agent-" + std::to_string(i), .initial_budget = 10_d, .pool = p}));
  for (int i = 0; i < n; ++i) {
    const std::string name = "agent-" + std::to_string(i);
    REQUIRE(coord.find_agent(name) == ids[static_cast<std::size_t>(i)]);
    REQUIRE(coord.agent_name(ids[static_cast<std::size_t>(i)]) == name);
    REQUIRE(coord.get_budget(ids[static_cast<std::size_t>(i)]) == 10_d);
  }
  CHECK_FALSE(coord.find_agent("agent-" + std::to_string(n)));
  CHECK(coord.pool_agents(p).size() == n);

  // Every third agent goes; its name can be taken again and the others stay findable.
  for (int i = 0; i < n; i += 3)
    coord.remove_agent(ids[static_cast<std::size_t>(i)]);
  for (int i = 0; i < n; ++i) {
    const auto found = coord.find_agent("agent-" + std::to_string(i));
    if (i % 3 == 0)
      REQUIRE_FALSE(found);
    else
      REQUIRE(found == ids[static_cast<std::size_t>(i)]);
  }
  for (int i = 0; i < n; i += 3)
    ids[static_cast<std::size_t>(i)] = coord.create_agent(
        {.name = "agent-" + std::to_string(i), .initial_budget = 1_d, .pool = p});
  for (int i = 0; i < n; ++i)
    REQUIRE(coord.find_agent("agent-" + std::to_string(i)) == ids[static_cast<std::size_t>(i)]);
  CHECK(coord.agents().size() == n);
  CHECK(coord.check_invariants().empty());
}

TEST_CASE("metadata and the data slot work whether or not they were set at creation",
          "[agents][metadata]") {
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 100_d});
  AgentId plain = coord.create_agent({.name = "plain", .initial_budget = 10_d, .pool = p});
  AgentId tagged = coord.create_agent(
      {.name = "tagged", .initial_budget = 10_d, .pool = p, .metadata = {{"team", "red"}}});

  CHECK(coord.agent_metadata(plain).empty());
  CHECK(coord.agent_metadata(tagged) == Metadata{{"team", "red"}});
  CHECK_FALSE(coord.agent_data<int>(plain));

  coord.set_agent_metadata(plain, "team", "blue");
  coord.store_agent_metadata(plain, {{"tier", "gold"}});
  CHECK(coord.agent_metadata(plain) == Metadata{{"team", "blue"}, {"tier", "gold"}});

  coord.set_agent_data(tagged, std::any{}); // an empty slot stays empty
  CHECK_FALSE(coord.agent_data<int>(tagged));
  coord.set_agent_data(tagged, 7);
  CHECK(coord.agent_data<int>(tagged) == 7);
  CHECK(coord.agent_metadata(tagged) == Metadata{{"team", "red"}});
  CHECK_FALSE(coord.agent_data<std::string>(tagged));

  coord.remove_agent(tagged);
  CHECK_THROWS_AS(coord.agent_data<int>(tagged), UnknownAgent);
  CHECK_THROWS_AS(coord.agent_metadata(tagged), UnknownAgent);
}
