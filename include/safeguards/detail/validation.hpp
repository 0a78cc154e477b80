// safeguards: the checks every entry point of the coordinator makes on names, priorities and
// amounts, with the messages users see.
// SPDX-License-Identifier: MIT
#pragma once

#include <fmt/format.h>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/consume_result.hpp>
#include <safeguards/coordinator_types.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ledger.hpp>
#include <string>
#include <string_view>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Positive and finite; NaN fails the first test, infinities the second.
template <BudgetAmount Amount>
bool valid_amount(const Amount& value) noexcept {
  return amount_zero<Amount>() < value && amount_is_finite(value);
}

inline void validate_name(const std::string& name, const char* what) {
  if (name.empty())
    throw InvalidArgument(fmt::format("safeguards: a {} needs a non-empty name", what));
}

inline void validate_priority(int priority, const std::string& name) {
  if (priority < min_priority || priority > max_priority)
    throw InvalidPriority(fmt::format("safeguards: priority {} of \"{}\" is outside {}..{}",
                                      priority, name, min_priority, max_priority));
}

// `what` names the value; `owner`, when given, is quoted after it ("initial_budget of agent
// \"a\""). In two parts so that a valid value costs no string.
template <BudgetAmount Amount>
void validate_non_negative(const Amount& value, std::string_view what,
                           std::optional<std::string_view> owner = std::nullopt) {
  if (!(amount_zero<Amount>() <= value) || !amount_is_finite(value))
    throw InvalidArgument(fmt::format(
        "safeguards: {}{} must be a finite amount of at least zero, got {}", what,
        owner ? fmt::format(" \"{}\"", *owner) : std::string(), amount_to_string(value)));
}

template <BudgetAmount Amount>
void validate_positive(const Amount& value, const std::string& what) {
  if (!valid_amount(value))
    throw InvalidArgument(fmt::format("safeguards: {} must be positive and finite, got {}", what,
                                      amount_to_string(value)));
}

constexpr ConsumeStatus to_consume_status(LedgerStatus s) noexcept {
  switch (s) {
  case LedgerStatus::ok:
    return ConsumeStatus::ok;
  case LedgerStatus::insufficient:
    return ConsumeStatus::insufficient;
  case LedgerStatus::closed:
    return ConsumeStatus::unknown_agent;
  case LedgerStatus::overflow: // credits only; a debit or reserve never reports it
    return ConsumeStatus::insufficient;
  case LedgerStatus::invalid_amount:
    return ConsumeStatus::invalid_amount;
  case LedgerStatus::unavailable:
    return ConsumeStatus::ledger_unavailable;
  case LedgerStatus::conflict: // compare-and-set only; a debit or reserve never reports it
    return ConsumeStatus::insufficient;
  }
  return ConsumeStatus::unknown_agent;
}

} // namespace detail
} // namespace v1
} // namespace safeguards
