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
#include <safeguards/errors.hpp>
#include <string>
#include <thread>
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
  closed,       ///< the account was closed; nothing changed
  overflow      ///< the account cannot hold that much (see `max_balance`); nothing changed
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

// Lock-free cell. A plain debit is one compare-and-swap of `word`, which holds everything a
// debit changes: the remaining balance and the low bits of the charge count. `used` is not
// stored: it is `allocated - remaining - reserved`, so a debit has nothing else to update.
//
// Everything else (reserve, settle, release, credit, close, the count's carry) changes several
// fields. Those writers take `seq` (odd while one writes; a seqlock) so that readers get the
// numbers of one instant: a reader retries when `seq` moved, and since a plain debit changes
// `word` alone, one load of it is consistent with the fields the writers guard.
struct alignas(cache_line) AtomicCell {
  static constexpr int count_bits = 8;
  static constexpr std::uint64_t count_mask = (std::uint64_t{1} << count_bits) - 1;
  static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
  // 55 bits of raw units: 36,028,797,018.963967 as a `Decimal`.
  static constexpr std::int64_t max_raw = (std::int64_t{1} << (63 - count_bits)) - 1;

  // closed (bit 63) | remaining (bits 8..62) | charge count mod 256 (bits 0..7)
  std::atomic<std::uint64_t> word{0};
  std::atomic<std::uint64_t> seq{0};
  // Written only under `seq`; atomics so that readers may race with them and retry.
  std::atomic<std::int64_t> reserved{0};
  std::atomic<std::int64_t> allocated{0};       // remaining + used + reserved
  std::atomic<std::uint64_t> charge_carries{0}; // times the low 8 bits of the count wrapped

  static constexpr std::int64_t remaining_of(std::uint64_t w) noexcept {
    return static_cast<std::int64_t>((w & ~closed_bit) >> count_bits);
  }
  static constexpr std::uint64_t with_remaining(std::uint64_t w, std::int64_t rem) noexcept {
    return (w & (closed_bit | count_mask)) | (static_cast<std::uint64_t>(rem) << count_bits);
  }
  // One more charge, carrying into `charge_carries` (the caller holds `seq`) on a wrap.
  static constexpr std::uint64_t counted(std::uint64_t w, bool& carry) noexcept {
    carry = (w & count_mask) == count_mask;
    return carry ? w & ~count_mask : w + 1;
  }
};

// The writers' side of `AtomicCell::seq`. Holders run a few instructions and never block, so
// waiting spins briefly and then yields (a holder may have been preempted).
class CellWriter {
public:
  explicit CellWriter(AtomicCell& cell) noexcept : cell_(cell) {
    std::uint64_t s = cell_.seq.load(std::memory_order_relaxed);
    for (int spins = 0;; ++spins) {
      if ((s & 1) == 0 && cell_.seq.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                                          std::memory_order_relaxed))
        break;
      pause(spins);
      s = cell_.seq.load(std::memory_order_relaxed);
    }
    seq_ = s + 1;
  }
  ~CellWriter() { cell_.seq.store(seq_ + 1, std::memory_order_release); }
  CellWriter(const CellWriter&) = delete;
  CellWriter& operator=(const CellWriter&) = delete;

  // Fields only writers change: a load and a store, no locked instruction.
  template <class T>
  static void add(std::atomic<T>& field, T delta) noexcept {
    field.store(static_cast<T>(field.load(std::memory_order_relaxed) + delta),
                std::memory_order_release);
  }

  static void pause(int spins) noexcept {
    if (spins >= 64)
      std::this_thread::yield();
  }

private:
  AtomicCell& cell_;
  std::uint64_t seq_;
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

