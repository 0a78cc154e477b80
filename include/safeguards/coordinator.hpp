// safeguards: BudgetCoordinator, priority-ranked pools and agents on a lock-free ledger.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <any>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cstdint>
#include <fmt/format.h>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/allocation.hpp>
#include <safeguards/allocation_result.hpp>
#include <safeguards/amount.hpp>
#include <safeguards/audit.hpp>
#include <safeguards/clock.hpp>
#include <safeguards/consume_result.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/coordinator_state.hpp>
#include <safeguards/coordinator_types.hpp>
#include <safeguards/detail/agent_state.hpp>
#include <safeguards/detail/in_order_delivery.hpp>
#include <safeguards/detail/monitor_dispatch.hpp>
#include <safeguards/detail/monitor_registry.hpp>
#include <safeguards/detail/name_index.hpp>
#include <safeguards/detail/serial_notifier.hpp>
#include <safeguards/detail/shared_slot.hpp>
#include <safeguards/detail/slot_table.hpp>
#include <safeguards/detail/subscribers.hpp>
#include <safeguards/detail/turn_gate.hpp>
#include <safeguards/detail/validation.hpp>
#include <safeguards/emergency.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/ledger.hpp>
#include <safeguards/monitor.hpp>
#include <safeguards/reservation.hpp>
#include <safeguards/review.hpp>
#include <safeguards/service_levels.hpp>
#include <safeguards/subscription.hpp>
#include <safeguards/violation.hpp>
#include <shared_mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// The object an agent runtime creates once: pools of money ranked by priority, agents drawing
/// from them from many threads at once, monitors, violations and an audit trail.
///
/// Money is conserved: an agent's budget is drawn from its pool's unallocated budget and goes
/// back there when reduced or removed, and at every quiescent point
/// `pool.initial == pool.unallocated + Σ agent.allocated` and
/// `agent.allocated == agent.remaining + agent.used + agent.reserved`. No balance goes negative.
///
/// `try_consume` is the hot path: with no monitor and no history it is one compare-and-swap
/// that refuses to cross zero and counts the charge, with no lock, allocation, exception or
/// clock read. Management calls take a writer lock and throw `Error` subclasses.
///
/// **Example**
/// ```
/// BudgetCoordinator coord;
/// PoolId p = coord.create_pool({.name = "critical_services", .initial_budget = 1000_d,
///                               .priority = 9});
/// AgentId a = coord.create_agent({.name = "critical_agent", .initial_budget = 200_d,
///                                 .priority = 8, .pool = p});
/// if (coord.try_consume(a, 10_d)) { /* call the model */ }
/// ```
template <BudgetAmount Amount = Decimal, class AllocationPolicy = FixedAllocation,
          Clock C = std::chrono::system_clock, Ledger L = InMemoryLedger<Amount>>
requires std::same_as<typename L::amount_type, Amount> &&
    AllocationStrategy<AllocationPolicy, Amount>
class BasicBudgetCoordinator {
public:
  using amount_type = Amount;
  using clock_type = C;
  using time_point = typename C::time_point;
  using ledger_type = L;
  using allocation_policy = AllocationPolicy;
  using PoolSpec = BasicPoolSpec<Amount>;
  using AgentSpec = BasicAgentSpec<Amount>;
  using AgentMetrics = BasicAgentMetrics<Amount>;
  using PoolMetrics = BasicPoolMetrics<Amount>;
  using UsageEvent = BasicUsageEvent<Amount, time_point>;
  using Violation = BasicViolation<time_point>;
  using ViolationReporter = BasicViolationReporter<time_point>;
  using BudgetChange = BasicBudgetChange<Amount, time_point>;
  using ConsumptionEvent = BasicConsumptionEvent<Amount, C>;
  using CommitResult = BasicCommitResult<Amount>;
  using Reservation = BasicReservation<BasicBudgetCoordinator>;
  using AllocationResult = BasicAllocationResult<Amount>;
  using EmergencyGrant = BasicEmergencyGrant<Amount>;
  using State = BasicCoordinatorState<Amount>;

  explicit BasicBudgetCoordinator(CoordinatorOptions options = {}, AllocationPolicy policy = {},
                                  C clock = C{})
      : options_(std::move(options)), policy_(std::move(policy)), clock_(std::move(clock)),
        alive_(std::make_shared<int>(0)),
        deliver_([this](Violation&& v) { publish_violation(std::move(v)); }) {}

  /// A coordinator whose ledger takes options: where a `RedisLedger` finds its server, say.
  ///
  /// **Example**
  /// ```
  /// BasicBudgetCoordinator<Decimal, FixedAllocation, std::chrono::system_clock, RedisLedger>
  ///     coord(RedisOptions{.key_prefix = "support-bots"});
  /// ```
  // `Led` defers the lookup of `options_type` to overload resolution (clang looks it up when the
  // class is instantiated otherwise, and `InMemoryLedger` has none).
  template <class LedgerOptions, class Led = L>
  requires std::same_as<LedgerOptions, typename Led::options_type>
  explicit BasicBudgetCoordinator(LedgerOptions ledger_options, CoordinatorOptions options = {},
                                  AllocationPolicy policy = {}, C clock = C{})
      : options_(std::move(options)), policy_(std::move(policy)), clock_(std::move(clock)),
        ledger_(std::move(ledger_options)), alive_(std::make_shared<int>(0)),
        deliver_([this](Violation&& v) { publish_violation(std::move(v)); }) {}

  BasicBudgetCoordinator(const BasicBudgetCoordinator&) = delete;
  BasicBudgetCoordinator& operator=(const BasicBudgetCoordinator&) = delete;

  /// User objects the coordinator keeps — data slots, monitors, sinks — are destroyed first,
  /// while everything they may touch still exists and without any lock held, so one holding a
  /// `Reservation` or a `MonitorHandle` of this coordinator releases it cleanly. Handles held
  /// elsewhere do nothing once the coordinator is gone.
  ~BasicBudgetCoordinator() {
    // By index: a destructor may create an agent, which an iteration would have to survive.
    for (std::size_t i = 0; i < agents_.size(); ++i) {
      std::any data;
      MonitorList* monitors = nullptr; // freed below, unlocked
      {
        std::unique_lock lock(mutex_);
        if (agents_[i].extras)
          data.swap(agents_[i].extras->user_data);
        agents_[i].monitor_count.store(0, std::memory_order_release);
        if (auto* m = agents_[i].monitored.get()) {
          Gate gate = gate_of(agents_[i]);
          monitors = m->turn.replace(gate, nullptr, 0);
        }
      }
      Turn::free_chain(monitors);
    }
    {
      Registry registrations; // dropped here, unlocked
      {
        std::unique_lock lock(mutex_);
        registrations = registry_.take_all();
      }
    }
    violation_sinks_.clear();
    audit_sinks_.clear();
    alive_.reset();
    // A live Reservation would point into this coordinator after it is gone.
    assert(open_reservations() == 0 && "a Reservation outlived its BudgetCoordinator");
  }

  const CoordinatorOptions& options() const noexcept { return options_; }
  const AllocationPolicy& policy() const noexcept { return policy_; }
  const C& clock() const noexcept { return clock_; }
  /// The ledger the balances live in (for inspection; change balances through the coordinator).
  const L& ledger() const noexcept { return ledger_; }
  /// The ledger, for its own upkeep (`RedisLedger::maintain`, say); change balances through the
  /// coordinator.
  L& ledger() noexcept { return ledger_; }

  // ---- pools and agents --------------------------------------------------------------------

  /// Creates a pool. Throws `InvalidArgument` (empty name, negative or non-finite budget),
  /// `InvalidPriority` or `DuplicateName`.
  PoolId create_pool(PoolSpec spec) {
    detail::validate_name(spec.name, "pool");
    detail::validate_priority(spec.priority, spec.name);
    detail::validate_non_negative(spec.initial_budget, "initial_budget of pool", spec.name);
    std::unique_lock lock(mutex_);
    if (pool_names_.contains(spec.name))
      throw DuplicateName(fmt::format("safeguards: a pool named \"{}\" already exists", spec.name));
    return add_pool_locked(std::move(spec), false);
  }

  /// Creates an agent whose initial budget is drawn from its pool (or from a new implicit pool,
  /// named `agent:<name>`, when `.pool` is empty). Nothing is created when anything is wrong:
  /// unknown pool (`UnknownPool`), pool cannot cover the budget (`PoolExhausted`), bad name,
  /// priority or budget, or a ledger that cannot open the account (its exception passes through).
  AgentId create_agent(AgentSpec spec) {
    detail::validate_name(spec.name, "agent");
    detail::validate_priority(spec.priority, spec.name);
    detail::validate_non_negative(spec.initial_budget, "initial_budget of agent", spec.name);
    // Allocated up front, so that nothing can fail once the agent is visible; only when an audit
    // sink may see it (creating a million agents paid a node, two strings and three trips
    // through the delivery queue's mutex for records nobody received).
    std::list<BudgetChange> record;
    if (!audit_sinks_.empty())
      record = creation_record(spec.name);
    // With history on, every agent has its ring; made here, unlocked.
    std::unique_ptr<Monitored> monitored;
    if (options_.history_capacity != 0)
      monitored = std::make_unique<Monitored>(options_.history_capacity);
    const std::uint32_t name_hash = detail::NameIndex::hash(spec.name); // for check and insert
    AgentId id;
    {
      std::unique_lock lock(mutex_);
      // A sink added since the check above sees this change: every change whose lock section
      // starts after a sink's `add_audit_sink` returned reaches it.
      if (record.empty() && !audit_sinks_.empty())
        record = creation_record(spec.name);
      agent_names_.prefetch(name_hash); // for the duplicate check below
      PoolState* pool = nullptr;
      if (spec.pool) {
        pool = find_pool_locked(*spec.pool);
        if (pool->unallocated < spec.initial_budget)
          throw PoolExhausted(fmt::format(
              "safeguards: pool \"{}\" ({}) has {} unallocated, cannot give {} to agent \"{}\"",
              pool->name, pool->id, amount_to_string(pool->unallocated),
              amount_to_string(spec.initial_budget), spec.name));
      } else if (pool_names_.contains(implicit_pool_name(spec.name))) {
        throw DuplicateName(
            fmt::format("safeguards: the implicit pool name \"{}\" is already taken",
                        implicit_pool_name(spec.name)));
      }
      // Made only when a monitor covers the new agent: most agents have none.
      std::unique_ptr<MonitorList> monitors;
      registry_.for_each_covering(AgentId(agents_.size() + 1), pool ? pool->id : PoolId(),
                                  [&](const auto& entry) {
                                    if (!monitors)
                                      monitors = std::make_unique<MonitorList>();
                                    monitors->entries.push_back(entry);
                                  });
      if (monitors && !monitored)
        monitored = std::make_unique<Monitored>(options_.history_capacity);

      id = AgentId(agents_.size() + 1);
      auto& a = agents_.emplace_back();
      // Each step that can throw is undone if a later one does: a ledger (a remote one above
      // all) may refuse to open the account, and no pool, name or account may be left behind.
      bool opened = false;
      bool named = false;
      std::optional<PoolId> implicit_pool;
      try {
        a.id = id;
        a.name = spec.name;
        a.priority = spec.priority;
        if (!spec.metadata.empty())
          a.extras = std::make_unique<detail::AgentExtras>(
              detail::AgentExtras{std::move(spec.metadata), {}});
        a.created = clock_.now();
        a.allocated = spec.initial_budget;
        // Checked here, not first: its cache miss in the name index (megabytes for a million
        // agents; most of the time creating them took) overlaps the steps above, which the catch
        // below undoes.
        if (find_agent_locked(spec.name, name_hash))
          throw DuplicateName(
              fmt::format("safeguards: an agent named \"{}\" already exists", spec.name));
        a.account = open_account(spec.name, spec.initial_budget);
        opened = true;
        if (monitored) { // after the account: a monitored agent's gate may be its account
          monitored->unstamped_reporter.emplace(unstamped_reporter_for(a));
          auto& m = a.monitored.adopt(std::move(monitored));
          if (monitors) {
            const auto checks = monitors->checks();
            a.monitor_count.store(static_cast<std::uint32_t>(monitors->entries.size()));
            Gate gate = gate_of(a);
            (void)m.turn.replace(gate, monitors.release(), checks); // nothing to free: was empty
          }
        }
        if (!pool) {
          implicit_pool = add_pool_locked(
              {implicit_pool_name(spec.name), spec.initial_budget, spec.priority, {}}, true);
          pool = &pools_.at(implicit_pool->value());
        }
        a.pool = pool->id;
        // Room for the push_back below, where nothing may throw; grown geometrically; an exact
        // `size() + 1` made creating a million agents in one pool quadratic (minutes, not seconds).
        if (pool->agents.size() == pool->agents.capacity())
          pool->agents.reserve(std::max<std::size_t>(16, 2 * pool->agents.capacity()));
        agent_names_.insert(name_hash, id.value());
        named = true;
        table_.publish(id.value(), &a); // the last step: from here on the hot path sees it
      } catch (...) {
        if (named)
          agent_names_.erase(a.name, id.value());
        if (implicit_pool)
          remove_unused_pool_locked(*implicit_pool);
        if (opened)
          undo_open(a.account);
        agents_.pop_back();
        throw;
      }
      pool->unallocated = traits::sub(pool->unallocated, spec.initial_budget);
      pool->agents.push_back(id); // capacity reserved above
      if (record.empty()) {
        ++last_sequence_; // the change keeps its number, though no sink sees it
        return id;
      }
      fill_change_locked(record.front(), a, zero(), spec.initial_budget, a.created);
      audit_queue_.push(record);
    }
    // Only a caller that pushed a record need deliver: whoever pushed the others delivers them.
    deliver_audit();
    return id;
  }

