// safeguards: Reservation, money set aside for one expensive call and settled after it.
// SPDX-License-Identifier: MIT
#pragma once

#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/consume_result.hpp>
#include <safeguards/ids.hpp>
#include <utility>

namespace safeguards {
inline namespace v1 {

/// Money set aside for one expensive call: reserve the estimate before, commit the actual
/// usage after. Move-only; destroying it without `commit` releases everything it holds.
///
/// A usage report the amount type cannot add up (a running total past `Decimal::max()`, say)
/// is refused with `invalid_amount` and changes nothing: a garbled report never kills the
/// process from these `noexcept` calls, and the reservation still releases what it holds.
///
/// **Example**
/// ```
/// auto r = coord.reserve(agent, Decimal("5.0"));   // throws if it cannot be covered
/// auto usage = call_model();
/// auto settled = r.commit(usage.cost);              // refunds 5.0 - cost, or charges more
/// ```
template <class Coordinator>
class [[nodiscard]] BasicReservation {
  using Amount = typename Coordinator::amount_type;
  using CommitResult = typename Coordinator::CommitResult;

public:
  BasicReservation() noexcept = default;
  BasicReservation(BasicReservation&& other) noexcept { take(other); }
  BasicReservation& operator=(BasicReservation&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  BasicReservation(const BasicReservation&) = delete;
  BasicReservation& operator=(const BasicReservation&) = delete;
  ~BasicReservation() {
    if (active()) // most are settled by then: no call for them
      release();
  }

  /// True when the reservation was granted (even if it has since been settled).
  bool ok() const noexcept { return status_ == ConsumeStatus::ok; }
  explicit operator bool() const noexcept { return ok(); }
  ConsumeStatus status() const noexcept { return status_; }
  /// True while it still holds money.
  bool active() const noexcept { return agent_ != nullptr; }
  AgentId agent() const noexcept { return agent_id_; }
  const Amount& estimate() const noexcept { return estimate_; }
  /// What is still set aside.
  const Amount& held() const noexcept { return held_; }
  /// What has been charged so far (partial commits included).
  const Amount& charged() const noexcept { return charged_; }
  /// The usage settled so far: what was charged plus what nobody could pay (`overspent`).
  /// `commit(actual)` settles only `actual - settled()`.
  const Amount& settled() const noexcept { return settled_; }

  /// Settles with the call's total actual usage (partial commits included): the unused rest
  /// of the estimate is refunded; an overage is charged as far as the balance allows and the
  /// uncovered part is reported as an `Overspend` violation.
  CommitResult commit(const Amount& actual) noexcept {
    if (!active())
      return {ConsumeStatus::not_active};
    const Amount z = amount_zero<Amount>();
    if (actual < z || !amount_is_finite(actual))
      return {ConsumeStatus::invalid_amount};
    // Partial commits already accounted for part of `actual` (charged, or reported as
    // overspent); what was spent cannot be un-spent, and nothing is reported twice.
    const bool more = settled_ < actual;
    Amount rest = more ? amount_traits<Amount>::sub(actual, settled_) : z;
    // Initialised from `settle`'s result rather than assigned: a copy of a struct the callee
    // wrote field by field can stall on store-to-load forwarding.
    CommitResult r = coord_->settle(*agent_, held_, rest, estimate_, more ? actual : settled_);
    charged_ = amount_traits<Amount>::add(charged_, r.charged); // bounded by the allocation
    if (more)
      settled_ = actual;
    held_ = z;
    finish();
    return r;
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) CommitResult commit(const T&)
  = delete;

  /// Charges `amount` now, for streaming responses; it comes out of what is held first.
  CommitResult commit_partial(const Amount& amount) noexcept {
    if (!active())
      return {ConsumeStatus::not_active};
    const std::optional<Amount> total = checked_add(settled_, amount);
    if (!(amount_zero<Amount>() < amount) || !amount_is_finite(amount) || !total)
      return {ConsumeStatus::invalid_amount};
    Amount from_hold = amount < held_ ? amount : held_;
    settled_ = *total;
    CommitResult r = coord_->settle(*agent_, from_hold, amount, estimate_, settled_);
    held_ = amount_traits<Amount>::sub(held_, from_hold);
    charged_ = amount_traits<Amount>::add(charged_, r.charged);
    return r;
  }
  template <class T>
  requires(!AmountArgument<T, Amount>) CommitResult commit_partial(const T&)
  = delete;

  /// Gives back everything still held. Idempotent.
  void release() noexcept {
    if (!active())
      return;
    if (amount_zero<Amount>() < held_)
      coord_->release(*agent_, held_);
    held_ = amount_zero<Amount>();
    finish();
  }

private:
  friend Coordinator;

  // Granted (holding `estimate`) when `agent` is given, refused with `status` otherwise.
  BasicReservation(Coordinator* coord, typename Coordinator::AgentState* agent, AgentId id,
                   const Amount& estimate, ConsumeStatus status) noexcept
      : coord_(coord), agent_(agent), agent_id_(id), estimate_(estimate),
        held_(agent ? estimate : amount_zero<Amount>()), status_(status) {}

  void finish() noexcept {
    std::exchange(agent_, nullptr)->open_reservations.fetch_sub(1, std::memory_order_relaxed);
  }

  // Leaves `other` as if default-constructed: it holds nothing and reports nothing.
  void take(BasicReservation& other) noexcept {
    const Amount z = amount_zero<Amount>();
    coord_ = std::exchange(other.coord_, nullptr);
    agent_ = std::exchange(other.agent_, nullptr);
    agent_id_ = std::exchange(other.agent_id_, AgentId{});
    estimate_ = std::exchange(other.estimate_, z);
    held_ = std::exchange(other.held_, z);
    charged_ = std::exchange(other.charged_, z);
    settled_ = std::exchange(other.settled_, z);
    status_ = std::exchange(other.status_, ConsumeStatus::not_active);
  }

  Coordinator* coord_ = nullptr;
  typename Coordinator::AgentState* agent_ = nullptr;
  AgentId agent_id_;
  Amount estimate_{};
  Amount held_{};
  Amount charged_{};
  Amount settled_{};
  ConsumeStatus status_ = ConsumeStatus::not_active;
};

} // namespace v1
} // namespace safeguards
