// Tests for write_prometheus: the text parses back, strictly, into the coordinator's numbers;
// names that would break the format are escaped; promtool accepts it when it is installed.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <safeguards/coordinator.hpp>
#include <safeguards/degradation.hpp>
#include <safeguards/prometheus.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace safeguards;

namespace {

// ---- a small strict parser of the text format -----------------------------------------------
// Stricter than Prometheus where that costs nothing: every family has HELP then TYPE before its
// samples, only gauge and counter, no timestamps, no blank or other comment lines, no trailing
// comma, values in the plain decimal grammar, no series twice.

using Labels = std::map<std::string, std::string>;

struct Family {
  std::string help;
  std::string type;
  std::vector<std::pair<Labels, std::string>> samples; // labels, value text
};

struct Exposition {
  std::vector<std::string> order; // family names as they came
  std::map<std::string, Family> families;

  const Family& family(const std::string& name) const {
    auto it = families.find(name);
    if (it == families.end())
      throw std::runtime_error("no family " + name);
    return it->second;
  }
  // The value of one series, which must exist.
  Decimal value(const std::string& name, const Labels& labels) const {
    for (const auto& [l, v] : family(name).samples)
      if (l == labels)
        return Decimal::parse(v);
    throw std::runtime_error("no series " + name);
  }
  std::size_t sample_count() const {
    std::size_t n = 0;
    for (const auto& [name, f] : families)
      n += f.samples.size();
    return n;
  }
};

[[noreturn]] void fail(std::size_t line, const std::string& why) {
  throw std::runtime_error("line " + std::to_string(line) + ": " + why);
}

bool is_metric_name(std::string_view s) {
  if (s.empty())
    return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok)
      return false;
  }
  return true;
}

bool is_label_name(std::string_view s) {
  return is_metric_name(s) && s.find(':') == std::string_view::npos && !s.starts_with("__");
}

bool is_decimal(std::string_view s) {
  std::size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
  std::size_t digits = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i)
    ++digits;
  if (digits == 0)
    return false;
  if (i == s.size())
    return true;
  if (s[i] != '.' || ++i == s.size())
    return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

// Reads an escaped string up to `end` (not included), from s[i]; `allowed` are the characters
// that may follow a backslash, each standing for itself except n.
std::string unescape(std::string_view s, std::size_t& i, char end, std::string_view allowed,
                     std::size_t line) {
  std::string out;
  while (true) {
    if (i >= s.size())
      fail(line, "unterminated text");
    char c = s[i++];
    if (c == end)
      return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i >= s.size() || allowed.find(s[i]) == std::string_view::npos)
      fail(line, "bad escape");
    char e = s[i++];
    out += e == 'n' ? '\n' : e;
  }
}

