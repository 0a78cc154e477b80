// The operation-sequence check shared by the fuzzer (tests/fuzz/coordinator_ops_fuzz.cpp) and
// its replay test (tests/coordinator_ops_test.cpp): bytes decode into coordinator operations,
// each applied both to a BasicBudgetCoordinator and to a small reference model written here
// with plain 128-bit integers, no atomics and no sharing with the library's code. After every
// step the statuses (or exception types), every agent's and pool's numbers, each agent's service
// level, conservation and `check_invariants()` must agree.
// SPDX-License-Identifier: MIT
#pragma once

#include "reference.hpp"

#include <algorithm>
#include <any>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <optional>
#include <safeguards/coordinator.hpp>
#include <safeguards/period.hpp>
#include <span>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

namespace safeguards_test {

using safeguards::AgentId;
using safeguards::BudgetPeriod;
using safeguards::ConsumeStatus;
using safeguards::Decimal;
using safeguards::PoolId;

// The model's world: amounts in raw units (Decimal's micro-units) as 128-bit integers, so that
// the model itself can neither overflow nor round.
struct ModelAgent {
  AgentId id;
  std::size_t pool = 0; // index into OperationSequence::pools_
  int priority = 5;     // AgentSpec's default
  bool removed = false;
  i128 allocated = 0, remaining = 0, used = 0, reserved = 0, overspent = 0;
  std::uint64_t charges = 0;
  std::optional<i128> veto_above; // a check monitor refuses consumes and reserves above this
  bool observed = false;
  bool nested = false; // an observer that spends from its own agent and from the sink
};

struct ModelPool {
  PoolId id;
  i128 initial = 0, unallocated = 0;
  int priority = 5; // PoolSpec's default, and an implicit pool's agent's
};

// A budget period of fixed length from the clock's epoch (`BudgetPeriod::every`), in
// nanoseconds: the window it is in starts at `start`.
struct ModelPeriod {
  std::int64_t length = 0, start = 0;
};

struct ModelReservation {
  std::size_t agent = 0;
  bool active = false;
  i128 estimate = 0, held = 0, charged = 0, settled = 0;
};

// One run. `run` returns an empty string when coordinator and model agreed on every step, else
// a description of the first disagreement (the step, the operation, both sides).
//
// The options a ledger is made with: none for the in-memory one.
template <class L>
struct LedgerOptions {
  using type = int;
};
template <class L>
requires requires {
  typename L::options_type;
}
struct LedgerOptions<L> {
  using type = typename L::options_type;
};

// `L` is the ledger under the coordinator: the in-memory one, or a `RedisLedger` (whose options
// the constructor takes), for which the same model must hold.
template <class L = safeguards::InMemoryLedger<Decimal>>
class BasicOperationSequence {
public:
  using Coordinator = safeguards::BasicBudgetCoordinator<Decimal, safeguards::FixedAllocation,
                                                         safeguards::ManualClock, L>;
  using Reservation = typename Coordinator::Reservation;
  using Event = typename Coordinator::UsageEvent;
  using ns = std::chrono::nanoseconds;

  BasicOperationSequence() = default;
  template <class Options>
  explicit BasicOperationSequence(Options ledger_options)
      : ledger_options_(std::move(ledger_options)) {}

  static inline const i128 max_account = L::max_balance()->raw();
  static constexpr i128 raw_limit = raw_max; // Decimal's range
  static constexpr std::size_t max_agents = 6;
  static constexpr std::size_t max_reservations = 8;
  static constexpr i128 sink_budget = 1'000'000'000'000;
  static constexpr std::size_t sink_pool = 1; // pools_[0] is the shared pool

  std::string run(std::span<const std::uint8_t> bytes) {
    bytes_ = bytes;
    // Declared before what refers to it, so reservations and monitors go first.
    if constexpr (requires { typename L::options_type; }) {
      Coordinator coord(*ledger_options_, {}, {}, clock_);
      return run_on(coord);
    } else {
      Coordinator coord({}, {}, clock_);
      return run_on(coord);
    }
  }

private:
  std::string run_on(Coordinator& coord) {
    coord_ = &coord;
    safeguards::BasicBudgetPeriods<Coordinator> periods(coord); // destroyed before coord
    periods_ = &periods;
    std::vector<Reservation> reservations;
    reservations_ = &reservations;
    std::vector<safeguards::MonitorHandle> vetoes(max_agents), observers(max_agents);
    vetoes_ = &vetoes;
    observers_ = &observers;

    const i128 pool_budget = next() < 128 ? 1'000'000'000 : (i128{1} << 56);
    pools_.push_back({coord.create_pool({.name = "shared", .initial_budget = dec(pool_budget)}),
                      pool_budget, pool_budget});
    // Nested observers spend from the sink, an agent of its own pool that no operation picks.
    sink_.id = coord.create_agent({.name = "nested-sink", .initial_budget = dec(sink_budget)});
    sink_.allocated = sink_.remaining = sink_budget;
    pools_.push_back({coord.agent_pool(sink_.id), sink_budget, 0});
    sink_.pool = sink_pool;
    std::vector<safeguards::MonitorHandle> nested(max_agents);
    nested_ = &nested;
    for (step_ = 0; error_.empty() && pos_ < bytes_.size(); ++step_) {
      apply_one();
      if (error_.empty())
        compare();
    }
    // Dropped reservations give back what they hold.
    op_ = "end of run";
    nested.clear();
    observers.clear();
    vetoes.clear();
    for (ModelReservation& m : model_reservations_)
      release_model(m);
    reservations.clear();
    if (error_.empty())
      compare();
    return error_;
  }