/// Balances in this process's memory. For `Decimal` and `std::int64_t` every account is one
/// cache line of atomics: a debit is one compare-and-swap, the other operations a short
/// seqlock-guarded update (see `detail::AtomicCell`), and no balance is ever read torn. Other
/// amount types take a per-account mutex. Accounts live until the ledger is destroyed, so a
/// handle stays valid after `close` (operations on it then report `closed`).
///
/// A lock-free account holds at most `max_balance()` (2^55 - 1 raw units: 36,028,797,018.963967
/// as a `Decimal`) over its life: `open` throws `AmountOverflow` above it and `credit` reports
/// `LedgerStatus::overflow`.
template <BudgetAmount Amount>
class InMemoryLedger {
  static constexpr bool lock_free = detail::RawAmount<Amount>;
  using Cell = std::conditional_t<lock_free, detail::AtomicCell, detail::LockedCell<Amount>>;
  using traits = amount_traits<Amount>;
  using Writer = detail::CellWriter;

public:
  using amount_type = Amount;
  using handle_type = Cell*;

  /// True when accounts are lock-free atomics rather than mutex-protected.
  static constexpr bool is_lock_free() noexcept { return lock_free; }

  /// The most an account can be given (`remaining + used + reserved`); none for mutex-protected
  /// accounts, whose amounts are only bounded by their type.
  static std::optional<Amount> max_balance() noexcept {
    if constexpr (lock_free)
      return traits::from_raw(detail::AtomicCell::max_raw);
    else
      return std::nullopt;
  }

  InMemoryLedger() = default;
  InMemoryLedger(const InMemoryLedger&) = delete;
  InMemoryLedger& operator=(const InMemoryLedger&) = delete;

