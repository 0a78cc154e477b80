// safeguards: account balances. Knows nothing of pools, agents or monitors.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <safeguards/amount.hpp>
#include <safeguards/detail/slot_table.hpp>
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
  insufficient,   ///< the remaining balance cannot cover the amount; nothing changed
  closed,         ///< the account was closed; nothing changed
  overflow,       ///< the account cannot hold that much (see `max_balance`); nothing changed
  invalid_amount, ///< the amount is negative; nothing changed
  unavailable,    ///< a ledger outside this process (Redis) could not be reached: nothing
                  ///< changed, unless the connection broke after the request was sent and could
                  ///< not be made again, when it may have been made once (never twice)
  conflict        ///< `compare_exchange_remaining` only: remaining was not the expected value,
                  ///< which now holds what it was; nothing changed
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

/// Where balances live. `InMemoryLedger` keeps them in this process; `RedisLedger`
/// (redis_ledger.hpp) keeps them in Redis, shared by several processes.
///
/// Every operation on an account handle is linearizable, and all but `open` and `close` are
/// `noexcept`: the hot path never throws. Debits refuse to cross zero, so no interleaving of
/// callers can overspend.
///
/// What a ledger outside the process must do when it cannot reach its store, and why the
/// operations have the shapes they have:
/// - Operations that *take* money (`debit`, `reserve`) and `compare_exchange_remaining` answer
///   `LedgerStatus::unavailable`: the caller does not make its call, or its management operation
///   throws `LedgerUnavailable`, and nothing is lost.
/// - Operations that *give* money back or record a call already made (`settle`, `release`,
///   `credit`) cannot be refused: the call happened, the reservation is over. The ledger keeps
///   them and sends them, once each, when the store is back; it answers as the store will apply
///   them. (That is why `release` has no status but its "closed" answer.)
/// - `close` may throw `LedgerUnavailable`: it must return the balance it sweeps, which only the
///   store knows; the caller changes nothing when it throws.
/// - `balance` answers the last balance the ledger saw when the store cannot be reached.
template <class L>
concept Ledger = requires(L& ledger, typename L::handle_type h, typename L::amount_type a,
                          typename L::amount_type& expected) {
  typename L::amount_type;
  typename L::handle_type;
  { ledger.open(a) } -> std::same_as<typename L::handle_type>;
  { ledger.close(h) } -> std::same_as<std::optional<typename L::amount_type>>;
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
  noexcept->std::same_as<LedgerStatus>;
  { ledger.balance(h) }
  noexcept->std::same_as<LedgerBalance<typename L::amount_type>>;
  { ledger.is_open(h) }
  noexcept->std::same_as<bool>;
};

/// A `Ledger` whose account one writer can hold for several operations: `ledger.hold(h)`
/// returns an object with `balance()`, `debit`, `reserve`, `settle` and `release` (the account's
/// operations without the handle), all `noexcept`, published together when it is destroyed.
/// Optional: a coordinator over such a ledger makes the hold the gate of an agent's monitored
/// changes, so that the balance a change starts from is read with the change (exact, and one
/// locked instruction for the gate, the read and the change). Over any other ledger the gate is
/// a word of the coordinator's own: it reads the balance, then makes the change (the gate keeps
/// the agent's other monitored changes out meanwhile, not a management call such as
/// `update_budget`).
template <class L>
concept HoldingLedger = Ledger<L> &&
    requires(L& ledger, typename L::handle_type h, const typename L::amount_type& a) {
  { ledger.hold(h).balance() }
  noexcept->std::same_as<LedgerBalance<typename L::amount_type>>;
  { ledger.hold(h).debit(a) }
  noexcept->std::same_as<LedgerStatus>;
  { ledger.hold(h).reserve(a) }
  noexcept->std::same_as<LedgerStatus>;
  { ledger.hold(h).settle(a, a) }
  noexcept->std::same_as<Settlement<typename L::amount_type>>;
  { ledger.hold(h).release(a) }
  noexcept->std::same_as<bool>;
};