  // ---- decoding ----
  std::uint8_t next() { return pos_ < bytes_.size() ? bytes_[pos_++] : 0; }

  // Mostly small amounts, some zero, negative, tiny, at the account's limit and past it.
  i128 amount() {
    const std::uint8_t k = next();
    if (k < 200)
      return i128{k} * 1000;
    if (k < 240)
      return k - 199;
    if (k < 248)
      return -i128{k - 239} * 1000;
    switch (k) {
    case 248:
      return max_account;
    case 249:
      return max_account + 1;
    case 250:
      return max_account - 1000;
    case 251:
      return raw_limit;
    case 252:
      return i128{1} << 40;
    default:
      return 1'000'000 * i128{k - 252};
    }
  }
  static Decimal dec(i128 raw) { return Decimal::from_raw(static_cast<std::int64_t>(raw)); }
  static i128 raw(const Decimal& d) { return d.raw(); }

  std::optional<std::size_t> agent_index() {
    if (agents_.empty())
      return std::nullopt;
    return next() % agents_.size();
  }

  // ---- checks ----
  template <class... Args>
  void fail(fmt::format_string<Args...> f, Args&&... args) {
    if (error_.empty())
      error_ =
          fmt::format("step {} ({}): {}", step_, op_, fmt::format(f, std::forward<Args>(args)...));
  }
  static std::string str(i128 v) {
    return v >= raw_min && v <= raw_max ? dec(v).to_string() : std::string("<out of range>");
  }
  void expect_status(ConsumeStatus got, ConsumeStatus want) {
    if (got != want)
      fail("status {}, model {}", got, want);
  }
  template <class F>
  void expect_throw(F&& f, const char* want) { // want: nullptr for no exception
    const char* got = nullptr;
    try {
      f();
    } catch (const safeguards::PoolExhausted&) {
      got = "PoolExhausted";
    } catch (const safeguards::AmountOverflow&) {
      got = "AmountOverflow";
    } catch (const safeguards::UnknownAgent&) {
      got = "UnknownAgent";
    } catch (const safeguards::BudgetExceeded&) {
      got = "BudgetExceeded";
    } catch (const safeguards::InvalidArgument&) {
      got = "InvalidArgument";
    } catch (const std::exception& e) {
      got = typeid(e).name();
    }
    const std::string g = got ? got : "no exception", w = want ? want : "no exception";
    if (g != w)
      fail("threw {}, model {}", g, w);
  }

  // A service level table as the model sees it: each level's name and minimum share, in %.
  struct ModelLevels {
    std::vector<std::pair<std::string, i128>> rows;

    // `ServiceLevels::index_for`: the first level whose minimum share the remaining balance
    // reaches, exactly; the last for an empty allocation.
    const std::string& level_for(i128 remaining, i128 allocated) const {
      if (allocated > 0 && remaining >= 0)
        for (std::size_t k = 0; k + 1 < rows.size(); ++k)
          if (remaining * 100 >= rows[k].second * allocated)
            return rows[k].first;
      return rows.back().first;
    }
    safeguards::ServiceLevels table() const {
      std::vector<safeguards::ServiceLevel> levels;
      for (const auto& [name, min] : rows)
        levels.push_back({name, static_cast<std::int64_t>(min), {}});
      return safeguards::ServiceLevels(std::move(levels));
    }
  };
  // The guide's table, written out here rather than read from `guide_default()`, and one whose
  // edges (all of it, a third, one percent) land exactly on round balances.
  inline static const ModelLevels guide_levels{
      {{"full", 50}, {"standard", 20}, {"minimal", 5}, {"emergency", 0}}};
  inline static const ModelLevels edge_levels{
      {{"all", 100}, {"third", 33}, {"one", 1}, {"none", 0}}};

