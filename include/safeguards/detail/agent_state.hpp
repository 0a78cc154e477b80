// safeguards: what a coordinator keeps per agent and per pool.
// SPDX-License-Identifier: MIT
#pragma once

#include <any>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <safeguards/coordinator_types.hpp>
#include <safeguards/detail/huge_pages.hpp>
#include <safeguards/detail/monitored_agent.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/ledger.hpp>
#include <string>
#include <type_traits>
#include <vector>

namespace safeguards {
inline namespace v1 {
namespace detail {

// True when the ledger counts successful charges itself (InMemoryLedger does), so that the
// agent need not.
template <class Ledger>
inline constexpr bool ledger_counts_charges = requires(const Ledger& l,
                                                       typename Ledger::handle_type h) {
  { l.charge_count(h) }
  noexcept->std::same_as<std::uint64_t>;
};

// Stands in for an atomic counter nobody needs: the same calls, no bytes (as a
// [[no_unique_address]] member), no instructions. `Tag` keeps two of them in one struct from
// needing distinct addresses.
template <class Tag>
struct NoCounter {
  void fetch_add(std::uint64_t, std::memory_order) noexcept {}
  void fetch_sub(std::uint64_t, std::memory_order) noexcept {}
  std::uint64_t load(std::memory_order) const noexcept { return 0; }
};

// Counts only where `assert` checks (without NDEBUG): nothing else reads it, so release builds
// pay no locked instruction for it. Its size does not depend on NDEBUG, so translation units
// built with and without it still agree on the layout of the structs that hold one.
struct DebugCounter {
  void fetch_add(std::size_t n, [[maybe_unused]] std::memory_order order) noexcept {
#ifndef NDEBUG
    count.fetch_add(n, order);
#else
    (void)n;
#endif
  }
  void fetch_sub(std::size_t n, [[maybe_unused]] std::memory_order order) noexcept {
#ifndef NDEBUG
    count.fetch_sub(n, order);
#else
    (void)n;
#endif
  }
  std::size_t load(std::memory_order order) const noexcept {
    return count.load(order);
  }
  std::atomic<std::size_t> count{0};
};

// What few agents use, allocated on first use so that the others do not pay for an empty map and
// an empty `std::any`. Guarded, like the pointer to it, by the coordinator's lock.
struct AgentExtras {
  Metadata metadata;
  std::any user_data;
};

// One agent. The hot path reads `account` and `monitor_count` through the coordinator's slot
// table without any lock; the other fields say which lock guards them.
template <class Amount, class Ledger, class TimePoint, class UsageEvent, class MonitorEntry>
struct AgentState {
  using Monitored = MonitoredAgent<UsageEvent, MonitorEntry, Amount, TimePoint>;
  using MonitorList = typename Monitored::List;

  typename Ledger::handle_type account{};
  AgentId id;
  PoolId pool;
  std::atomic<std::uint32_t> monitor_count{0}; // the hot path's flag: nonzero when monitored
  // Guarded by the coordinator's lock (here because it fills the line's padding).
  int priority = 0;
  // Only for a ledger that does not count charges itself.
  [[no_unique_address]] std::conditional_t<ledger_counts_charges<Ledger>, NoCounter<struct Charges>,
                                           std::atomic<std::uint64_t>>
      consume_count{};
  // The monitor list, the turn and the usage history: made when the first monitor watches the
  // agent, or when it is created with history on; one pointer otherwise. Monitors run while the
  // turn is held: it is never taken while holding the coordinator's lock.
  LazyPtr<Monitored> monitored;
  // Set before the agent is published and never changed after, so reporters read it unlocked.
  std::string name;
  // Guarded by the coordinator's lock.
  TimePoint created{};
  Amount allocated{};
  Amount overspent{};
  std::unique_ptr<AgentExtras> extras; // null until metadata or user data is first set
  bool removed = false;
  // Reservations not yet settled or released, for the coordinator's destructor's debug check.
  DebugCounter open_reservations;
};

// One pool; guarded by the coordinator's lock.
template <class Amount, class TimePoint>
struct PoolState {
  PoolId id;
  std::string name;
  int priority = 0;
  Metadata metadata;
  bool implicit = false;
  Amount initial{};
  Amount unallocated{};
  // Removed ones too: their usage stays in the pool. A million agents in one pool made 16 MB
  // of copies as it doubled: huge pages where allowed.
  std::vector<AgentId, HugePageAllocator<AgentId>> agents;
  TimePoint created{};
};

} // namespace detail
} // namespace v1
} // namespace safeguards
