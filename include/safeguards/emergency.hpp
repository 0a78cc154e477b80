// safeguards: emergency grants, the guide's rule for extra money in a hurry.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cctype>
#include <fmt/format.h>
#include <safeguards/amount.hpp>
#include <safeguards/decimal.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// Who gets an emergency grant, and how much of it. The guide's rule: an agent of priority
/// `high_priority` or more gets all it asks for; any other agent whose reason contains `keyword`
/// (case-insensitively) gets `partial` of it, rounded down to the amount type's quantum; anyone
/// else is denied. `partial` is a `Decimal` fraction in [0, 1].
///
/// **Example**
/// ```
/// auto grant = coord.emergency_allocation(agent, Decimal("50.0"), "critical outage");
/// if (grant.granted > Decimal(0)) { /* retry the call */ }
/// ```
struct EmergencyPolicy {
  int high_priority = 7;
  std::string keyword = "critical";
  Decimal partial = Decimal("0.5");
};

/// Where granted money came from: a pool and how much it gave.
template <BudgetAmount Amount = Decimal>
struct BasicGrantSource {
  PoolId pool;
  Amount amount{};
};

/// The outcome of `emergency_allocation`: what was asked, what the policy approved, what could
/// actually be granted (less when the pools had less), where it came from, and why.
template <BudgetAmount Amount = Decimal>
struct BasicEmergencyGrant {
  Amount requested{};
  Amount approved{};
  Amount granted{};
  std::vector<BasicGrantSource<Amount>> sources;
  std::string decision; ///< "approved: priority 8 >= 7", "denied: priority 3 < 7 and ..."
};

using GrantSource = BasicGrantSource<Decimal>;
using EmergencyGrant = BasicEmergencyGrant<Decimal>;

namespace detail {

inline bool contains_case_insensitive(std::string_view text, std::string_view word) {
  if (word.empty())
    return true;
  auto lower = [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  return std::search(text.begin(), text.end(), word.begin(), word.end(),
                     [&](char a, char b) { return lower(a) == lower(b); }) != text.end();
}

// `requested * fraction`, rounded down to the amount type's quantum where it has one, so that a
// grant is never more than the policy says.
template <BudgetAmount Amount>
Amount part_of(const Amount& requested, Decimal fraction) {
  constexpr std::int64_t scale = 1'000'000; // Decimal's raw units per 1
  if constexpr (detail::RawAmount<Amount>) {
    __extension__ using wide = __int128; // raw * raw needs 127 bits
    const wide product =
        static_cast<wide>(amount_traits<Amount>::to_raw(requested)) * fraction.raw();
    return amount_traits<Amount>::from_raw(static_cast<std::int64_t>(product / scale));
  } else {
    return amount_traits<Amount>::mul_div(requested, fraction.raw(), scale);
  }
}

} // namespace detail

/// The policy's decision for an agent of `priority` asking `requested` for `reason`: the
/// approved amount and a sentence saying why. Throws `InvalidArgument` for a policy whose
/// `partial` is outside [0, 1].
template <BudgetAmount Amount>
std::pair<Amount, std::string> approve_emergency(const EmergencyPolicy& policy, int priority,
                                                 const Amount& requested, std::string_view reason) {
  if (policy.partial < Decimal(0) || Decimal(1) < policy.partial)
    throw InvalidArgument(fmt::format(
        "safeguards: EmergencyPolicy::partial must be between 0 and 1, got {}", policy.partial));
  if (priority >= policy.high_priority)
    return {requested,
            fmt::format("approved in full: priority {} >= {}", priority, policy.high_priority)};
  if (detail::contains_case_insensitive(reason, policy.keyword)) {
    return {detail::part_of(requested, policy.partial),
            fmt::format("approved {}: the reason mentions \"{}\"", policy.partial, policy.keyword)};
  }
  return {amount_zero<Amount>(),
          fmt::format("denied: priority {} < {} and the reason does not mention \"{}\"", priority,
                      policy.high_priority, policy.keyword)};
}

/// A pool as an emergency grant sees it.
template <BudgetAmount Amount = Decimal>
struct GrantPool {
  PoolId pool;
  int priority = 1;
  Amount unallocated{};
};

/// Where `amount` is taken from: `own` first, then the pools in `others` whose priority is lower
/// than `own`'s, lowest priority first (ties: lower id first); pools of equal or higher priority
/// never give. Each gives what it holds, up to what is still missing, so the sources add up to
/// less than `amount` when the pools hold less.
///
/// **Example**
/// ```
/// auto sources = plan_emergency_sources(GrantPool<>{PoolId(1), 8, Decimal(10)},
///                                       {{PoolId(2), 2, Decimal(30)}, {PoolId(3), 9,
///                                       Decimal(99)}}, Decimal(25));   // 10 from pool 1, 15 from
///                                       pool 2
/// ```
template <BudgetAmount Amount>
std::vector<BasicGrantSource<Amount>> plan_emergency_sources(const GrantPool<Amount>& own,
                                                             std::vector<GrantPool<Amount>> others,
                                                             const Amount& amount) {
  std::erase_if(others, [&](const GrantPool<Amount>& p) { return !(p.priority < own.priority); });
  std::sort(
      others.begin(), others.end(), [](const GrantPool<Amount>& x, const GrantPool<Amount>& y) {
        return x.priority != y.priority ? x.priority < y.priority : x.pool.value() < y.pool.value();
      });
  others.insert(others.begin(), own);
  const Amount zero = amount_zero<Amount>();
  Amount left = amount;
  std::vector<BasicGrantSource<Amount>> sources;
  for (const auto& p : others) {
    if (!(zero < left))
      break;
    const Amount take = p.unallocated < left ? p.unallocated : left;
    if (zero < take) {
      sources.push_back({p.pool, take});
      left = amount_traits<Amount>::sub(left, take);
    }
  }
  return sources;
}

} // namespace v1
} // namespace safeguards