  void compare() {
    const auto problems = coord_->check_invariants();
    if (!problems.empty())
      fail("check_invariants: {}", problems.front());
    for (std::size_t p = 0; p < pools_.size(); ++p) {
      const auto m = coord_->pool_metrics(pools_[p].id);
      if (raw(m.unallocated_budget) != pools_[p].unallocated)
        fail("pool {} unallocated {}, model {}", p, m.unallocated_budget.to_string(),
             str(pools_[p].unallocated));
      if (raw(m.initial_budget) != pools_[p].initial || m.priority != pools_[p].priority)
        fail("pool {} initial {} priority {}, model {} {}", p, m.initial_budget.to_string(),
             m.priority, str(pools_[p].initial), pools_[p].priority);
      i128 allocated = pools_[p].unallocated + (p == sink_pool ? sink_.allocated : 0);
      for (const auto& a : agents_)
        if (a.pool == p)
          allocated += a.allocated;
      if (allocated != pools_[p].initial)
        fail("model: pool {} not conserved", p);
    }
    for (std::size_t i = 0; i <= agents_.size(); ++i) { // the sink last
      const ModelAgent& a = i < agents_.size() ? agents_[i] : sink_;
      const auto m = coord_->agent_metrics(a.id);
      const i128 got[] = {raw(m.initial_budget), raw(m.remaining_budget), raw(m.used_budget),
                          raw(m.reserved_budget), raw(m.overspent_budget)};
      const i128 want[] = {a.allocated, a.remaining, a.used, a.reserved, a.overspent};
      const char* names[] = {"allocated", "remaining", "used", "reserved", "overspent"};
      for (std::size_t k = 0; k < 5; ++k) {
        if (got[k] != want[k])
          fail("agent {} {} {}, model {}", i, names[k], str(got[k]), str(want[k]));
        if (got[k] < 0)
          fail("agent {} {} negative", i, names[k]);
      }
      if (m.consumption_count != a.charges)
        fail("agent {} charge count {}, model {}", i, m.consumption_count, a.charges);
      if (a.allocated != a.remaining + a.used + a.reserved)
        fail("model: agent {} not conserved", i);
      if (!a.removed && coord_->agent_priority(a.id) != a.priority)
        fail("agent {} priority {}, model {}", i, coord_->agent_priority(a.id), a.priority);
      const std::string guide = coord_->service_level(a.id).name;
      const std::string edge = coord_->service_level(a.id, edge_table_).name;
      const std::string& guide_want = guide_levels.level_for(a.remaining, a.allocated);
      const std::string& edge_want = edge_levels.level_for(a.remaining, a.allocated);
      if (guide != guide_want || edge != edge_want)
        fail("agent {} service levels {} and {}, model {} and {}", i, guide, edge, guide_want,
             edge_want);
    }
  }

  // ---- operations ----
  void apply_one() {
    switch (next() % 19) {
    case 0:
      return create_agent();
    case 1:
    case 2:
      return consume();
    case 3:
    case 4:
      return reserve();
    case 5:
      return commit();
    case 6:
      return commit_partial();
    case 7:
      return release();
    case 8:
      return update_budget();
    case 9:
      return transfer();
    case 10:
      return remove_agent();
    case 11:
      return reset_usage();
    case 13:
      return allocate();
    case 14:
      return stash();
    case 15:
      return emergency();
    case 16:
      return set_priority();
    case 17:
      return set_period();
    case 18:
      return tick();
    default:
      return toggle_monitor();
    }
  }

  void create_agent() {
    op_ = "create_agent";
    const bool implicit = next() % 4 == 0;
    const i128 budget = amount();
    if (agents_.size() >= max_agents)
      return;
    const std::string name = fmt::format("agent-{}", agents_.size());
    const char* want = nullptr;
    if (budget < 0)
      want = "InvalidArgument";
    else if (!implicit && pools_[0].unallocated < budget)
      want = "PoolExhausted";
    else if (budget > max_account)
      want = "AmountOverflow";
    std::optional<AgentId> id;
    expect_throw(
        [&] {
          id = implicit ? coord_->create_agent({.name = name, .initial_budget = dec(budget)})
                        : coord_->create_agent(
                              {.name = name, .initial_budget = dec(budget), .pool = pools_[0].id});
        },
        want);
    if (want || !id)
      return;
    ModelAgent a;
    a.id = *id;
    a.allocated = a.remaining = budget;
    if (implicit) {
      pools_.push_back({coord_->agent_pool(*id), budget, 0});
      a.pool = pools_.size() - 1;
    } else {
      pools_[0].unallocated -= budget;
    }
    agents_.push_back(a);
  }

  // What a consume or reserve of `amount` must answer, before it changes anything.
  ConsumeStatus refusal(const ModelAgent& a, i128 amount) const {
    if (amount <= 0)
      return ConsumeStatus::invalid_amount;
    if (a.removed)
      return ConsumeStatus::unknown_agent;
    if (a.remaining < amount)
      return ConsumeStatus::insufficient;
    if (a.veto_above && amount > *a.veto_above)
      return ConsumeStatus::denied_by_monitor;
    return ConsumeStatus::ok;
  }

