// safeguards: which monitors watch which agents.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <safeguards/ids.hpp>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// The monitors that watch one agent, in registration order. Immutable once installed: it is
// replaced as a whole under the coordinator's lock (see `SerialNotifier::replace`).
template <class Entry>
struct MonitorList {
  std::vector<std::shared_ptr<const Entry>> entries;
  MonitorList* retired_next = nullptr; // the retired chain, while it waits to be freed
  // `stamps()` as it was when the list was installed, for delivery to read without a loop.
  std::uint32_t stamp_count = 0;

  // How many of them can veto.
  std::uint32_t checks() const noexcept {
    std::uint32_t n = 0;
    for (const auto& e : entries)
      n += e->check ? 1U : 0U;
    return n;
  }

  // How many of them read events' timestamps.
  std::uint32_t stamps() const noexcept {
    std::uint32_t n = 0;
    for (const auto& e : entries)
      n += e->reads_timestamp ? 1U : 0U;
    return n;
  }
};

// The coordinator's registrations: a monitor watches one agent, every agent of a pool (present
// and future), or every agent. Each agent keeps its own list of the monitors that watch it, so
// consumes never look here; this is what builds those lists when agents are created and
// monitors come and go. Guarded by the coordinator's lock.
template <class Entry>
class MonitorRegistry {
public:
  enum class Scope : std::uint8_t { agent, pool, all };
  struct Registration {
    Scope scope;
    std::uint64_t target; // an agent or pool id; unused for `all`
    std::shared_ptr<const Entry> entry;
  };

  static bool covers(const Registration& r, AgentId agent, PoolId pool) noexcept {
    return r.scope == Scope::all || (r.scope == Scope::agent && r.target == agent.value()) ||
           (r.scope == Scope::pool && r.target == pool.value());
  }

  void add(Registration r) { registrations_.emplace(next_id_++, std::move(r)); }

  // Takes the registration of `entry` out, if it is there.
  std::optional<Registration> remove(const std::shared_ptr<const Entry>& entry) {
    for (auto it = registrations_.begin(); it != registrations_.end(); ++it)
      if (it->second.entry == entry) {
        std::optional<Registration> out(std::move(it->second));
        registrations_.erase(it);
        return out;
      }
    return std::nullopt;
  }

  // The monitors that watch a new agent, in the order they were registered.
  template <class F>
  void for_each_covering(AgentId agent, PoolId pool, F&& f) const {
    for (const auto& [id, r] : registrations_)
      if (covers(r, agent, pool))
        f(r.entry);
  }

  bool empty() const noexcept { return registrations_.empty(); }

  // Everything, for the coordinator's destructor to drop outside its lock.
  MonitorRegistry take_all() noexcept {
    MonitorRegistry out;
    out.registrations_.swap(registrations_);
    return out;
  }

private:
  std::map<std::uint64_t, Registration> registrations_;
  std::uint64_t next_id_ = 1;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
