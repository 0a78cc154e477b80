// safeguards: reviews, the guide's regular check for underused, depleted and low budgets.
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
#include <map>
#include <mutex>
#include <safeguards/amount.hpp>
#include <safeguards/clock.hpp>
#include <safeguards/coordinator.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/monitor.hpp>
#include <safeguards/violation.hpp>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// What a review found. The guide's `review_budgets` logs the same three conditions.
enum class ReviewFindingKind : std::uint8_t {
  Underused,      ///< an agent's remaining budget is above `underused` % of its allocation
  NearlyDepleted, ///< an agent's remaining budget is below `nearly_depleted` % of its allocation
  PoolLow         ///< a pool's remaining budget is below `pool_low` % of its initial budget
};

constexpr std::string_view to_string(ReviewFindingKind k) noexcept {
  switch (k) {
  case ReviewFindingKind::Underused:
    return "underused";
  case ReviewFindingKind::NearlyDepleted:
    return "nearly_depleted";
  case ReviewFindingKind::PoolLow:
    return "pool_low";
  }
  return "unknown";
}

/// Where a review draws its lines; the defaults are the guide's. Every comparison is strict, as
/// in the guide: an agent with exactly 90 % left is not underused, one with exactly 10 % left is
/// not nearly depleted, a pool with exactly 20 % left is not low.
///
/// `include_implicit_pools`: the pool an agent created without `.pool` got for itself holds
/// exactly that agent's budget, so its agent's own findings already say what it would say, and
/// there is nothing in it to rebalance. Such pools are left out unless this is set.
///
/// **Example**
/// ```
/// auto findings = review(coord, {.underused = 95, .nearly_depleted = 5});
/// ```
struct ReviewThresholds {
  Percent underused = 90;
  Percent nearly_depleted = 10;
  Percent pool_low = 20;
  bool include_implicit_pools = false;
};

/// One thing a review found, with the numbers behind it (the metrics it was read from, in the
/// coordinator's amount type) and what the guide suggests doing about it.
///
/// Agent findings (`Underused`, `NearlyDepleted`) name the agent and its pool; pool findings
/// (`PoolLow`) name the pool and leave `agent` empty. `initial_budget` is the agent's allocation
/// (everything it has been given) or the pool's initial budget.
template <BudgetAmount Amount = Decimal>
struct BasicReviewFinding {
  ReviewFindingKind kind{};
  /// `Info` for an underused agent (the guide logs it as info), `Medium` for the two warnings.
  AlertSeverity severity{};
  AgentId agent{};
  std::string agent_name{};
  PoolId pool{};
  std::string pool_name{};
  Amount initial_budget{};
  Amount used_budget{};
  Amount reserved_budget{};
  Amount remaining_budget{};
  /// The line that was crossed: the `ReviewThresholds` percentage for this kind.
  Percent threshold = 0;
  /// The guide's advice: `reduce the budget of agent "a"`, `increase the budget of agent "a"`,
  /// `rebalance pool "p"`.
  std::string action{};

  bool is_agent_finding() const noexcept { return kind != ReviewFindingKind::PoolLow; }

  /// Remaining as a percentage of the initial budget, for display only (a `double`, not exact;
  /// the decision was made exactly). 0 for a zero initial budget, which no review reports.
  double remaining_percent() const noexcept {
    const double initial = amount_traits<Amount>::to_double(initial_budget);
    if (!(initial > 0))
      return 0;
    return amount_traits<Amount>::to_double(remaining_budget) / initial * 100;
  }

  friend bool operator==(const BasicReviewFinding&, const BasicReviewFinding&) = default;
};

using ReviewFinding = BasicReviewFinding<Decimal>;

namespace detail {

inline void validate_review_thresholds(const ReviewThresholds& t) {
  if (t.underused < t.nearly_depleted)
    throw InvalidArgument(fmt::format(
        "safeguards: review thresholds overlap: nearly_depleted {}% is above underused {}%, so "
        "an agent could be both at once",
        t.nearly_depleted.value(), t.underused.value()));
}

template <class F, class Findings>
concept ReviewCallback =
    std::invocable<F&, const Findings&, std::stop_token> || std::invocable<F&, const Findings&>;

template <class T>
inline constexpr bool is_std_function = false;
template <class R, class... A>
inline constexpr bool is_std_function<std::function<R(A...)>> = true;

} // namespace detail

