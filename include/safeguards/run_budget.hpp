// safeguards: the RunBudget concept, what an LLM call guard needs from a council-style budget.
// SPDX-License-Identifier: MIT
#pragma once

#include <concepts>
#include <optional>
#include <safeguards/budget.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/decimal.hpp>
#include <span>
#include <string>
#include <string_view>

namespace safeguards {
inline namespace v1 {

/// A run budget a guarded call can hold room on: `Budget` (one thread) and `SharedBudget`
/// (branches on several threads) both model it, with `Decimal` amounts, because a call's cost in
/// USD is one of the consumptions it records.
///
/// Which one to pick: `SharedBudget` whenever more than one thread makes calls against the same
/// limits; a plain `Budget` for a single-threaded run, where it saves a mutex per call.
template <class B>
concept RunBudget = std::same_as<typename B::amount_type, Decimal> &&
    requires(B& b, const B& cb, std::span<const ConsumptionView> cs, std::string_view s,
             const std::string& source) {
  { cb.time_left() } -> std::convertible_to<typename B::duration>;
  { cb.deadline() } -> std::convertible_to<typename B::time_point>;
  { cb.clock().now() } -> std::convertible_to<typename B::time_point>;
  { cb.available(s, s) } -> std::same_as<std::optional<Decimal>>;
  { b.try_hold(cs) } -> std::same_as<std::optional<BasicLimitRefusal<Decimal>>>;
  b.release_hold(cs);
  b.settle_hold(cs, cs, source);
  // Reads and a hold as one step; `Budget&` is what the step sees.
  b.atomically([](auto& budget) { return budget.available(units::token, units::token); });
};

static_assert(RunBudget<Budget>);
static_assert(RunBudget<SharedBudget>);

} // namespace v1
} // namespace safeguards