  /// Removes an agent: its remaining budget returns to its pool at once, and what its open
  /// reservations give back returns there when they settle. Its id is never reused; its usage
  /// stays in the pool's metrics. Its data slot (`set_agent_data`) is emptied.
  ///
  /// An agent's implicit pool stays (with the agent's usage), but gives up its name: it becomes
  /// `agent:<name> (removed agent-N)`, so that an agent of the same name can be created again,
  /// as it can in an explicit pool.
  // NOLINTNEXTLINE(performance-unnecessary-value-param): moved; clang-tidy 14 misses it
  void remove_agent(AgentId agent, std::string reason = "agent removed") {
    std::list<BudgetChange> record(1);
    record.front().reason = std::move(reason);
    std::any data;
    {
      std::unique_lock lock(mutex_);
      auto& a = live_agent_locked(agent);
      auto& pool = pools_.at(a.pool.value());
      std::string retired_name;
      if (pool.implicit)
        retired_name = fmt::format("{} (removed {})", pool.name, agent);
      record.front().agent_name = a.name;
      // A remote ledger out of reach throws here, before anything changed; nothing below throws.
      auto swept = ledger_.close(a.account).value_or(zero());
      a.allocated = traits::sub(a.allocated, swept);
      pool.unallocated = traits::add(pool.unallocated, swept);
      a.removed = true;
      agent_names_.erase(a.name, agent.value());
      if (pool.implicit) {
        pool_names_.erase(pool.name);
        pool.name.swap(retired_name);
      }
      if (a.extras)
        data.swap(a.extras->user_data); // destroyed below, unlocked: it may hold a Reservation
      fill_change_locked(record.front(), a, swept, zero(), clock_.now());
      audit_queue_.push(record);
    }
    deliver_audit();
  }

  /// The agent of that name, if there is one.
  std::optional<AgentId> find_agent(std::string_view name) const {
    std::shared_lock lock(mutex_);
    return find_agent_locked(name);
  }

  /// The pool of that name, if there is one.
  std::optional<PoolId> find_pool(std::string_view name) const {
    std::shared_lock lock(mutex_);
    auto it = pool_names_.find(std::string(name));
    return it == pool_names_.end() ? std::nullopt : std::optional(it->second);
  }

  /// Live agents, oldest first.
  std::vector<AgentId> agents() const {
    std::shared_lock lock(mutex_);
    std::vector<AgentId> out;
    for (const auto& a : agents_)
      if (!a.removed)
        out.push_back(a.id);
    return out;
  }

  /// Live agents of one pool, oldest first.
  std::vector<AgentId> pool_agents(PoolId pool) const {
    std::shared_lock lock(mutex_);
    std::vector<AgentId> out;
    for (AgentId id : find_pool_locked(pool)->agents)
      if (!agents_[id.value() - 1].removed)
        out.push_back(id);
    return out;
  }

  /// Every pool, highest priority first (ties: oldest first).
  std::vector<PoolId> pools() const {
    std::shared_lock lock(mutex_);
    std::vector<const PoolState*> sorted;
    for (const auto& [id, p] : pools_)
      sorted.push_back(&p);
    std::stable_sort(sorted.begin(), sorted.end(), [](const PoolState* x, const PoolState* y) {
      return x->priority > y->priority;
    });
    std::vector<PoolId> out;
    for (const auto* p : sorted)
      out.push_back(p->id);
    return out;
  }

  /// The pool an agent draws from.
  PoolId agent_pool(AgentId agent) const {
    std::shared_lock lock(mutex_);
    return known_agent_locked(agent).pool;
  }

  std::string agent_name(AgentId agent) const {
    std::shared_lock lock(mutex_);
    return known_agent_locked(agent).name;
  }

  int agent_priority(AgentId agent) const {
    std::shared_lock lock(mutex_);
    return live_agent_locked(agent).priority;
  }

  void set_priority(AgentId agent, int priority) {
    std::unique_lock lock(mutex_);
    auto& a = live_agent_locked(agent);
    detail::validate_priority(priority, a.name);
    a.priority = priority;
  }

  int pool_priority(PoolId pool) const {
    std::shared_lock lock(mutex_);
    return find_pool_locked(pool)->priority;
  }

  void set_pool_priority(PoolId pool, int priority) {
    std::unique_lock lock(mutex_);
    auto* p = find_pool_locked(pool);
    detail::validate_priority(priority, p->name);
    p->priority = priority;
  }

  // ---- metadata ----------------------------------------------------------------------------

  Metadata agent_metadata(AgentId agent) const {
    std::shared_lock lock(mutex_);
    const auto& a = live_agent_locked(agent);
    return a.extras ? a.extras->metadata : Metadata{};
  }
  void set_agent_metadata(AgentId agent, std::string key, std::string value) {
    std::unique_lock lock(mutex_);
    extras_locked(live_agent_locked(agent))
        .metadata.insert_or_assign(std::move(key), std::move(value));
  }
  /// The guide's `store_agent_metadata`: merges `entries` into the agent's metadata.
  void store_agent_metadata(AgentId agent, const Metadata& entries) {
    std::unique_lock lock(mutex_);
    auto& md = extras_locked(live_agent_locked(agent)).metadata;
    for (const auto& [k, v] : entries)
      md.insert_or_assign(k, v);
  }
  Metadata pool_metadata(PoolId pool) const {
    std::shared_lock lock(mutex_);
    return find_pool_locked(pool)->metadata;
  }
  void set_pool_metadata(PoolId pool, std::string key, std::string value) {
    std::unique_lock lock(mutex_);
    find_pool_locked(pool)->metadata.insert_or_assign(std::move(key), std::move(value));
  }

  /// A typed slot for anything the runtime wants to keep with an agent (a service-level
  /// function, a client handle, ...). Read it back with `agent_data<T>`.
  ///
  /// What it held before is destroyed after the coordinator's lock is released, so the slot may
  /// hold objects that call back into the coordinator when they die: a `Reservation` (released),
  /// a `MonitorHandle` (unregistered). The slot is emptied by `remove_agent` and before the
  /// coordinator's own members are destroyed.
  void set_agent_data(AgentId agent, std::any data) {
    {
      std::unique_lock lock(mutex_);
      auto& a = live_agent_locked(agent);
      if (a.extras || data.has_value()) // an empty slot stays unallocated
        extras_locked(a).user_data.swap(data);
    }
    // `data` now holds the previous value and is destroyed here, unlocked.
  }
  /// The agent's typed slot if it holds a `T`, else nothing.
  template <class T>
  std::optional<T> agent_data(AgentId agent) const {
    std::shared_lock lock(mutex_);
    const auto& a = live_agent_locked(agent);
    if (const T* value = a.extras ? std::any_cast<T>(&a.extras->user_data) : nullptr)
      return *value;
    return std::nullopt;
  }

  // ---- budgets -----------------------------------------------------------------------------

  /// The agent's remaining budget. Lock-free.
  Amount get_budget(AgentId agent) const {
    const AgentState* a = table_.find(agent.value());
    if (!a || !ledger_.is_open(a->account))
      throw_unknown_agent(agent);
    return ledger_.balance(a->account).remaining;
  }

  /// Sets the agent's remaining budget to `new_budget`. An increase is drawn from the pool's
  /// unallocated budget (`PoolExhausted` when it cannot cover it; nothing changes), a decrease
  /// goes back to it. Audited with `reason`.
  // NOLINTNEXTLINE(performance-unnecessary-value-param): moved; clang-tidy 14 misses it
  void update_budget(AgentId agent, const Amount& new_budget, std::string reason) {
    detail::validate_non_negative(new_budget, "new budget");
    std::list<BudgetChange> record(1);
    record.front().reason = std::move(reason);
    {
      std::unique_lock lock(mutex_);
      auto& a = live_agent_locked(agent);
      auto& pool = pools_.at(a.pool.value());
      record.front().agent_name = a.name;
      Amount old = balance_for_change(a).remaining;
      for (;;) { // consumers may move `old` under us; the CAS settles on one exact value
        Amount delta = traits::sub(new_budget, old);
        if (pool.unallocated < delta)
          throw PoolExhausted(fmt::format(
              "safeguards: pool \"{}\" has {} unallocated, cannot raise {} by {}", pool.name,
              amount_to_string(pool.unallocated), agent, amount_to_string(delta)));
        require_fits_locked(a, delta);
        const LedgerStatus s = ledger_.compare_exchange_remaining(a.account, old, new_budget);
        if (s == LedgerStatus::ok) {
          a.allocated = traits::add(a.allocated, delta);
          pool.unallocated = traits::sub(pool.unallocated, delta);
          fill_change_locked(record.front(), a, old, new_budget, clock_.now());
          break;
        }
        if (s != LedgerStatus::conflict)
          throw_ledger_refusal(agent, s);
      }
      audit_queue_.push(record);
    }
    deliver_audit();
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) void update_budget(AgentId, const T&, std::string) = delete;

