// safeguards: account balances. Knows nothing of pools, agents or monitors.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <type_traits>
#include <utility>

namespace safeguards {
inline namespace v1 {

/// The three numbers of an account. `allocated == remaining + used + reserved` always holds at
/// quiescent points; none of them is ever negative.
template <class Amount>
struct LedgerBalance {
  Amount remaining;
  Amount used;
  Amount reserved;
};

/// Why a ledger operation did not happen.
enum class LedgerStatus : std::uint8_t {
  ok,
  insufficient, ///< the remaining balance cannot cover the amount; nothing changed
  closed        ///< the account was closed; nothing changed
};

/// What settling a reservation did: `charged` went to used, `refunded` back to remaining (or to
/// the caller, when the account is closed), `uncovered` is the overage nobody could pay.
template <class Amount>
struct Settlement {
  Amount charged;
  Amount refunded;
  Amount uncovered;
  bool account_closed = false;
};

/// Where balances live. `InMemoryLedger` keeps them in this process; a ledger shared by several
/// processes (through Redis, say) models the same operations.
///
/// Every operation on an account handle is linearizable and `noexcept`: the hot path never
/// throws. Debits refuse to cross zero, so no interleaving of callers can overspend.
template <class L>
concept Ledger = requires(L& ledger, typename L::handle_type h, typename L::amount_type a,
                          typename L::amount_type& expected) {
  typename L::amount_type;
  typename L::handle_type;
  { ledger.open(a) } -> std::same_as<typename L::handle_type>;
  { ledger.close(h) }
  noexcept->std::same_as<std::optional<typename L::amount_type>>;
  { ledger.debit(h, a) }
  noexcept->std::same_as<LedgerStatus>;
  { ledger.reserve(h, a) }
  noexcept->std::same_as<LedgerStatus>;
  { ledger.settle(h, a, a) }
  noexcept->std::same_as<Settlement<typename L::amount_type>>;
  { ledger.release(h, a) }
  noexcept->std::same_as<bool>;
  { ledger.credit(h, a) }
  noexcept->std::same_as<LedgerStatus>;
  { ledger.compare_exchange_remaining(h, expected, a) }
  noexcept->std::same_as<bool>;
  { ledger.balance(h) }
  noexcept->std::same_as<LedgerBalance<typename L::amount_type>>;
  { ledger.is_open(h) }
  noexcept->std::same_as<bool>;
};

namespace detail {

// One cache line per account so that agents on different cores never share a line.
inline constexpr std::size_t cache_line = 64;

// Lock-free cell: every number is one atomic int64 of raw units. A closed account's remaining
// holds a sentinel no real balance can reach, so closing races correctly with debits.
struct alignas(cache_line) AtomicCell {
  static constexpr std::int64_t closed = std::numeric_limits<std::int64_t>::min();
  std::atomic<std::int64_t> remaining{0};
  std::atomic<std::int64_t> used{0};
  std::atomic<std::int64_t> reserved{0};
  // Debits and settles that charged something. On this line, not the caller's: a counter on a
  // second contended line costs more than the whole debit when two cores share an account.
  std::atomic<std::uint64_t> charges{0};
};

// Fallback for amounts that do not fit one atomic word: a short per-account lock.
template <class Amount>
struct alignas(cache_line) LockedCell {
  mutable std::mutex mutex;
  Amount remaining = amount_zero<Amount>();
  Amount used = amount_zero<Amount>();
  Amount reserved = amount_zero<Amount>();
  std::uint64_t charges = 0;
  bool open = true;
};

} // namespace detail

/// Balances in this process's memory. For `Decimal` and `std::int64_t` every account is three
/// `std::atomic<int64_t>` on their own cache line and every operation is a short CAS loop; other
/// amount types take a per-account mutex. Accounts live until the ledger is destroyed, so a
/// handle stays valid after `close` (operations on it then report `closed`).
template <BudgetAmount Amount>
class InMemoryLedger {
  static constexpr bool lock_free = detail::RawAmount<Amount>;
  using Cell = std::conditional_t<lock_free, detail::AtomicCell, detail::LockedCell<Amount>>;
  using traits = amount_traits<Amount>;

public:
  using amount_type = Amount;
  using handle_type = Cell*;

  /// True when accounts are lock-free atomics rather than mutex-protected.
  static constexpr bool is_lock_free() noexcept { return lock_free; }

  InMemoryLedger() = default;
  InMemoryLedger(const InMemoryLedger&) = delete;
  InMemoryLedger& operator=(const InMemoryLedger&) = delete;

  /// Opens an account holding `initial`. Not thread-safe with itself: callers serialise opens.
  handle_type open(const Amount& initial) {
    auto& cell = cells_.emplace_back();
    if constexpr (lock_free)
      cell.remaining.store(traits::to_raw(initial), std::memory_order_release);
    else
      cell.remaining = initial;
    return &cell;
  }

  /// Closes the account and returns the remaining balance it swept out, or nothing when it was
  /// already closed. Reserved money stays with its reservations, which settle into `used` or
  /// hand their refund back to the caller.
  std::optional<Amount> close(handle_type h) noexcept {
    if constexpr (lock_free) {
      auto old = h->remaining.exchange(detail::AtomicCell::closed, std::memory_order_acq_rel);
      if (old == detail::AtomicCell::closed)
        return std::nullopt;
      return traits::from_raw(old);
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return std::nullopt;
      h->open = false;
      return std::exchange(h->remaining, amount_zero<Amount>());
    }
  }

  bool is_open(handle_type h) const noexcept {
    if constexpr (lock_free)
      return h->remaining.load(std::memory_order_acquire) != detail::AtomicCell::closed;
    else {
      std::lock_guard lock(h->mutex);
      return h->open;
    }
  }

  /// Moves `amount` from remaining to used, unless remaining cannot cover it.
  LedgerStatus debit(handle_type h, const Amount& amount) noexcept {
    return move_out(h, amount, &Cell::used, true);
  }

  /// Moves `amount` from remaining to reserved, unless remaining cannot cover it.
  LedgerStatus reserve(handle_type h, const Amount& amount) noexcept {
    return move_out(h, amount, &Cell::reserved, false);
  }

  /// Settles a reservation of `held` with the `actual` usage: up to `held` is charged from the
  /// reservation, the rest of it is refunded, and an overage is charged from remaining as far
  /// as remaining goes (never below zero). On a closed account the refund is returned to the
  /// caller in `refunded` and the overage is uncovered.
  ///
  /// With `held` zero and a negative `actual`, it is the inverse of a charge: `-actual` goes from
  /// used back to remaining, no charge is counted (`charged` is `actual`, `refunded` is
  /// `-actual`). `reset_usage` (budget periods) relies on that; every ledger must do the same.
  Settlement<Amount> settle(handle_type h, const Amount& held, const Amount& actual) noexcept {
    const Amount zero = amount_zero<Amount>();
    Settlement<Amount> s{zero, zero, zero};
    if constexpr (lock_free) {
      const std::int64_t held_raw = traits::to_raw(held);
      const std::int64_t actual_raw = traits::to_raw(actual);
      std::int64_t from_hold = actual_raw < held_raw ? actual_raw : held_raw;
      std::int64_t refund = held_raw - from_hold;
      std::int64_t overage = actual_raw - from_hold;
      std::int64_t extra = 0; // overage actually taken from remaining
      std::int64_t cur = h->remaining.load(std::memory_order_relaxed);
      for (;;) {
        if (cur == detail::AtomicCell::closed) {
          s.account_closed = true;
          extra = 0;
          break;
        }
        extra = overage < cur ? overage : cur;
        // The refund and the overage never both apply: one CAS settles either.
        if (h->remaining.compare_exchange_weak(cur, cur + refund - extra, std::memory_order_acq_rel,
                                               std::memory_order_relaxed))
          break;
      }
      // The CAS above is the linearization point; these counters publish, nothing reads through
      // them, so release is enough.
      h->reserved.fetch_sub(held_raw, std::memory_order_release);
      h->used.fetch_add(from_hold + extra, std::memory_order_release);
      if (from_hold + extra > 0)
        h->charges.fetch_add(1, std::memory_order_relaxed);
      s.charged = traits::from_raw(from_hold + extra);
      s.refunded = traits::from_raw(refund);
      s.uncovered = traits::from_raw(overage - extra);
    } else {
      std::lock_guard lock(h->mutex);
      Amount from_hold = actual < held ? actual : held;
      Amount refund = traits::sub(held, from_hold);
      Amount overage = traits::sub(actual, from_hold);
      Amount extra = zero;
      if (h->open) {
        extra = overage < h->remaining ? overage : h->remaining;
        h->remaining = traits::add(traits::sub(h->remaining, extra), refund);
      } else {
        s.account_closed = true;
      }
      h->reserved = traits::sub(h->reserved, held);
      h->used = traits::add(h->used, traits::add(from_hold, extra));
      s.charged = traits::add(from_hold, extra);
      if (zero < s.charged)
        ++h->charges;
      s.refunded = refund;
      s.uncovered = traits::sub(overage, extra);
    }
    return s;
  }

  /// Returns a reservation's `held` amount to remaining. False when the account is closed: the
  /// caller then owns the money and must return it wherever it came from.
  bool release(handle_type h, const Amount& held) noexcept {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(held);
      bool open = add_unless_closed(h, raw);
      h->reserved.fetch_sub(raw, std::memory_order_release);
      return open;
    } else {
      std::lock_guard lock(h->mutex);
      h->reserved = traits::sub(h->reserved, held);
      if (!h->open)
        return false;
      h->remaining = traits::add(h->remaining, held);
      return true;
    }
  }

  /// Adds `amount` to remaining.
  LedgerStatus credit(handle_type h, const Amount& amount) noexcept {
    if constexpr (lock_free) {
      return add_unless_closed(h, traits::to_raw(amount)) ? LedgerStatus::ok : LedgerStatus::closed;
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return LedgerStatus::closed;
      h->remaining = traits::add(h->remaining, amount);
      return LedgerStatus::ok;
    }
  }

  /// Sets remaining to `desired` if it still equals `expected`; otherwise loads the current
  /// value into `expected` and returns false. Always false on a closed account.
  bool compare_exchange_remaining(handle_type h, Amount& expected, const Amount& desired) noexcept {
    if constexpr (lock_free) {
      std::int64_t exp = traits::to_raw(expected);
      if (exp == detail::AtomicCell::closed)
        return false;
      bool ok = h->remaining.compare_exchange_strong(exp, traits::to_raw(desired),
                                                     std::memory_order_acq_rel);
      if (!ok && exp != detail::AtomicCell::closed)
        expected = traits::from_raw(exp);
      return ok;
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return false;
      if (h->remaining != expected) {
        expected = h->remaining;
        return false;
      }
      h->remaining = desired;
      return true;
    }
  }

  /// How many debits and settles charged something (reserves and releases do not count).
  /// Optional for a `Ledger`: a coordinator counts charges itself when its ledger does not.
  std::uint64_t charge_count(handle_type h) const noexcept {
    if constexpr (lock_free)
      return h->charges.load(std::memory_order_relaxed);
    else {
      std::lock_guard lock(h->mutex);
      return h->charges;
    }
  }

  /// A snapshot; the three numbers are read one after another, so under concurrent use they
  /// may come from different instants. A closed account reports remaining zero.
  LedgerBalance<Amount> balance(handle_type h) const noexcept {
    if constexpr (lock_free) {
      auto rem = h->remaining.load(std::memory_order_acquire);
      return {traits::from_raw(rem == detail::AtomicCell::closed ? 0 : rem),
              traits::from_raw(h->used.load(std::memory_order_acquire)),
              traits::from_raw(h->reserved.load(std::memory_order_acquire))};
    } else {
      std::lock_guard lock(h->mutex);
      return {h->remaining, h->used, h->reserved};
    }
  }

private:
  // remaining += raw, unless the account is closed (its sentinel must never be moved).
  static bool add_unless_closed(handle_type h, std::int64_t raw) noexcept {
    std::int64_t cur = h->remaining.load(std::memory_order_relaxed);
    do {
      if (cur == detail::AtomicCell::closed)
        return false;
    } while (!h->remaining.compare_exchange_weak(cur, cur + raw, std::memory_order_acq_rel,
                                                 std::memory_order_relaxed));
    return true;
  }

  template <class Member>
  LedgerStatus move_out(handle_type h, const Amount& amount, Member to, bool charge) noexcept {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(amount);
      std::int64_t cur = h->remaining.load(std::memory_order_relaxed);
      do {
        if (cur == detail::AtomicCell::closed)
          return LedgerStatus::closed;
        if (cur < raw)
          return LedgerStatus::insufficient;
      } while (!h->remaining.compare_exchange_weak(cur, cur - raw, std::memory_order_acq_rel,
                                                   std::memory_order_relaxed));
      (h->*to).fetch_add(raw, std::memory_order_release);
      if (charge)
        h->charges.fetch_add(1, std::memory_order_relaxed);
      return LedgerStatus::ok;
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return LedgerStatus::closed;
      if (h->remaining < amount)
        return LedgerStatus::insufficient;
      h->remaining = traits::sub(h->remaining, amount);
      h->*to = traits::add(h->*to, amount);
      if (charge)
        ++h->charges;
      return LedgerStatus::ok;
    }
  }

  // A deque never moves its elements, so handles stay valid as accounts are added.
  std::deque<Cell> cells_;
};

static_assert(Ledger<InMemoryLedger<Decimal>>);

} // namespace v1
} // namespace safeguards