namespace detail {

// One cache line per account so that agents on different cores never share a line.
inline constexpr std::size_t cache_line = 64;

// Lock-free cell. A plain debit is one compare-and-swap of `word`, which holds everything a
// debit changes: the remaining balance and the low bits of the charge count. `used` is not
// stored: it is `allocated - remaining - reserved`, so a debit has nothing else to update.
//
// Everything else (reserve, settle, release, credit, close) changes several fields. Such a writer
// owns the account from the compare-and-swap that sets `locked_bit` until the plain store that
// publishes its new word (`CellLock`): one locked instruction per operation, as a debit. A debit
// that would succeed waits for those few instructions; one that is refused does not wait, since a
// locked word still holds the balance of the instant before the writer's change.
//
// The debit whose charge wraps the count's low bits sets `carry_bit` instead and adds the carry
// to `charge_carries` afterwards; other debits go on meanwhile (only another wrap waits for it).
//
// Readers get the numbers of one instant from `seq`, which the owner of either bit makes odd
// while it writes: a reader retries when `seq` moved or was odd, or when `word` carries either
// bit.
struct alignas(cache_line) AtomicCell {
  static constexpr int count_bits = 6;
  static constexpr std::uint64_t count_mask = (std::uint64_t{1} << count_bits) - 1;
  static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
  static constexpr std::uint64_t locked_bit = std::uint64_t{1} << 62;
  static constexpr std::uint64_t carry_bit = std::uint64_t{1} << 61;
  static constexpr std::uint64_t flag_bits = closed_bit | locked_bit | carry_bit;
  static constexpr std::uint64_t busy_bits = locked_bit | carry_bit;
  // 55 bits of raw units: 36,028,797,018.963967 as a `Decimal`.
  static constexpr std::int64_t max_raw = (std::int64_t{1} << (61 - count_bits)) - 1;

  // closed (63) | locked (62) | carry (61) | remaining (6..60) | charge count mod 64 (0..5)
  std::atomic<std::uint64_t> word{0};
  std::atomic<std::uint64_t> seq{0};
  // Written only by the owner of a bit; atomics so that readers may race with them and retry.
  std::atomic<std::int64_t> reserved{0};
  std::atomic<std::int64_t> allocated{0};       // remaining + used + reserved
  std::atomic<std::uint64_t> charge_carries{0}; // times the low bits of the count wrapped

  static constexpr std::int64_t remaining_of(std::uint64_t w) noexcept {
    return static_cast<std::int64_t>((w & ~flag_bits) >> count_bits);
  }
  static constexpr std::uint64_t with_remaining(std::uint64_t w, std::int64_t rem) noexcept {
    return (w & (flag_bits | count_mask)) | (static_cast<std::uint64_t>(rem) << count_bits);
  }
};

// Waiting for the owner of an account's bit: it runs a few instructions and never blocks, so
// spin briefly and then yield (it may have been preempted).
inline void cell_pause(int spins) noexcept {
  if (spins >= 64)
    std::this_thread::yield();
}

// Ownership of an account by a writer (see `AtomicCell`). `word()` is the account's word when
// it was taken; `set` gives the word to publish when the lock is given up (unchanged otherwise).
class CellLock {
public:
  explicit CellLock(AtomicCell& cell) noexcept : cell_(cell), word_(take(cell)) {
    seq_ = cell_.seq.load(std::memory_order_relaxed);
    cell_.seq.store(seq_ + 1, std::memory_order_relaxed); // the fields' release stores follow it
  }
  ~CellLock() {
    cell_.seq.store(seq_ + 2, std::memory_order_release);
    cell_.word.store(word_, std::memory_order_release);
  }
  CellLock(const CellLock&) = delete;
  CellLock& operator=(const CellLock&) = delete;

  std::uint64_t word() const noexcept { return word_; }
  void set(std::uint64_t word) noexcept { word_ = word; }