  /// Moves `amount` of remaining budget from one agent to another of the same pool. Throws
  /// `BudgetExceeded` when `from` cannot cover it (nothing moves).
  // NOLINTNEXTLINE(performance-unnecessary-value-param): moved; clang-tidy 14 misses it
  void transfer(AgentId from, AgentId to, const Amount& amount, std::string reason) {
    detail::validate_positive(amount, "transfer amount");
    std::list<BudgetChange> records(2);
    records.front().reason = reason;
    records.back().reason = std::move(reason);
    {
      std::unique_lock lock(mutex_);
      auto& src = live_agent_locked(from);
      auto& dst = live_agent_locked(to);
      if (src.pool != dst.pool)
        throw InvalidArgument(fmt::format(
            "safeguards: cannot transfer from {} ({}) to {} ({}): agents are in different pools",
            from, src.pool, to, dst.pool));
      if (from == to)
        throw InvalidArgument(fmt::format("safeguards: cannot transfer from {} to itself", from));
      records.front().agent_name = src.name;
      records.back().agent_name = dst.name;
      require_fits_locked(dst, amount);
      const std::optional<Amount> taken_from = withdraw(src, amount); // src is live: open
      if (!taken_from)
        throw BudgetExceeded(fmt::format(
            "safeguards: {} has {} remaining, cannot transfer {}", from,
            amount_to_string(ledger_.balance(src.account).remaining), amount_to_string(amount)));
      const Amount old = *taken_from;
      Amount dst_old = ledger_.balance(dst.account).remaining;
      (void)ledger_.credit(dst.account, amount); // dst is live under the writer lock
      src.allocated = traits::sub(src.allocated, amount);
      dst.allocated = traits::add(dst.allocated, amount);
      auto now = clock_.now();
      fill_change_locked(records.front(), src, old, traits::sub(old, amount), now);
      fill_change_locked(records.back(), dst, dst_old, traits::add(dst_old, amount), now);
      audit_queue_.push(records);
    }
    deliver_audit();
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) void transfer(AgentId, AgentId, const T&,
                                                     std::string) = delete;

  // ---- usage resets (budget periods) --------------------------------------------------------

  /// Forgives the agent's used budget: what it used goes back to its remaining balance, which
  /// is thus restored to its allocation less what open reservations hold (they stay reserved
  /// and settle against the new period). The allocation, the pool and the counters stay. One
  /// audit record with `reason`, even when nothing was used. Returns what was forgiven. Throws
  /// `UnknownAgent`. `BudgetPeriods` calls it at period boundaries.
  ///
  /// Consumers are never blocked: the money goes back with one compare-and-swap on remaining.
  /// A consume racing with the reset is ordered before it (and forgiven) or after it (and
  /// counted afterwards), never both and never lost. Resets are serialised by the writer lock.
  ///
  /// **Example**
  /// ```
  /// coord.consume(a, 30_d);                  // remaining 70, used 30
  /// coord.reset_usage(a, "new billing month"); // remaining 100, used 0
  /// ```
  // NOLINTNEXTLINE(performance-unnecessary-value-param): moved; clang-tidy 14 misses it
  Amount reset_usage(AgentId agent, std::string reason) {
    std::list<BudgetChange> record(1);
    record.front().reason = std::move(reason);
    Amount forgiven;
    {
      std::unique_lock lock(mutex_);
      auto& a = live_agent_locked(agent);
      record.front().agent_name = a.name;
      forgiven = reset_locked(a, record.front(), clock_.now()); // nothing below throws
      audit_queue_.push(record);
    }
    deliver_audit();
    return forgiven;
  }

  /// Resets a whole pool in one step (under one lock, so nobody sees half of it): every live
  /// agent as `reset_usage(agent, ...)` does, one audit record each, and the usage of its
  /// removed agents, which goes back to the pool's unallocated budget. Returns the total
  /// forgiven. Throws `UnknownPool`.
  Amount reset_usage(PoolId pool, const std::string& reason) {
    std::list<BudgetChange> records;
    Amount forgiven = zero();
    {
      std::unique_lock lock(mutex_);
      PoolState& p = *find_pool_locked(pool);
      for (AgentId id : p.agents) { // allocated before any change
        const auto& a = agents_[id.value() - 1];
        if (a.removed)
          continue;
        records.emplace_back();
        records.back().agent_name = a.name;
        records.back().reason = reason;
      }
      const auto now = clock_.now();
      auto record = records.begin();
      for (AgentId id : p.agents) {
        AgentState& a = agents_[id.value() - 1];
        if (a.removed) {
          // Its account is closed: the forgiven usage comes back to us, and goes to the pool.
          const Settlement<Amount> s = forgive(a);
          a.allocated = traits::sub(a.allocated, s.refunded);
          p.unallocated = traits::add(p.unallocated, s.refunded);
          forgiven = traits::add(forgiven, s.refunded);
        } else {
          forgiven = traits::add(forgiven, reset_locked(a, *record++, now));
        }
      }
      audit_queue_.push(records);
    }
    deliver_audit();
    return forgiven;
  }

  // ---- allocation and emergency grants ----------------------------------------------------

  /// `allocate(pool, policy())`: the coordinator's own `AllocationPolicy`.
  AllocationResult allocate(PoolId pool) { return allocate(pool, policy_); }

  /// Redistributes a pool's spendable money (its unallocated budget plus every live agent's
  /// remaining balance) as `strategy` says; used and reserved money never moves, and what the
  /// strategy does not hand out stays unallocated. Each changed agent gets an audit record whose
  /// reason names the strategy. Throws `UnknownPool`, or `InvalidArgument` when the strategy
  /// returns something impossible (wrong length, a negative or non-finite balance, more than it
  /// may hand out); nothing changes then.
  ///
  /// Consumers are never blocked. The strategy sees the balances of one snapshot; agents that
  /// lose money give it up first, each with a compare-and-swap that refuses to cross zero, and
  /// only then do the others receive theirs. A consume that lands between the snapshot and the
  /// apply is charged on top of the new balance, which can always cover it (it is ordered after
  /// the allocation); if a shrinking agent spent so much meanwhile that it cannot give up its
  /// share, what was taken is put back and the allocation starts again from a new snapshot.
  ///
  /// **Example**
  /// ```
  /// auto result = coord.allocate(pool, PriorityAllocation{});
  /// for (const auto& c : result.changes) fmt::print("{}: {} -> {}\n", c.agent, c.old_remaining,
  /// c.new_remaining);
  /// ```
  template <class S>
  requires AllocationStrategy<S, Amount> AllocationResult allocate(PoolId pool, const S& strategy) {
    const auto window = usage_window_of(strategy);
    AllocationResult result;
    std::list<BudgetChange> records;
    {
      std::unique_lock lock(mutex_);
      PoolState& p = *find_pool_locked(pool);
      for (int attempt = 0;; ++attempt) {
        if (try_allocate_locked(p, strategy, window, result, records))
          break;
        if (attempt == max_allocation_attempts)
          throw BudgetExceeded(fmt::format(
              "safeguards: allocation \"{}\" of {} gave up after {} attempts: agents kept "
              "spending what they were to give up",
              strategy.name(), p.id, max_allocation_attempts + 1));
      }
      audit_queue_.push(records);
    }
    deliver_audit();
    return result;
  }

  /// The guide's emergency allocation: `policy` decides how much of `requested` to approve
  /// (see `EmergencyPolicy`); the money comes from the agent's own pool's unallocated budget
  /// first, then from pools of lower priority, lowest first (ties: lower id first), never from
  /// a pool of equal or higher priority. A grant larger than what those pools hold is reduced to
  /// what they hold. Budget moved from another pool moves that pool's initial budget with it,
  /// so the sum of all pools' initial budgets never changes. One audit record per source.
  /// Throws `UnknownAgent`, or `InvalidArgument` for a non-positive request or an empty reason.
  ///
  /// **Example**
  /// ```
  /// EmergencyGrant g = coord.emergency_allocation(agent, Decimal("50.0"), "critical outage");
  /// // g.approved: what the policy allowed; g.granted: what the pools could give; g.sources
  /// ```
  EmergencyGrant emergency_allocation(AgentId agent, const Amount& requested, std::string reason,
                                      const EmergencyPolicy& policy = {}) {
    detail::validate_positive(requested, "emergency request");
    if (reason.empty())
      throw InvalidArgument("safeguards: an emergency request needs a reason");
    EmergencyGrant grant;
    grant.requested = requested;
    std::list<BudgetChange> records;
    {
      std::unique_lock lock(mutex_);
      AgentState& a = live_agent_locked(agent);
      std::tie(grant.approved, grant.decision) =
          approve_emergency(policy, a.priority, requested, reason);
      PoolState& own = pools_.at(a.pool.value());
      std::vector<GrantPool<Amount>> others;
      for (const auto& [id, p] : pools_)
        if (&p != &own)
          others.push_back({p.id, p.priority, p.unallocated});
      grant.sources =
          plan_emergency_sources(GrantPool<Amount>{own.id, own.priority, own.unallocated},
                                 std::move(others), grant.approved);
      grant.granted = zero();
      for (const auto& source : grant.sources)
        grant.granted = traits::add(grant.granted, source.amount);
      require_fits_locked(a, grant.granted);
      for (std::size_t i = 0; i < grant.sources.size(); ++i) { // allocated before any change
        records.emplace_back();
        records.back().agent_name = a.name;
        records.back().reason = fmt::format("emergency grant from {}: {}",
                                            pools_.at(grant.sources[i].pool.value()).name, reason);
      }
      // Nothing below throws: the amounts are bounded by balances that already exist.
      const auto now = clock_.now();
      auto record = records.begin();
      for (const auto& source : grant.sources) {
        PoolState& from = pools_.at(source.pool.value());
        if (&from != &own) {
          from.initial = traits::sub(from.initial, source.amount);
          own.initial = traits::add(own.initial, source.amount);
          own.unallocated = traits::add(own.unallocated, source.amount);
          from.unallocated = traits::sub(from.unallocated, source.amount);
        }
        const Amount before = ledger_.balance(a.account).remaining;
        own.unallocated = traits::sub(own.unallocated, source.amount);
        a.allocated = traits::add(a.allocated, source.amount);
        (void)ledger_.credit(a.account, source.amount);
        fill_change_locked(*record++, a, before, traits::add(before, source.amount), now);
      }
      audit_queue_.push(records);
    }
    deliver_audit();
    return grant;
  }

  // ---- the hot path ------------------------------------------------------------------------

  /// Spends `amount` from the agent's budget if it can cover it and no monitor objects.
  /// Never throws, never overspends, never lets the balance go below zero.
  ///
  /// Takes the coordinator's own amount type only: `try_consume(agent, completion_tokens)` with
  /// an integer does not compile when amounts are `Decimal` dollars. Write `Decimal(n)` or
  /// `10_d` when an integer really is an amount.
  [[nodiscard]] ConsumeResult try_consume(AgentId agent, const Amount& amount) noexcept {
    if (!valid_amount(amount))
      return ConsumeStatus::invalid_amount;
    AgentState* a = table_.find(agent.value());
    if (!a)
      return ConsumeStatus::unknown_agent;
    if (a->monitor_count.load(std::memory_order_acquire) != 0 || options_.history_capacity != 0)
      return change_monitored<UsageKind::consume>(*a, amount);
    auto status = ledger_.debit(a->account, amount);
    if (status == LedgerStatus::ok)
      count_charge(*a);
    return detail::to_consume_status(status);
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) ConsumeResult try_consume(AgentId, const T&)
  = delete;

  /// Like `try_consume`, but throws: `BudgetExceeded` when the budget cannot cover it or a
  /// monitor vetoed it, `UnknownAgent`, `InvalidArgument` for a non-positive amount.
  void consume(AgentId agent, const Amount& amount) {
    auto r = try_consume(agent, amount);
    if (!r.ok())
      throw_for(r.status(), agent, amount, "consume");
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) void consume(AgentId, const T&) = delete;

  /// Sets `estimate` aside before an expensive call; see `Reservation`. Throws like `consume`.
  /// Keep the result: a reservation dropped at once is released at once.
  [[nodiscard]] Reservation reserve(AgentId agent, const Amount& estimate) {
    auto r = try_reserve(agent, estimate);
    if (!r.ok())
      throw_for(r.status(), agent, estimate, "reserve");
    return r;
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) Reservation reserve(AgentId, const T&)
  = delete;