Exposition parse(const std::string& text) {
  Exposition e;
  std::set<std::pair<std::string, Labels>> series;
  std::string current; // the family whose samples may follow
  std::string pending_help;
  if (!text.empty() && text.back() != '\n')
    fail(0, "the last line has no line feed");
  std::size_t line_no = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t eol = text.find('\n', start);
    std::string_view line(text.data() + start, eol - start);
    start = eol + 1;
    ++line_no;
    if (line.empty())
      fail(line_no, "blank line");
    if (line.starts_with("# HELP ")) {
      auto rest = line.substr(7);
      auto space = rest.find(' ');
      if (space == std::string_view::npos)
        fail(line_no, "HELP without text");
      std::string name(rest.substr(0, space));
      if (!is_metric_name(name))
        fail(line_no, "bad metric name " + name);
      if (e.families.count(name) != 0 || !pending_help.empty())
        fail(line_no, "second HELP for " + name);
      std::string help_text(rest.substr(space + 1));
      help_text += '\n'; // the terminator unescape wants
      std::size_t i = 0;
      e.families[name].help = unescape(help_text, i, '\n', "\\n", line_no);
      e.order.push_back(name);
      pending_help = name;
      current.clear();
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      auto rest = line.substr(7);
      auto space = rest.find(' ');
      if (space == std::string_view::npos)
        fail(line_no, "TYPE without type");
      std::string name(rest.substr(0, space));
      std::string type(rest.substr(space + 1));
      if (name != pending_help)
        fail(line_no, "TYPE of " + name + " does not follow its HELP");
      if (type != "gauge" && type != "counter")
        fail(line_no, "unexpected type " + type);
      if (type == "counter" && !name.ends_with("_total"))
        fail(line_no, "counter without _total: " + name);
      e.families[name].type = type;
      pending_help.clear();
      current = name;
      continue;
    }
    if (line.starts_with("#"))
      fail(line_no, "unexpected comment line");
    // name{label="value",...} value
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ')
      ++i;
    std::string name(line.substr(0, i));
    if (current.empty() || name != current)
      fail(line_no, "sample of " + name + " outside its family");
    Labels labels;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (true) {
        std::size_t eq = line.find('=', i);
        if (eq == std::string_view::npos)
          fail(line_no, "label without '='");
        std::string label(line.substr(i, eq - i));
        if (!is_label_name(label))
          fail(line_no, "bad label name '" + label + "'");
        i = eq + 1;
        if (i >= line.size() || line[i] != '"')
          fail(line_no, "label value not quoted");
        ++i;
        std::string value = unescape(line, i, '"', "\\\"n", line_no);
        if (!labels.emplace(label, value).second)
          fail(line_no, "label " + label + " twice");
        if (i < line.size() && line[i] == ',') {
          ++i;
          continue;
        }
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        fail(line_no, "expected ',' or '}'");
      }
    }
    if (i >= line.size() || line[i] != ' ')
      fail(line_no, "no space before the value");
    std::string value(line.substr(i + 1));
    if (!is_decimal(value))
      fail(line_no, "value '" + value + "' is not a decimal");
    Family& f = e.families[name];
    if (f.type == "counter" && value.starts_with("-"))
      fail(line_no, "negative counter");
    if (!series.emplace(name, labels).second)
      fail(line_no, "series twice: " + std::string(line));
    f.samples.emplace_back(std::move(labels), std::move(value));
  }
  if (!pending_help.empty())
    fail(line_no, "HELP of " + pending_help + " without TYPE");
  return e;
}

// ---- promtool, when installed --------------------------------------------------------------

bool promtool_found() {
  return std::system("command -v promtool >/dev/null 2>&1") == 0;
}

