// safeguards: an account's operations without its handle, for a ledger that cannot hold one.
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

} // namespace detail
} // namespace v1
} // namespace safeguards
