// safeguards: graceful degradation, service levels chosen by the share of an allocation left.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <fmt/format.h>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/coordinator.hpp>
#include <safeguards/detail/subscribers.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/monitor.hpp>
#include <safeguards/service_levels.hpp>
#include <safeguards/subscription.hpp>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// An agent moved from one service level to another (level names of the tables that applied
/// before and after).
struct ServiceLevelChanged {
  AgentId agent{};
  std::string agent_name{};
  std::string from{};
  std::string to{};

  friend bool operator==(const ServiceLevelChanged&, const ServiceLevelChanged&) = default;
};

/// The guide's `setup_graceful_degradation`, for every agent of a coordinator: the service level
/// each agent is at, and a notification each time one changes.
///
/// **The share of the allocation left** is `remaining / (remaining + used + reserved)`, the
/// guide's `remaining_budget / initial_budget` (the coordinator's `initial_budget` is that sum
/// at quiescent points). Reserved money counts as gone, since it is about to be spent. An agent
/// whose allocation is zero is at the lowest level. Comparisons are exact; nothing divides.
///
/// **Notifications** come from an observer monitor registered for all agents (consumes,
/// reservations, commits, releases) and an audit sink (creation, `update_budget`, `transfer`,
/// `allocate`, emergency grants, period resets). After each change the agent's level is
/// recomputed from its current numbers; when it differs from the last level announced for it a
/// `ServiceLevelChanged` is queued. Recomputing and queueing happen under one lock, so each
/// change of level is announced exactly once and each agent's notifications chain (`from` is the
/// previous `to`). The queue is delivered in order, one notification at a time, by one thread at
/// a time, with no lock held: a subscriber may call back into this object or the coordinator,
/// and what it changes is announced after the notification it is handling. It runs on the
/// thread that made the change (or on one already delivering). After a consume, reserve or commit
/// that thread is inside the agent's monitors, where spending from that same agent is refused with
/// `reentrant_call`, as in any monitor; other agents and management calls are fine. A subscriber
/// that throws is counted in `subscriber_failures()` and otherwise ignored: the level has already
/// moved, and the other subscribers still get the notification.
///
/// Agents known when this object is made start at their current level, without notification;
/// an agent created later starts at the level of an untouched allocation (the first level, or
/// the lowest when its allocation is zero). A removed agent is forgotten, without notification.
/// Changing a table (`set_levels`, `set_levels_for_all`) recomputes the agents it covers and
/// announces those whose level name changed.
///
/// Cost: like any monitor, it takes `try_consume` off its lock-free fast path; each change
/// then also reads the agent's metrics (a shared lock, one string) under this object's lock.
///
/// The destructor unregisters the monitor and the sink, stops deliveries and waits for a
/// subscriber call running on another thread to return (not for one on its own thread: it may
/// be destroyed from a subscriber). It must not outlive its coordinator.
///
/// **Example**
/// ```
/// GracefulDegradation degradation(coord);   // the guide's four levels for every agent
/// auto sub = degradation.subscribe([](const ServiceLevelChanged& c) {
///   fmt::print("{} now at {} (was {})\n", c.agent_name, c.to, c.from);
/// });
/// if (degradation.service_level(agent).has("high_quality")) { /* use the large model */ }
/// ```
template <class Coordinator = BudgetCoordinator>
class BasicGracefulDegradation {
public:
  using coordinator_type = Coordinator;
  using amount_type = typename Coordinator::amount_type;
  using Callback = std::function<void(const ServiceLevelChanged&)>;

  /// Registers with `coord`; `for_all` applies to every agent without a table of its own.
  explicit BasicGracefulDegradation(Coordinator& coord,
                                    ServiceLevels for_all = ServiceLevels::guide_default())
      : state_(std::make_shared<State>(coord, std::move(for_all))) {
    // Triggers that arrive while the existing agents are read wait for the lock, then read
    // fresher numbers than these.
    std::lock_guard lock(state_->mutex);
    monitor_ = coord.add_monitor(
        all_agents, [state = state_](const UsageEvent& e) { state->on_change(e.agent); });
    audit_ = coord.add_audit_sink(
        [state = state_](const BudgetChange& c) { state->on_change(c.agent); });
    for (AgentId agent : coord.agents())
      if (auto reading = state_->read(agent))
        state_->levels[agent.value()] =
            state_->table_locked(agent).level_for(reading->remaining, reading->allocated).name;
  }

