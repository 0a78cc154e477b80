// safeguards: PeriodicReview, the guide's scheduled_budget_review: `review` on its own thread, on
// the coordinator's clock.
// SPDX-License-Identifier: MIT
#pragma once

#include <cassert>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <fmt/format.h>
#include <functional>
#include <mutex>
#include <safeguards/clock.hpp>
#include <safeguards/coordinator.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/review.hpp>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

namespace detail {

template <class F, class Findings>
concept ReviewCallback =
    std::invocable<F&, const Findings&, std::stop_token> || std::invocable<F&, const Findings&>;

template <class T>
inline constexpr bool is_std_function = false;
template <class R, class... A>
inline constexpr bool is_std_function<std::function<R(A...)>> = true;

} // namespace detail

/// The guide's `scheduled_budget_review`: runs `review` every `every` on its own thread, on the
/// coordinator's clock, and hands each run's findings (empty when all is well) to `callback`.
///
/// - Schedule: the first review is `every` after construction, then every `every` after that.
///   When the clock has moved past several due times at once (an idle process, a `ManualClock`
///   jump), the review runs once, not once per missed time, and the schedule continues from the
///   next due time after now.
/// - Waiting: on a `std::chrono` clock, until the due time; on a `ManualClock`, until it is
///   advanced or set past the due time (so tests never sleep); any other clock must offer
///   `bool wait_until(time_point, std::stop_token) const`, as `ManualClock` does.
/// - Failures: an exception from the review or the callback does not stop the thread. It is
///   counted in `failures()` and passed to `on_error` (an exception from which is swallowed).
/// - Shutdown: the destructor (or `stop()`) requests a stop, which wakes a waiting thread at
///   once; a running callback finishes first (it can watch the `std::stop_token` it may take as
///   a second argument to return early), and the thread is joined. Nothing waits for a timeout.
///
/// `callback` takes `(const std::vector<Finding>&)` or `(const std::vector<Finding>&,
/// std::stop_token)`. It runs on the review's thread, with no lock of the review or the
/// coordinator held, so it may call the coordinator. The coordinator must outlive the review.
/// Do not destroy the review from its own callback (`stop()` there only requests the stop).
///
/// **Example**
/// ```
/// PeriodicReview daily(coord, std::chrono::hours(24), [](const std::vector<ReviewFinding>& fs) {
///   for (const auto& f : fs)
///     fmt::print("{}\n", f);
/// });
/// ```
template <class Coordinator>
class BasicPeriodicReview {
public:
  using coordinator_type = Coordinator;
  using clock_type = typename Coordinator::clock_type;
  using duration = typename clock_type::duration;
  using time_point = typename clock_type::time_point;
  using Finding = BasicReviewFinding<typename Coordinator::amount_type>;
  using Findings = std::vector<Finding>;
  using Callback = std::function<void(const Findings&, std::stop_token)>;
  using ErrorCallback = std::function<void(std::exception_ptr)>;

  static_assert(std::is_integral_v<typename duration::rep>,
                "safeguards: PeriodicReview needs a clock that counts time in whole ticks");

  /// Throws `InvalidArgument` for an interval that is not positive, an empty callback, or
  /// overlapping thresholds (see `review`).
  template <class F>
  requires detail::ReviewCallback<F, Findings>
  BasicPeriodicReview(const Coordinator& coord, duration every, F callback,
                      ReviewThresholds thresholds = {}, ErrorCallback on_error = {})
      : coord_(coord), clock_(coord.clock()), every_(every), thresholds_(thresholds),
        callback_(wrap(std::move(callback))), on_error_(std::move(on_error)) {
    if (every_ <= duration::zero())
      throw InvalidArgument(
          fmt::format("safeguards: a PeriodicReview interval must be positive, got {} clock ticks",
                      every_.count()));
    detail::validate_review_thresholds(thresholds_);
    first_due_ = detail::saturating_add(clock_.now(), every_);
    thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
  }

  BasicPeriodicReview(const BasicPeriodicReview&) = delete;
  BasicPeriodicReview& operator=(const BasicPeriodicReview&) = delete;

  ~BasicPeriodicReview() {
    assert(current_review != this && "a PeriodicReview destroyed from its own callback");
    stop();
  }

  /// Requests the stop and waits for the thread to end (after a running callback returns).
  /// Idempotent and safe from several threads; from the review's own callback it only requests
  /// the stop, and the thread ends when the callback returns.
  void stop() {
    thread_.request_stop();
    if (current_review == this)
      return;
    std::lock_guard lock(join_mutex_);
    if (thread_.joinable())
      thread_.join();
  }

  /// Reviews run so far, each delivered to the callback (whether it returned or threw).
  std::uint64_t runs() const {
    std::lock_guard lock(mutex_);
    return runs_;
  }