  void consume() {
    op_ = "try_consume";
    const auto i = agent_index();
    const i128 x = amount();
    if (!i)
      return;
    ModelAgent& a = agents_[*i];
    const ConsumeStatus want = refusal(a, x);
    const auto seen = events_;
    nested_statuses_.clear();
    expect_status(coord_->try_consume(a.id, dec(x)).status(), want);
    if (want != ConsumeStatus::ok)
      return;
    a.remaining -= x;
    a.used += x;
    ++a.charges;
    if (a.nested) {
      // Its own agent refuses a monitor of its own as re-entrant; the sink pays.
      const ConsumeStatus sink_wants = refusal(sink_, 1);
      if (nested_statuses_.size() != 2 || nested_statuses_[0] != ConsumeStatus::reentrant_call ||
          nested_statuses_[1] != sink_wants)
        fail("nested spends: {} statuses, first {}, second {}; model reentrant_call, {}",
             nested_statuses_.size(),
             nested_statuses_.empty() ? ConsumeStatus::ok : nested_statuses_[0],
             nested_statuses_.size() < 2 ? ConsumeStatus::ok : nested_statuses_[1], sink_wants);
      if (sink_wants == ConsumeStatus::ok) {
        --sink_.remaining;
        ++sink_.used;
        ++sink_.charges;
      }
    } else if (!nested_statuses_.empty()) {
      fail("{} nested spends from an agent without a nested observer", nested_statuses_.size());
    }
    if (a.observed) {
      if (events_ != seen + 1)
        fail("{} events for one consume", events_ - seen);
      else if (raw(last_.amount) != x || raw(last_.remaining_after) != a.remaining ||
               raw(last_.used_after) != a.used)
        fail("event amount {} remaining_after {} used_after {}, model {} {} {}",
             last_.amount.to_string(), last_.remaining_after.to_string(),
             last_.used_after.to_string(), str(x), str(a.remaining), str(a.used));
    }
  }

  void reserve() {
    op_ = "try_reserve";
    const auto i = agent_index();
    const i128 x = amount();
    if (!i || reservations_->size() >= max_reservations)
      return;
    ModelAgent& a = agents_[*i];
    const ConsumeStatus want = refusal(a, x);
    Reservation r = coord_->try_reserve(a.id, dec(x));
    expect_status(r.status(), want);
    if (want != ConsumeStatus::ok)
      return;
    a.remaining -= x;
    a.reserved += x;
    reservations_->push_back(std::move(r));
    model_reservations_.push_back({*i, true, x, x, 0, 0});
  }

  std::optional<std::size_t> reservation_index() {
    if (reservations_->empty())
      return std::nullopt;
    return next() % reservations_->size();
  }

  // The ledger's settlement of `actual` against `held`, as the Reservation documents it.
  struct Settled {
    i128 charged = 0, refunded = 0, uncovered = 0;
  };
  Settled settle(ModelAgent& a, i128 held, i128 actual) {
    const i128 from_hold = actual < held ? actual : held;
    const i128 refund = held - from_hold;
    const i128 overage = actual - from_hold;
    const i128 extra = a.removed ? 0 : (overage < a.remaining ? overage : a.remaining);
    a.reserved -= held;
    a.used += from_hold + extra;
    if (a.removed) { // the refund goes back to the pool
      a.allocated -= refund;
      pools_[a.pool].unallocated += refund;
    } else {
      a.remaining += refund - extra;
    }
    if (from_hold + extra > 0)
      ++a.charges;
    const i128 uncovered = overage - extra;
    a.overspent = a.overspent + uncovered > raw_max ? raw_max : a.overspent + uncovered;
    return {from_hold + extra, refund, uncovered};
  }

  void expect_commit(const typename Coordinator::CommitResult& got, ConsumeStatus want,
                     const Settled& s) {
    expect_status(got.status, want);
    if (want == ConsumeStatus::ok &&
        (raw(got.charged) != s.charged || raw(got.refunded) != s.refunded ||
         raw(got.overspent) != s.uncovered))
      fail("commit charged {} refunded {} overspent {}, model {} {} {}", got.charged.to_string(),
           got.refunded.to_string(), got.overspent.to_string(), str(s.charged), str(s.refunded),
           str(s.uncovered));
  }

  void commit() {
    op_ = "commit";
    const auto k = reservation_index();
    const i128 actual = amount();
    if (!k)
      return;
    ModelReservation& m = model_reservations_[*k];
    Settled s;
    ConsumeStatus want = ConsumeStatus::ok;
    if (!m.active)
      want = ConsumeStatus::not_active;
    else if (actual < 0)
      want = ConsumeStatus::invalid_amount;
    else {
      const i128 rest = m.settled < actual ? actual - m.settled : 0;
      s = settle(agents_[m.agent], m.held, rest);
      m.charged += s.charged;
      if (m.settled < actual)
        m.settled = actual;
      m.held = 0;
      m.active = false;
    }
    expect_commit((*reservations_)[*k].commit(dec(actual)), want, s);
  }

  void commit_partial() {
    op_ = "commit_partial";
    const auto k = reservation_index();
    const i128 x = amount();
    if (!k)
      return;
    ModelReservation& m = model_reservations_[*k];
    Settled s;
    ConsumeStatus want = ConsumeStatus::ok;
    if (!m.active)
      want = ConsumeStatus::not_active;
    else if (x <= 0 || m.settled + x > raw_max)
      want = ConsumeStatus::invalid_amount;
    else {
      const i128 from_hold = x < m.held ? x : m.held;
      m.settled += x;
      s = settle(agents_[m.agent], from_hold, x);
      m.held -= from_hold;
      m.charged += s.charged;
    }
    expect_commit((*reservations_)[*k].commit_partial(dec(x)), want, s);
  }

  void release() {
    op_ = "release";
    const auto k = reservation_index();
    if (!k)
      return;
    release_model(model_reservations_[*k]);
    (*reservations_)[*k].release();
  }