  // Fields only owners change: a load and a release store, no locked instruction. The release
  // keeps the store after the odd `seq`, so a reader that sees the new value sees `seq` moved.
  template <class T>
  static void add(std::atomic<T>& field, T delta) noexcept {
    field.store(static_cast<T>(field.load(std::memory_order_relaxed) + delta),
                std::memory_order_release);
  }

private:
  // The word as it was when this thread set the lock bit over it. Static and by value, so that
  // the lock lives in registers: a lock spilled to the stack put stores in front of the
  // compare-and-swap, which must wait for them to drain.
  static std::uint64_t take(AtomicCell& cell) noexcept {
    std::uint64_t word = cell.word.load(std::memory_order_relaxed);
    if (try_take(cell, word)) [[likely]]
      return word;
    return wait_and_take(cell);
  }

  // Sets the lock bit over `word` unless another owner holds a bit or the word moved (then
  // `word` is the word seen).
  static bool try_take(AtomicCell& cell, std::uint64_t& word) noexcept {
    return (word & AtomicCell::busy_bits) == 0 &&
           cell.word.compare_exchange_weak(word, word | AtomicCell::locked_bit,
                                           std::memory_order_acquire, std::memory_order_relaxed);
  }

  [[gnu::noinline]] static std::uint64_t wait_and_take(AtomicCell& cell) noexcept {
    for (int spins = 0;; ++spins) {
      cell_pause(spins);
      std::uint64_t word = cell.word.load(std::memory_order_relaxed);
      if (try_take(cell, word))
        return word;
    }
  }

  AtomicCell& cell_;
  std::uint64_t word_;
  std::uint64_t seq_ = 0;
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
/// cache line of atomics: a debit is one compare-and-swap, the other operations one
/// compare-and-swap that takes the account for a few plain stores (see `detail::AtomicCell`), and
/// no balance is ever read torn. Other amount types take a per-account mutex. Accounts live until
/// the ledger is destroyed, so a handle stays valid after `close` (operations on it then report
/// `closed`).
///
/// A lock-free account holds at most `max_balance()` (2^55 - 1 raw units: 36,028,797,018.963967
/// as a `Decimal`) over its life: `open` throws `AmountOverflow` above it and `credit` reports
/// `LedgerStatus::overflow`.
template <BudgetAmount Amount>
class InMemoryLedger {
  static constexpr bool lock_free = detail::RawAmount<Amount>;
  using Cell = std::conditional_t<lock_free, detail::AtomicCell, detail::LockedCell<Amount>>;
  using traits = amount_traits<Amount>;
  using Lock = detail::CellLock;

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

  /// Opens an account as it was: `remaining` and `used` (nothing reserved) after `charges`
  /// charges, for restoring a snapshot. Not thread-safe with itself, like `open`. Throws
  /// `AmountOverflow` when the two add up to more than `max_balance()`, `InvalidArgument` when
  /// either is negative.
  handle_type open(const Amount& remaining, const Amount& used, std::uint64_t charges) {
    if (remaining < amount_zero<Amount>() || used < amount_zero<Amount>())
      throw InvalidArgument("safeguards: an account cannot hold a negative amount");
    if constexpr (lock_free) {
      const std::int64_t rem = traits::to_raw(remaining);
      const std::int64_t use = traits::to_raw(used);
      if (use > detail::AtomicCell::max_raw - rem)
        throw AmountOverflow("safeguards: an account holds at most " +
                             amount_to_string(*max_balance()) + ", not " +
                             amount_to_string(remaining) + " + " + amount_to_string(used));
      auto& cell = cells_.emplace_back();
      cell.word.store((static_cast<std::uint64_t>(rem) << detail::AtomicCell::count_bits) |
                          (charges & detail::AtomicCell::count_mask),
                      std::memory_order_release);
      cell.charge_carries.store(charges >> detail::AtomicCell::count_bits,
                                std::memory_order_release);
      cell.allocated.store(rem + use, std::memory_order_release);
      return &cell;
    } else {
      auto& cell = cells_.emplace_back();
      cell.remaining = remaining;
      cell.used = used;
      cell.charges = charges;
      return &cell;
    }
  }

