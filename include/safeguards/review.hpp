// safeguards: reviews, the guide's check for underused, depleted and low budgets, as values.
// Knows no coordinator type, so that `BasicBudgetCoordinator::review()` can use it;
// periodic_review.hpp runs it on a schedule.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <fmt/format.h>
#include <map>
#include <safeguards/amount.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/monitor.hpp>
#include <safeguards/violation.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// What a review found. The guide's `review_budgets` logs the same three conditions.
enum class ReviewFindingKind : std::uint8_t {
  Underused,      ///< an agent's remaining budget is above `underused` % of its allocation
  NearlyDepleted, ///< an agent's remaining budget is below `nearly_depleted` % of its allocation
  PoolLow         ///< a pool's remaining budget is below `pool_low` % of its initial budget
};

constexpr std::string_view to_string(ReviewFindingKind k) noexcept {
  switch (k) {
  case ReviewFindingKind::Underused:
    return "underused";
  case ReviewFindingKind::NearlyDepleted:
    return "nearly_depleted";
  case ReviewFindingKind::PoolLow:
    return "pool_low";
  }
  return "unknown";
}

/// Where a review draws its lines; the defaults are the guide's. Every comparison is strict, as
/// in the guide: an agent with exactly 90 % left is not underused, one with exactly 10 % left is
/// not nearly depleted, a pool with exactly 20 % left is not low.
///
/// `include_implicit_pools`: the pool an agent created without `.pool` got for itself holds
/// exactly that agent's budget, so its agent's own findings already say what it would say, and
/// there is nothing in it to rebalance. Such pools are left out unless this is set.
///
/// **Example**
/// ```
/// auto findings = review(coord, {.underused = 95, .nearly_depleted = 5});
/// ```
struct ReviewThresholds {
  Percent underused = 90;
  Percent nearly_depleted = 10;
  Percent pool_low = 20;
  bool include_implicit_pools = false;
};

/// One thing a review found, with the numbers behind it (the metrics it was read from, in the
/// coordinator's amount type) and what the guide suggests doing about it.
///
/// Agent findings (`Underused`, `NearlyDepleted`) name the agent and its pool; pool findings
/// (`PoolLow`) name the pool and leave `agent` empty. `initial_budget` is the agent's allocation
/// (everything it has been given) or the pool's initial budget.
template <BudgetAmount Amount = Decimal>
struct BasicReviewFinding {
  ReviewFindingKind kind{};
  /// `Info` for an underused agent (the guide logs it as info), `Medium` for the two warnings.
  AlertSeverity severity{};
  AgentId agent{};
  std::string agent_name{};
  PoolId pool{};
  std::string pool_name{};
  Amount initial_budget{};
  Amount used_budget{};
  Amount reserved_budget{};
  Amount remaining_budget{};
  /// The line that was crossed: the `ReviewThresholds` percentage for this kind.
  Percent threshold = 0;
  /// The guide's advice: `reduce the budget of agent "a"`, `increase the budget of agent "a"`,
  /// `rebalance pool "p"`.
  std::string action{};

  bool is_agent_finding() const noexcept { return kind != ReviewFindingKind::PoolLow; }

  /// Remaining as a percentage of the initial budget, for display only (a `double`, not exact;
  /// the decision was made exactly). 0 for a zero initial budget, which no review reports.
  double remaining_percent() const noexcept {
    const double initial = amount_traits<Amount>::to_double(initial_budget);
    if (!(initial > 0))
      return 0;
    return amount_traits<Amount>::to_double(remaining_budget) / initial * 100;
  }

  friend bool operator==(const BasicReviewFinding&, const BasicReviewFinding&) = default;
};

using ReviewFinding = BasicReviewFinding<Decimal>;

namespace detail {

inline void validate_review_thresholds(const ReviewThresholds& t) {
  if (t.underused < t.nearly_depleted)
    throw InvalidArgument(fmt::format(
        "safeguards: review thresholds overlap: nearly_depleted {}% is above underused {}%, so "
        "an agent could be both at once",
        t.nearly_depleted.value(), t.underused.value()));
}

} // namespace detail

