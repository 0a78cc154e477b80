// safeguards: what a consume, reserve or commit did: ConsumeStatus, ConsumeResult, CommitResult.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <fmt/format.h>
#include <safeguards/amount.hpp>
#include <string_view>

namespace safeguards {
inline namespace v1 {

/// Why a consume, reserve or commit did or did not happen.
enum class ConsumeStatus : std::uint8_t {
  ok,
  insufficient,      ///< the agent's remaining budget cannot cover the amount
  denied_by_monitor, ///< a monitor vetoed it (or threw, which counts as a veto)
  unknown_agent,     ///< no such agent, or it was removed
  invalid_amount,    ///< zero, negative or not a number
  reentrant_call,    ///< a monitor spent from an agent whose monitors this thread is running
  not_active,        ///< the reservation was already settled, released or never granted
  would_deadlock,    ///< a monitor spent from an agent whose monitors run on another thread
                     ///< that is waiting for this one; nothing changed
  ledger_unavailable ///< the ledger (Redis) could not be reached: do not make the call (see
                     ///< `LedgerStatus::unavailable`)
};

constexpr std::string_view to_string(ConsumeStatus s) noexcept {
  switch (s) {
  case ConsumeStatus::ok:
    return "ok";
  case ConsumeStatus::insufficient:
    return "insufficient";
  case ConsumeStatus::denied_by_monitor:
    return "denied by monitor";
  case ConsumeStatus::unknown_agent:
    return "unknown agent";
  case ConsumeStatus::invalid_amount:
    return "invalid amount";
  case ConsumeStatus::reentrant_call:
    return "reentrant call";
  case ConsumeStatus::not_active:
    return "not active";
  case ConsumeStatus::would_deadlock:
    return "would deadlock";
  case ConsumeStatus::ledger_unavailable:
    return "ledger unavailable";
  }
  return "unknown";
}

/// The hot path's answer: a status, never an exception. Ignoring it ignores a refusal, so the
/// compiler warns when it is dropped.
class [[nodiscard]] ConsumeResult {
public:
  constexpr ConsumeResult(ConsumeStatus status = ConsumeStatus::ok) noexcept : status_(status) {}
  constexpr bool ok() const noexcept { return status_ == ConsumeStatus::ok; }
  constexpr explicit operator bool() const noexcept { return ok(); }
  constexpr ConsumeStatus status() const noexcept { return status_; }
  friend constexpr bool operator==(ConsumeResult, ConsumeResult) noexcept = default;

private:
  ConsumeStatus status_;
};

/// What `Reservation::commit` did. A commit that was refused (`invalid_amount`, `not_active`)
/// settled nothing, so the compiler warns when the result is dropped; write
/// `std::ignore = r.commit(x);` where that is really meant.
template <BudgetAmount Amount = Decimal>
struct [[nodiscard]] BasicCommitResult {
  ConsumeStatus status = ConsumeStatus::ok;
  Amount charged{};   ///< moved to used by this call
  Amount refunded{};  ///< returned from the reservation to the agent (or its pool)
  Amount overspent{}; ///< actual usage nobody could pay; reported as an `Overspend` violation
  bool ok() const noexcept { return status == ConsumeStatus::ok; }
};

} // namespace v1
} // namespace safeguards

template <>
struct fmt::formatter<safeguards::ConsumeStatus> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::ConsumeStatus s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(s), ctx);
  }
};

template <>
struct fmt::formatter<safeguards::ConsumeResult> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::ConsumeResult r, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(r.status()), ctx);
  }
};