// `promtool check metrics` on the text: its exit status, and what it printed.
std::pair<int, std::string> promtool_check(const std::string& text) {
  char path[] = "/tmp/safeguards_prometheus_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream file(path, std::ios::binary);
    file << text;
  }
  std::string command = std::string("promtool check metrics < ") + path + " 2>&1";
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[256];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr)
    output += buffer;
  int status = pclose(pipe);
  std::remove(path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

void check_with_promtool(const std::string& text) {
  if (!promtool_found()) {
    WARN("promtool not found: `promtool check metrics` skipped (Debian: apt-get install "
         "prometheus); the output was checked by this test's own parser only");
    return;
  }
  auto [status, output] = promtool_check(text);
  INFO("promtool said: " << output);
  INFO("on:\n" << text);
  CHECK(status == 0);
}

const std::vector<std::string> pool_gauges = {"safeguards_pool_initial_budget",
                                              "safeguards_pool_allocated_budget",
                                              "safeguards_pool_unallocated_budget",
                                              "safeguards_pool_used_budget",
                                              "safeguards_pool_reserved_budget",
                                              "safeguards_pool_remaining_budget",
                                              "safeguards_pool_agents"};
const std::vector<std::string> agent_families = {
    "safeguards_agent_initial_budget",  "safeguards_agent_used_budget",
    "safeguards_agent_reserved_budget", "safeguards_agent_remaining_budget",
    "safeguards_agent_consumes_total",  "safeguards_agent_overspent_total"};

Labels pool_labels(const PoolMetrics& p) {
  return {{"pool", p.name}, {"priority", std::to_string(p.priority)}};
}

// Every series of the text against the metrics API, and nothing else in the text.
void check_against_api(const Exposition& e, const BudgetCoordinator& coord,
                       bool with_service_levels = false) {
  std::vector<std::string> expected_order = pool_gauges;
  expected_order.insert(expected_order.end(), agent_families.begin(), agent_families.end());
  std::size_t service_levels = 0;
  if (with_service_levels) {
    expected_order.emplace_back("safeguards_agent_service_level");
    service_levels = e.family("safeguards_agent_service_level").samples.size();
  }
  CHECK(e.order == expected_order);
  for (const auto& name : pool_gauges)
    CHECK(e.family(name).type == "gauge");
  CHECK(e.family("safeguards_agent_used_budget").type == "gauge");
  CHECK(e.family("safeguards_agent_consumes_total").type == "counter");
  CHECK(e.family("safeguards_agent_overspent_total").type == "counter");
  CHECK(e.family("safeguards_agent_used_budget").help.find("in USD") != std::string::npos);

  auto pools = coord.pools();
  for (PoolId id : pools) {
    auto m = coord.pool_metrics(id);
    auto l = pool_labels(m);
    INFO("pool " << m.name);
    CHECK(e.value("safeguards_pool_initial_budget", l) == m.initial_budget);
    CHECK(e.value("safeguards_pool_allocated_budget", l) == m.allocated_budget);
    CHECK(e.value("safeguards_pool_unallocated_budget", l) == m.unallocated_budget);
    CHECK(e.value("safeguards_pool_used_budget", l) == m.used_budget);
    CHECK(e.value("safeguards_pool_reserved_budget", l) == m.reserved_budget);
    CHECK(e.value("safeguards_pool_remaining_budget", l) == m.remaining_budget);
    CHECK(e.value("safeguards_pool_agents", l) ==
          Decimal(static_cast<std::int64_t>(m.agent_count)));
  }
  auto agents = coord.agents();
  for (AgentId id : agents) {
    auto m = coord.agent_metrics(id);
    Labels l{{"agent", coord.agent_name(id)},
             {"pool", coord.pool_metrics(coord.agent_pool(id)).name},
             {"priority", std::to_string(coord.agent_priority(id))}};
    INFO("agent " << m.name);
    CHECK(e.value("safeguards_agent_initial_budget", l) == m.initial_budget);
    CHECK(e.value("safeguards_agent_used_budget", l) == m.used_budget);
    CHECK(e.value("safeguards_agent_reserved_budget", l) == m.reserved_budget);
    CHECK(e.value("safeguards_agent_remaining_budget", l) == m.remaining_budget);
    CHECK(e.value("safeguards_agent_overspent_total", l) == m.overspent_budget);
    CHECK(e.value("safeguards_agent_consumes_total", l) ==
          Decimal(static_cast<std::int64_t>(m.consumption_count)));
  }
  CHECK(e.sample_count() ==
        pools.size() * pool_gauges.size() + agents.size() * agent_families.size() + service_levels);
}

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

} // namespace

