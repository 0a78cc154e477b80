// safeguards: every pool's and agent's numbers in the Prometheus text exposition format.
// SPDX-License-Identifier: MIT
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <safeguards/amount.hpp>
#include <safeguards/degradation.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// The `Content-Type` a `/metrics` endpoint serves `write_prometheus`'s text with.
inline constexpr std::string_view prometheus_content_type =
    "text/plain; version=0.0.4; charset=utf-8";

/// What `write_prometheus` reads from a coordinator: metrics snapshots of every pool and agent,
/// a pool's metrics by id, and the unit amounts are counted in.
template <class Coordinator>
concept PrometheusSource = requires(const Coordinator& c, PoolId pool) {
  typename Coordinator::amount_type;
  { c.all_pool_metrics() } -> std::same_as<std::vector<typename Coordinator::PoolMetrics>>;
  { c.all_agent_metrics() } -> std::same_as<std::vector<typename Coordinator::AgentMetrics>>;
  { c.pool_metrics(pool) } -> std::same_as<typename Coordinator::PoolMetrics>;
  { c.options().unit } -> std::convertible_to<std::string_view>;
};

namespace detail {

// Prometheus reads its input as UTF-8 and refuses a scrape with an invalid byte anywhere, so
// one agent named from raw bytes would blank every other series: each byte that does not
// start a well-formed sequence becomes U+FFFD. `escape` then writes the text format's escapes.
template <class Escape>
void append_prometheus_utf8(std::string& out, std::string_view text, Escape escape) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  std::size_t i = 0;
  while (i < text.size()) {
    unsigned char lead = byte(i);
    if (lead < 0x80) {
      escape(out, static_cast<char>(lead));
      ++i;
      continue;
    }
    // Length and the range of the second byte (RFC 3629, table 3-7 of the Unicode standard):
    // that range is what excludes overlong forms, surrogates and values above U+10FFFF.
    std::size_t length = 0;
    unsigned char low = 0x80, high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      low = lead == 0xE0 ? 0xA0 : 0x80;
      high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      low = lead == 0xF0 ? 0x90 : 0x80;
      high = lead == 0xF4 ? 0x8F : 0xBF;
    }
    bool valid =
        length != 0 && i + length <= text.size() && byte(i + 1) >= low && byte(i + 1) <= high;
    for (std::size_t k = 2; valid && k < length; ++k)
      valid = byte(i + k) >= 0x80 && byte(i + k) <= 0xBF;
    if (valid) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
}

// Label values escape backslash, double quote and line feed; HELP text only the first and last.
inline void append_prometheus_label_value(std::string& out, std::string_view value) {
  append_prometheus_utf8(out, value, [](std::string& o, char c) {
    if (c == '\\')
      o += "\\\\";
    else if (c == '"')
      o += "\\\"";
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  });
}

inline void append_prometheus_help(std::string& out, std::string_view help) {
  append_prometheus_utf8(out, help, [](std::string& o, char c) {
    if (c == '\\')
      o += "\\\\";
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  });
}

// The amount's own exact text: Prometheus reads decimal text, so a Decimal is not rounded
// through a double here (the scraper makes its float64 from all the digits). Only `double`
// amounts can print non-finite values, and the format spells those differently.
template <BudgetAmount Amount>
std::string prometheus_value(const Amount& amount) {
  std::string text = amount_traits<Amount>::to_string(amount);
  if (text == "nan" || text == "-nan")
    return "NaN";
  if (text == "inf")
    return "+Inf";
  if (text == "-inf")
    return "-Inf";
  return text;
}

struct PrometheusLabel {
  std::string_view name;
  std::string_view value;
};

// One metric family. The format wants a family's samples together, after its HELP and TYPE
// lines, so samples are collected per family and the families written one after another.
class PrometheusFamily {
public:
  PrometheusFamily(std::string_view name, std::string_view type, std::string_view help)
      : name_(name) {
    header_ += "# HELP ";
    header_ += name;
    header_ += ' ';
    append_prometheus_help(header_, help);
    header_ += "\n# TYPE ";
    header_ += name;
    header_ += ' ';
    header_ += type;
    header_ += '\n';
  }

  void add(std::initializer_list<PrometheusLabel> labels, std::string_view value) {
    samples_ += name_;
    char separator = '{';
    for (const auto& label : labels) {
      samples_ += separator;
      samples_ += label.name;
      samples_ += "=\"";
      append_prometheus_label_value(samples_, label.value);
      samples_ += '"';
      separator = ',';
    }
    if (separator == ',')
      samples_ += '}';
    samples_ += ' ';
    samples_ += value;
    samples_ += '\n';
  }

  void append_to(std::string& out) const {
    out += header_;
    out += samples_;
  }

private:
  std::string name_;
  std::string header_;
  std::string samples_;
};

// One consistent read per kind: pools in one snapshot, agents in another (the coordinator's
// own all_*_metrics), and each agent's pool name from the pool snapshot.
template <PrometheusSource Coordinator>
struct PrometheusSnapshot {
  std::vector<typename Coordinator::PoolMetrics> pools;
  std::vector<typename Coordinator::AgentMetrics> agents;
  std::vector<std::string> agent_pools; // the pool name of agents[i]