  /// `reserve` without exceptions: check `ok()` / `status()` on the result.
  [[nodiscard]] Reservation try_reserve(AgentId agent, const Amount& estimate) noexcept {
    // The reservation is filled in after the ledger's compare-and-swap, which would otherwise
    // wait for its stores to drain.
    if (!valid_amount(estimate))
      return Reservation(this, nullptr, agent, estimate, ConsumeStatus::invalid_amount);
    AgentState* a = table_.find(agent.value());
    if (!a)
      return Reservation(this, nullptr, agent, estimate, ConsumeStatus::unknown_agent);
    const ConsumeStatus status =
        a->monitor_count.load(std::memory_order_acquire) != 0
            ? change_monitored<UsageKind::reserve>(*a, estimate).status()
            : detail::to_consume_status(ledger_.reserve(a->account, estimate));
    if (status != ConsumeStatus::ok)
      return Reservation(this, nullptr, agent, estimate, status);
    a->open_reservations.fetch_add(1, std::memory_order_relaxed);
    return Reservation(this, a, agent, estimate, status);
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) Reservation try_reserve(AgentId, const T&)
  = delete;

  // ---- metrics and history -----------------------------------------------------------------

  AgentMetrics agent_metrics(AgentId agent) const {
    std::shared_lock lock(mutex_);
    return metrics_locked(known_agent_locked(agent), clock_.now());
  }

  PoolMetrics pool_metrics(PoolId pool) const {
    std::shared_lock lock(mutex_);
    return metrics_locked(*find_pool_locked(pool), clock_.now());
  }

  /// Metrics of every live agent, oldest first.
  std::vector<AgentMetrics> all_agent_metrics() const {
    std::shared_lock lock(mutex_);
    auto now = clock_.now();
    std::vector<AgentMetrics> out;
    for (const auto& a : agents_)
      if (!a.removed)
        out.push_back(metrics_locked(a, now));
    return out;
  }

  /// Metrics of every pool, highest priority first.
  std::vector<PoolMetrics> all_pool_metrics() const {
    auto ids = pools();
    std::shared_lock lock(mutex_);
    auto now = clock_.now();
    std::vector<PoolMetrics> out;
    for (PoolId id : ids)
      out.push_back(metrics_locked(*find_pool_locked(id), now));
    return out;
  }

  /// The guide's `determine_service_level`: the level of `levels` (the guide's full, standard,
  /// minimal and emergency by default) that the agent is at for the share of its allocation it
  /// has left, remaining / (remaining + used + reserved), compared exactly; an empty allocation
  /// is the lowest level. For a table per agent and a notification on each change of level, use
  /// `GracefulDegradation` (degradation.hpp). Throws `UnknownAgent`.
  ///
  /// **Example**
  /// ```
  /// coord.service_level(agent).name;   // "full", "standard", "minimal" or "emergency"
  /// if (coord.service_level(agent).has("high_quality")) { /* the large model */ }
  /// ```
  ServiceLevel service_level(AgentId agent,
                             const ServiceLevels& levels = ServiceLevels::guide_default()) const {
    const AgentMetrics m = agent_metrics(agent);
    const Amount allocated =
        traits::add(traits::add(m.remaining_budget, m.used_budget), m.reserved_budget);
    return levels.level_for(m.remaining_budget, allocated);
  }

  /// The guide's `review_budgets`: underused and nearly depleted agents, pools running low, as
  /// findings with their numbers and a suggested action; see `review` (review.hpp), which this
  /// calls. `PeriodicReview` (periodic_review.hpp) runs it on a schedule.
  ///
  /// **Example**
  /// ```
  /// for (const ReviewFinding& finding : coord.review())
  ///   fmt::print("{}\n", finding);
  /// ```
  std::vector<BasicReviewFinding<Amount>> review(const ReviewThresholds& thresholds = {}) const {
    return safeguards::review(*this, thresholds);
  }

  /// Number of consumes and commits so far, and their sum (the used budget): the running
  /// aggregates strategies use instead of scanning history.
  struct UsageStats {
    std::uint64_t count = 0;
    Amount total{};
  };
  UsageStats usage_stats(AgentId agent) const {
    const AgentState* a = table_.find(agent.value());
    if (!a)
      throw_unknown_agent(agent);
    return {charge_count(*a), ledger_.balance(a->account).used};
  }

  /// The agent's recorded consumes and commits with `from <= timestamp <= to`, oldest first;
  /// at most `CoordinatorOptions::history_capacity` of the most recent are kept.
  std::vector<ConsumptionEvent> usage_history(AgentId agent, time_point from = time_point::min(),
                                              time_point to = time_point::max()) const {
    const AgentState* a = nullptr;
    std::string name;
    {
      std::shared_lock lock(mutex_);
      a = &known_agent_locked(agent);
      name = a->name;
    }
    std::vector<ConsumptionEvent> out;
    const auto* m = a->monitored.get();
    if (!m)
      return out;
    m->history.for_each(from, to, [&](const typename History::Record& rec) {
      out.emplace_back(
          BasicConsumption<Amount>(rec.amount, options_.unit, std::string(to_string(rec.kind))),
          name, rec.at);
    });
    return out;
  }

  // ---- monitors, violations, audit ---------------------------------------------------------

  /// Watches one agent. See `Monitor` for the accepted shapes; keep the handle to keep it.
  /// `options` (see `MonitorOptions`) may say the monitor never reads events' timestamps, which
  /// spares the agent's changes a clock read.
  ///
  /// **Example**
  /// ```
  /// auto limit = coord.add_monitor(agent, SpendingLimit{Decimal("100.0")});
  /// auto tally = coord.add_monitor(
  ///     agent, [&](const BudgetCoordinator::UsageEvent& e) { ++changes; },
  ///     MonitorOptions{.reads_timestamp = false});
  /// ```
  template <class M>
  requires Monitor<M, UsageEvent, const ViolationReporter>
  [[nodiscard]] MonitorHandle add_monitor(AgentId agent, M monitor, MonitorOptions options = {}) {
    return register_monitor(Registry::Scope::agent, agent.value(), std::move(monitor), options);
  }

  /// Watches every agent of a pool, present and future; `options` as for one agent.
  template <class M>
  requires Monitor<M, UsageEvent, const ViolationReporter>
  [[nodiscard]] MonitorHandle add_monitor(PoolId pool, M monitor, MonitorOptions options = {}) {
    return register_monitor(Registry::Scope::pool, pool.value(), std::move(monitor), options);
  }

  /// Watches every agent, present and future; `options` as for one agent.
  template <class M>
  requires Monitor<M, UsageEvent, const ViolationReporter>
  [[nodiscard]] MonitorHandle add_monitor(AllAgents, M monitor, MonitorOptions options = {}) {
    return register_monitor(Registry::Scope::all, 0, std::move(monitor), options);
  }

  /// Receives every violation any monitor or the coordinator reports.
  template <class F>
  requires std::invocable<F&, const Violation&>
  [[nodiscard]] SinkHandle add_violation_sink(F sink) {
    return add_sink(violation_sinks_, std::move(sink));
  }

  /// Receives every budget change (creation, update, transfer, removal, ...), one at a time and
  /// in the order the changes were made (`BudgetChange::sequence` counts them), after the
  /// coordinator's lock is released, so a sink may call back into the coordinator. A change is
  /// delivered before the call that made it returns, unless another thread is delivering at that
  /// moment: that thread then delivers it next, in order.
  template <class F>
  requires std::invocable<F&, const BudgetChange&>
  [[nodiscard]] SinkHandle add_audit_sink(F sink) {
    return add_sink(audit_sinks_, std::move(sink));
  }

  // ---- saving and resuming the books -------------------------------------------------------

  /// The books as values (see `BasicCoordinatorState`), for `restore` and for saving
  /// (`sqlite_snapshot.hpp`). Taken under the coordinator's lock, so pools, allocations and
  /// removals are of one instant, and each agent's balance is of one instant; consumes made
  /// meanwhile on other threads can land between two agents' reads, never inside one.
  State snapshot() const {
    std::shared_lock lock(mutex_);
    State state;
    state.sequence = last_sequence_;
    state.pools.reserve(pools_.size());
    for (const auto& [id, p] : pools_) // a std::map: in id order
      state.pools.push_back(
          {p.id, p.name, p.priority, p.implicit, p.initial, p.unallocated, p.metadata});
    state.agents.reserve(agents_.size());
    for (std::size_t i = 0; i < agents_.size(); ++i) {
      const AgentState& a = agents_[i];
      const auto b = ledger_.balance(a.account);
      state.agents.push_back({a.id, a.name, a.pool, a.priority, a.removed, a.allocated, b.remaining,
                              b.used, b.reserved, a.overspent, charge_count(a),
                              a.extras ? a.extras->metadata : Metadata{}});
    }
    return state;
  }

  /// Rebuilds the books of `state` in this coordinator, which must have no pools, agents or
  /// monitors yet (`InvalidArgument` otherwise). Ids, names, priorities, metadata, balances and
  /// charge counts come back as they were, and the audit sequence goes on from the state's.
  /// Money that was reserved comes back as used: the call it was set aside for may have run,
  /// and its `Reservation` went with the process that held it, so counting it spent is the one
  /// choice that can never overspend (move it back with `update_budget` when you know better).
  ///
  /// The state is checked whole before anything changes: a breach of the books' invariants
  /// (an edited or damaged snapshot) throws `InvalidArgument` naming the first one found, and
  /// leaves this coordinator empty.
  ///
  /// **Example**
  /// ```
  /// BudgetCoordinator coord;
  /// coord.restore(load_snapshot("budgets.db"));
  /// ```
  void restore(const State& state) {
    std::unique_lock lock(mutex_);
    if (!pools_.empty() || agents_.size() != 0 || !registry_.empty())
      throw InvalidArgument(
          "safeguards: restore needs a coordinator without pools, agents or monitors");
    check_restorable(state);
    for (const auto& p : state.pools) {
      PoolState ps;
      ps.id = p.id;
      ps.name = p.name;
      ps.priority = p.priority;
      ps.metadata = p.metadata;
      ps.implicit = p.implicit;
      ps.initial = p.initial;
      ps.unallocated = p.unallocated;
      ps.created = clock_.now();
      pools_.emplace(p.id.value(), std::move(ps));
      next_pool_id_ = std::max(next_pool_id_, p.id.value() + 1);
    }
    for (const auto& s : state.agents) {
      auto& pool = pools_.at(s.pool.value());
      auto& a = agents_.emplace_back();
      a.id = s.id;
      a.name = s.name;
      a.pool = s.pool;
      a.priority = s.priority;
      a.created = clock_.now();
      a.allocated = s.allocated;
      a.overspent = s.overspent;
      a.removed = s.removed;
      if (!s.metadata.empty())
        a.extras = std::make_unique<detail::AgentExtras>(detail::AgentExtras{s.metadata, {}});
      a.account = open_restored(s.remaining, traits::add(s.used, s.reserved), s.charges);
      if constexpr (!ledger_counts_charges)
        a.consume_count.store(s.charges, std::memory_order_relaxed);
      if (s.removed) {
        close_quietly(a.account); // remaining is zero: nothing to sweep
      } else {
        if (options_.history_capacity != 0) {
          auto m = std::make_unique<Monitored>(options_.history_capacity);
          m->unstamped_reporter.emplace(unstamped_reporter_for(a));
          a.monitored.adopt(std::move(m));
        }
        agent_names_.insert(detail::NameIndex::hash(a.name), a.id.value());
      }
      pool.agents.push_back(a.id);
      table_.publish(a.id.value(), &a);
    }
    for (const auto& [id, p] : pools_)
      if (!p.implicit || std::any_of(p.agents.begin(), p.agents.end(), [&](AgentId agent) {
            return !agents_[agent.value() - 1].removed;
          }))
        pool_names_.emplace(p.name, p.id);
    last_sequence_ = state.sequence;
  }