  void release_model(ModelReservation& m) {
    if (m.active && m.held > 0) {
      ModelAgent& a = agents_[m.agent];
      a.reserved -= m.held;
      if (a.removed) {
        a.allocated -= m.held;
        pools_[a.pool].unallocated += m.held;
      } else {
        a.remaining += m.held;
      }
    }
    m.held = 0;
    m.active = false;
  }

  void update_budget() {
    op_ = "update_budget";
    const auto i = agent_index();
    const i128 x = amount();
    if (!i)
      return;
    ModelAgent& a = agents_[*i];
    const i128 delta = x - a.remaining;
    const char* want = nullptr;
    if (x < 0)
      want = "InvalidArgument";
    else if (a.removed)
      want = "UnknownAgent";
    else if (pools_[a.pool].unallocated < delta)
      want = "PoolExhausted";
    else if (delta > 0 && a.allocated + delta > max_account)
      want = "AmountOverflow";
    expect_throw([&] { coord_->update_budget(a.id, dec(x), "fuzz"); }, want);
    if (want)
      return;
    a.remaining = x;
    a.allocated += delta;
    pools_[a.pool].unallocated -= delta;
  }

  void transfer() {
    op_ = "transfer";
    const auto i = agent_index();
    const auto j = agent_index();
    const i128 x = amount();
    if (!i || !j)
      return;
    ModelAgent& from = agents_[*i];
    ModelAgent& to = agents_[*j];
    const char* want = nullptr;
    if (x <= 0)
      want = "InvalidArgument";
    else if (from.removed || to.removed)
      want = "UnknownAgent";
    else if (from.pool != to.pool || *i == *j)
      want = "InvalidArgument";
    else if (to.allocated + x > max_account)
      want = "AmountOverflow";
    else if (from.remaining < x)
      want = "BudgetExceeded";
    expect_throw([&] { coord_->transfer(from.id, to.id, dec(x), "fuzz"); }, want);
    if (want)
      return;
    from.remaining -= x;
    from.allocated -= x;
    to.remaining += x;
    to.allocated += x;
  }

  void remove_agent() {
    op_ = "remove_agent";
    const auto i = agent_index();
    if (!i)
      return;
    ModelAgent& a = agents_[*i];
    expect_throw([&] { coord_->remove_agent(a.id); }, a.removed ? "UnknownAgent" : nullptr);
    if (a.removed)
      return;
    pools_[a.pool].unallocated += a.remaining;
    a.allocated -= a.remaining;
    a.remaining = 0;
    a.removed = true;
    // Its data slot is emptied: a reservation kept there is released (after the sweep, so
    // into the pool when it is this agent's own).
    if (auto it = slots_.find(*i); it != slots_.end()) {
      release_model(it->second);
      slots_.erase(it);
    }
    (*vetoes_)[*i] = {}; // monitors of a removed agent see nothing more
    (*observers_)[*i] = {};
    (*nested_)[*i] = {};
    a.veto_above.reset();
    a.observed = false;
    a.nested = false;
  }

  void reset_usage() {
    op_ = "reset_usage";
    const auto i = agent_index();
    if (!i)
      return;
    ModelAgent& a = agents_[*i];
    Decimal forgiven;
    expect_throw([&] { forgiven = coord_->reset_usage(a.id, "fuzz"); },
                 a.removed ? "UnknownAgent" : nullptr);
    if (a.removed)
      return;
    if (raw(forgiven) != a.used)
      fail("reset_usage forgave {}, model {}", forgiven.to_string(), str(a.used));
    a.remaining += a.used;
    a.used = 0;
  }

  // The strategies' choices are not modelled (they have their own tests): the model takes the
  // new balances from the result and checks that they are possible, that the coordinator applied
  // exactly them, and that no money appeared or vanished.
  void allocate() {
    op_ = "allocate";
    const std::uint8_t which = next();
    std::size_t p = which / 4 % pools_.size();
    if (p == sink_pool) // the sink's balance is the nested observers' business
      p = 0;
    ModelPool& pool = pools_[p];
    i128 distributable = pool.unallocated;
    std::vector<std::size_t> live;
    for (std::size_t i = 0; i < agents_.size(); ++i)
      if (agents_[i].pool == p && !agents_[i].removed) {
        live.push_back(i); // ascending ids: agents_ is in creation order
        distributable += agents_[i].remaining;
      }
    safeguards::AllocationResult result;
    try {
      switch (which % 4) {
      case 0:
        result = coord_->allocate(pool.id, safeguards::FixedAllocation{});
        break;
      case 1:
        result = coord_->allocate(pool.id, safeguards::DynamicAllocation{});
        break;
      case 2:
        result = coord_->allocate(pool.id, safeguards::PriorityAllocation{});
        break;
      default:
        result = coord_->allocate(pool.id, safeguards::RebalanceAllocation{});
        break;
      }
    } catch (const safeguards::AmountOverflow&) {
      // Possible only when some account could be given more than it may hold.
      bool possible = false;
      for (std::size_t i : live)
        possible = possible || distributable + agents_[i].used + agents_[i].reserved > max_account;
      if (!possible)
        fail("AmountOverflow with {} to distribute", str(distributable));
      return;
    } catch (const std::exception& e) {
      fail("threw {}", e.what());
      return;
    }
    if (raw(result.distributable) != distributable ||
        raw(result.unallocated_before) != pool.unallocated)
      fail("distributable {} unallocated before {}, model {} {}", result.distributable.to_string(),
           result.unallocated_before.to_string(), str(distributable), str(pool.unallocated));
    if (result.changes.size() != live.size()) {
      fail("{} changes for {} live agents", result.changes.size(), live.size());
      return;
    }
    i128 handed_out = 0;
    for (std::size_t k = 0; k < live.size(); ++k) {
      const auto& c = result.changes[k];
      ModelAgent& a = agents_[live[k]];
      const i128 next_remaining = raw(c.new_remaining);
      if (c.agent != a.id || raw(c.old_remaining) != a.remaining || next_remaining < 0) {
        fail("change {}: agent {} {} -> {}, model agent {} remaining {}", k, c.agent.value(),
             c.old_remaining.to_string(), c.new_remaining.to_string(), a.id.value(),
             str(a.remaining));
        return;
      }
      a.allocated += next_remaining - a.remaining;
      a.remaining = next_remaining;
      handed_out += next_remaining;
    }
    if (handed_out > distributable)
      fail("handed out {} of {}", str(handed_out), str(distributable));
    pool.unallocated = distributable - handed_out;
    if (raw(result.unallocated_after) != pool.unallocated)
      fail("unallocated after {}, model {}", result.unallocated_after.to_string(),
           str(pool.unallocated));
  }

