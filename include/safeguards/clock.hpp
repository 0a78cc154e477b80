// safeguards: the Clock concept and ManualClock, the clock tests drive by hand.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <safeguards/errors.hpp>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace safeguards {
inline namespace v1 {

/// Anything that tells the time through an object: every `std::chrono` clock (their static
/// `now()` is callable on an instance) and `ManualClock`. Budgets store the clock by value, so
/// a clock with state must share it between copies, as `ManualClock` does.
///
/// Which one to use:
/// - `std::chrono::steady_clock` (default for deadlines): never jumps, so deadlines hold.
/// - `std::chrono::system_clock` (default for audit timestamps): wall time people can read.
/// - `ManualClock`: tests and simulations; time moves only when you say so.
template <class C>
concept Clock = std::copy_constructible<C> && requires(const C& c) {
  typename C::duration;
  typename C::time_point;
  { c.now() } -> std::same_as<typename C::time_point>;
};

/// A steady clock that moves only when `advance` or `set` is called. Copies share one time, so a
/// test keeps a copy and moves every budget that was given one.
///
/// A thread can wait for a time on it (`wait_until`): `advance` and `set` wake it, so something
/// that runs on a schedule (`PeriodicReview`) can be driven by a test that never sleeps.
///
/// **Example**
/// ```
/// ManualClock clock;
/// BasicBudget<Decimal, ManualClock> run{std::chrono::seconds(30), {}, {}, clock};
/// clock.advance(std::chrono::seconds(31));
/// assert(run.is_expired());
/// ```
class ManualClock {
public:
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<ManualClock, duration>;
  static constexpr bool is_steady = true;

  ManualClock() : state_(std::make_shared<State>(0)) {}
  explicit ManualClock(time_point start)
      : state_(std::make_shared<State>(start.time_since_epoch().count())) {}

  time_point now() const noexcept { return time_point(duration(state_->now.load())); }

  /// Moves time forward; a negative step would break steadiness and throws.
  void advance(duration step) {
    if (step < duration::zero())
      throw InvalidArgument("safeguards::ManualClock: cannot go back in time");
    state_->now.fetch_add(step.count());
    wake_waiters();
  }

  /// Jumps to `t`, which must not be earlier than now.
  void set(time_point t) {
    rep target = t.time_since_epoch().count();
    rep current = state_->now.load();
    do {
      if (target < current)
        throw InvalidArgument("safeguards::ManualClock: cannot go back in time");
    } while (!state_->now.compare_exchange_weak(current, target));
    wake_waiters();
  }

  /// Blocks until this clock (any copy of it) reads `t` or later, or until `stop` is requested.
  /// Returns whether the time was reached. Only `advance` and `set` move the time, so only they
  /// (and the stop request) end the wait: no thread ever sleeps on a real clock here.
  bool wait_until(time_point t, std::stop_token stop) const {
    std::unique_lock lock(state_->mutex);
    return state_->moved.wait(lock, std::move(stop), [&] { return now() >= t; });
  }

private:
  struct State {
    explicit State(rep start) : now(start) {}
    std::atomic<rep> now;
    // Only for waiters: `now()` reads the atomic and never takes the mutex.
    std::mutex mutex;
    std::condition_variable_any moved;
  };

  // The time changes outside the mutex; taking it once before notifying means a waiter that
  // checked the old time under the mutex is already waiting, so the wake-up cannot be lost.
  void wake_waiters() const {
    { std::lock_guard lock(state_->mutex); }
    state_->moved.notify_all();
  }

  std::shared_ptr<State> state_;
};

/// The clock that stamps records (consumption events) made by something that measures deadlines
/// on `C`:
/// - `std::chrono::steady_clock` -> `std::chrono::system_clock`. A steady time point means
///   nothing to a person and nothing after a reboot, so records carry wall time, while the
///   deadlines themselves stay on the steady clock, which never jumps.
/// - any other clock -> `C` itself: `ManualClock` stamps with the time a test moves, and
///   `system_clock` is wall time already.
///
/// So the default `Budget` (deadlines on `steady_clock`) records the same `ConsumptionEvent` type,
/// stamped with `system_clock`, as the default `BudgetCoordinator`'s usage history.
template <Clock C>
struct timestamp_clock { // NOLINT(readability-identifier-naming): a trait, named like std's
  using type = C;
};
template <>
struct timestamp_clock<std::chrono::steady_clock> {
  using type = std::chrono::system_clock;
};
template <Clock C>
using timestamp_clock_t = typename timestamp_clock<C>::type;

namespace detail {

// `t + d`, or the clock's last (first) time point when that is beyond its range: a deadline
// centuries away is "never", not a wrapped time point in the past that expires the budget at
// birth.
template <class TimePoint>
TimePoint saturating_add(TimePoint t, typename TimePoint::duration d) noexcept {
  using rep = typename TimePoint::rep;
  if constexpr (std::is_integral_v<rep>) {
    rep sum{};
    if (__builtin_add_overflow(t.time_since_epoch().count(), d.count(), &sum))
      return d.count() > 0 ? TimePoint::max() : TimePoint::min();
    return TimePoint(typename TimePoint::duration(sum));
  } else {
    return t + d;
  }
}

// `a - b`, clamped to the duration's range.
template <class TimePoint>
typename TimePoint::duration saturating_sub(TimePoint a, TimePoint b) noexcept {
  using duration = typename TimePoint::duration;
  using rep = typename duration::rep;
  if constexpr (std::is_integral_v<rep>) {
    rep diff{};
    if (__builtin_sub_overflow(a.time_since_epoch().count(), b.time_since_epoch().count(), &diff))
      return a > b ? duration::max() : duration::min();
    return duration(diff);
  } else {
    return a - b;
  }
}

} // namespace detail

static_assert(Clock<ManualClock>);
static_assert(Clock<std::chrono::steady_clock>);
static_assert(Clock<std::chrono::system_clock>);

} // namespace v1
} // namespace safeguards
