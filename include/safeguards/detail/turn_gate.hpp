// safeguards: the word that says who delivers an agent's events, and the gate that guards it.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstdint>
#include <safeguards/detail/account_hold.hpp>
#include <safeguards/ledger.hpp>
#include <thread>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Waits a little for a holder of a few instructions: spins, then lets a preempted holder run.
inline void spin_pause(int spins) noexcept {
  if (spins >= 64)
    std::this_thread::yield();
}

// One agent's turn and what waits on it.
//
// - `turn`: who delivers the agent's events (and runs its checks). It is a mutex for
//   `OrderLock::lock`, which blocks on it (`waiters` set, `std::atomic::wait`) unless that
//   would close a cycle.
// - `pending`: events are queued. Only set while the turn is held, so a free turn means an
//   empty queue.
// - `retired`: a replaced monitor list waits for the holder of the turn to free it. Only set
//   while the turn is held.
// - `waiters`: some thread sleeps until the turn is free. Only set while the turn is held.
// - `gate`: the gate itself, when it is a bit of this word (`TurnBitGate`).
//
// Who writes it: the holder of the agent's *gate*, and the holder of the turn, who gives a turn
// with nothing else set up without the gate (`try_give_up`: one compare-and-swap from exactly
// `turn` to 0, the only write ever made without the gate). So a gate holder that finds the turn
// free, or holds it itself, writes with plain stores; one that sets a bit while another thread
// holds the turn compare-and-swaps (`Guard::try_set`), and learns from a failure that the turn
// was given up meanwhile.
class TurnWord {
public:
  static constexpr std::uint32_t gate = 1;
  static constexpr std::uint32_t turn = 2;
  static constexpr std::uint32_t pending = 4;
  static constexpr std::uint32_t retired = 8;
  static constexpr std::uint32_t waiters = 16;

  // Acquire: a turn given up without the gate hands over what its holder did (the monitors' own
  // state included) to whoever takes the turn next.
  std::uint32_t load() const noexcept { return bits_.load(std::memory_order_acquire); }
  // For the holder of the gate when no other thread holds the turn.
  void store(std::uint32_t next) noexcept { bits_.store(next, std::memory_order_release); }
  // For the holder of the gate while another thread may hold the turn: false (and `expected`
  // reloaded) when the word moved, which only the holder's `try_give_up` can have done.
  bool compare_exchange(std::uint32_t& expected, std::uint32_t next) noexcept {
    return bits_.compare_exchange_strong(expected, next, std::memory_order_acq_rel,
                                         std::memory_order_acquire);
  }

  /// Gives the turn up, without the gate, if nothing but the turn is set (nothing queued, no
  /// list retired, nobody asleep, no gate holder); otherwise false and nothing changed.
  bool try_give_up() noexcept {
    std::uint32_t expected = turn;
    return bits_.compare_exchange_strong(expected, 0, std::memory_order_release,
                                         std::memory_order_relaxed);
  }

  /// Sets `gate` and returns the word as it was (without it): the gate of `TurnBitGate`.
  std::uint32_t take_gate_bit() noexcept {
    std::uint32_t w = 0; // the usual state: nothing held, so no load before the first attempt
    for (int spins = 0;; ++spins) {
      if ((w & gate) == 0) {
        if (bits_.compare_exchange_weak(w, w | gate, std::memory_order_acquire,
                                        std::memory_order_relaxed))
          return w;
        continue;
      }
      spin_pause(spins);
      w = bits_.load(std::memory_order_relaxed);
    }
  }

  /// Sleeps while the word is `seen` (which has `waiters` set; the thread that clears it wakes).
  void wait(std::uint32_t seen) const noexcept { bits_.wait(seen, std::memory_order_relaxed); }
  void wake() noexcept { bits_.notify_all(); }

private:
  std::atomic<std::uint32_t> bits_{0};
};

// The gate of a monitored change: it orders the agent's changes, their events and the writes of
// its `TurnWord`, and lends the change the agent's account. `enter(word)` takes it and returns a
// guard, which gives it up when destroyed, with
// - `was()`: the word as found (as last written through the guard);
// - `account()`: the account, with `balance()`, `debit`, `reserve`, `settle`, `release`;
// - `set(next)`: writes the word, when the turn is free or this thread holds it;
// - `try_set(next)`: writes it while another thread holds the turn; false (and `was()` reloaded,
//   the turn now free) when that thread gave it up meanwhile.
// Guards are scoped, never given up early: a flag saying whether one still holds the gate kept
// the account's hold out of registers, and its stores ahead of the locked instructions cost more
// than they saved.