  explicit PrometheusSnapshot(const Coordinator& coord)
      : pools(coord.all_pool_metrics()), agents(coord.all_agent_metrics()) {
    std::unordered_map<std::uint64_t, std::string_view> names;
    for (const auto& p : pools)
      names.emplace(p.id.value(), p.name);
    agent_pools.reserve(agents.size());
    for (const auto& a : agents) {
      auto it = names.find(a.pool.value());
      // A pool created between the two snapshots (an agent's implicit one): read it now.
      agent_pools.push_back(it != names.end() ? std::string(it->second)
                                              : coord.pool_metrics(a.pool).name);
    }
  }
};

template <PrometheusSource Coordinator>
void append_prometheus_metrics(std::string& out, const Coordinator& coord,
                               const PrometheusSnapshot<Coordinator>& s) {
  using Amount = typename Coordinator::amount_type;
  std::string_view unit = coord.options().unit;
  auto in_unit = [&](std::string_view what) {
    std::string help(what);
    help += ", in ";
    help += unit;
    help += '.';
    return help;
  };

  // ---- pools ----
  struct PoolFamily {
    PrometheusFamily family;
    Amount (*get)(const typename Coordinator::PoolMetrics&);
  };
  using PM = typename Coordinator::PoolMetrics;
  PoolFamily pool_families[] = {
      {{"safeguards_pool_initial_budget", "gauge",
        in_unit("Budget the pool holds: its unallocated budget plus what its agents were given")},
       [](const PM& m) { return m.initial_budget; }},
      {{"safeguards_pool_allocated_budget", "gauge",
        in_unit("Budget of the pool given to its agents")},
       [](const PM& m) { return m.allocated_budget; }},
      {{"safeguards_pool_unallocated_budget", "gauge",
        in_unit("Budget of the pool not given to any agent")},
       [](const PM& m) { return m.unallocated_budget; }},
      {{"safeguards_pool_used_budget", "gauge", in_unit("Budget the pool's agents have used")},
       [](const PM& m) { return m.used_budget; }},
      {{"safeguards_pool_reserved_budget", "gauge",
        in_unit("Budget the pool's agents hold in open reservations")},
       [](const PM& m) { return m.reserved_budget; }},
      {{"safeguards_pool_remaining_budget", "gauge",
        in_unit("Budget of the pool still spendable: unallocated plus its agents' remaining")},
       [](const PM& m) { return m.remaining_budget; }},
  };
  PrometheusFamily pool_agents("safeguards_pool_agents", "gauge",
                               "Live agents drawing from the pool.");
  for (const auto& p : s.pools) {
    std::string priority = std::to_string(p.priority);
    std::initializer_list<PrometheusLabel> labels = {{"pool", p.name}, {"priority", priority}};
    for (auto& f : pool_families)
      f.family.add(labels, prometheus_value(f.get(p)));
    pool_agents.add(labels, std::to_string(p.agent_count));
  }
  for (const auto& f : pool_families)
    f.family.append_to(out);
  pool_agents.append_to(out);

  // ---- agents ----
  struct AgentFamily {
    PrometheusFamily family;
    Amount (*get)(const typename Coordinator::AgentMetrics&);
  };
  using AM = typename Coordinator::AgentMetrics;
  AgentFamily agent_families[] = {
      {{"safeguards_agent_initial_budget", "gauge",
        in_unit("Budget the agent was given: at creation, by updates and by grants")},
       [](const AM& m) { return m.initial_budget; }},
      {{"safeguards_agent_used_budget", "gauge", in_unit("Budget the agent has used")},
       [](const AM& m) { return m.used_budget; }},
      {{"safeguards_agent_reserved_budget", "gauge",
        in_unit("Budget the agent holds in open reservations")},
       [](const AM& m) { return m.reserved_budget; }},
      {{"safeguards_agent_remaining_budget", "gauge", in_unit("Budget the agent can still spend")},
       [](const AM& m) { return m.remaining_budget; }},
  };
  PrometheusFamily consumes("safeguards_agent_consumes_total", "counter",
                            "Consumes and reservation commits charged to the agent.");
  PrometheusFamily overspent(
      "safeguards_agent_overspent_total", "counter",
      in_unit("Usage commits reported beyond what the agent could pay (never charged)"));
  for (std::size_t i = 0; i < s.agents.size(); ++i) {
    const auto& a = s.agents[i];
    std::string priority = std::to_string(a.priority);
    std::initializer_list<PrometheusLabel> labels = {
        {"agent", a.name}, {"pool", s.agent_pools[i]}, {"priority", priority}};
    for (auto& f : agent_families)
      f.family.add(labels, prometheus_value(f.get(a)));
    consumes.add(labels, std::to_string(a.consumption_count));
    overspent.add(labels, prometheus_value(a.overspent_budget));
  }
  for (const auto& f : agent_families)
    f.family.append_to(out);
  consumes.append_to(out);
  overspent.append_to(out);
}