/// The guide's `review_budgets`: reads every agent's and pool's metrics once and returns what
/// needs attention, agents first (oldest first, at most one finding each), then pools (highest
/// priority first):
/// - `Underused`: remaining > `underused` % of the agent's allocation ("consider reducing");
/// - `NearlyDepleted`: remaining < `nearly_depleted` % of it ("consider increasing");
/// - `PoolLow`: a pool's remaining < `pool_low` % of its initial budget ("consider
///   rebalancing").
///
/// The comparisons are exact (no rounding, no division) for `Decimal` and `std::int64_t`. An
/// agent or pool with nothing allocated has no share to be above or below, as in the guide, and
/// is never reported. Agents and pools are read in two steps, so under concurrent spending the
/// two halves may be a moment apart. Throws `InvalidArgument` when `nearly_depleted` is above
/// `underused` (an agent could be both).
///
/// **Example**
/// ```
/// for (const auto& finding : review(coord))
///   fmt::print("{}\n", finding);
/// // agent "batch" (agent-3) underused: 95.0 of 100.0 remaining, above 90%; suggested: reduce
/// //   the budget of agent "batch"
/// ```
template <class Coordinator>
requires requires(const Coordinator& c) {
  c.all_agent_metrics();
  c.all_pool_metrics();
}
std::vector<BasicReviewFinding<typename Coordinator::amount_type>>
review(const Coordinator& coord, const ReviewThresholds& thresholds = {}) {
  using Amount = typename Coordinator::amount_type;
  using Finding = BasicReviewFinding<Amount>;
  detail::validate_review_thresholds(thresholds);

  // Pools first, so agent findings can name their pool.
  const auto pools = coord.all_pool_metrics();
  const auto agents = coord.all_agent_metrics();
  std::map<PoolId, std::string> pool_names;
  for (const auto& p : pools)
    pool_names.emplace(p.id, p.name);

  std::vector<Finding> out;
  for (const auto& a : agents) {
    const int underused =
        detail::compare_to_share(a.remaining_budget, a.initial_budget, thresholds.underused);
    const int depleted =
        detail::compare_to_share(a.remaining_budget, a.initial_budget, thresholds.nearly_depleted);
    if (underused <= 0 && depleted >= 0)
      continue;
    Finding f;
    f.agent = a.id;
    f.agent_name = a.name;
    f.pool = a.pool;
    if (auto it = pool_names.find(a.pool); it != pool_names.end())
      f.pool_name = it->second;
    f.initial_budget = a.initial_budget;
    f.used_budget = a.used_budget;
    f.reserved_budget = a.reserved_budget;
    f.remaining_budget = a.remaining_budget;
    if (underused > 0) {
      f.kind = ReviewFindingKind::Underused;
      f.severity = AlertSeverity::Info;
      f.threshold = thresholds.underused;
      f.action = fmt::format("reduce the budget of agent \"{}\"", a.name);
    } else {
      f.kind = ReviewFindingKind::NearlyDepleted;
      f.severity = AlertSeverity::Medium;
      f.threshold = thresholds.nearly_depleted;
      f.action = fmt::format("increase the budget of agent \"{}\"", a.name);
    }
    out.push_back(std::move(f));
  }
  for (const auto& p : pools) {
    if (p.implicit && !thresholds.include_implicit_pools)
      continue;
    if (detail::compare_to_share(p.remaining_budget, p.initial_budget, thresholds.pool_low) >= 0)
      continue;
    Finding f;
    f.kind = ReviewFindingKind::PoolLow;
    f.severity = AlertSeverity::Medium;
    f.pool = p.id;
    f.pool_name = p.name;
    f.initial_budget = p.initial_budget;
    f.used_budget = p.used_budget;
    f.reserved_budget = p.reserved_budget;
    f.remaining_budget = p.remaining_budget;
    f.threshold = thresholds.pool_low;
    f.action = fmt::format("rebalance pool \"{}\"", p.name);
    out.push_back(std::move(f));
  }
  return out;
}

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
      return [f = std::move(callback)](const Findings& findings, std::stop_token) mutable {
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

/// `underused`, `nearly_depleted`, `pool_low`.
template <>
struct fmt::formatter<safeguards::ReviewFindingKind> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::ReviewFindingKind k, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(k), ctx);
  }
};

/// `agent "batch" (agent-3) underused: 95.0 of 100.0 remaining, above 90%; suggested: reduce the
/// budget of agent "batch"`, or `pool "shared" (pool-1) low: 15.0 of 100.0 remaining, below
/// 20%; suggested: rebalance pool "shared"`. The amounts are printed exactly.
template <safeguards::BudgetAmount A>
struct fmt::formatter<safeguards::BasicReviewFinding<A>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicReviewFinding<A>& f, FormatContext& ctx) const {
    using safeguards::ReviewFindingKind;
    const bool agent = f.is_agent_finding();
    const char* what = f.kind == ReviewFindingKind::Underused        ? "underused"
                       : f.kind == ReviewFindingKind::NearlyDepleted ? "nearly depleted"
                                                                     : "low";
    auto text = fmt::format("{} \"{}\" ({}) {}: {} of {} remaining, {} {}%; suggested: {}",
                            agent ? "agent" : "pool", agent ? f.agent_name : f.pool_name,
                            agent ? fmt::format("{}", f.agent) : fmt::format("{}", f.pool), what,
                            safeguards::amount_to_string(f.remaining_budget),
                            safeguards::amount_to_string(f.initial_budget),
                            f.kind == ReviewFindingKind::Underused ? "above" : "below",
                            f.threshold.value(), f.action);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