TEST_CASE("2 pools, 3 agents, reservations and overspend: every number, exactly", "[prometheus]") {
  BudgetCoordinator coord;
  PoolId research =
      coord.create_pool({.name = "research", .initial_budget = 1000_d, .priority = 7});
  PoolId ops = coord.create_pool({.name = "ops", .initial_budget = 50_d, .priority = 3});
  AgentId alpha = coord.create_agent(
      {.name = "alpha", .initial_budget = 400_d, .priority = 8, .pool = research});
  AgentId beta = coord.create_agent(
      {.name = "beta", .initial_budget = Decimal("25.5"), .priority = 2, .pool = research});
  AgentId gamma = coord.create_agent({.name = "gamma", .initial_budget = 10_d, .pool = ops});

  coord.consume(alpha, Decimal("123.456789"));
  coord.consume(alpha, Decimal("0.000001"));
  coord.consume(gamma, 10_d); // spent to zero
  auto open = coord.reserve(alpha, Decimal("5.25"));
  {
    auto settled = coord.reserve(beta, 20_d);
    (void)settled.commit(Decimal("30.000007")); // 5.5 more than beta had left
  }
  CHECK(coord.agent_metrics(beta).overspent_budget == Decimal("4.500007"));

  std::ostringstream out;
  write_prometheus(coord, out);
  std::string text = out.str();
  INFO(text);
  CHECK(text == to_prometheus(coord));

  Exposition e = parse(text);
  check_against_api(e, coord);

  // Exactly the amounts' text: no double on the way, down to the last micro-unit.
  CHECK(has_line(
      text,
      R"(safeguards_agent_used_budget{agent="alpha",pool="research",priority="8"} 123.45679)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_reserved_budget{agent="alpha",pool="research",priority="8"} 5.25)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_remaining_budget{agent="alpha",pool="research",priority="8"} 271.29321)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_overspent_total{agent="beta",pool="research",priority="2"} 4.500007)"));
  CHECK(has_line(
      text, R"(safeguards_agent_consumes_total{agent="alpha",pool="research",priority="8"} 2)"));
  CHECK(has_line(
      text, R"(safeguards_agent_remaining_budget{agent="gamma",pool="ops",priority="5"} 0.0)"));
  CHECK(
      has_line(text, R"(safeguards_pool_unallocated_budget{pool="research",priority="7"} 574.5)"));
  CHECK(has_line(text, R"(safeguards_pool_agents{pool="ops",priority="3"} 1)"));
  // Pools highest priority first.
  CHECK(text.find(R"(safeguards_pool_used_budget{pool="research")") <
        text.find(R"(safeguards_pool_used_budget{pool="ops")"));

  check_with_promtool(text);

  SECTION("a removed agent leaves the output") {
    open.release();
    coord.remove_agent(beta);
    std::string after = to_prometheus(coord);
    CHECK(after.find("agent=\"beta\"") == std::string::npos);
    check_against_api(parse(after), coord);
  }
  SECTION("a reservation settled moves from reserved to used") {
    (void)open.commit(Decimal("1.000001"));
    Exposition settled = parse(to_prometheus(coord));
    check_against_api(settled, coord);
    Labels l{{"agent", "alpha"}, {"pool", "research"}, {"priority", "8"}};
    CHECK(settled.value("safeguards_agent_reserved_budget", l) == 0_d);
    CHECK(settled.value("safeguards_agent_used_budget", l) == Decimal("124.456791"));
    CHECK(settled.value("safeguards_agent_consumes_total", l) == 3_d);
  }
}