  // Moves an open reservation into an agent's data slot (`set_agent_data`, as a shared_ptr: the
  // slot is a std::any), or empties the slot; what the slot held before is destroyed, so a
  // reservation kept there is released. The moved-from reservation answers `not_active`.
  void stash() {
    op_ = "set_agent_data";
    const auto i = agent_index();
    const std::uint8_t k = next();
    if (!i)
      return;
    ModelAgent& a = agents_[*i];
    const bool clear = reservations_->empty() || k % 4 == 0;
    const std::size_t r = reservations_->empty() ? 0 : k % reservations_->size();
    std::any data;
    if (!clear)
      data = std::make_shared<Reservation>(std::move((*reservations_)[r]));
    expect_throw([&] { coord_->set_agent_data(a.id, std::move(data)); },
                 a.removed ? "UnknownAgent" : nullptr);
    if (a.removed) // the slot was not touched; `data` (the reservation, if any) is released here
      return release_moved(clear ? std::nullopt : std::optional<std::size_t>(r));
    if (auto it = slots_.find(*i); it != slots_.end()) {
      release_model(it->second);
      slots_.erase(it);
    }
    if (!clear) {
      slots_[*i] = model_reservations_[r];
      model_reservations_[r].active = false;
      model_reservations_[r].held = 0;
    }
  }

  // A reservation moved into a std::any that was then dropped.
  void release_moved(std::optional<std::size_t> r) {
    if (!r)
      return;
    release_model(model_reservations_[*r]);
  }

  // Adds or removes a veto check (refusing amounts above a limit), an observer, which checks the
  // event of each observed consume against the model, or a nested observer, which spends from
  // inside its callback: from its own agent (refused, `reentrant_call`: this thread is running
  // that agent's monitors) and from the sink (a plain consume).
  void toggle_monitor() {
    op_ = "add/remove monitor";
    const auto i = agent_index();
    const std::uint8_t kind = next() % 3;
    const i128 limit = amount();
    if (!i || agents_[*i].removed)
      return;
    ModelAgent& a = agents_[*i];
    if (kind == 2) {
      auto& handle = (*nested_)[*i];
      if (a.nested) {
        handle = {};
        a.nested = false;
      } else {
        handle = coord_->add_monitor(a.id, [this, self = a.id](const Event& e) {
          if (e.kind != safeguards::UsageKind::consume)
            return;
          nested_statuses_.push_back(coord_->try_consume(self, dec(1)).status());
          nested_statuses_.push_back(coord_->try_consume(sink_.id, dec(1)).status());
        });
        a.nested = true;
      }
    } else if (kind == 0) {
      auto& handle = (*vetoes_)[*i];
      if (a.veto_above) {
        handle = {};
        a.veto_above.reset();
      } else {
        handle =
            coord_->add_monitor(a.id, [limit](const Event& e) { return raw(e.amount) <= limit; });
        a.veto_above = limit;
      }
    } else {
      auto& handle = (*observers_)[*i];
      if (a.observed) {
        handle = {};
        a.observed = false;
      } else {
        handle = coord_->add_monitor(a.id, [this](const Event& e) {
          ++events_;
          last_ = e;
        });
        a.observed = true;
      }
    }
  }