  /// Runs whose review or callback threw.
  std::uint64_t failures() const {
    std::lock_guard lock(mutex_);
    return failures_;
  }

  /// Blocks until `runs() >= n` (true) or the review has stopped short of it (false); a way for
  /// tests to know a review ran without sleeping. From the review's own callback it does not
  /// block.
  bool wait_for_runs(std::uint64_t n) const {
    std::unique_lock lock(mutex_);
    if (current_review != this)
      progress_.wait(lock, [&] { return runs_ >= n || finished_; });
    return runs_ >= n;
  }

  duration every() const noexcept { return every_; }
  const ReviewThresholds& thresholds() const noexcept { return thresholds_; }

private:
  template <class F>
  static Callback wrap(F callback) {
    if constexpr (std::is_pointer_v<F> || std::is_member_pointer_v<F> ||
                  detail::is_std_function<F>) {
      if (!callback)
        throw InvalidArgument("safeguards: a PeriodicReview needs a callback, got an empty one");
    }
    if constexpr (std::invocable<F&, const Findings&, std::stop_token>)
      return Callback(std::move(callback));
    else
      return [f = std::move(callback)](const Findings& findings, const std::stop_token&) mutable {
        std::invoke(f, findings);
      };
  }

  void run(std::stop_token stop) {
    current_review = this;
    time_point due = first_due_;
    while (wait_until(due, stop) && !stop.stop_requested()) {
      const time_point now = clock_.now();
      bool failed = false;
      try {
        const Findings findings = review(coord_, thresholds_);
        callback_(findings, stop);
      } catch (...) {
        failed = true;
        report(std::current_exception());
      }
      {
        std::lock_guard lock(mutex_);
        ++runs_;
        failures_ += failed ? 1 : 0;
      }
      progress_.notify_all();
      due = next_due(due, now);
    }
    {
      std::lock_guard lock(mutex_);
      finished_ = true;
    }
    progress_.notify_all();
  }

  // The first due time after `now`, on the grid `due + k * every`: missed times are skipped,
  // not made up one after another.
  time_point next_due(time_point due, time_point now) const {
    if (now < due)
      return detail::saturating_add(due, every_);
    const duration late = detail::saturating_sub(now, due);
    return detail::saturating_add(now - late % every_, every_);
  }

  bool wait_until(time_point t, std::stop_token& stop) {
    if constexpr (requires(const clock_type& c) {
                    { c.wait_until(t, stop) } -> std::convertible_to<bool>;
                  }) {
      return clock_.wait_until(t, stop);
    } else {
      static_assert(std::chrono::is_clock_v<clock_type>,
                    "safeguards: PeriodicReview needs a clock it can wait on: a std::chrono "
                    "clock, ManualClock, or one with bool wait_until(time_point, std::stop_token)");
      std::unique_lock lock(timer_mutex_);
      while (!stop.stop_requested()) {
        if (clock_type::now() >= t)
          return true;
        // Woken at once by a stop request (the stop token's callback notifies `timer_`).
        timer_.wait_until(lock, stop, t, [] { return false; });
      }
      return false;
    }
  }

  void report(std::exception_ptr error) noexcept {
    if (!on_error_)
      return;
    try {
      on_error_(std::move(error));
    } catch (...) {
      // Nobody is left to tell; the failure is already counted.
    }
  }

  // The review whose thread this is, so `stop`, `wait_for_runs` and the destructor can tell a
  // call from inside a callback (which must not wait for its own thread).
  static inline thread_local const BasicPeriodicReview* current_review = nullptr;

  const Coordinator& coord_;
  clock_type clock_;
  duration every_;
  ReviewThresholds thresholds_;
  Callback callback_;
  ErrorCallback on_error_;
  time_point first_due_{};

  mutable std::mutex mutex_;
  mutable std::condition_variable progress_;
  std::uint64_t runs_ = 0;
  std::uint64_t failures_ = 0;
  bool finished_ = false;

  std::mutex timer_mutex_;
  std::condition_variable_any timer_;
  std::mutex join_mutex_;
  // Last: destroyed (stopped and joined) before anything the thread uses.
  std::jthread thread_;
};

template <class Coordinator, class F, class... Rest>
BasicPeriodicReview(const Coordinator&, typename Coordinator::clock_type::duration, F, Rest&&...)
    -> BasicPeriodicReview<Coordinator>;

/// The periodic review of the default `BudgetCoordinator`; for any other coordinator type (a
/// `ManualClock` one in tests) `BasicPeriodicReview review(coord, every, callback)` deduces it.
using PeriodicReview = BasicPeriodicReview<BudgetCoordinator>;

} // namespace v1
} // namespace safeguards