  BasicGracefulDegradation(const BasicGracefulDegradation&) = delete;
  BasicGracefulDegradation& operator=(const BasicGracefulDegradation&) = delete;

  ~BasicGracefulDegradation() {
    monitor_.reset();
    audit_.reset();
    std::unique_lock lock(state_->delivery_mutex);
    state_->closed.store(true);
    state_->idle.wait(lock, [this] {
      return !state_->delivering || state_->deliverer == std::this_thread::get_id();
    });
  }

  /// Gives `agent` a table of its own; throws `UnknownAgent` for an unknown or removed agent.
  void set_levels(AgentId agent, ServiceLevels levels) {
    auto table = std::make_shared<const ServiceLevels>(std::move(levels));
    auto state = state_; // a subscriber may destroy *this while the change is delivered
    {
      std::lock_guard lock(state->mutex);
      (void)state->coord.get_budget(agent);
      state->retired.reserve(state->retired.size() + 1);
      auto& slot = state->per_agent[agent.value()];
      if (slot)
        state->retired.push_back(std::move(slot));
      slot = std::move(table);
      state->refresh_quietly_locked(agent);
    }
    state->deliver();
  }

  /// Replaces the table of every agent without one of its own.
  void set_levels_for_all(ServiceLevels levels) {
    auto table = std::make_shared<const ServiceLevels>(std::move(levels));
    auto state = state_;
    {
      std::lock_guard lock(state->mutex);
      std::vector<AgentId> covered;
      for (const auto& [id, level] : state->levels)
        if (!state->per_agent.contains(id))
          covered.emplace_back(id);
      state->retired.push_back(std::move(state->for_all));
      state->for_all = std::move(table);
      for (AgentId agent : covered)
        state->refresh_quietly_locked(agent);
    }
    state->deliver();
  }

  /// The table that applies to `agent`: its own, or the one for all. The reference stays valid
  /// for this object's lifetime, even after the table is replaced.
  const ServiceLevels& levels_for(AgentId agent) const {
    std::lock_guard lock(state_->mutex);
    return state_->table_locked(agent);
  }

  /// The level `agent` is at now, computed from its current numbers. Throws `UnknownAgent` for
  /// an unknown or removed agent.
  ServiceLevel service_level(AgentId agent) const {
    auto reading = state_->read(agent);
    if (!reading)
      throw UnknownAgent(
          fmt::format("safeguards: {} was removed, it has no service level any more", agent));
    std::lock_guard lock(state_->mutex);
    return state_->table_locked(agent).level_for(reading->remaining, reading->allocated);
  }

  /// Calls `callback` once for each change of any agent's level, in order; keep the handle to
  /// stay subscribed. Throws `InvalidArgument` for an empty callback.
  [[nodiscard]] Subscription subscribe(Callback callback) {
    if (!callback)
      throw InvalidArgument("safeguards: subscribe needs a callback, got an empty function");
    auto weak = state_->subscribers.add(std::move(callback));
    State* state = state_.get();
    return Subscription(std::weak_ptr<void>(state_),
                        [state, weak] { state->subscribers.remove(weak); });
  }

  /// How many times a subscriber threw.
  std::uint64_t subscriber_failures() const noexcept { return state_->failures.load(); }

private:
  using UsageEvent = typename Coordinator::UsageEvent;
  using BudgetChange = typename Coordinator::BudgetChange;
  using traits = amount_traits<amount_type>;

  struct Reading {
    amount_type remaining;
    amount_type allocated;
    std::string name;
  };

  // Shared with the monitor and the sink, so a trigger still running on another thread when
  // this object is destroyed touches only the state, never the destroyed object.
  struct State {
    State(Coordinator& c, ServiceLevels all)
        : coord(c), for_all(std::make_shared<const ServiceLevels>(std::move(all))) {}

    Coordinator& coord;

    // Tables and announced levels. Held while the coordinator is read (the coordinator never
    // runs user code under its own lock, so that cannot deadlock), never while a subscriber runs.
    mutable std::mutex mutex;
    std::shared_ptr<const ServiceLevels> for_all;
    std::unordered_map<std::uint64_t, std::shared_ptr<const ServiceLevels>> per_agent;
    std::vector<std::shared_ptr<const ServiceLevels>> retired; // keeps levels_for's references
    std::unordered_map<std::uint64_t, std::string> levels;     // last announced, per agent