  // The guide's emergency grant under the default `EmergencyPolicy`: priority 7 or more gets all
  // it asks, a reason mentioning "critical" (in any case) half of it rounded down, anything else
  // nothing. The money comes from the agent's own pool first, then from pools of lower priority,
  // lowest first (ties: lower id), each giving what it has; a pool that gives moves that much of
  // its initial budget with it.
  void emergency() {
    op_ = "emergency_allocation";
    const auto i = agent_index();
    const i128 x = amount();
    static constexpr const char* reasons[] = {"critical outage", "routine top-up", "a CrItIcAl bug",
                                              ""};
    const std::string reason = reasons[next() % 4];
    if (!i)
      return;
    ModelAgent& a = agents_[*i];
    const char* want = nullptr;
    if (x <= 0 || reason.empty())
      want = "InvalidArgument";
    else if (a.removed)
      want = "UnknownAgent";
    std::string lower = reason;
    for (char& c : lower)
      c = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    const bool full = a.priority >= 7;
    const bool critical = lower.find("critical") != std::string::npos;
    i128 approved = 0;
    if (full)
      approved = x;
    else if (critical)
      approved = x * 500'000 / 1'000'000; // x > 0 here: division rounds down
    // Where it comes from: own pool, then lower priorities, lowest first, then lower id.
    std::vector<std::size_t> order;
    for (std::size_t p = 0; p < pools_.size(); ++p)
      if (p != a.pool && pools_[p].priority < pools_[a.pool].priority)
        order.push_back(p);
    std::sort(order.begin(), order.end(), [&](std::size_t p, std::size_t q) {
      return pools_[p].priority != pools_[q].priority ? pools_[p].priority < pools_[q].priority
                                                      : pools_[p].id.value() < pools_[q].id.value();
    });
    order.insert(order.begin(), a.pool);
    std::vector<std::pair<std::size_t, i128>> sources;
    i128 granted = 0;
    for (std::size_t p : order) {
      const i128 take = std::min(pools_[p].unallocated, approved - granted);
      if (take > 0) {
        sources.emplace_back(p, take);
        granted += take;
      }
    }
    if (!want && granted > 0 && a.allocated + granted > max_account)
      want = "AmountOverflow";
    safeguards::EmergencyGrant got;
    expect_throw([&] { got = coord_->emergency_allocation(a.id, dec(x), reason); }, want);
    if (want)
      return;
    const char* decision = full ? "approved in full" : critical ? "approved 0.5" : "denied";
    bool same = raw(got.requested) == x && raw(got.approved) == approved &&
                raw(got.granted) == granted && got.sources.size() == sources.size() &&
                got.decision.starts_with(decision);
    for (std::size_t k = 0; same && k < sources.size(); ++k)
      same = got.sources[k].pool == pools_[sources[k].first].id &&
             raw(got.sources[k].amount) == sources[k].second;
    if (!same) {
      std::string got_from, want_from;
      for (const auto& source : got.sources)
        got_from += fmt::format(" {}:{}", source.pool.value(), source.amount.to_string());
      for (const auto& [p, take] : sources)
        want_from += fmt::format(" {}:{}", pools_[p].id.value(), str(take));
      fail("requested {} approved {} granted {} from pools{} \"{}\"; model {} {} {} from "
           "pools{} \"{}\"",
           got.requested.to_string(), got.approved.to_string(), got.granted.to_string(), got_from,
           got.decision, str(x), str(approved), str(granted), want_from, decision);
    }
    for (const auto& [p, take] : sources) {
      if (p != a.pool) { // another pool's money moves with its share of the initial budget
        pools_[p].initial -= take;
        pools_[a.pool].initial += take;
      }
      pools_[p].unallocated -= take;
      a.allocated += take;
      a.remaining += take;
    }
  }

  // An agent's or a pool's priority, 0 and 11 included (out of range: `InvalidPriority`).
  void set_priority() {
    op_ = "set_priority";
    const std::uint8_t target = next();
    const int priority = next() % 12;
    const bool valid = priority >= safeguards::min_priority && priority <= safeguards::max_priority;
    if (target % 2 == 1) {
      op_ = "set_pool_priority";
      ModelPool& p = pools_[target / 2 % pools_.size()];
      expect_throw([&] { coord_->set_pool_priority(p.id, priority); },
                   valid ? nullptr : "InvalidArgument");
      if (valid)
        p.priority = priority;
      return;
    }
    if (agents_.empty())
      return;
    ModelAgent& a = agents_[target / 2 % agents_.size()];
    const char* want = a.removed ? "UnknownAgent" : valid ? nullptr : "InvalidArgument";
    expect_throw([&] { coord_->set_priority(a.id, priority); }, want);
    if (!want)
      a.priority = priority;
  }