  /// How many times a sink threw. Such failures never affect balances.
  std::uint64_t sink_failures() const noexcept { return sink_failures_.load(); }

  /// Checks the conservation invariants; returns one line per breach (empty when all hold).
  /// Meaningful at quiescent points only: under concurrent use the numbers are read at
  /// slightly different instants.
  std::vector<std::string> check_invariants() const {
    std::shared_lock lock(mutex_);
    std::vector<std::string> problems;
    const Amount z = zero();
    for (const auto& [id, p] : pools_) {
      Amount allocated = z;
      for (AgentId aid : p.agents) {
        const auto& a = agents_[aid.value() - 1];
        auto b = ledger_.balance(a.account);
        allocated = traits::add(allocated, a.allocated);
        auto sum = traits::add(traits::add(b.remaining, b.used), b.reserved);
        if (sum != a.allocated)
          problems.push_back(fmt::format("{}: allocated {} != remaining {} + used {} + reserved {}",
                                         aid, amount_to_string(a.allocated),
                                         amount_to_string(b.remaining), amount_to_string(b.used),
                                         amount_to_string(b.reserved)));
        if (b.remaining < z || b.used < z || b.reserved < z)
          problems.push_back(fmt::format("{}: negative balance", aid));
      }
      if (traits::add(p.unallocated, allocated) != p.initial)
        problems.push_back(fmt::format("{}: initial {} != unallocated {} + allocated {}", p.id,
                                       amount_to_string(p.initial), amount_to_string(p.unallocated),
                                       amount_to_string(allocated)));
      if (p.unallocated < z)
        problems.push_back(fmt::format("{}: negative unallocated budget", p.id));
    }
    return problems;
  }

private:
  friend class BasicReservation<BasicBudgetCoordinator>;
  using traits = amount_traits<Amount>;
  using MonitorFns = detail::MonitorEntry<UsageEvent, const ViolationReporter>;
  using AgentState = detail::AgentState<Amount, L, time_point, UsageEvent, MonitorFns>;
  using PoolState = detail::PoolState<Amount, time_point>;
  using Monitored = typename AgentState::Monitored;
  using MonitorList = typename AgentState::MonitorList;
  using Turn = decltype(Monitored::turn);
  // What orders an agent's monitored changes: its account's hold when the ledger has holds.
  using Gate = detail::TurnGate<L>;
  using Pending = detail::StampedEvent<UsageEvent>; // an event on its way to the observers
  using History = detail::UsageHistory<Amount, time_point>;
  using Registry = detail::MonitorRegistry<MonitorFns>;
  template <class Record>
  using Sinks = detail::Subscribers<std::function<void(const Record&)>>;

  static Amount zero() { return amount_zero<Amount>(); }

  static bool valid_amount(const Amount& value) noexcept { return detail::valid_amount(value); }
  [[noreturn]] static void throw_unknown_agent(AgentId agent) {
    throw UnknownAgent(fmt::format("safeguards: unknown agent {}", agent));
  }
  [[noreturn]] void throw_for(ConsumeStatus status, AgentId agent, const Amount& amount,
                              const char* what) const {
    switch (status) {
    case ConsumeStatus::unknown_agent:
      throw_unknown_agent(agent);
    case ConsumeStatus::invalid_amount:
      throw InvalidArgument(
          fmt::format("safeguards: cannot {} {} from {}: amount must be positive and finite", what,
                      amount_to_string(amount), agent));
    case ConsumeStatus::insufficient:
      throw BudgetExceeded(fmt::format("safeguards: {} cannot {} {}: only {} remaining", agent,
                                       what, amount_to_string(amount),
                                       amount_to_string(get_budget(agent))));
    case ConsumeStatus::ledger_unavailable:
      throw LedgerUnavailable(fmt::format("safeguards: {} cannot {} {}: the ledger is unavailable",
                                          agent, what, amount_to_string(amount)));
    default:
      throw BudgetExceeded(fmt::format("safeguards: {} cannot {} {}: {}", agent, what,
                                       amount_to_string(amount), to_string(status)));
    }
  }

  static constexpr int max_allocation_attempts = 15;

  // One attempt of `allocate`: snapshot, strategy, apply. False (and nothing changed) when a
  // shrinking agent could no longer give up its share.
  template <class S>
  bool try_allocate_locked(PoolState& p, const S& strategy, std::chrono::nanoseconds window,
                           AllocationResult& result, std::list<BudgetChange>& records) {
    const auto now = clock_.now();
    // Zero means all history; a window reaching past the clock's beginning starts there.
    const auto span = std::chrono::duration_cast<typename time_point::duration>(window);
    const time_point from = window == std::chrono::nanoseconds::zero()
                                ? time_point::min()
                                : detail::saturating_add(now, -span);
    std::vector<AllocationAgent<Amount>> agents;
    std::vector<AgentState*> states;
    Amount distributable = p.unallocated;
    for (AgentId id : p.agents) {
      AgentState& a = agents_[id.value() - 1];
      if (a.removed)
        continue;
      const auto b = balance_for_change(a);
      AllocationAgent<Amount> view{.id = a.id,
                                   .priority = a.priority,
                                   .used = b.used,
                                   .reserved = b.reserved,
                                   .remaining = b.remaining,
                                   .usage_count = 0,
                                   .usage_sum = zero()};
      if (const auto* m = a.monitored.get())
        m->history.for_each(from, time_point::max(), [&](const typename History::Record& r) {
          ++view.usage_count;
          view.usage_sum = traits::add(view.usage_sum, r.amount);
        });
      distributable = traits::add(distributable, b.remaining);
      agents.push_back(view);
      states.push_back(&a);
    }
    const PoolSnapshot<Amount> snapshot{p.id, p.priority, distributable, agents};
    const std::vector<Amount> target = strategy.allocate(snapshot);
    validate_allocation(snapshot, target, strategy.name());
    for (std::size_t i = 0; i < agents.size(); ++i)
      if (agents[i].remaining < target[i])
        require_fits_locked(*states[i], traits::sub(target[i], agents[i].remaining));
    result = {p.id, std::string(strategy.name()), distributable, p.unallocated, {}, {}};
    result.changes.reserve(agents.size());
    records.clear();
    for (std::size_t i = 0; i < agents.size(); ++i) {
      result.changes.push_back({agents[i].id, agents[i].remaining, target[i]});
      if (target[i] != agents[i].remaining) {
        records.emplace_back();
        records.back().agent_name = states[i]->name;
        records.back().reason = fmt::format("allocation: {}", strategy.name());
      }
    }
    // Those who give up money first, so the pool never hands out what it has not got.
    const auto put_back = [&](std::size_t taken) noexcept { // credits cannot fail
      for (std::size_t j = 0; j < taken; ++j)
        if (target[j] < agents[j].remaining)
          (void)ledger_.credit(states[j]->account, traits::sub(agents[j].remaining, target[j]));
    };
    for (std::size_t i = 0; i < agents.size(); ++i) {
      if (!(target[i] < agents[i].remaining))
        continue;
      std::optional<Amount> taken;
      try {
        taken = withdraw(*states[i], traits::sub(agents[i].remaining, target[i]));
      } catch (...) { // a remote ledger out of reach
        put_back(i);
        throw;
      }
      if (!taken) {
        put_back(i);
        return false;
      }
    }
    Amount handed_out = zero();
    auto record = records.begin();
    for (std::size_t i = 0; i < agents.size(); ++i) {
      handed_out = traits::add(handed_out, target[i]);
      if (target[i] == agents[i].remaining)
        continue;
      if (agents[i].remaining < target[i])
        (void)ledger_.credit(states[i]->account, traits::sub(target[i], agents[i].remaining));
      states[i]->allocated =
          traits::add(traits::sub(states[i]->allocated, agents[i].remaining), target[i]);
      fill_change_locked(*record++, *states[i], agents[i].remaining, target[i], now);
    }
    p.unallocated = traits::sub(distributable, handed_out);
    result.unallocated_after = p.unallocated;
    return true;
  }

  // Gives an agent's used money back: to its remaining balance, or, when its account is closed
  // (a removed agent), to the caller in `refunded`. Settling a negative usage against nothing
  // held is the ledger's exact inverse of a charge (remaining += used, used -= used, no charge
  // counted), so no ledger needs a new operation. Callers hold the writer lock, the only place
  // `used` ever goes down, so the amount read here is never more than what is subtracted from.
  //
  // A remote ledger that cannot be reached forgives nothing: from an old balance it could forgive
  // usage that other processes' settlements have moved since (nothing is spent by forgiving less).
  Settlement<Amount> forgive(AgentState& a) noexcept {
    Amount used = zero();
    if constexpr (requires { ledger_.fresh_balance(a.account); }) {
      const auto b = ledger_.fresh_balance(a.account);
      if (!b)
        return {zero(), zero(), zero()};
      used = b->used;
    } else {
      used = ledger_.balance(a.account).used;
    }
    return ledger_.settle(a.account, zero(), traits::sub(zero(), used));
  }

  // One live agent's reset and its audit record; what was forgiven. Under the writer lock.
  Amount reset_locked(AgentState& a, BudgetChange& record, time_point now) noexcept {
    const Amount before = ledger_.balance(a.account).remaining;
    const Settlement<Amount> s = forgive(a);
    const Amount forgiven = traits::sub(zero(), s.charged);
    fill_change_locked(record, a, before, traits::add(before, forgiven), now);
    return forgiven;
  }

  // Takes `amount` out of an agent's remaining balance without counting it as usage, for
  // transfers and allocations: the balance it was taken from, or nothing when the balance cannot
  // cover it (a consumer got there first). Never below zero.
  // Throws `AmountOverflow` when giving the agent `more` would make its account hold more than
  // the ledger's `max_balance()` (the lock-free `InMemoryLedger` packs a balance into 55 bits).
  // Under the writer lock: only writers add to an account, so the total cannot move meanwhile.
  void require_fits_locked(const AgentState& a, const Amount& more) const {
    if constexpr (requires {
                    { L::max_balance() } -> std::same_as<std::optional<Amount>>;
                  }) {
      const std::optional<Amount> cap = L::max_balance();
      if (!cap || !(zero() < more))
        return;
      const auto b = ledger_.balance(a.account);
      std::optional<Amount> total = checked_add(b.remaining, b.used);
      if (total)
        total = checked_add(*total, b.reserved);
      if (total)
        total = checked_add(*total, more);
      if (!total || *cap < *total)
        throw AmountOverflow(fmt::format(
            "safeguards: agent \"{}\" ({}) holds {} and cannot be given {} more: an account "
            "holds at most {}",
            a.name, a.id,
            amount_to_string(traits::add(traits::add(b.remaining, b.used), b.reserved)),
            amount_to_string(more), amount_to_string(*cap)));
    }
  }

  // The balance a management change starts from: read afresh, or `LedgerUnavailable` from a
  // remote ledger that cannot be reached (whose `balance` would answer its last known numbers).
  LedgerBalance<Amount> balance_for_change(const AgentState& a) const {
    if constexpr (requires { ledger_.fresh_balance(a.account); }) {
      if (auto b = ledger_.fresh_balance(a.account))
        return *b;
      throw LedgerUnavailable(fmt::format(
          "safeguards: the ledger could not be reached to read {}'s balance; nothing changed",
          a.id));
    } else {
      return ledger_.balance(a.account);
    }
  }

