// safeguards: ServiceLevel and ServiceLevels, the guide's graceful-degradation table: which level
// an agent is at for the share of its allocation it has left. Knows no coordinator type, so that
// `BasicBudgetCoordinator::service_level` can use it; degradation.hpp adds notifications.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <fmt/format.h>
#include <safeguards/amount.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/monitor.hpp>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// One row of a `ServiceLevels` table: the level applies while at least `min_remaining` % of
/// the agent's allocation is left. `features` are free-form names the agent's code switches on.
struct ServiceLevel {
  std::string name{};
  Percent min_remaining{0};
  std::vector<std::string> features{};

  /// True when `feature` is one of this level's features.
  bool has(std::string_view feature) const noexcept {
    for (const auto& f : features)
      if (f == feature)
        return true;
    return false;
  }

  friend bool operator==(const ServiceLevel&, const ServiceLevel&) = default;
};

/// The guide's service-level table, validated: levels ordered from the best to the worst, each
/// with a strictly lower `min_remaining` than the one before, the last at 0 % so that every
/// balance has a level, names unique and non-empty.
///
/// **Example**
/// ```
/// ServiceLevels levels({{"large_model", 40, {"gpt-4o"}},
///                       {"small_model", 10, {"gpt-4o-mini"}},
///                       {"cached_only", 0, {"cache"}}});
/// levels.levels()[levels.index_for(Decimal("30"), Decimal("100"))].name;   // "small_model"
/// ServiceLevels({{"full", 50, {}}});   // throws InvalidArgument: the last level must be 0 %
/// ```
class ServiceLevels {
public:
  /// Throws `InvalidArgument` for an empty table, an empty or repeated name, a `min_remaining`
  /// that does not go strictly down, or a last level above 0 %.
  explicit ServiceLevels(std::vector<ServiceLevel> levels) : levels_(std::move(levels)) {
    if (levels_.empty())
      throw InvalidArgument("safeguards: a service level table needs at least one level, got none");
    std::set<std::string_view> names;
    for (std::size_t i = 0; i < levels_.size(); ++i) {
      const ServiceLevel& level = levels_[i];
      if (level.name.empty())
        throw InvalidArgument(fmt::format("safeguards: service level {} (of {}) has an empty name",
                                          i + 1, levels_.size()));
      if (!names.insert(level.name).second)
        throw InvalidArgument(fmt::format(
            "safeguards: service level name \"{}\" appears more than once", level.name));
      if (i > 0 && !(level.min_remaining < levels_[i - 1].min_remaining))
        throw InvalidArgument(fmt::format(
            "safeguards: service levels must be ordered by strictly decreasing minimum: \"{}\" "
            "starts at {} %, not below the {} % of \"{}\" before it",
            level.name, level.min_remaining.value(), levels_[i - 1].min_remaining.value(),
            levels_[i - 1].name));
    }
    if (levels_.back().min_remaining != Percent(0))
      throw InvalidArgument(fmt::format(
          "safeguards: the last service level must start at 0 % so that every balance has a "
          "level, but \"{}\" starts at {} %",
          levels_.back().name, levels_.back().min_remaining.value()));
  }

  /// The guide's table: full ≥ 50 %, standard ≥ 20 %, minimal ≥ 5 %, emergency ≥ 0 %.
  /// Built once; copy it to change it.
  static const ServiceLevels& guide_default() {
    static const ServiceLevels table({{"full", 50, {"high_quality", "all_capabilities"}},
                                      {"standard", 20, {"medium_quality", "core_capabilities"}},
                                      {"minimal", 5, {"low_quality", "basic_capabilities"}},
                                      {"emergency", 0, {"text_only", "critical_only"}}});
    return table;
  }

  /// Best level first; never empty.
  const std::vector<ServiceLevel>& levels() const noexcept { return levels_; }
  std::size_t size() const noexcept { return levels_.size(); }
  /// The last, worst level.
  const ServiceLevel& lowest() const noexcept { return levels_.back(); }

  /// Index of the first level whose minimum `remaining` reaches: `remaining * 100 >=
  /// min_remaining * allocated`, compared exactly (128-bit integers for `Decimal` and
  /// `std::int64_t`). An allocation of zero or less, or a negative remaining, is the lowest
  /// level: there is nothing to take a share of.
  template <BudgetAmount Amount>
  std::size_t index_for(const Amount& remaining, const Amount& allocated) const {
    const Amount zero = amount_zero<Amount>();
    if (!(zero < allocated) || remaining < zero)
      return levels_.size() - 1;
    for (std::size_t i = 0; i + 1 < levels_.size(); ++i)
      if (0 <= detail::compare_to_share(remaining, allocated, levels_[i].min_remaining))
        return i;
    return levels_.size() - 1;
  }

  /// `levels()[index_for(remaining, allocated)]`.
  template <BudgetAmount Amount>
  const ServiceLevel& level_for(const Amount& remaining, const Amount& allocated) const {
    return levels_[index_for(remaining, allocated)];
  }

  /// The level of that name, if the table has one.
  const ServiceLevel* find(std::string_view name) const noexcept {
    for (const auto& level : levels_)
      if (level.name == name)
        return &level;
    return nullptr;
  }

  friend bool operator==(const ServiceLevels&, const ServiceLevels&) = default;

private:
  std::vector<ServiceLevel> levels_;
};

} // namespace v1
} // namespace safeguards