  /// Closes the account and returns the remaining balance it swept out, or nothing when it was
  /// already closed. Reserved money stays with its reservations, which settle into `used` or
  /// hand their refund back to the caller.
  std::optional<Amount> close(handle_type h) noexcept {
    if constexpr (lock_free) {
      Lock lock(*h);
      if (lock.word() & Cell::closed_bit)
        return std::nullopt;
      const std::int64_t swept = Cell::remaining_of(lock.word());
      lock.set(Cell::with_remaining(lock.word(), 0) | Cell::closed_bit);
      Lock::add(h->allocated, -swept);
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

  /// Moves `amount` from remaining to used, unless remaining cannot cover it. One
  /// compare-and-swap; a debit that would succeed while another operation holds the account
  /// waits the few instructions it takes (see `detail::AtomicCell`).
  LedgerStatus debit(handle_type h, const Amount& amount) noexcept {
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(amount);
      std::uint64_t cur = h->word.load(std::memory_order_relaxed);
      if (auto refused = refusal(cur, raw))
        return *refused;
      // Neither held nor wrapping the count's low bits: the whole debit is this one instruction.
      if ((cur & (Cell::locked_bit | Cell::count_mask)) < Cell::count_mask &&
          h->word.compare_exchange_weak(
              cur, cur - (static_cast<std::uint64_t>(raw) << Cell::count_bits) + 1,
              std::memory_order_acq_rel, std::memory_order_relaxed)) [[likely]]
        return LedgerStatus::ok;
      return debit_contended(h, raw);
    } else {
      return hold(h).debit(amount);
    }
  }

  /// Moves `amount` from remaining to reserved, unless remaining cannot cover it.
  LedgerStatus reserve(handle_type h, const Amount& amount) noexcept {
    if constexpr (lock_free) {
      // Refused without taking the account (a locked word holds the balance before the change).
      if (auto refused = refusal(h->word.load(std::memory_order_relaxed), traits::to_raw(amount)))
        return *refused;
    }
    return hold(h).reserve(amount);
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
    return hold(h).settle(held, actual);
  }

  /// Returns a reservation's `held` amount to remaining. False when the account is closed: the
  /// caller then owns the money and must return it wherever it came from.
  bool release(handle_type h, const Amount& held) noexcept { return hold(h).release(held); }

  /// Adds `amount` to remaining; `overflow` (nothing changes) past `max_balance()`,
  /// `invalid_amount` for a negative amount (a credit never takes money away).
  LedgerStatus credit(handle_type h, const Amount& amount) noexcept {
    if (amount < amount_zero<Amount>())
      return LedgerStatus::invalid_amount;
    if constexpr (lock_free) {
      const std::int64_t raw = traits::to_raw(amount);
      Lock lock(*h);
      if (!fits(h, raw))
        return LedgerStatus::overflow;
      if (!add_unless_closed(lock, raw))
        return LedgerStatus::closed;
      Lock::add(h->allocated, raw);
      return LedgerStatus::ok;
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return LedgerStatus::closed;
      h->remaining = traits::add(h->remaining, amount);
      return LedgerStatus::ok;
    }
  }

  /// Sets remaining to `desired` if it still equals `expected`: `ok`; otherwise loads the
  /// current value into `expected` and returns `conflict`. `closed` on a closed account;
  /// `invalid_amount` for a negative `desired`; `overflow` on a lock-free account that would then
  /// hold more than `max_balance()` (`expected` is left as it was: check the bound first).
  LedgerStatus compare_exchange_remaining(handle_type h, Amount& expected,
                                          const Amount& desired) noexcept {
    if (desired < amount_zero<Amount>())
      return LedgerStatus::invalid_amount;
    if constexpr (lock_free) {
      const std::int64_t exp = traits::to_raw(expected);
      const std::int64_t des = traits::to_raw(desired);
      Lock lock(*h);
      if (lock.word() & Cell::closed_bit)
        return LedgerStatus::closed;
      if (Cell::remaining_of(lock.word()) != exp) {
        expected = traits::from_raw(Cell::remaining_of(lock.word()));
        return LedgerStatus::conflict;
      }
      if (!fits(h, des - exp))
        return LedgerStatus::overflow;
      lock.set(Cell::with_remaining(lock.word(), des));
      Lock::add(h->allocated, des - exp);
      return LedgerStatus::ok;
    } else {
      std::lock_guard lock(h->mutex);
      if (!h->open)
        return LedgerStatus::closed;
      if (h->remaining != expected) {
        expected = h->remaining;
        return LedgerStatus::conflict;
      }
      h->remaining = desired;
      return LedgerStatus::ok;
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

  /// One writer's hold on an account (see `hold`): the balance it reads is exact, and the
  /// operations it makes are the ledger's own, published together when the hold ends.
  class Hold {
  public:
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

    LedgerBalance<Amount> balance() const noexcept {
      if constexpr (lock_free) {
        const std::int64_t remaining = Cell::remaining_of(lock_.word());
        const std::int64_t reserved = h_->reserved.load(std::memory_order_relaxed);
        return {
            traits::from_raw(remaining),
            traits::from_raw(h_->allocated.load(std::memory_order_relaxed) - remaining - reserved),
            traits::from_raw(reserved)};
      } else {
        return {h_->remaining, h_->used, h_->reserved};
      }
    }
    LedgerStatus debit(const Amount& amount) noexcept {
      if constexpr (lock_free)
        return debit_locked(lock_, h_, traits::to_raw(amount));
      else
        return move_out(*h_, amount, &Cell::used, true);
    }
    LedgerStatus reserve(const Amount& amount) noexcept {
      if constexpr (lock_free)
        return reserve_locked(lock_, h_, traits::to_raw(amount));
      else
        return move_out(*h_, amount, &Cell::reserved, false);
    }
    Settlement<Amount> settle(const Amount& held, const Amount& actual) noexcept {
      if constexpr (lock_free)
        return settle_locked(lock_, h_, traits::to_raw(held), traits::to_raw(actual));
      else
        return settle_held(*h_, held, actual);
    }
    bool release(const Amount& held) noexcept {
      if constexpr (lock_free)
        return release_locked(lock_, h_, traits::to_raw(held));
      else
        return release_held(*h_, held);
    }

  private:
    friend class InMemoryLedger;
    explicit Hold(handle_type h) noexcept : h_(h), lock_(lockable(h)) {}
    static auto& lockable(handle_type h) noexcept {
      if constexpr (lock_free)
        return *h;
      else
        return h->mutex;
    }

    handle_type h_;
    std::conditional_t<lock_free, detail::CellLock, std::lock_guard<std::mutex>> lock_;
  };

  /// Takes the account for one writer until the returned `Hold` is destroyed: one locked
  /// instruction, like any single operation, however many operations the hold then makes, and a
  /// balance read under it is exact rather than retried. Every other writer, and every reader,
  /// of the account waits meanwhile, so keep it to a few instructions: never call back into the
  /// ledger for the same account, or run user code, while holding it. Optional for a `Ledger`
  /// (see `HoldingLedger`); a coordinator uses it, when the ledger has it, to read the balance a
  /// monitored change starts from together with the change.
  [[nodiscard]] Hold hold(handle_type h) noexcept { return Hold(h); }

private:
  struct Snapshot {
    std::int64_t remaining;
    std::int64_t reserved;
    std::int64_t allocated;
    std::uint64_t charges;
  };

  // A seqlock read: the owners' fields are stable while `seq` is even and unchanged, and the
  // one load of `word`, owned by nobody, fixes remaining and the count's low bits at one instant
  // in between.
  static Snapshot read(handle_type h) noexcept {
    for (int spins = 0;; ++spins) {
      const std::uint64_t before = h->seq.load(std::memory_order_acquire);
      const std::uint64_t word = h->word.load(std::memory_order_acquire);
      if ((before & 1) == 0 && (word & Cell::busy_bits) == 0) {
        Snapshot snap{Cell::remaining_of(word), h->reserved.load(std::memory_order_acquire),
                      h->allocated.load(std::memory_order_acquire),
                      (h->charge_carries.load(std::memory_order_acquire) << Cell::count_bits) +
                          (word & Cell::count_mask)};
        if (h->seq.load(std::memory_order_acquire) == before)
          return snap;
      }
      detail::cell_pause(spins);
    }
  }

  // `amount` more fits the account (the caller holds the account, so `allocated` is stable).
  static bool fits(handle_type h, std::int64_t amount) noexcept {
    return amount <= detail::AtomicCell::max_raw - h->allocated.load(std::memory_order_relaxed);
  }

  static std::optional<LedgerStatus> refusal(std::uint64_t word, std::int64_t raw) noexcept {
    if (word & Cell::closed_bit)
      return LedgerStatus::closed;
    if (raw < 0)
      return LedgerStatus::invalid_amount;
    if (Cell::remaining_of(word) < raw)
      return LedgerStatus::insufficient;
    return std::nullopt;
  }

  // A debit that lost a race, found the account held, or wraps the count's low bits. Kept out
  // of line so that the one-instruction path above stays small enough to inline.
  [[gnu::noinline]] static LedgerStatus debit_contended(handle_type h, std::int64_t raw) noexcept {
    std::uint64_t cur = h->word.load(std::memory_order_relaxed);
    for (int spins = 0;;) {
      if (auto refused = refusal(cur, raw))
        return *refused;
      if ((cur & (Cell::locked_bit | Cell::count_mask)) < Cell::count_mask) {
        if (h->word.compare_exchange_weak(
                cur, cur - (static_cast<std::uint64_t>(raw) << Cell::count_bits) + 1,
                std::memory_order_acq_rel, std::memory_order_relaxed))
          return LedgerStatus::ok;
      } else if ((cur & Cell::busy_bits) == 0) {
        // This charge wraps the count's low bits: the carry follows the compare-and-swap.
        const std::uint64_t next =
            (Cell::with_remaining(cur, Cell::remaining_of(cur) - raw) & ~Cell::count_mask) |
            Cell::carry_bit;
        if (h->word.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
          carry(h);
          return LedgerStatus::ok;
        }
      } else { // held by a writer, or a wrap while the last carry is still being added
        detail::cell_pause(spins++);
        cur = h->word.load(std::memory_order_relaxed);
      }
    }
  }

  // The rest of a debit that wrapped the count's low bits and set `carry_bit`: the carry is
  // added under `seq` (the bit keeps writers and other carries out), then the bit is cleared
  // with a read-modify-write, since other debits change the word meanwhile.
  static void carry(handle_type h) noexcept {
    const std::uint64_t seq = h->seq.load(std::memory_order_relaxed);
    h->seq.store(seq + 1, std::memory_order_relaxed);
    Lock::add(h->charge_carries, std::uint64_t{1});
    h->seq.store(seq + 2, std::memory_order_release);
    h->word.fetch_and(~Cell::carry_bit, std::memory_order_release);
  }

  // remaining += raw in the word `lock` will publish, unless the account is closed.
  static bool add_unless_closed(Lock& lock, std::int64_t raw) noexcept {
    if (lock.word() & Cell::closed_bit)
      return false;
    lock.set(Cell::with_remaining(lock.word(), Cell::remaining_of(lock.word()) + raw));
    return true;
  }

  // The operations on an account its caller holds (`Lock`), shared by the single operations and
  // by `Hold`. Nothing in them is stored ahead of the compare-and-swap that took the account,
  // which would have to wait for the stores to drain: the result is written after it.
  static LedgerStatus debit_locked(Lock& lock, handle_type h, std::int64_t raw) noexcept {
    if (auto refused = refusal(lock.word(), raw))
      return *refused;
    lock.set(counted(h, Cell::with_remaining(lock.word(), Cell::remaining_of(lock.word()) - raw)));
    return LedgerStatus::ok;
  }

  static LedgerStatus reserve_locked(Lock& lock, handle_type h, std::int64_t raw) noexcept {
    if (auto refused = refusal(lock.word(), raw))
      return *refused;
    lock.set(Cell::with_remaining(lock.word(), Cell::remaining_of(lock.word()) - raw));
    Lock::add(h->reserved, raw);
    return LedgerStatus::ok;
  }

  static Settlement<Amount> settle_locked(Lock& lock, handle_type h, std::int64_t held_raw,
                                          std::int64_t actual_raw) noexcept {
    const std::int64_t from_hold = actual_raw < held_raw ? actual_raw : held_raw;
    const std::int64_t refund = held_raw - from_hold;
    const std::int64_t overage = actual_raw - from_hold;
    const std::uint64_t cur = lock.word();
    const std::int64_t rem = Cell::remaining_of(cur);
    const bool closed = (cur & Cell::closed_bit) != 0;
    // Overage actually taken from remaining. The refund and the overage never both apply.
    const std::int64_t extra = closed ? 0 : (overage < rem ? overage : rem);
    const std::uint64_t next = closed ? cur : Cell::with_remaining(cur, rem + refund - extra);
    lock.set(from_hold + extra > 0 ? counted(h, next) : next);
    Lock::add(h->reserved, -held_raw);
    if (closed) // the refund leaves the account with the caller
      Lock::add(h->allocated, -refund);
    return {traits::from_raw(from_hold + extra), traits::from_raw(refund),
            traits::from_raw(overage - extra), closed};
  }

  static bool release_locked(Lock& lock, handle_type h, std::int64_t raw) noexcept {
    const bool open = add_unless_closed(lock, raw);
    Lock::add(h->reserved, -raw);
    if (!open)
      Lock::add(h->allocated, -raw);
    return open;
  }

  // `word` with one more charge counted; the carry is made here, since the holder owns it.
  static std::uint64_t counted(handle_type h, std::uint64_t word) noexcept {
    if ((word & Cell::count_mask) != Cell::count_mask)
      return word + 1;
    Lock::add(h->charge_carries, std::uint64_t{1});
    return word & ~Cell::count_mask;
  }

  // The same for a mutex-protected account, whose mutex the caller holds.
  template <class Member>
  static LedgerStatus move_out(Cell& c, const Amount& amount, Member to, bool charge) noexcept {
    if (amount < amount_zero<Amount>())
      return LedgerStatus::invalid_amount;
    if (!c.open)
      return LedgerStatus::closed;
    if (c.remaining < amount)
      return LedgerStatus::insufficient;
    c.remaining = traits::sub(c.remaining, amount);
    c.*to = traits::add(c.*to, amount);
    if (charge)
      ++c.charges;
    return LedgerStatus::ok;
  }

  static Settlement<Amount> settle_held(Cell& c, const Amount& held,
                                        const Amount& actual) noexcept {
    const Amount zero = amount_zero<Amount>();
    Settlement<Amount> s{zero, zero, zero};
    Amount from_hold = actual < held ? actual : held;
    Amount refund = traits::sub(held, from_hold);
    Amount overage = traits::sub(actual, from_hold);
    Amount extra = zero;
    if (c.open) {
      extra = overage < c.remaining ? overage : c.remaining;
      c.remaining = traits::add(traits::sub(c.remaining, extra), refund);
    } else {
      s.account_closed = true;
    }
    c.reserved = traits::sub(c.reserved, held);
    c.used = traits::add(c.used, traits::add(from_hold, extra));
    s.charged = traits::add(from_hold, extra);
    if (zero < s.charged)
      ++c.charges;
    s.refunded = refund;
    s.uncovered = traits::sub(overage, extra);
    return s;
  }

  static bool release_held(Cell& c, const Amount& held) noexcept {
    c.reserved = traits::sub(c.reserved, held);
    if (!c.open)
      return false;
    c.remaining = traits::add(c.remaining, held);
    return true;
  }

  // Elements never move, so handles stay valid as accounts are added; chunks that double (the
  // largest advised to huge pages) rather than a deque's one aligned 512-byte block per eight
  // cells: opening a million accounts was 40 % of creating a million agents, most of it faults.
  detail::StableVector<Cell> cells_;
};

static_assert(HoldingLedger<InMemoryLedger<Decimal>>);

} // namespace v1
} // namespace safeguards
