// safeguards: the account of one monitored change, held for the change's few instructions.
// SPDX-License-Identifier: MIT
#pragma once

#include <safeguards/ledger.hpp>

namespace safeguards {
inline namespace v1 {
namespace detail {

// For a ledger that cannot hold an account (not a `HoldingLedger`): the account's single
// operations one after another, each taking the account for itself.
template <Ledger L>
class ForwardedHold {
public:
  using Amount = typename L::amount_type;
  ForwardedHold(L& ledger, typename L::handle_type h) noexcept : ledger_(ledger), h_(h) {}

  LedgerBalance<Amount> balance() const noexcept { return ledger_.balance(h_); }
  LedgerStatus debit(const Amount& a) noexcept { return ledger_.debit(h_, a); }
  LedgerStatus reserve(const Amount& a) noexcept { return ledger_.reserve(h_, a); }
  Settlement<Amount> settle(const Amount& held, const Amount& actual) noexcept {
    return ledger_.settle(h_, held, actual);
  }
  bool release(const Amount& held) noexcept { return ledger_.release(h_, held); }

private:
  L& ledger_;
  typename L::handle_type h_;
};

// The account `h` held for a monitored change: the ledger's own hold when it has one, so that the
// balance the change starts from is read in the same locked instruction as the change.
template <Ledger L>
auto hold_account(L& ledger, typename L::handle_type h) noexcept {
  if constexpr (HoldingLedger<L>)
    return ledger.hold(h);
  else
    return ForwardedHold<L>(ledger, h);
}

} // namespace detail
} // namespace v1
} // namespace safeguards