    // The notification queue: a leaf lock.
    std::mutex delivery_mutex;
    std::condition_variable idle;
    std::list<ServiceLevelChanged> queue;
    bool delivering = false;
    std::thread::id deliverer{};
    std::atomic<bool> closed{false};

    detail::Subscribers<Callback> subscribers;
    std::atomic<std::uint64_t> failures{0};

    const ServiceLevels& table_locked(AgentId agent) const {
      auto it = per_agent.find(agent.value());
      return it == per_agent.end() ? *for_all : *it->second;
    }

    // The agent's numbers now, or nothing for a removed agent; throws `UnknownAgent` for an id
    // the coordinator never issued. The sum is the allocation `agent_metrics` calls
    // `initial_budget` at quiescent points, read from the same balance as `remaining`.
    std::optional<Reading> read(AgentId agent) const {
      auto m = coord.agent_metrics(agent);
      const amount_type zero = amount_zero<amount_type>();
      if (!(zero < m.remaining_budget)) { // a removed agent's balance reads zero
        try {
          (void)coord.get_budget(agent);
        } catch (const UnknownAgent&) {
          return std::nullopt;
        }
      }
      amount_type allocated =
          traits::add(traits::add(m.remaining_budget, m.used_budget), m.reserved_budget);
      return Reading{std::move(m.remaining_budget), std::move(allocated), std::move(m.name)};
    }

    // Recomputes `agent`'s level and queues a notification when it changed. Either both the
    // announced level and the queue change, or neither (the next change then tries again).
    void refresh_locked(AgentId agent) {
      auto reading = read(agent);
      if (!reading) {
        levels.erase(agent.value());
        return;
      }
      const ServiceLevels& table = table_locked(agent);
      auto it = levels.find(agent.value());
      if (it == levels.end())
        it = levels
                 .emplace(agent.value(),
                          table.level_for(reading->allocated, reading->allocated).name)
                 .first;
      const std::string& to = table.level_for(reading->remaining, reading->allocated).name;
      if (it->second == to)
        return;
      std::list<ServiceLevelChanged> node;
      node.push_back({agent, std::move(reading->name), it->second, to});
      std::string now = to;
      if (closed.load())
        return;
      {
        std::lock_guard lock(delivery_mutex);
        queue.splice(queue.end(), node);
      }
      it->second.swap(now);
    }

    // For callers that have already made their change (a table is set, a balance moved):
    // failing here must not undo it.
    void refresh_quietly_locked(AgentId agent) noexcept {
      try {
        refresh_locked(agent);
      } catch (...) { // no memory: the level is recomputed on the agent's next change
      }
    }

    void on_change(AgentId agent) noexcept {
      if (closed.load())
        return;
      try {
        std::lock_guard lock(mutex);
        refresh_quietly_locked(agent);
      } catch (...) { // the lock itself failed: nothing changed, the next change retries
      }
      deliver();
    }

    // One thread at a time delivers the queue from its head; the others leave their
    // notifications to it, so they arrive one at a time and in the order they were queued.
    void deliver() noexcept {
      {
        std::lock_guard lock(delivery_mutex);
        if (delivering || closed.load())
          return;
        delivering = true;
        deliverer = std::this_thread::get_id();
      }
      for (;;) {
        std::list<ServiceLevelChanged> next;
        {
          std::lock_guard lock(delivery_mutex);
          if (queue.empty() || closed.load()) {
            queue.clear();
            delivering = false;
            deliverer = std::thread::id{};
            idle.notify_all();
            return;
          }
          next.splice(next.end(), queue, queue.begin());
        }
        subscribers.deliver(next.front(), [this] { failures.fetch_add(1); });
      }
    }
  };

  std::shared_ptr<State> state_;
  Subscription monitor_;
  Subscription audit_;
};

/// Graceful degradation for the default `BudgetCoordinator`.
using GracefulDegradation = BasicGracefulDegradation<>;

} // namespace v1
} // namespace safeguards

/// `agent-3 "summariser": standard -> minimal`
template <>
struct fmt::formatter<safeguards::ServiceLevelChanged> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::ServiceLevelChanged& c, FormatContext& ctx) const {
    auto text = fmt::format("{} \"{}\": {} -> {}", c.agent, c.agent_name, c.from, c.to);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