  // Takes `amount` from a live agent's remaining: the remaining it had, or nothing when it
  // cannot cover it. Throws `LedgerUnavailable` (nothing taken) when a remote ledger cannot be
  // reached.
  std::optional<Amount> withdraw(AgentState& a, const Amount& amount) {
    Amount current = balance_for_change(a).remaining;
    while (!(current < amount)) {
      const LedgerStatus s =
          ledger_.compare_exchange_remaining(a.account, current, traits::sub(current, amount));
      if (s == LedgerStatus::ok)
        return current;
      if (s != LedgerStatus::conflict)
        throw_ledger_refusal(a.id, s);
    }
    return std::nullopt;
  }

  // A management operation's ledger change that was refused for a reason other than the
  // balance: the agent's account closed under it, or a remote ledger out of reach.
  [[noreturn]] void throw_ledger_refusal(AgentId agent, LedgerStatus s) const {
    if (s == LedgerStatus::unavailable)
      throw LedgerUnavailable(fmt::format(
          "safeguards: the ledger could not be reached to change {}; nothing changed", agent));
    if (s == LedgerStatus::overflow)
      throw AmountOverflow(fmt::format("safeguards: {} cannot hold that much", agent));
    throw_unknown_agent(agent);
  }

  // The usage a commit reports nobody could pay is a statistic: past the amount type's range it
  // stays at the largest value the type has rather than throwing from a `noexcept` settle.
  static Amount saturating_add(const Amount& a, const Amount& b) noexcept {
    if (auto sum = checked_add(a, b))
      return *sum;
    if constexpr (detail::RawAmount<Amount>)
      return traits::from_raw(std::numeric_limits<std::int64_t>::max());
    else if constexpr (std::floating_point<Amount>)
      return std::numeric_limits<Amount>::max();
    else
      return a;
  }

  static std::string implicit_pool_name(const std::string& agent_name) {
    return "agent:" + agent_name;
  }

  // An agent's account: by its name where the ledger knows accounts by name (a `RedisLedger`,
  // where other processes' agents of that name share it).
  typename L::handle_type open_account(const std::string& name, const Amount& initial) {
    if constexpr (requires { ledger_.open(std::string_view(name), initial); })
      return ledger_.open(std::string_view(name), initial);
    else
      return ledger_.open(initial);
  }
  // Undoes `open_account` for an agent that could not be created.
  void undo_open(typename L::handle_type h) noexcept {
    if constexpr (requires { ledger_.undo_open(h); })
      ledger_.undo_open(h);
    else
      close_quietly(h);
  }

  // Closes an account on a path that is already failing or has nothing to sweep: a remote
  // ledger that cannot be reached leaves it open, which loses no money.
  void close_quietly(typename L::handle_type h) noexcept {
    try {
      (void)ledger_.close(h);
    } catch (...) {
    }
  }

  // An account as a snapshot had it (remaining, used and the charge count), through the ledger's
  // own way to open one so when it has it (`InMemoryLedger` does), else opened and charged.
  typename L::handle_type open_restored(const Amount& remaining, const Amount& used,
                                        std::uint64_t charges) {
    if constexpr (requires { ledger_.open(remaining, used, charges); }) {
      return ledger_.open(remaining, used, charges);
    } else {
      auto h = ledger_.open(traits::add(remaining, used));
      if (zero() < used && ledger_.debit(h, used) != LedgerStatus::ok) {
        close_quietly(h);
        throw InvalidArgument("safeguards: the ledger refused to restore an account's usage");
      }
      return h;
    }
  }

  // Everything `restore` relies on, checked before it changes anything.
  void check_restorable(const State& state) const {
    const auto bad = [](const std::string& what) {
      throw InvalidArgument("safeguards: cannot restore: " + what);
    };
    std::map<std::uint64_t, Amount> allocated_by_pool;
    std::unordered_map<std::string, PoolId> names;
    std::uint64_t last_pool = 0;
    for (const auto& p : state.pools) {
      if (p.id.value() <= last_pool)
        bad(fmt::format("pool ids out of order at {}", p.id));
      last_pool = p.id.value();
      detail::validate_name(p.name, "pool");
      detail::validate_priority(p.priority, p.name);
      detail::validate_non_negative(p.initial, "initial budget of pool", p.name);
      detail::validate_non_negative(p.unallocated, "unallocated budget of pool", p.name);
      if (!names.emplace(p.name, p.id).second)
        bad(fmt::format("two pools named \"{}\"", p.name));
      allocated_by_pool.emplace(p.id.value(), zero());
    }
    std::unordered_map<std::string, AgentId> live;
    for (std::size_t i = 0; i < state.agents.size(); ++i) {
      const auto& a = state.agents[i];
      if (a.id.value() != i + 1)
        bad(fmt::format("agent ids must be 1, 2, 3, ...: found {} in place {}", a.id, i + 1));
      detail::validate_name(a.name, "agent");
      detail::validate_priority(a.priority, a.name);
      for (const Amount* v : {&a.allocated, &a.remaining, &a.used, &a.reserved, &a.overspent})
        detail::validate_non_negative(*v, "budget of agent", a.name);
      const auto pool = allocated_by_pool.find(a.pool.value());
      if (pool == allocated_by_pool.end())
        bad(fmt::format("agent \"{}\" is in pool {}, which is not in the state", a.name, a.pool));
      if (traits::add(traits::add(a.remaining, a.used), a.reserved) != a.allocated)
        bad(fmt::format("agent \"{}\": remaining + used + reserved is not its allocation", a.name));
      if (a.removed && a.remaining != zero())
        bad(fmt::format("removed agent \"{}\" still has a remaining budget", a.name));
      if constexpr (requires { L::max_balance(); }) {
        if (const auto max = L::max_balance(); max && *max < a.allocated)
          bad(fmt::format("agent \"{}\" holds more than an account can", a.name));
      }
      if (!a.removed && !live.emplace(a.name, a.id).second)
        bad(fmt::format("two agents named \"{}\"", a.name));
      pool->second = traits::add(pool->second, a.allocated);
    }
    for (const auto& p : state.pools)
      if (traits::add(p.unallocated, allocated_by_pool.at(p.id.value())) != p.initial)
        bad(fmt::format("pool \"{}\": unallocated + what its agents hold is not its budget",
                        p.name));
  }

  PoolId add_pool_locked(PoolSpec spec, bool implicit) {
    PoolId id(next_pool_id_);
    PoolState p;
    p.id = id;
    p.name = std::move(spec.name);
    p.priority = spec.priority;
    p.metadata = std::move(spec.metadata);
    p.implicit = implicit;
    p.initial = spec.initial_budget;
    p.unallocated = spec.initial_budget;
    p.created = clock_.now();
    auto [it, inserted] = pools_.emplace(id.value(), std::move(p));
    try {
      pool_names_.emplace(it->second.name, id);
    } catch (...) {
      pools_.erase(it);
      throw;
    }
    ++next_pool_id_;
    return id;
  }

  // Undoes `add_pool_locked` for a pool nobody has seen (the writer lock was held throughout),
  // so its id can be handed out again without breaking "ids are never reused".
  void remove_unused_pool_locked(PoolId id) noexcept {
    auto it = pools_.find(id.value());
    if (it == pools_.end())
      return;
    pool_names_.erase(it->second.name);
    pools_.erase(it);
    if (id.value() + 1 == next_pool_id_)
      --next_pool_id_;
  }

  PoolState* find_pool_locked(PoolId pool) const {
    auto it = pools_.find(pool.value());
    if (it == pools_.end())
      throw UnknownPool(fmt::format("safeguards: unknown pool {}", pool));
    return const_cast<PoolState*>(&it->second);
  }

  std::optional<AgentId> find_agent_locked(std::string_view name) const noexcept {
    return find_agent_locked(name, detail::NameIndex::hash(name));
  }
  std::optional<AgentId> find_agent_locked(std::string_view name,
                                           std::uint32_t name_hash) const noexcept {
    const std::uint64_t id =
        agent_names_.find(name, name_hash, [this](std::uint64_t i) -> const std::string& {
          return agents_[i - 1].name;
        });
    return id == 0 ? std::nullopt : std::optional(AgentId(id));
  }

  static detail::AgentExtras& extras_locked(AgentState& a) {
    if (!a.extras)
      a.extras = std::make_unique<detail::AgentExtras>();
    return *a.extras;
  }

  // Any agent ever created, removed or not.
  AgentState& known_agent_locked(AgentId agent) const {
    if (agent.value() == 0 || agent.value() > agents_.size())
      throw_unknown_agent(agent);
    return const_cast<AgentState&>(agents_[agent.value() - 1]);
  }

  AgentState& live_agent_locked(AgentId agent) const {
    auto& a = known_agent_locked(agent);
    if (a.removed)
      throw UnknownAgent(fmt::format("safeguards: agent {} (\"{}\") was removed", agent, a.name));
    return a;
  }

  static double per_second(const Amount& used, time_point created, time_point now) {
    double seconds = std::chrono::duration<double>(now - created).count();
    return seconds > 0 ? traits::to_double(used) / seconds : 0.0;
  }

  AgentMetrics metrics_locked(const AgentState& a, time_point now) const {
    auto b = ledger_.balance(a.account);
    return {a.id,
            a.name,
            a.pool,
            a.priority,
            a.allocated,
            b.used,
            b.reserved,
            b.remaining,
            a.overspent, // the caller holds the coordinator's lock
            charge_count(a),
            per_second(b.used, a.created, now)};
  }

  PoolMetrics metrics_locked(const PoolState& p, time_point now) const {
    PoolMetrics m;
    m.id = p.id;
    m.name = p.name;
    m.priority = p.priority;
    m.implicit = p.implicit;
    m.initial_budget = p.initial;
    m.unallocated_budget = p.unallocated;
    m.allocated_budget = m.used_budget = m.reserved_budget = zero();
    m.remaining_budget = p.unallocated;
    for (AgentId id : p.agents) {
      const auto& a = agents_[id.value() - 1];
      auto b = ledger_.balance(a.account);
      m.allocated_budget = traits::add(m.allocated_budget, a.allocated);
      m.used_budget = traits::add(m.used_budget, b.used);
      m.reserved_budget = traits::add(m.reserved_budget, b.reserved);
      m.remaining_budget = traits::add(m.remaining_budget, b.remaining);
      if (!a.removed)
        ++m.agent_count;
    }
    m.consumption_rate = per_second(m.used_budget, p.created, now);
    return m;
  }

  static std::list<BudgetChange> creation_record(const std::string& name) {
    std::list<BudgetChange> record(1);
    record.front().reason = "agent created";
    record.front().agent_name = name;
    return record;
  }

  // Fills a record whose strings were allocated before the change was made, and stamps the next
  // sequence number: under the writer lock, so numbers follow the order of the changes.
  void fill_change_locked(BudgetChange& c, const AgentState& a, const Amount& old_budget,
                          const Amount& new_budget, time_point now) noexcept {
    c.agent = a.id;
    c.priority = a.priority;
    c.old_budget = old_budget;
    c.new_budget = new_budget;
    c.delta = traits::sub(new_budget, old_budget);
    c.timestamp = now;
    c.sequence = ++last_sequence_;
  }

  // A ledger that counts charges keeps the count on the balance's own cache line: with two
  // cores on one agent, a second contended line (this counter in AgentState, next to fields
  // every consume reads) made each consume several times slower than the debit itself.
  static constexpr bool ledger_counts_charges = detail::ledger_counts_charges<L>;

  void count_charge(AgentState& a) noexcept {
    if constexpr (!ledger_counts_charges)
      a.consume_count.fetch_add(1, std::memory_order_relaxed);
  }

  std::uint64_t charge_count(const AgentState& a) const noexcept {
    if constexpr (ledger_counts_charges)
      return ledger_.charge_count(a.account);
    else
      return a.consume_count.load(std::memory_order_relaxed);
  }