// The enum-gauge pattern: one series per level of the agent's table, 1 for the level it is at.
// The level is the degradation object's own reading, taken just after the snapshot.
template <PrometheusSource Coordinator>
void append_prometheus_service_levels(std::string& out, const PrometheusSnapshot<Coordinator>& s,
                                      const BasicGracefulDegradation<Coordinator>& degradation) {
  PrometheusFamily family("safeguards_agent_service_level", "gauge",
                          "1 for the service level the agent is at, 0 for the other levels of "
                          "its table.");
  for (std::size_t i = 0; i < s.agents.size(); ++i) {
    const auto& a = s.agents[i];
    std::string current;
    try {
      current = degradation.service_level(a.id).name;
    } catch (const UnknownAgent&) {
      continue; // removed since the snapshot: it has no level any more
    }
    std::string priority = std::to_string(a.priority);
    for (const auto& level : degradation.levels_for(a.id).levels())
      family.add({{"agent", a.name},
                  {"pool", s.agent_pools[i]},
                  {"priority", priority},
                  {"level", level.name}},
                 level.name == current ? "1" : "0");
  }
  family.append_to(out);
}

} // namespace detail

/// Every pool's and agent's numbers as Prometheus text (exposition format 0.0.4), ready to be
/// served on `/metrics` with `prometheus_content_type`.
///
/// Gauges `safeguards_pool_{initial,allocated,unallocated,used,reserved,remaining}_budget` and
/// `safeguards_pool_agents` are labelled `pool` and `priority` (the pool's);
/// `safeguards_agent_{initial,used,reserved,remaining}_budget` and the counters
/// `safeguards_agent_consumes_total` and `safeguards_agent_overspent_total` are labelled
/// `agent`, `pool` and `priority` (the agent's). Pools come highest priority first, agents
/// oldest first; removed agents are left out. The overload with a `GracefulDegradation` adds
/// each agent's service level.
///
/// Amounts are written as the amount type's exact text (a `Decimal` as "12.345678"), never
/// rounded through a double. Label values are escaped as the format says, and bytes that are
/// not UTF-8 become U+FFFD, so no name can break a scrape. The text is built before anything
/// is written: an exception leaves `out` untouched.
///
/// Pools are read in one snapshot and agents in another (each consistent in itself); under
/// concurrent spending a pool's sums can differ from its agents' numbers by what happened in
/// between, as any scrape of a live system does.
///
/// **Example**
/// ```
/// BudgetCoordinator coord;
/// PoolId p = coord.create_pool({.name = "research", .initial_budget = 100_d, .priority = 7});
/// AgentId a = coord.create_agent({.name = "writer", .initial_budget = 40_d, .pool = p});
/// coord.consume(a, 2.5_d);
/// write_prometheus(coord, std::cout);
/// // ... safeguards_agent_used_budget{agent="writer",pool="research",priority="5"} 2.5
/// ```
template <PrometheusSource Coordinator>
void write_prometheus(const Coordinator& coord, std::ostream& out);

/// `write_prometheus`'s text as a string.
template <PrometheusSource Coordinator>
std::string to_prometheus(const Coordinator& coord) {
  detail::PrometheusSnapshot<Coordinator> snapshot(coord);
  std::string text;
  detail::append_prometheus_metrics(text, coord, snapshot);
  return text;
}

template <PrometheusSource Coordinator>
void write_prometheus(const Coordinator& coord, std::ostream& out) {
  out << to_prometheus(coord);
}

/// `to_prometheus(coord)` plus each agent's service level as an enum gauge: one series per
/// level of the agent's table, labelled `agent`, `pool`, `priority` and `level`, 1 for the
/// level `degradation.service_level(agent)` says and 0 for the others, so that
/// `safeguards_agent_service_level == 1` selects every agent's current level and a change of
/// level is a pair of flips an alert can watch.
///
/// **Example**
/// ```
/// GracefulDegradation degradation(coord);
/// write_prometheus(coord, std::cout, degradation);
/// // safeguards_agent_service_level{agent="writer",...,level="full"} 1
/// // safeguards_agent_service_level{agent="writer",...,level="standard"} 0
/// ```
template <PrometheusSource Coordinator>
std::string to_prometheus(const Coordinator& coord,
                          const BasicGracefulDegradation<Coordinator>& degradation) {
  detail::PrometheusSnapshot<Coordinator> snapshot(coord);
  std::string text;
  detail::append_prometheus_metrics(text, coord, snapshot);
  detail::append_prometheus_service_levels(text, snapshot, degradation);
  return text;
}

/// `write_prometheus` with each agent's service level; see `to_prometheus` above.
template <PrometheusSource Coordinator>
void write_prometheus(const Coordinator& coord, std::ostream& out,
                      const BasicGracefulDegradation<Coordinator>& degradation) {
  out << to_prometheus(coord, degradation);
}

} // namespace v1
} // namespace safeguards