TEST_CASE("Service levels: one series per level of the agent's table, 1 for the current one",
          "[prometheus][degradation]") {
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "research", .initial_budget = 100_d, .priority = 7});
  AgentId alpha = coord.create_agent(
      {.name = "alpha", .initial_budget = 40_d, .priority = 8, .pool = p}); // 100 %: full
  AgentId beta = coord.create_agent({.name = "beta", .initial_budget = 10_d, .pool = p});
  AgentId gamma = coord.create_agent({.name = "gam\"ma\n", .initial_budget = 10_d});
  coord.consume(beta, 8_d); // exactly 20 % left: standard
  coord.consume(gamma, 10_d);
  GracefulDegradation degradation(coord);
  degradation.set_levels(
      gamma, ServiceLevels(
                 {{"large \"model\"", 50, {}}, {"small\\model", 1, {}}, {"cache\nonly", 0, {}}}));

  std::string text = to_prometheus(coord, degradation);
  INFO(text);
  std::ostringstream out;
  write_prometheus(coord, out, degradation);
  CHECK(out.str() == text);
  // Everything to_prometheus(coord) writes, then the one family more.
  CHECK(text.starts_with(to_prometheus(coord)));

  Exposition e = parse(text);
  check_against_api(e, coord, /*with_service_levels=*/true);
  const Family& f = e.family("safeguards_agent_service_level");
  CHECK(f.type == "gauge");
  CHECK(f.samples.size() == 4 + 4 + 3);

  std::map<std::string, std::string> current; // agent -> the level whose series is 1
  for (const auto& [labels, value] : f.samples) {
    CHECK((value == "0" || value == "1"));
    if (value == "1")
      CHECK(current.emplace(labels.at("agent"), labels.at("level")).second);
  }
  CHECK(current == std::map<std::string, std::string>{
                       {"alpha", "full"}, {"beta", "standard"}, {"gam\"ma\n", "cache\nonly"}});
  for (AgentId a : {alpha, beta, gamma})
    CHECK(current.at(coord.agent_name(a)) == degradation.service_level(a).name);
  CHECK(has_line(
      text,
      R"(safeguards_agent_service_level{agent="alpha",pool="research",priority="8",level="full"} 1)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_service_level{agent="alpha",pool="research",priority="8",level="emergency"} 0)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_service_level{agent="gam\"ma\n",pool="agent:gam\"ma\n",priority="5",level="large \"model\""} 0)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_service_level{agent="gam\"ma\n",pool="agent:gam\"ma\n",priority="5",level="cache\nonly"} 1)"));
  check_with_promtool(text);

  SECTION("the series follow a change of level") {
    coord.consume(alpha, Decimal("20.000001")); // just under 50 % left
    Exposition after = parse(to_prometheus(coord, degradation));
    Labels l{{"agent", "alpha"}, {"pool", "research"}, {"priority", "8"}};
    auto level = [&](const char* name) {
      Labels with = l;
      with.emplace("level", name);
      return after.value("safeguards_agent_service_level", with);
    };
    CHECK(level("full") == 0_d);
    CHECK(level("standard") == 1_d);
  }
  SECTION("a removed agent has no service level series") {
    coord.remove_agent(beta);
    std::string after = to_prometheus(coord, degradation);
    CHECK(after.find("agent=\"beta\"") == std::string::npos);
    CHECK(parse(after).family("safeguards_agent_service_level").samples.size() == 4 + 3);
  }
}

TEST_CASE("Scrapes while agents spend: each parses, counters never go down", "[prometheus]") {
  BudgetCoordinator coord;
  PoolId p = coord.create_pool({.name = "p", .initial_budget = 1000_d});
  AgentId a = coord.create_agent({.name = "a", .initial_budget = 100_d, .pool = p});
  AgentId b = coord.create_agent({.name = "b", .initial_budget = 100_d, .pool = p});
  constexpr int spends = 2000;
  std::vector<std::thread> workers;
  for (AgentId agent : {a, b})
    workers.emplace_back([&coord, agent] {
      for (int i = 0; i < spends; ++i)
        (void)coord.try_consume(agent, Decimal("0.01"));
    });
  Labels la{{"agent", "a"}, {"pool", "p"}, {"priority", "5"}};
  Labels lb{{"agent", "b"}, {"pool", "p"}, {"priority", "5"}};
  Decimal last_a, last_b;
  for (int scrape = 0; scrape < 50; ++scrape) {
    Exposition e = parse(to_prometheus(coord));
    Decimal now_a = e.value("safeguards_agent_consumes_total", la);
    Decimal now_b = e.value("safeguards_agent_consumes_total", lb);
    CHECK(last_a <= now_a);
    CHECK(last_b <= now_b);
    last_a = now_a;
    last_b = now_b;
  }
  for (auto& w : workers)
    w.join();
  Exposition e = parse(to_prometheus(coord));
  check_against_api(e, coord);
  CHECK(e.value("safeguards_agent_used_budget", la) == 20_d);
  CHECK(e.value("safeguards_agent_consumes_total", lb) == Decimal(spends));
  CHECK(e.value("safeguards_pool_used_budget", {{"pool", "p"}, {"priority", "5"}}) == 40_d);
}