  UsageEvent make_event(const AgentState& a, UsageKind kind, const Amount& amount,
                        const LedgerBalance<Amount>& before, const LedgerBalance<Amount>& after,
                        time_point now) const {
    auto allocated = traits::add(traits::add(before.remaining, before.used), before.reserved);
    return {a.id,        a.pool,     kind, amount, allocated, before.remaining, after.remaining,
            before.used, after.used, now};
  }

  ViolationReporter reporter_for(const AgentState& a, time_point now) const noexcept {
    return ViolationReporter(deliver_, a.id, a.name, now);
  }

  // For an event without a timestamp: violations are stamped when they are reported.
  ViolationReporter unstamped_reporter_for(const AgentState& a) const noexcept {
    return ViolationReporter(deliver_, a.id, a.name, &read_clock, this);
  }
  static time_point read_clock(const void* self) noexcept {
    return static_cast<const BasicBudgetCoordinator*>(self)->clock_.now();
  }

  // Whether a monitored change of `m`'s agent reads the clock: only when a monitor reads
  // timestamps or history is kept (a clock read was a third of an observed consume).
  bool stamps(const Monitored& m) const noexcept {
    return options_.history_capacity != 0 || m.turn.stamps() != 0;
  }
  time_point stamp_if(bool stamp) const noexcept { return stamp ? clock_.now() : time_point{}; }

  Gate gate_of(const AgentState& a) noexcept { return Gate(ledger_, a.account); }

  // What the turn of `agent` needs from the coordinator: the gate of the agent's changes and the
  // delivery of its events. Three references, from which the gate is made where it is used: the
  // code after the observers' calls then keeps these three in registers, where a gate and a
  // delivery kept whole were spilled to the stack, stores in front of the locked instruction
  // that gives the turn up.
  struct AgentTurn {
    BasicBudgetCoordinator& coord;
    AgentState& agent;
    const Monitored& monitored;

    Gate gate() const noexcept { return coord.gate_of(agent); }
    // Tells the observers in `list` about `p`; run by whoever holds the agent's turn.
    void deliver(const MonitorList* list, const Pending& p) const noexcept {
      coord.deliver_event(agent, monitored, list, p);
    }
  };

  void deliver_event(AgentState& a, const Monitored& m, const MonitorList* list,
                     const Pending& p) noexcept {
    if (!list)
      return;
    const auto on_failure = [this] { count_sink_failure(); };
    if (p.stamped) [[unlikely]] {
      detail::notify(list->entries, p.event, reporter_for(a, p.event.timestamp), on_failure);
    } else if (list->stamp_count != 0) [[unlikely]] { // registered after the change chose
      UsageEvent e = p.event;                         // not to stamp
      e.timestamp = clock_.now();
      detail::notify(list->entries, e, reporter_for(a, e.timestamp), on_failure);
    } else {
      detail::notify(list->entries, p.event, *m.unstamped_reporter, on_failure);
    }
  }

  struct LeaveTurn {
    BasicBudgetCoordinator& coord;
    AgentState& agent;
    Monitored& monitored;
    ~LeaveTurn() { monitored.turn.leave(AgentTurn{coord, agent, monitored}); }
  };

  // Makes a monitored change under the agent's gate. `change(account)` makes it on the held
  // account and returns the event's amount, or nothing when it changed nothing. Balances are read
  // just before and after it in the same hold, so the event's numbers are those of this change
  // alone, and the gate makes events follow the changes' order.
  template <class Change, class After>
  void record_change(AgentState& a, Monitored& m, UsageKind kind, Change& change, After& after,
                     bool stamp, typename Turn::Route route) noexcept {
    const time_point now = stamp_if(stamp);
    auto apply = [&](auto& account, detail::EventSlot<Pending>& event) noexcept {
      const LedgerBalance<Amount> before = account.balance();
      const std::optional<Amount> amount = change(account);
      const LedgerBalance<Amount> balance_after = account.balance();
      after();
      if (!amount)
        return false;
      try {
        event.emplace(Pending{make_event(a, kind, *amount, before, balance_after, now), stamp});
        return true;
      } catch (...) { // no event rather than none delivered: the change stands
        return false;
      }
    };
    if (!m.turn.change(AgentTurn{*this, a, m}, route, apply))
      count_sink_failure();
  }

  // A change that cannot be refused: settling or releasing money already set aside. It is made
  // at once and never waits for the turn: its event is delivered by this thread when the turn is
  // free, otherwise by the holder of the turn (after the event that holder is delivering, when
  // that is this thread running the agent's own monitors).
  //
  // Callers make an unmonitored change themselves, inline, before coming here: through a
  // function the compiler keeps out of line, the settlement went through the stack in pieces
  // and reserve + commit took twice as long (store-to-load forwarding stalls).
  template <class Change, class After>
  void unrefusable_change(AgentState& a, UsageKind kind, Change change, After after) noexcept {
    Monitored& m = *a.monitored.get(); // made before monitor_count first became nonzero
    const auto route = m.turn.held_by_this_thread() ? Turn::Route::queue : Turn::Route::claim;
    record_change(a, m, kind, change, after, stamps(m), route);
  }

  // What a consume or reserve of `amount` leaves of `before`.
  static LedgerBalance<Amount> would_leave(const LedgerBalance<Amount>& before, UsageKind kind,
                                           const Amount& amount) {
    auto after = before;
    after.remaining = traits::sub(before.remaining, amount);
    if (kind == UsageKind::consume)
      after.used = traits::add(before.used, amount);
    else
      after.reserved = traits::add(before.reserved, amount);
    return after;
  }

  // The ledger's part of a consume or reserve on `account` (what the agent's gate lends, see
  // `detail::TurnGate`), with the count a consume updates.
  template <class Account>
  LedgerStatus take(Account& account, AgentState& a, UsageKind kind,
                    const Amount& amount) noexcept {
    if (kind != UsageKind::consume)
      return account.reserve(amount);
    const LedgerStatus status = account.debit(amount);
    if (status == LedgerStatus::ok)
      count_charge(a);
    return status;
  }

  void record_history(Monitored* m, UsageKind kind, const Amount& amount, time_point now) noexcept {
    if (kind == UsageKind::consume && m && options_.history_capacity != 0)
      m->history.record(amount, kind, now);
  }

  // Everything that is not the bare lock-free path: history, monitors, or both. `change_slow`
  // takes every case; the usual one has a faster way in (below).
  template <UsageKind Kind>
  ConsumeResult change_monitored(AgentState& a, const Amount& amount) noexcept {
    if constexpr (detail::RawAmount<Amount>)
      return change_monitored_in_one_piece<Kind>(a, amount);
    else
      return change_slow(a, Kind, amount);
  }

  // For the raw amount types, the usual monitored change (observers only, made by a thread that
  // runs no monitor) is compiled as one function, its kind a constant. Each call it made out of
  // line saved and restored registers on the stack, and its two locked instructions wait for
  // stores ahead of them: with the rest of issue 12's second pass, an observed consume went from
  // 350 instructions and 31 ns to 180 and 18 (docs/performance.md). Not for the other amount
  // types, whose arithmetic (Boost.Multiprecision) would be inlined whole; `change_slow` and the
  // rare paths below keep their own calls.
  template <UsageKind Kind>
  [[gnu::noinline, gnu::flatten]] ConsumeResult
  change_monitored_in_one_piece(AgentState& a, const Amount& amount) noexcept {
    Monitored* m = a.monitored.get();
    if (m && a.monitor_count.load(std::memory_order_acquire) != 0 && observed_only(*m)) [[likely]] {
      if (!stamps(*m)) [[likely]]
        return change_and_deliver(a, *m, Kind, amount, time_point{}, false, Turn::Route::claim);
      return change_stamped_in_one_piece<Kind>(a, *m, amount);
    }
    return change_slow(a, Kind, amount);
  }

  // The same with a timestamp, apart: in one function with the unstamped change, the timestamp
  // and its flag took registers the unstamped change then spilled to the stack.
  template <UsageKind Kind>
  [[gnu::noinline, gnu::flatten]] ConsumeResult
  change_stamped_in_one_piece(AgentState& a, Monitored& m, const Amount& amount) noexcept {
    return change_and_deliver(a, m, Kind, amount, clock_.now(), true, Turn::Route::claim);
  }

  // Whether a monitored change of `m`'s agent may be made at once and its event handed over.
  // Observers alone do not need the turn before the change; checks do, and so does a thread
  // already running monitors, which must get `reentrant_call` or `would_deadlock` instead of its
  // change being queued behind the event it is handling.
  static bool observed_only(const Monitored& m) noexcept {
    return m.turn.checks() == 0 && !detail::OrderLock::this_thread_holds_any();
  }

  [[gnu::noinline]] ConsumeResult change_slow(AgentState& a, UsageKind kind,
                                              const Amount& amount) noexcept {
    Monitored* m = a.monitored.get();
    if (a.monitor_count.load(std::memory_order_acquire) == 0 || !m) { // history only, or was
      detail::ForwardedHold<L> account(ledger_, a.account);
      const LedgerStatus status = take(account, a, kind, amount);
      if (status == LedgerStatus::ok && options_.history_capacity != 0)
        record_history(m, kind, amount, clock_.now());
      return detail::to_consume_status(status);
    }
    if (observed_only(*m))
      return change_observed(a, *m, kind, amount);
    return change_checked(a, *m, kind, amount);
  }

  // A consume or reserve watched by observers only: made at once, delivered by this thread if
  // the turn is free, otherwise handed to the thread holding it.
  //
  // The change is written out here rather than through `record_change`: a lambda returning
  // `std::optional<Amount>` was kept out of line, and GCC passed its result through the stack,
  // a store-to-load forwarding stall of about 5 ns on every monitored consume.
  ConsumeResult change_observed(AgentState& a, Monitored& m, UsageKind kind,
                                const Amount& amount) noexcept {
    const bool stamp = stamps(m);
    return change_and_deliver(a, m, kind, amount, stamp_if(stamp), stamp, Turn::Route::claim);
  }

  // The change and its event, made in the turn's order along `route`, then delivered. `now` is
  // the event's timestamp when `stamped`.
  ConsumeResult change_and_deliver(AgentState& a, Monitored& m, UsageKind kind,
                                   const Amount& amount, time_point now, bool stamped,
                                   typename Turn::Route route) noexcept {
    LedgerStatus status = LedgerStatus::ok;
    auto apply = [&](auto& account, detail::EventSlot<Pending>& event) noexcept {
      return take_with_event(account, a, m, kind, amount, now, stamped, event, status);
    };
    if (!m.turn.change(AgentTurn{*this, a, m}, route, apply))
      count_sink_failure();
    return detail::to_consume_status(status);
  }

  // The ledger's part of an observed consume or reserve, under the agent's gate, and its event.
  // Returns whether `event` was filled; `status` is the ledger's answer.
  template <class Account>
  bool take_with_event(Account& account, AgentState& a, Monitored& m, UsageKind kind,
                       const Amount& amount, time_point now, bool stamped,
                       detail::EventSlot<Pending>& event, LedgerStatus& status) noexcept {
    const LedgerBalance<Amount> before = account.balance();
    status = take(account, a, kind, amount);
    if (status != LedgerStatus::ok)
      return false;
    record_history(&m, kind, amount, now);
    // The balance after is worked out, not read again: this change moved exactly `amount`.
    try {
      event.emplace(Pending{
          make_event(a, kind, amount, before, would_leave(before, kind, amount), now), stamped});
      return true;
    } catch (...) { // no event rather than none delivered: the change stands
      return false;
    }
  }