  // Gives an agent or a pool a period of fixed length (`BudgetPeriod::every`, from the clock's
  // epoch), or takes it away. Its window starts at the period containing now; nothing is reset.
  void set_period() {
    op_ = "set_period";
    const std::uint8_t target = next();
    const std::uint8_t k = next();
    static constexpr std::int64_t hour = 3'600'000'000'000;
    static constexpr std::int64_t lengths[] = {hour, 3 * hour, 24 * hour};
    const std::int64_t length = lengths[k / 4 % 3];
    const std::int64_t now = clock_.now().time_since_epoch().count();
    const ModelPeriod period{length, now - now % length};
    if (target % 2 == 1) {
      std::size_t p = target / 2 % pools_.size();
      if (p == sink_pool) // the sink's balance is the nested observers' business
        p = 0;
      const std::uint64_t key = pools_[p].id.value();
      if (k % 4 == 0) {
        op_ = "clear_period(pool)";
        if (periods_->clear_period(pools_[p].id) != (pool_periods_.erase(key) != 0))
          fail("clear_period disagrees on whether pool {} had a period", p);
        return;
      }
      op_ = "set_period(pool)";
      expect_throw([&] { periods_->set_period(pools_[p].id, BudgetPeriod::every(ns(length))); },
                   nullptr);
      pool_periods_[key] = period;
      return;
    }
    if (agents_.empty())
      return;
    const std::size_t i = target / 2 % agents_.size();
    const std::uint64_t key = agents_[i].id.value();
    if (k % 4 == 0) {
      op_ = "clear_period(agent)";
      if (periods_->clear_period(agents_[i].id) != (agent_periods_.erase(key) != 0))
        fail("clear_period disagrees on whether agent {} had a period", i);
      return;
    }
    op_ = "set_period(agent)";
    expect_throw([&] { periods_->set_period(agents_[i].id, BudgetPeriod::every(ns(length))); },
                 agents_[i].removed ? "UnknownAgent" : nullptr);
    if (!agents_[i].removed)
      agent_periods_[key] = period;
  }

  // Moves the clock on (by nothing, half an hour, an hour, three hours, a day or a week) and
  // lets `tick()` reset every period that has ended, pools first, then agents, each in id order
  // and once however many boundaries were passed. A pool's reset forgives its live agents' usage
  // and returns its removed agents' usage to its unallocated budget; a removed agent loses its
  // period instead of being reset.
  void tick() {
    op_ = "tick";
    static constexpr std::int64_t minute = 60'000'000'000;
    static constexpr std::int64_t steps[] = {
        0, 30 * minute, 60 * minute, 180 * minute, 1440 * minute, 7 * 1440 * minute};
    clock_.advance(ns(steps[next() % 6]));
    const std::int64_t now = clock_.now().time_since_epoch().count();
    // Whether the period has ended; if so, moves its window to the period containing now.
    auto due = [now](ModelPeriod& period) {
      if (period.start + period.length > now)
        return false;
      period.start = now - now % period.length;
      return true;
    };
    std::size_t resets = 0;
    for (auto& [key, period] : pool_periods_) {
      if (!due(period))
        continue;
      ++resets;
      for (ModelAgent& a : agents_) {
        if (a.pool != pool_index(key))
          continue;
        if (a.removed) {
          a.allocated -= a.used;
          pools_[a.pool].unallocated += a.used;
        } else {
          a.remaining += a.used;
        }
        a.used = 0;
      }
    }
    for (auto it = agent_periods_.begin(); it != agent_periods_.end();) {
      ModelAgent& a = agents_[agent_index_of(it->first)];
      if (!due(it->second)) {
        ++it;
      } else if (a.removed) {
        it = agent_periods_.erase(it);
      } else {
        ++resets;
        a.remaining += a.used;
        a.used = 0;
        ++it;
      }
    }
    std::size_t got = 0;
    expect_throw([&] { got = periods_->tick(); }, nullptr);
    if (got != resets)
      fail("tick reset {} periods, model {}", got, resets);
  }

  std::size_t agent_index_of(std::uint64_t id) const {
    for (std::size_t i = 0; i < agents_.size(); ++i)
      if (agents_[i].id.value() == id)
        return i;
    return agents_.size();
  }

  std::size_t pool_index(std::uint64_t id) const {
    for (std::size_t p = 0; p < pools_.size(); ++p)
      if (pools_[p].id.value() == id)
        return p;
    return pools_.size();
  }

  std::span<const std::uint8_t> bytes_;
  std::size_t pos_ = 0;
  std::size_t step_ = 0;
  const char* op_ = "setup";
  std::string error_;
  safeguards::ManualClock clock_;
  Coordinator* coord_ = nullptr;
  std::vector<Reservation>* reservations_ = nullptr;
  std::vector<safeguards::MonitorHandle>* vetoes_ = nullptr;
  std::vector<safeguards::MonitorHandle>* observers_ = nullptr;
  std::vector<safeguards::MonitorHandle>* nested_ = nullptr;
  ModelAgent sink_;
  std::vector<ConsumeStatus> nested_statuses_; // what the nested observer's spends answered
  std::vector<ModelPool> pools_;
  std::vector<ModelAgent> agents_;
  std::vector<ModelReservation> model_reservations_;
  std::map<std::size_t, ModelReservation> slots_; // agent index -> the reservation in its slot
  safeguards::BasicBudgetPeriods<Coordinator>* periods_ = nullptr;
  std::map<std::uint64_t, ModelPeriod> agent_periods_, pool_periods_; // by id, as tick() goes
  safeguards::ServiceLevels edge_table_ = edge_levels.table();
  std::size_t events_ = 0;
  Event last_{};
  std::optional<typename LedgerOptions<L>::type> ledger_options_;
};

using OperationSequence = BasicOperationSequence<>;

// Runs one byte string; an empty result means coordinator and model agreed throughout.
inline std::string run_operation_sequence(std::span<const std::uint8_t> bytes) {
  return OperationSequence().run(bytes);
}

} // namespace safeguards_test