  /// Opens an account holding `initial`. Not thread-safe with itself: callers serialise opens.
  /// Throws `AmountOverflow` above `max_balance()`.
  handle_type open(const Amount& initial) {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(initial);
      if (raw > detail::AtomicCell::max_raw)
        throw AmountOverflow("safeguards: an account holds at most " +
                             amount_to_string(*max_balance()) + ", not " +
                             amount_to_string(initial));
      auto& cell = cells_.emplace_back();
      cell.word.store(static_cast<std::uint64_t>(raw) << detail::AtomicCell::count_bits,
                      std::memory_order_release);
      cell.allocated.store(raw, std::memory_order_release);
      return &cell;
    } else {
      auto& cell = cells_.emplace_back();
      cell.remaining = initial;
      return &cell;
    }
  }

  /// Closes the account and returns the remaining balance it swept out, or nothing when it was
  /// already closed. Reserved money stays with its reservations, which settle into `used` or
  /// hand their refund back to the caller.
  std::optional<Amount> close(handle_type h) noexcept {
    if constexpr (lock_free) {
      Writer w(*h);
      std::uint64_t cur = h->word.load(std::memory_order_relaxed);
      do {
        if (cur & Cell::closed_bit)
          return std::nullopt;
      } while (!h->word.compare_exchange_weak(cur, Cell::with_remaining(cur, 0) | Cell::closed_bit,
                                              std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
      const std::int64_t swept = Cell::remaining_of(cur);
      Writer::add(h->allocated, -swept);
      return traits::from_raw(swept);
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
      return (h->word.load(std::memory_order_acquire) & Cell::closed_bit) == 0;
    else {
      std::lock_guard lock(h->mutex);
      return h->open;
    }
  }

  /// Moves `amount` from remaining to used, unless remaining cannot cover it. Lock-free: one
  /// compare-and-swap (once in 256 charges the count's carry takes the writers' path).
  LedgerStatus debit(handle_type h, const Amount& amount) noexcept {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(amount);
      std::uint64_t cur = h->word.load(std::memory_order_relaxed);
      for (;;) {
        if (cur & Cell::closed_bit)
          return LedgerStatus::closed;
        if (raw < 0 || Cell::remaining_of(cur) < raw)
          return LedgerStatus::insufficient;
        if ((cur & Cell::count_mask) == Cell::count_mask)
          return debit_carrying(h, raw);
        const std::uint64_t next = cur - (static_cast<std::uint64_t>(raw) << Cell::count_bits) + 1;
        if (h->word.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed))
          return LedgerStatus::ok;
      }
    } else {
      return locked_move_out(h, amount, &Cell::used, true);
    }
  }

  /// Moves `amount` from remaining to reserved, unless remaining cannot cover it.
  LedgerStatus reserve(handle_type h, const Amount& amount) noexcept {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(amount);
      std::uint64_t cur = h->word.load(std::memory_order_relaxed);
      if (auto refused = refusal(cur, raw)) // refused without taking the writers' turn
        return *refused;
      Writer w(*h);
      cur = h->word.load(std::memory_order_relaxed);
      do {
        if (auto refused = refusal(cur, raw))
          return *refused;
      } while (!h->word.compare_exchange_weak(
          cur, Cell::with_remaining(cur, Cell::remaining_of(cur) - raw), std::memory_order_acq_rel,
          std::memory_order_relaxed));
      Writer::add(h->reserved, raw);
      return LedgerStatus::ok;
    } else {
      return locked_move_out(h, amount, &Cell::reserved, false);
    }
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
      const std::int64_t from_hold = actual_raw < held_raw ? actual_raw : held_raw;
      const std::int64_t refund = held_raw - from_hold;
      const std::int64_t overage = actual_raw - from_hold;
      std::int64_t extra = 0; // overage actually taken from remaining
      bool carry = false;
      Writer w(*h);
      std::uint64_t cur = h->word.load(std::memory_order_relaxed);
      std::uint64_t next = 0;
      do {
        const std::int64_t rem = Cell::remaining_of(cur);
        s.account_closed = (cur & Cell::closed_bit) != 0;
        extra = s.account_closed ? 0 : (overage < rem ? overage : rem);
        // The refund and the overage never both apply: one CAS settles either.
        next = s.account_closed ? cur : Cell::with_remaining(cur, rem + refund - extra);
        carry = false;
        if (from_hold + extra > 0)
          next = Cell::counted(next, carry);
      } while (!h->word.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
      Writer::add(h->reserved, -held_raw);
      if (s.account_closed) // the refund leaves the account with the caller
        Writer::add(h->allocated, -refund);
      if (carry)
        Writer::add(h->charge_carries, std::uint64_t{1});
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
      Writer w(*h);
      const bool open = add_unless_closed(h, raw);
      Writer::add(h->reserved, -raw);
      if (!open)
        Writer::add(h->allocated, -raw);
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

  /// Adds `amount` to remaining; `overflow` (nothing changes) past `max_balance()`.
  LedgerStatus credit(handle_type h, const Amount& amount) noexcept {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(amount);
      Writer w(*h);
      if (!fits(h, raw))
        return LedgerStatus::overflow;
      if (!add_unless_closed(h, raw))
        return LedgerStatus::closed;
      Writer::add(h->allocated, raw);
      return LedgerStatus::ok;
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return LedgerStatus::closed;
      h->remaining = traits::add(h->remaining, amount);
      return LedgerStatus::ok;
    }
  }

  /// Sets remaining to `desired` if it still equals `expected`; otherwise loads the current
  /// value into `expected` and returns false. Always false on a closed account, and on a
  /// lock-free one when the account would then hold more than `max_balance()` (`expected` is
  /// left as it was: check the bound before calling).
  bool compare_exchange_remaining(handle_type h, Amount& expected, const Amount& desired) noexcept {
    if constexpr (lock_free) {
      const std::int64_t exp = traits::to_raw(expected);
      const std::int64_t des = traits::to_raw(desired);
      if (des < 0)
        return false;
      Writer w(*h);
      std::uint64_t cur = h->word.load(std::memory_order_relaxed);
      do {
        if (cur & Cell::closed_bit)
          return false;
        if (Cell::remaining_of(cur) != exp) {
          expected = traits::from_raw(Cell::remaining_of(cur));
          return false;
        }
        if (!fits(h, des - exp))
          return false;
      } while (!h->word.compare_exchange_weak(cur, Cell::with_remaining(cur, des),
                                              std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
      Writer::add(h->allocated, des - exp);
      return true;
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
      return read(h).charges;
    else {
      std::lock_guard lock(h->mutex);
      return h->charges;
    }
  }

  /// The three numbers of one instant (a closed account reports remaining zero): lock-free
  /// accounts are read until no writer moved them meanwhile, so `used` is never torn.
  LedgerBalance<Amount> balance(handle_type h) const noexcept {
    if constexpr (lock_free) {
      const Snapshot snap = read(h);
      return {traits::from_raw(snap.remaining),
              traits::from_raw(snap.allocated - snap.remaining - snap.reserved),
              traits::from_raw(snap.reserved)};
    } else {
      std::lock_guard lock(h->mutex);
      return {h->remaining, h->used, h->reserved};
    }
  }

private:
  struct Snapshot {
    std::int64_t remaining;
    std::int64_t reserved;
    std::int64_t allocated;
    std::uint64_t charges;
  };

  // A seqlock read: the writers' fields are stable while `seq` is even and unchanged, and the
  // one load of `word` fixes remaining and the count's low bits at one instant in between.
  static Snapshot read(handle_type h) noexcept {
    for (int spins = 0;; ++spins) {
      const std::uint64_t before = h->seq.load(std::memory_order_acquire);
      if ((before & 1) == 0) {
        const std::uint64_t word = h->word.load(std::memory_order_acquire);
        Snapshot snap{Cell::remaining_of(word), h->reserved.load(std::memory_order_acquire),
                      h->allocated.load(std::memory_order_acquire),
                      (h->charge_carries.load(std::memory_order_acquire) << Cell::count_bits) +
                          (word & Cell::count_mask)};
        if (h->seq.load(std::memory_order_acquire) == before)
          return snap;
      }
      Writer::pause(spins);
    }
  }

  // `amount` more fits the account (the caller holds the writers' turn, so `allocated` is
  // stable).
  static bool fits(handle_type h, std::int64_t amount) noexcept {
    return amount <= detail::AtomicCell::max_raw - h->allocated.load(std::memory_order_relaxed);
  }

  static std::optional<LedgerStatus> refusal(std::uint64_t word, std::int64_t raw) noexcept {
    if (word & Cell::closed_bit)
      return LedgerStatus::closed;
    if (raw < 0 || Cell::remaining_of(word) < raw)
      return LedgerStatus::insufficient;
    return std::nullopt;
  }

  // The debit whose charge wraps the count's low bits: the carry must become visible together
  // with the wrap, so it takes the writers' turn.
  static LedgerStatus debit_carrying(handle_type h, std::int64_t raw) noexcept {
    Writer w(*h);
    std::uint64_t cur = h->word.load(std::memory_order_relaxed);
    std::uint64_t next = 0;
    bool carry = false;
    do {
      if (auto refused = refusal(cur, raw))
        return *refused;
      next = Cell::counted(Cell::with_remaining(cur, Cell::remaining_of(cur) - raw), carry);
    } while (!h->word.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                            std::memory_order_relaxed));
    if (carry)
      Writer::add(h->charge_carries, std::uint64_t{1});
    return LedgerStatus::ok;
  }

  // remaining += raw, unless the account is closed. The caller holds the writers' turn.
  static bool add_unless_closed(handle_type h, std::int64_t raw) noexcept {
    std::uint64_t cur = h->word.load(std::memory_order_relaxed);
    do {
      if (cur & Cell::closed_bit)
        return false;
    } while (!h->word.compare_exchange_weak(
        cur, Cell::with_remaining(cur, Cell::remaining_of(cur) + raw), std::memory_order_acq_rel,
        std::memory_order_relaxed));
    return true;
  }

  template <class Member>
  LedgerStatus locked_move_out(handle_type h, const Amount& amount, Member to,
                               bool charge) noexcept {
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

  // A deque never moves its elements, so handles stay valid as accounts are added.
  std::deque<Cell> cells_;
};

static_assert(Ledger<InMemoryLedger<Decimal>>);

} // namespace v1
} // namespace safeguards