/// The guide's `review_budgets`: reads every agent's and pool's metrics once and returns what
/// needs attention, agents first (oldest first, at most one finding each), then pools (highest
/// priority first):
/// - `Underused`: remaining > `underused` % of the agent's allocation ("consider reducing");
/// - `NearlyDepleted`: remaining < `nearly_depleted` % of it ("consider increasing");
/// - `PoolLow`: a pool's remaining < `pool_low` % of its initial budget ("consider
///   rebalancing").
///
/// The comparisons are exact (no rounding, no division) for `Decimal` and `std::int64_t`. An
/// agent or pool with nothing allocated has no share to be above or below, as in the guide, and
/// is never reported. Agents and pools are read in two steps, so under concurrent spending the
/// two halves may be a moment apart. Throws `InvalidArgument` when `nearly_depleted` is above
/// `underused` (an agent could be both).
///
/// **Example**
/// ```
/// for (const auto& finding : review(coord))
///   fmt::print("{}\n", finding);
/// // agent "batch" (agent-3) underused: 95.0 of 100.0 remaining, above 90%; suggested: reduce
/// //   the budget of agent "batch"
/// ```
template <class Coordinator>
requires requires(const Coordinator& c) {
  c.all_agent_metrics();
  c.all_pool_metrics();
}
std::vector<BasicReviewFinding<typename Coordinator::amount_type>>
review(const Coordinator& coord, const ReviewThresholds& thresholds = {}) {
  using Amount = typename Coordinator::amount_type;
  using Finding = BasicReviewFinding<Amount>;
  detail::validate_review_thresholds(thresholds);

  // Pools first, so agent findings can name their pool.
  const auto pools = coord.all_pool_metrics();
  const auto agents = coord.all_agent_metrics();
  std::map<PoolId, std::string> pool_names;
  for (const auto& p : pools)
    pool_names.emplace(p.id, p.name);

  // The numbers a finding was decided on, from an agent's or a pool's metrics.
  auto take_numbers = [](Finding& f, const auto& m) {
    f.initial_budget = m.initial_budget;
    f.used_budget = m.used_budget;
    f.reserved_budget = m.reserved_budget;
    f.remaining_budget = m.remaining_budget;
  };
  std::vector<Finding> out;
  for (const auto& a : agents) {
    const int underused =
        detail::compare_to_share(a.remaining_budget, a.initial_budget, thresholds.underused);
    const int depleted =
        detail::compare_to_share(a.remaining_budget, a.initial_budget, thresholds.nearly_depleted);
    if (underused <= 0 && depleted >= 0)
      continue;
    Finding f;
    f.agent = a.id;
    f.agent_name = a.name;
    f.pool = a.pool;
    if (auto it = pool_names.find(a.pool); it != pool_names.end())
      f.pool_name = it->second;
    take_numbers(f, a);
    if (underused > 0) {
      f.kind = ReviewFindingKind::Underused;
      f.severity = AlertSeverity::Info;
      f.threshold = thresholds.underused;
      f.action = fmt::format("reduce the budget of agent \"{}\"", a.name);
    } else {
      f.kind = ReviewFindingKind::NearlyDepleted;
      f.severity = AlertSeverity::Medium;
      f.threshold = thresholds.nearly_depleted;
      f.action = fmt::format("increase the budget of agent \"{}\"", a.name);
    }
    out.push_back(std::move(f));
  }
  for (const auto& p : pools) {
    if (p.implicit && !thresholds.include_implicit_pools)
      continue;
    if (detail::compare_to_share(p.remaining_budget, p.initial_budget, thresholds.pool_low) >= 0)
      continue;
    Finding f;
    f.kind = ReviewFindingKind::PoolLow;
    f.severity = AlertSeverity::Medium;
    f.pool = p.id;
    f.pool_name = p.name;
    take_numbers(f, p);
    f.threshold = thresholds.pool_low;
    f.action = fmt::format("rebalance pool \"{}\"", p.name);
    out.push_back(std::move(f));
  }
  return out;
}

} // namespace v1
} // namespace safeguards

/// `underused`, `nearly_depleted`, `pool_low`.
template <>
struct fmt::formatter<safeguards::ReviewFindingKind> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::ReviewFindingKind k, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(k), ctx);
  }
};

/// `agent "batch" (agent-3) underused: 95.0 of 100.0 remaining, above 90%; suggested: reduce the
/// budget of agent "batch"`, or `pool "shared" (pool-1) low: 15.0 of 100.0 remaining, below
/// 20%; suggested: rebalance pool "shared"`. The amounts are printed exactly.
template <safeguards::BudgetAmount A>
struct fmt::formatter<safeguards::BasicReviewFinding<A>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicReviewFinding<A>& f, FormatContext& ctx) const {
    using safeguards::ReviewFindingKind;
    const bool agent = f.is_agent_finding();
    const char* what = f.kind == ReviewFindingKind::Underused        ? "underused"
                       : f.kind == ReviewFindingKind::NearlyDepleted ? "nearly depleted"
                                                                     : "low";
    auto text = fmt::format("{} \"{}\" ({}) {}: {} of {} remaining, {} {}%; suggested: {}",
                            agent ? "agent" : "pool", agent ? f.agent_name : f.pool_name,
                            agent ? fmt::format("{}", f.agent) : fmt::format("{}", f.pool), what,
                            safeguards::amount_to_string(f.remaining_budget),
                            safeguards::amount_to_string(f.initial_budget),
                            f.kind == ReviewFindingKind::Underused ? "above" : "below",
                            f.threshold.value(), f.action);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