  // A consume or reserve with veto checks (or from inside a monitor): the turn is held across
  // the checks and the change, so the checks see the balance the change will be made on.
  [[gnu::noinline]] ConsumeResult change_checked(AgentState& a, Monitored& m, UsageKind kind,
                                                 const Amount& amount) noexcept {
    Gate gate = gate_of(a);
    switch (m.turn.enter(gate)) {
    case Turn::Entry::reentrant:
      return ConsumeStatus::reentrant_call;
    case Turn::Entry::would_deadlock:
      return ConsumeStatus::would_deadlock;
    case Turn::Entry::locked:
      break;
    }
    LeaveTurn leave{*this, a, m};
    // Stamped as an observed change is: only when a monitor of the agent reads timestamps (the
    // built-in SpendingLimit does not), its violations stamped when reported otherwise.
    const bool stamp = stamps(m);
    const auto now = stamp_if(stamp);
    const auto before = ledger_.balance(a.account);
    if (!ledger_.is_open(a.account))
      return ConsumeStatus::unknown_agent;
    if (before.remaining < amount)
      return ConsumeStatus::insufficient;
    // Valid until the turn is given up, even if the list is replaced meanwhile.
    if (const MonitorList* list = m.turn.list(gate); list && m.turn.checks() != 0) {
      const auto reporter = stamp ? reporter_for(a, now) : unstamped_reporter_for(a);
      const auto event =
          make_event(a, kind, amount, before, would_leave(before, kind, amount), now);
      for (const auto& entry : list->entries)
        if (entry->check && entry->is_active() &&
            !detail::run_check(*entry, event, reporter, [this] { count_sink_failure(); }))
          return ConsumeStatus::denied_by_monitor;
    }
    // A check may have settled or released a reservation: the debit re-checks the balance
    // itself, and the event is read afresh and delivered after the changes the checks made.
    return change_and_deliver(a, m, kind, amount, now, stamp, Turn::Route::holder);
  }

  // Settles (part of) a reservation; called by Reservation.
  // `actual` is what this call settles; `usage_total` is the call's whole usage so far, which
  // is what an Overspend report names.
  CommitResult settle(AgentState& a, const Amount& held, const Amount& actual,
                      const Amount& estimate, const Amount& usage_total) noexcept {
    // The unmonitored settlement is initialised from the ledger's result, not assigned to: GCC
    // wrote the assigned struct field by field and read it back whole, a store-forwarding stall
    // that perf put at a tenth of a reserve + commit.
    if (a.monitor_count.load(std::memory_order_acquire) == 0)
      return settled(a, settle_in_ledger(a, held, actual), estimate, usage_total);
    const Amount z = zero();
    Settlement<Amount> s{z, z, z};
    // Counted after the change, in its place in line; the clock is read before the gate, which
    // may be the account's hold (a user's clock must not run while it is held).
    const time_point history_now = options_.history_capacity != 0 ? clock_.now() : time_point{};
    unrefusable_change(
        a, UsageKind::commit,
        [&](auto& account) noexcept -> std::optional<Amount> {
          s = account.settle(held, actual);
          return s.charged;
        },
        [&] { note_charge(a, s.charged, history_now); });
    return settled(a, s, estimate, usage_total);
  }

  CommitResult settled(AgentState& a, const Settlement<Amount>& s, const Amount& estimate,
                       const Amount& usage_total) noexcept {
    const Amount z = zero();
    if (s.account_closed && z < s.refunded)
      return_to_pool(a, s.refunded);
    if (z < s.uncovered)
      report_overspend(a, s, estimate, usage_total);
    return {ConsumeStatus::ok, s.charged, s.refunded, s.uncovered};
  }

  Settlement<Amount> settle_in_ledger(AgentState& a, const Amount& held,
                                      const Amount& actual) noexcept {
    Settlement<Amount> s = ledger_.settle(a.account, held, actual);
    note_charge(a, s.charged);
    return s;
  }

  // The count and history of a settlement that charged `charged`, recorded at `now` (the
  // clock's time when none is given).
  void note_charge(AgentState& a, const Amount& charged,
                   std::optional<time_point> now = std::nullopt) noexcept {
    if (zero() < charged) {
      count_charge(a);
      if (options_.history_capacity != 0)
        if (auto* m = a.monitored.get())
          m->history.record(charged, UsageKind::commit, now ? *now : clock_.now());
    }
  }

  void report_overspend(AgentState& a, const Settlement<Amount>& s, const Amount& estimate,
                        const Amount& usage_total) noexcept {
    {
      // Rare enough to take the coordinator's lock, which metrics already hold to read it.
      std::unique_lock lock(mutex_);
      a.overspent = saturating_add(a.overspent, s.uncovered);
    }
    try {
      reporter_for(a, clock_.now())
          .report(ViolationType::Overspend, AlertSeverity::High,
                  fmt::format("Actual usage {} exceeded what {} could pay by {}",
                              amount_to_string(usage_total), a.id, amount_to_string(s.uncovered)),
                  {{"estimate", amount_to_string(estimate)},
                   {"actual", amount_to_string(usage_total)},
                   {"charged", amount_to_string(s.charged)},
                   {"uncovered", amount_to_string(s.uncovered)}});
    } catch (...) {
      count_sink_failure();
    }
  }

  // Releases a reservation; called by Reservation.
  void release(AgentState& a, const Amount& held) noexcept {
    bool closed = false;
    if (a.monitor_count.load(std::memory_order_acquire) == 0) {
      closed = !ledger_.release(a.account, held);
    } else {
      unrefusable_change(
          a, UsageKind::release,
          [&](auto& account) noexcept -> std::optional<Amount> {
            closed = !account.release(held);
            return held;
          },
          [] {});
    }
    if (closed)
      return_to_pool(a, held);
  }

  // Money a removed agent's reservation gave back goes to the pool it came from.
  void return_to_pool(AgentState& a, const Amount& amount) noexcept {
    std::unique_lock lock(mutex_);
    auto& pool = pools_.at(a.pool.value());
    a.allocated = traits::sub(a.allocated, amount);
    pool.unallocated = traits::add(pool.unallocated, amount);
  }

  // Lists taken out of agents under the coordinator's lock, freed once it is released: the last
  // reference to a user's monitor may be among them.
  struct FreeLists {
    std::vector<MonitorList*> lists;
    FreeLists() = default;
    FreeLists(const FreeLists&) = delete;
    FreeLists& operator=(const FreeLists&) = delete;
    ~FreeLists() {
      for (MonitorList* list : lists)
        Turn::free_chain(list);
    }
  };

  template <class M>
  MonitorHandle register_monitor(typename Registry::Scope scope, std::uint64_t target, M monitor,
                                 MonitorOptions options) {
    // Made before the lock, so that if registering fails the user's monitor dies unlocked.
    std::shared_ptr<const MonitorFns> entry =
        detail::make_monitor_entry<UsageEvent, const ViolationReporter>(std::move(monitor),
                                                                        options);
    std::weak_ptr<const MonitorFns> weak = entry; // weak: a monitor may hold its own handle
    MonitorHandle handle(alive_, [this, weak] { unregister(weak); });
    FreeLists replaced;
    {
      std::unique_lock lock(mutex_);
      if (scope == Registry::Scope::agent)
        live_agent_locked(AgentId(target));
      else if (scope == Registry::Scope::pool)
        find_pool_locked(PoolId(target));
      replaced.lists.reserve(agents_.size());
      typename Registry::Registration registration{scope, target, entry};
      registry_.add(registration);
      for (auto& a : agents_) {
        if (!Registry::covers(registration, a.id, a.pool))
          continue;
        auto& m = a.monitored.ensure(options_.history_capacity);
        if (!m.unstamped_reporter) // read only by the holder of the turn, once a list is in
          m.unstamped_reporter.emplace(unstamped_reporter_for(a));
        Gate gate = gate_of(a);
        auto list = std::make_unique<MonitorList>();
        if (const MonitorList* current = m.turn.list(gate))
          list->entries = current->entries;
        list->entries.push_back(entry);
        const auto checks = list->checks();
        replaced.lists.push_back(m.turn.replace(gate, list.release(), checks));
        a.monitor_count.fetch_add(1, std::memory_order_release);
      }
    }
    return handle;
  }

  // Cannot fail: the monitor is marked inactive first, so it never starts again even if there
  // is no memory left to take it out of the lists (they then keep an inert pointer to it).
  void unregister(const std::weak_ptr<const MonitorFns>& weak) noexcept {
    auto entry = weak.lock();
    if (!entry)
      return;
    entry->deactivate();
    // Destroyed after unlocking: the last reference to the user's monitor may be among them.
    std::optional<typename Registry::Registration> removed;
    FreeLists replaced;
    try {
      std::unique_lock lock(mutex_);
      removed = registry_.remove(entry);
      if (!removed)
        return;
      replaced.lists.reserve(agents_.size());
      for (auto& a : agents_) {
        if (!Registry::covers(*removed, a.id, a.pool))
          continue;
        auto* m = a.monitored.get();
        if (!m)
          continue;
        Gate gate = gate_of(a);
        const MonitorList* current = m->turn.list(gate);
        if (!current)
          continue;
        auto pos = std::find(current->entries.begin(), current->entries.end(), entry);
        if (pos == current->entries.end())
          continue;
        auto list = std::make_unique<MonitorList>();
        list->entries = current->entries;
        list->entries.erase(list->entries.begin() + (pos - current->entries.begin()));
        const auto checks = list->checks();
        replaced.lists.push_back(m->turn.replace(gate, list.release(), checks));
        a.monitor_count.fetch_sub(1, std::memory_order_release);
      }
    } catch (...) {
    }
  }

  template <class Record, class F>
  SinkHandle add_sink(Sinks<Record>& sinks, F&& sink) {
    auto weak = sinks.add(std::function<void(const Record&)>(std::forward<F>(sink)));
    return SinkHandle(alive_, [&sinks, weak] { sinks.remove(weak); });
  }

  void count_sink_failure() noexcept { sink_failures_.fetch_add(1); }

  void publish_violation(Violation&& v) noexcept {
    violation_sinks_.deliver(v, [this] { count_sink_failure(); });
  }

  // Called after the writer lock is released, so a sink may call back into the coordinator.
  void deliver_audit() noexcept {
    audit_queue_.deliver_all([this](const BudgetChange& c) {
      audit_sinks_.deliver(c, [this] { count_sink_failure(); });
    });
  }

  CoordinatorOptions options_;
  AllocationPolicy policy_;
  C clock_;
  mutable L ledger_;
  std::shared_ptr<int> alive_; // handles hold a weak_ptr to it
  typename ViolationReporter::Deliver deliver_;

  // Structure and management data. Never held while user code (monitors, sinks) runs, nor while
  // user objects are destroyed.
  mutable std::shared_mutex mutex_;
  detail::StableVector<AgentState> agents_; // index = id - 1; elements never move

  std::map<std::uint64_t, PoolState> pools_;
  detail::NameIndex agent_names_; // live agents; the names are the agents' own
  std::unordered_map<std::string, PoolId> pool_names_;
  Registry registry_;
  std::uint64_t next_pool_id_ = 1;
  std::uint64_t last_sequence_ = 0; // of audit records

  detail::SlotTable<AgentState> table_; // lock-free id -> agent for the hot path
  Sinks<Violation> violation_sinks_;
  Sinks<BudgetChange> audit_sinks_;
  detail::InOrderDelivery<BudgetChange> audit_queue_;
  std::atomic<std::uint64_t> sink_failures_{0};

  std::size_t open_reservations() const noexcept {
    std::size_t n = 0;
    for (const auto& a : agents_)
      n += a.open_reservations.load(std::memory_order_relaxed);
    return n;
  }
};

/// The coordinator most runtimes want: exact `Decimal` money, fixed allocation, wall-clock
/// timestamps, in-memory lock-free ledger.
using BudgetCoordinator = BasicBudgetCoordinator<>;

} // namespace v1
} // namespace safeguards
