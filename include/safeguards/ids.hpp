// safeguards: strongly typed ids for agents and pools.
// SPDX-License-Identifier: MIT
#pragma once

#include <compare>
#include <cstdint>
#include <fmt/format.h>
#include <functional>

namespace safeguards {
inline namespace v1 {

namespace detail {
// A distinct type per tag, so an AgentId can never be passed where a PoolId is expected.
template <class Tag>
class Id {
public:
  constexpr Id() noexcept = default;
  constexpr explicit Id(std::uint64_t value) noexcept : value_(value) {}
  /// The number behind the id; ids start at 1 and are never reused by one coordinator.
  constexpr std::uint64_t value() const noexcept { return value_; }
  /// A default-constructed id names nothing.
  constexpr explicit operator bool() const noexcept { return value_ != 0; }
  friend constexpr auto operator<=>(Id, Id) noexcept = default;

private:
  std::uint64_t value_ = 0;
};
} // namespace detail

/// Names an agent of one `BudgetCoordinator`. Printed as `agent-7`.
using AgentId = detail::Id<struct AgentTag>;
/// Names a pool of one `BudgetCoordinator`. Printed as `pool-3`.
using PoolId = detail::Id<struct PoolTag>;

} // namespace v1
} // namespace safeguards

template <class Tag>
struct std::hash<safeguards::detail::Id<Tag>> {
  std::size_t operator()(safeguards::detail::Id<Tag> id) const noexcept {
    return std::hash<std::uint64_t>{}(id.value());
  }
};

template <class Tag>
struct fmt::formatter<safeguards::detail::Id<Tag>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::detail::Id<Tag> id, FormatContext& ctx) const {
    constexpr bool is_agent = std::is_same_v<safeguards::detail::Id<Tag>, safeguards::AgentId>;
    auto text = fmt::format("{}-{}", is_agent ? "agent" : "pool", id.value());
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