TEST_CASE("Extreme amounts are written exactly", "[prometheus]") {
  BudgetCoordinator coord;
  Decimal huge = *InMemoryLedger<Decimal>::max_balance(); // 36028797018.963967
  AgentId a = coord.create_agent({.name = "big", .initial_budget = huge});
  coord.consume(a, Decimal("0.000001"));
  std::string text = to_prometheus(coord);
  CHECK(has_line(
      text,
      R"(safeguards_agent_initial_budget{agent="big",pool="agent:big",priority="5"} 36028797018.963967)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_remaining_budget{agent="big",pool="agent:big",priority="5"} 36028797018.963966)"));
  check_against_api(parse(text), coord);
  check_with_promtool(text);
}

TEST_CASE("Label values with quote, backslash and newline are escaped and read back",
          "[prometheus]") {
  BudgetCoordinator coord;
  std::string pool_name = "team \"A\"\\ops\nline two";
  std::vector<std::string> names = {"say \"hi\"",           R"(C:\agents\new)",
                                    "two\nlines",           "\\\"\n",
                                    "\\n is not a newline", "caf\xC3\xA9 \xE2\x82\xAC"};
  PoolId p = coord.create_pool({.name = pool_name, .initial_budget = 100_d, .priority = 10});
  for (std::size_t i = 0; i < names.size(); ++i)
    coord.consume(coord.create_agent({.name = names[i], .initial_budget = 10_d, .pool = p}),
                  Decimal(static_cast<std::int64_t>(i + 1)));

  std::string text = to_prometheus(coord);
  INFO(text);
  CHECK(has_line(text,
                 R"(safeguards_pool_agents{pool="team \"A\"\\ops\nline two",priority="10"} 6)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_used_budget{agent="\\\"\n",pool="team \"A\"\\ops\nline two",priority="5"} 4.0)"));
  CHECK(has_line(
      text,
      R"(safeguards_agent_used_budget{agent="\\n is not a newline",pool="team \"A\"\\ops\nline two",priority="5"} 5.0)"));
  // Every sample on one line: two lines per family (13), one per sample (7 pool, 6 x 6 agent).
  std::size_t lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  CHECK(lines == 13 * 2 + 7 + 6 * 6);

  Exposition e = parse(text);
  check_against_api(e, coord); // the labels it compares with are the raw names
  check_with_promtool(text);
}