// For a `HoldingLedger`: the account's own hold is the gate. A monitored change then takes one
// locked instruction for the gate and the change together.
template <HoldingLedger L>
class AccountGate {
public:
  AccountGate(L& ledger, typename L::handle_type account) noexcept
      : ledger_(ledger), account_(account) {}

  class Guard {
  public:
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    std::uint32_t was() const noexcept { return was_; }
    auto& account() noexcept { return hold_; }
    void set(std::uint32_t next) noexcept {
      word_.store(next);
      was_ = next;
    }
    bool try_set(std::uint32_t next) noexcept {
      std::uint32_t seen = was_; // a local: the guard's own address is never taken
      const bool set = word_.compare_exchange(seen, next);
      was_ = set ? next : seen;
      return set;
    }

  private:
    friend class AccountGate;
    Guard(L& ledger, typename L::handle_type account, TurnWord& word) noexcept
        : hold_(ledger.hold(account)), word_(word), was_(word.load()) {}
    decltype(std::declval<L&>().hold(std::declval<typename L::handle_type>())) hold_;
    TurnWord& word_;
    std::uint32_t was_;
  };

  Guard enter(TurnWord& word) noexcept { return Guard(ledger_, account_, word); }

private:
  L& ledger_;
  typename L::handle_type account_;
};

// For any other ledger: a bit of the word is the gate, and the account's operations are the
// ledger's own, each taking the account for itself. While the gate bit is set, the turn's holder
// cannot give it up without the gate, so the word is written once, when the gate is given up.
template <Ledger L>
class TurnBitGate {
public:
  TurnBitGate(L& ledger, typename L::handle_type account) noexcept
      : ledger_(ledger), account_(account) {}

  class Guard {
  public:
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() { word_.store(was_); }
    std::uint32_t was() const noexcept { return was_; }
    ForwardedHold<L>& account() noexcept { return account_; }
    void set(std::uint32_t next) noexcept { was_ = next; }
    bool try_set(std::uint32_t next) noexcept {
      was_ = next;
      return true;
    }

  private:
    friend class TurnBitGate;
    Guard(L& ledger, typename L::handle_type account, TurnWord& word) noexcept
        : account_(ledger, account), word_(word), was_(word.take_gate_bit()) {}
    ForwardedHold<L> account_;
    TurnWord& word_;
    std::uint32_t was_;
  };

  Guard enter(TurnWord& word) noexcept { return Guard(ledger_, account_, word); }

private:
  L& ledger_;
  typename L::handle_type account_;
};

// The gate a coordinator over `L` uses (a partial specialisation, not `std::conditional_t`,
// which would name `AccountGate` for a ledger without holds too).
template <Ledger L>
struct TurnGateFor {
  using type = TurnBitGate<L>;
};
template <HoldingLedger L>
struct TurnGateFor<L> {
  using type = AccountGate<L>;
};
template <Ledger L>
using TurnGate = typename TurnGateFor<L>::type;

// The turn as a mutex, for `OrderLock`: taken under the gate, slept on with the word's `waiters`.
template <class Gate>
class TurnMutex {
public:
  TurnMutex(TurnWord& word, Gate& gate) noexcept : word_(word), gate_(gate) {}

  void lock() noexcept {
    for (int spins = 0;; ++spins) {
      if ((word_.load() & TurnWord::turn) != 0 && spins < 64) { // held: watch, do not take
        spin_pause(spins);
        continue;
      }
      std::uint32_t asleep_on = 0; // the word to sleep on, when this thread is to sleep
      {
        auto guard = gate_.enter(word_);
        const std::uint32_t w = guard.was();
        if ((w & TurnWord::turn) == 0) {
          guard.set(w | TurnWord::turn);
          return;
        }
        // The holder runs monitors, which may take long: sleep until it gives the turn up
        // (unless it gave it up already, and the next round takes it).
        if (spins >= 64 && ((w & TurnWord::waiters) != 0 || guard.try_set(w | TurnWord::waiters)))
          asleep_on = w | TurnWord::waiters;
      }
      if (asleep_on != 0)
        word_.wait(asleep_on);
    }
  }

  bool try_lock() noexcept {
    auto guard = gate_.enter(word_);
    const std::uint32_t w = guard.was();
    if ((w & TurnWord::turn) != 0)
      return false;
    guard.set(w | TurnWord::turn);
    return true;
  }

private:
  TurnWord& word_;
  Gate& gate_;
};

} // namespace detail
} // namespace v1
} // namespace safeguards