TEST_CASE("Names that are not UTF-8 cannot break a scrape", "[prometheus]") {
  BudgetCoordinator coord;
  // A stray continuation byte, a truncated sequence, an overlong '/', a surrogate, > U+10FFFF.
  std::vector<std::pair<std::string, std::string>> cases = {
      {"a\x80z", "a\xEF\xBF\xBDz"},
      {"b\xE2\x82", "b\xEF\xBF\xBD\xEF\xBF\xBD"},
      {"c\xC0\xAF", "c\xEF\xBF\xBD\xEF\xBF\xBD"},
      {"d\xED\xA0\x80", "d\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
      {"e\xF4\x90\x80\x80", "e\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
      {"f\xF0\x9F\x92\xB0", "f\xF0\x9F\x92\xB0"}, // valid 4-byte: kept
  };
  for (const auto& [raw, shown] : cases)
    coord.create_agent({.name = raw, .initial_budget = 1_d});
  std::string text = to_prometheus(coord);
  Exposition e = parse(text);
  for (const auto& [raw, shown] : cases) {
    INFO(shown);
    CHECK(e.value("safeguards_agent_initial_budget",
                  {{"agent", shown}, {"pool", "agent:" + shown}, {"priority", "5"}}) == 1_d);
  }
  check_with_promtool(text);
}

TEST_CASE("The unit goes into the HELP text, escaped", "[prometheus]") {
  BudgetCoordinator coord(CoordinatorOptions{.history_capacity = 0, .unit = "credits\\day\nx"});
  coord.create_agent({.name = "a", .initial_budget = 1_d});
  std::string text = to_prometheus(coord);
  CHECK(text.find("# HELP safeguards_agent_used_budget Budget the agent has used, in "
                  "credits\\\\day\\nx.\n") != std::string::npos);
  CHECK(parse(text).family("safeguards_agent_used_budget").help ==
        "Budget the agent has used, in credits\\day\nx.");
  check_with_promtool(text);
}

TEST_CASE("An empty coordinator gives every family and no sample", "[prometheus]") {
  BudgetCoordinator coord;
  std::string text = to_prometheus(coord);
  Exposition e = parse(text);
  CHECK(e.order.size() == pool_gauges.size() + agent_families.size());
  CHECK(e.sample_count() == 0);
  check_with_promtool(text);
}

TEST_CASE("Other amount types: whole tokens", "[prometheus]") {
  BasicBudgetCoordinator<std::int64_t> coord;
  auto a = coord.create_agent({.name = "tokens", .initial_budget = 1000});
  coord.consume(a, 42);
  std::string text = to_prometheus(coord);
  CHECK(has_line(
      text, R"(safeguards_agent_used_budget{agent="tokens",pool="agent:tokens",priority="5"} 42)"));
  CHECK(parse(text).sample_count() == 7 + 6);
  check_with_promtool(text);
}

TEST_CASE("Non-finite double amounts use the format's spelling", "[prometheus]") {
  CHECK(detail::prometheus_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(detail::prometheus_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(detail::prometheus_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(detail::prometheus_value(2.5) == "2.5");
}

TEST_CASE("The test's parser refuses what it should", "[prometheus]") {
  const std::string head = "# HELP m_total h\n# TYPE m_total counter\n";
  CHECK_NOTHROW(parse(head + "m_total{a=\"x\"} 1\n"));
  CHECK_THROWS(parse("m_total 1\n"));                                     // no HELP/TYPE
  CHECK_THROWS(parse("# HELP m_total h\nm_total 1\n"));                   // no TYPE
  CHECK_THROWS(parse("# TYPE m_total counter\n# HELP m_total h\n"));      // wrong order
  CHECK_THROWS(parse(head + "m_total{a=\"x\"} 1\nm_total{a=\"x\"} 2\n")); // series twice
  CHECK_THROWS(parse(head + "m_total{a=\"x\",a=\"y\"} 1\n"));             // label twice
  CHECK_THROWS(parse(head + "m_total{a=\"x\\t\"} 1\n"));                  // bad escape
  CHECK_THROWS(parse(head + "m_total{a=\"x} 1\n"));                       // unterminated
  CHECK_THROWS(parse(head + "m_total{a=\"x\",} 1\n"));                    // trailing comma
  CHECK_THROWS(parse(head + "m_total 1e3\n"));                            // not a decimal
  CHECK_THROWS(parse(head + "m_total -1\n"));                             // negative counter
  CHECK_THROWS(parse(head + "m_total 1 1700000000\n"));                   // timestamp
  CHECK_THROWS(parse(head + "other 1\n"));                                // outside its family
  CHECK_THROWS(parse(head + "m_total 1"));                                // no final line feed
  CHECK_THROWS(parse(head + "\nm_total 1\n"));                            // blank line
  CHECK_THROWS(parse(head + head));                                       // HELP twice
  CHECK_THROWS(parse("# HELP m h\n# TYPE m counter\n"));                  // counter sans _total
}

TEST_CASE("promtool refuses broken text, so its verdict means something", "[prometheus]") {
  if (!promtool_found()) {
    WARN("promtool not found: skipped (Debian: apt-get install prometheus)");
    return;
  }
  CHECK(promtool_check("m{a=\"x} 1\n").first != 0);
  CHECK(promtool_check("m_count 1\n").first != 0); // no HELP, reserved suffix
}
