// safeguards: allocation strategies, pure functions from a snapshot of one pool to new balances.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <bit>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <numeric>
#include <safeguards/amount.hpp>
#include <safeguards/decimal.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// One agent of a pool as an allocation strategy sees it. Only `remaining` is the strategy's to
/// replace: used and reserved money never moves.
///
/// **Example**
/// ```
/// AllocationAgent<> a{.id = AgentId(7), .priority = 9, .remaining = Decimal("120.0"),
///                     .usage_count = 4, .usage_sum = Decimal("400.0")};   // mean usage 100
/// ```
template <BudgetAmount Amount = Decimal>
struct AllocationAgent {
  AgentId id;
  /// 1..10, 10 highest.
  int priority = 1;
  Amount used{};
  Amount reserved{};
  /// The balance a strategy replaces.
  Amount remaining{};
  /// Usage entries (consumes and commits) in the strategy's `usage_window()`.
  std::uint64_t usage_count = 0;
  /// Their total.
  Amount usage_sum{};
};

/// One pool as an allocation strategy sees it: what may be handed out and who may receive it.
///
/// **Example**
/// ```
/// std::vector<AllocationAgent<>> agents{{.id = AgentId(1), .priority = 9},
///                                       {.id = AgentId(2), .priority = 3}};
/// PoolSnapshot<> pool{.pool = PoolId(1), .distributable = Decimal("1000.0"), .agents = agents};
/// ```
template <BudgetAmount Amount = Decimal>
struct PoolSnapshot {
  PoolId pool;
  int priority = 1;
  /// The pool's unallocated budget plus every agent's remaining balance.
  Amount distributable{};
  /// In ascending id order.
  std::span<const AllocationAgent<Amount>> agents;
};

namespace detail {

template <class T>
inline constexpr bool is_chrono_duration = false;
template <class Rep, class Period>
inline constexpr bool is_chrono_duration<std::chrono::duration<Rep, Period>> = true;

template <class S>
concept HasUsageWindow = requires(const S& s) {
  s.usage_window();
};

template <class S>
concept UsageWindowIsDuration =
    is_chrono_duration<std::remove_cvref_t<decltype(std::declval<const S&>().usage_window())>>;

} // namespace detail

/// A policy that decides how a pool's spendable money is spread over its agents.
///
/// A strategy is a copyable value with
/// - `std::string_view name() const`, which audit records quote as the reason of a change;
/// - `std::vector<Amount> allocate(const PoolSnapshot<Amount>&) const`, a pure function returning
///   the new remaining balance of each agent, in the order of `snapshot.agents`: each >= 0, their
///   sum <= `snapshot.distributable` (what is not handed out stays unallocated in the pool);
/// - optionally `usage_window() const` returning a `std::chrono::duration`: the coordinator fills
///   `usage_count` and `usage_sum` from history entries not older than that; zero or no such
///   member means all history (see `usage_window_of`).
///
/// It never sees the coordinator, so it can neither lock nor mutate it, and it can be tested
/// with a hand-made snapshot.
///
/// **Example**
/// ```
/// static_assert(AllocationStrategy<PriorityAllocation>);
/// static_assert(AllocationStrategy<FixedAllocation, double>);
/// static_assert(!AllocationStrategy<int>);
/// ```
template <class S, class Amount = Decimal>
concept AllocationStrategy = BudgetAmount<Amount> && std::copyable<S> &&
    requires(const S& strategy, const PoolSnapshot<Amount>& snapshot) {
  { strategy.name() } -> std::same_as<std::string_view>;
  { strategy.allocate(snapshot) } -> std::same_as<std::vector<Amount>>;
} &&(!detail::HasUsageWindow<S> || detail::UsageWindowIsDuration<S>);

/// The history window a strategy asks for, in nanoseconds; zero means all history: strategies
/// without a `usage_window()`, a window of zero, and windows longer than nanoseconds can count
/// (about 292 years, which covers every entry anyway). A negative window throws
/// `InvalidArgument`.
///
/// **Example**
/// ```
/// usage_window_of(DynamicAllocation{});   // 24 h
/// usage_window_of(PriorityAllocation{});  // 0: it reads no usage
/// ```
template <class S>
std::chrono::nanoseconds usage_window_of(const S& strategy) {
  if constexpr (detail::HasUsageWindow<S>) {
    static_assert(detail::UsageWindowIsDuration<S>,
                  "safeguards: usage_window() must return a std::chrono::duration");
    auto window = strategy.usage_window();
    // long double holds every int64 count exactly, so the comparison cannot overflow the way a
    // conversion of, say, hours::max() to nanoseconds would. NaN fails the first test.
    std::chrono::duration<long double> seconds = window;
    if (!(seconds.count() >= 0))
      throw InvalidArgument(
          fmt::format("safeguards: allocation strategy \"{}\" asks for a negative usage window",
                      strategy.name()));
    if (seconds >= std::chrono::duration<long double>(std::chrono::nanoseconds::max()))
      return std::chrono::nanoseconds::zero();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(window);
  } else {
    return std::chrono::nanoseconds::zero();
  }
}

/// An amount type the built-in strategies (other than `FixedAllocation`) can split exactly:
/// `exact`, and stored as a whole number of int64 quanta (`to_raw` / `from_raw` in its traits).
/// `Decimal` and `std::int64_t` are; `double` and `BigDecimal` are not, because their splits
/// cannot be made to add up to the last digit.
template <class A>
concept SplittableAmount = detail::RawAmount<A> && bool(amount_traits<A>::exact);

namespace detail {

__extension__ using uint128 = unsigned __int128;
__extension__ using int128 = __int128;

inline int bit_width_128(uint128 x) noexcept {
  auto high = static_cast<std::uint64_t>(x >> 64);
  return static_cast<int>(high != 0 ? 64 + std::bit_width(high)
                                    : std::bit_width(static_cast<std::uint64_t>(x)));
}

template <SplittableAmount A>
std::int64_t to_raw(const A& a) {
  return amount_traits<A>::to_raw(a);
}

// Quanta per whole unit of A: 1'000'000 for Decimal, 1 for std::int64_t.
template <SplittableAmount A>
std::int64_t raw_per_unit() {
  return amount_traits<A>::to_raw(amount_traits<A>::from_integer(1));
}

// A strategy's Decimal setting (a base budget, a minimum) in quanta of A: 50.0 is 50'000'000
// for Decimal and 50 for std::int64_t. A fraction that A cannot hold is refused rather than
// rounded: 50.5 tokens is a mistake in the setting, not a rounding question.
template <SplittableAmount A>
std::int64_t decimal_to_raw(Decimal value, std::string_view strategy, std::string_view field) {
  int128 scaled = int128(value.raw()) * raw_per_unit<A>();
  if (scaled % Decimal::scale != 0)
    throw InvalidArgument(fmt::format(
        "safeguards: {} allocation: {} = {} is not a whole number of the amount type's quanta",
        strategy, field, value.to_string()));
  int128 raw = scaled / Decimal::scale;
  if (raw > std::numeric_limits<std::int64_t>::max() ||
      raw < std::numeric_limits<std::int64_t>::min())
    throw AmountOverflow(fmt::format("safeguards: {} allocation: {} = {} is out of range", strategy,
                                     field, value.to_string()));
  return static_cast<std::int64_t>(raw);
}

inline void check_not_negative(Decimal value, std::string_view strategy, std::string_view field) {
  if (value < Decimal())
    throw InvalidArgument(fmt::format("safeguards: {} allocation: {} = {} is negative", strategy,
                                      field, value.to_string()));
}

inline void check_window(std::chrono::seconds window, std::string_view strategy) {
  if (window < std::chrono::seconds::zero())
    throw InvalidArgument(fmt::format("safeguards: {} allocation: window = {} s is negative",
                                      strategy, window.count()));
}

// The snapshot is the coordinator's, but a strategy is also called on hand-made ones (tests, a
// what-if tool); a priority outside 1..10 would skew every weight silently.
template <SplittableAmount A>
void check_snapshot(const PoolSnapshot<A>& pool, std::string_view strategy) {
  if (to_raw(pool.distributable) < 0)
    throw InvalidArgument(fmt::format("safeguards: {} allocation: {} has a negative distributable "
                                      "amount {}",
                                      strategy, pool.pool, amount_to_string(pool.distributable)));
  for (const auto& agent : pool.agents) {
    if (agent.priority < 1 || agent.priority > 10)
      throw InvalidPriority(fmt::format("safeguards: {} allocation: {} has priority {}, outside "
                                        "1..10",
                                        strategy, agent.id, agent.priority));
    auto sum = to_raw(agent.usage_sum);
    if (sum < 0 || (agent.usage_count == 0 && sum != 0))
      throw InvalidArgument(fmt::format("safeguards: {} allocation: {} has usage_sum {} over {} "
                                        "entries",
                                        strategy, agent.id, amount_to_string(agent.usage_sum),
                                        agent.usage_count));
  }
}

/// Splits `total` quanta over `agents` in proportion to `weights`, exactly and deterministically
/// (the one split every built-in strategy uses):
/// agent i first receives floor(total × w_i / W), W = Σ w; the quanta those floors leave over
/// (fewer than the number of agents with a remainder) go one each to the largest remainders
/// total × w_i mod W, ties to the higher priority, then the lower id. Shares are **added** to
/// `out`. Returns what it handed out: `total`, or 0 when every weight is 0.
///
/// No floating point: total < 2^64 and w_i < 2^64 keep each product below 2^128, and W fits 128
/// bits for any number of agents a machine can hold. Results depend on ids, not positions, so
/// any order of the same agents gives each agent the same share.
///
/// **Example**
/// ```
/// // 10 µ by weights 1, 1, 1 among agents of priority 2, 7, 7: 3 µ each, and the µ left to the
/// // second agent (priority 7, lower id than the third).
/// std::vector<std::uint64_t> weights{1, 1, 1}, out(3);
/// detail::split_by_weights<Decimal>(10, weights, snapshot.agents, out);   // out == {3, 4, 3}
/// ```
template <class A>
std::uint64_t split_by_weights(std::uint64_t total, std::span<const std::uint64_t> weights,
                               std::span<const AllocationAgent<A>> agents,
                               std::span<std::uint64_t> out) {
  const std::size_t n = weights.size();
  uint128 sum = 0;
  for (std::uint64_t w : weights)
    sum += w;
  if (sum == 0)
    return 0;
  // What the leftover quanta are ranked by, copied out of the snapshot so that ranking a
  // million candidates reads one compact array rather than chasing agents (3x faster).
  struct Candidate {
    uint128 remainder;
    std::uint64_t id;
    int priority;
    std::uint32_t index;
  };
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw InvalidArgument("safeguards: an allocation splits among at most 2^32 - 1 agents");
  std::vector<Candidate> candidates;
  candidates.reserve(n);
  std::uint64_t handed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    uint128 product = uint128(total) * weights[i];
    uint128 share = product / sum;
    uint128 remainder = product - share * sum;
    if (remainder != 0)
      candidates.push_back(
          {remainder, agents[i].id.value(), agents[i].priority, static_cast<std::uint32_t>(i)});
    // share <= total, and the shares add up to at most total: no overflow.
    out[i] += static_cast<std::uint64_t>(share);
    handed += static_cast<std::uint64_t>(share);
  }
  // Σ remainder = left × W and every remainder < W, so left < candidates.size().
  const std::uint64_t left = total - handed;
  if (left == 0)
    return total;
  // A strict total order (ids are unique), so the chosen set does not depend on the algorithm.
  auto first = [](const Candidate& a, const Candidate& b) {
    if (a.remainder != b.remainder)
      return a.remainder > b.remainder;
    if (a.priority != b.priority)
      return a.priority > b.priority;
    return a.id < b.id;
  };
  auto end = candidates.begin() + static_cast<std::ptrdiff_t>(left);
  std::nth_element(candidates.begin(), end, candidates.end(), first);
  for (auto it = candidates.begin(); it != end; ++it)
    ++out[it->index];
  return total;
}

// Rounds wide weights to their 64 leading bits, all by the same shift, so that they fit
// `split_by_weights`; relative to the largest weight the error is below 2^-63.
inline void narrow_weights(std::span<const uint128> wide, std::span<std::uint64_t> out) {
  uint128 largest = 0;
  for (uint128 w : wide)
    largest = std::max(largest, w);
  int shift = std::max(0, bit_width_128(largest) - 64);
  for (std::size_t i = 0; i < wide.size(); ++i)
    out[i] = static_cast<std::uint64_t>(wide[i] >> shift);
}

template <SplittableAmount A>
std::vector<A> amounts_from_raw(std::span<const std::uint64_t> raw) {
  std::vector<A> out;
  out.reserve(raw.size());
  for (std::uint64_t r : raw)
    out.push_back(amount_traits<A>::from_raw(static_cast<std::int64_t>(r)));
  return out;
}

inline uint128 div_round_half_even_128(uint128 n, uint128 d) {
  uint128 q = n / d;
  uint128 r = n - q * d;
  if (r > d - r || (r == d - r && (q & 1) != 0))
    ++q;
  return q;
}

} // namespace detail

/// The guide's fixed allocation: nothing moves. Every agent keeps the balance it was created
/// with or given by `update_budget`, and the pool's unallocated budget stays unallocated.
/// Use it when budgets are set by hand or by your own control plane. The coordinator's default
/// policy; works with every amount type.
///
/// Formula: new remaining_i = remaining_i.
///
/// **Example**
/// ```
/// BudgetCoordinator coord;   // BasicBudgetCoordinator<Decimal, FixedAllocation>
/// auto same = FixedAllocation{}.allocate(snapshot);   // every agent's current remaining
/// ```
struct FixedAllocation {
  std::string_view name() const noexcept { return "fixed"; }

  template <BudgetAmount Amount>
  std::vector<Amount> allocate(const PoolSnapshot<Amount>& pool) const {
    std::vector<Amount> out;
    out.reserve(pool.agents.size());
    for (const auto& agent : pool.agents)
      out.push_back(agent.remaining);
    return out;
  }

  friend constexpr bool operator==(FixedAllocation, FixedAllocation) noexcept = default;
};

/// The guide's dynamic allocation: each agent gets what it has recently been using, with a
/// buffer. Use it when agents' needs differ and change, and their recent past predicts their
/// near future (steady workloads), while a floor keeps new or quiet agents able to start.
///
/// Formula, per agent: wish_i = max(base, multiplier × usage_sum_i / usage_count_i), where the
/// usage is that of the last `window` (the mean usage per history entry), rounded half-even once
/// to the amount's quantum; no history: wish_i = base. When Σ wish <= distributable every agent
/// gets its wish and the rest stays unallocated in the pool; otherwise the distributable is
/// split exactly in proportion to the wishes (largest remainder, ties to higher priority, then
/// lower id), so everything is handed out. A wish above the largest amount counts as that amount.
///
/// Unlike the guide's code, the mean is never rounded before the multiplication, and wishes that
/// the pool cannot cover are scaled down instead of being granted regardless.
///
/// Settings are `Decimal` whatever the amount type; for `std::int64_t` amounts `base` must be a
/// whole number (50 tokens). Negative settings throw `InvalidArgument`.
///
/// **Example**
/// ```
/// // mean usage 100 -> 120; mean 25 -> 30, raised to 50; no history -> 50
/// coord.allocate(pool, DynamicAllocation{.multiplier = Decimal("1.2"), .base = Decimal(50)});
/// ```
struct DynamicAllocation {
  Decimal multiplier = Decimal("1.2");
  Decimal base = Decimal(50);
  std::chrono::seconds window = std::chrono::hours(24);

  std::string_view name() const noexcept { return "dynamic"; }
  std::chrono::seconds usage_window() const noexcept { return window; }

  template <SplittableAmount Amount>
  std::vector<Amount> allocate(const PoolSnapshot<Amount>& pool) const {
    using detail::uint128;
    detail::check_not_negative(multiplier, name(), "multiplier");
    detail::check_not_negative(base, name(), "base");
    detail::check_window(window, name());
    detail::check_snapshot(pool, name());
    const auto base_raw =
        static_cast<std::uint64_t>(detail::decimal_to_raw<Amount>(base, name(), "base"));
    const auto factor = static_cast<std::uint64_t>(multiplier.raw());
    constexpr auto largest = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    const std::size_t n = pool.agents.size();
    std::vector<std::uint64_t> wish(n);
    uint128 wanted = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& agent = pool.agents[i];
      std::uint64_t w = base_raw;
      if (agent.usage_count != 0) {
        // sum × multiplier / (count × scale): below 2^126 over below 2^84, one rounding.
        uint128 numerator =
            uint128(static_cast<std::uint64_t>(detail::to_raw(agent.usage_sum))) * factor;
        uint128 denominator =
            uint128(agent.usage_count) * static_cast<std::uint64_t>(Decimal::scale);
        uint128 scaled = detail::div_round_half_even_128(numerator, denominator);
        w = static_cast<std::uint64_t>(
            std::min<uint128>(std::max<uint128>(scaled, base_raw), largest));
      }
      wish[i] = w;
      wanted += w;
    }
    const auto total = static_cast<std::uint64_t>(detail::to_raw(pool.distributable));
    if (wanted <= total)
      return detail::amounts_from_raw<Amount>(wish);
    std::vector<std::uint64_t> out(n);
    detail::split_by_weights<Amount>(total, wish, pool.agents, out);
    return detail::amounts_from_raw<Amount>(out);
  }

  friend bool operator==(const DynamicAllocation&, const DynamicAllocation&) = default;
};

/// The guide's priority-based allocation, handing out everything: critical agents are served
/// first, and the money is spread by priority. Use it when some agents must keep running under
/// resource constraints (an on-call responder, a safety checker) and the others share what is
/// left by importance.
///
/// Formula, with D = distributable, m = `critical_minimum`, critical = priority >=
/// `critical_threshold`, c = number of critical agents:
/// - if c × m > D: D is split among the critical agents in proportion to priority; the others
///   get nothing;
/// - otherwise each critical agent gets m, and the rest R = D − c × m is split in proportion to
///   priority among all agents (on top of the minimums), or, with `critical_get_minimum_only`,
///   among the non-critical agents only (if every agent is critical, R stays unallocated).
///
/// Every split is exact (largest remainder, ties to higher priority, then lower id), so the
/// balances add up to D, except for the R nobody may take in the case above.
///
/// The guide's code keeps the critical agents at the minimum and gives every other agent
/// R × priority / Σ(all priorities): the critical agents' priorities are in the denominator but
/// receive nothing, so part of R is never handed out. `critical_get_minimum_only = true` keeps the
/// guide's intent and hands out all of R; the default also lets critical agents share R.
/// The guide also hands out minimums it does not have; we share D among them instead.
///
/// **Example**
/// ```
/// // 1000 over priorities 9, 8, 5, 3, 1: 361.538461, 326.923077, 173.076923, 103.846154, 34.615385
/// coord.allocate(pool, PriorityAllocation{});
/// // the guide's intent: 50, 50, 500, 300, 100
/// coord.allocate(pool, PriorityAllocation{.critical_get_minimum_only = true});
/// ```
struct PriorityAllocation {
  int critical_threshold = 8;
  Decimal critical_minimum = Decimal(50);
  /// Critical agents get the minimum and nothing more; the rest goes to the others.
  bool critical_get_minimum_only = false;

  std::string_view name() const noexcept { return "priority"; }

  template <SplittableAmount Amount>
  std::vector<Amount> allocate(const PoolSnapshot<Amount>& pool) const {
    using detail::uint128;
    detail::check_not_negative(critical_minimum, name(), "critical_minimum");
    detail::check_snapshot(pool, name());
    const auto minimum = static_cast<std::uint64_t>(
        detail::decimal_to_raw<Amount>(critical_minimum, name(), "critical_minimum"));
    const auto total = static_cast<std::uint64_t>(detail::to_raw(pool.distributable));
    const std::size_t n = pool.agents.size();
    std::uint64_t critical = 0;
    for (const auto& agent : pool.agents)
      critical += agent.priority >= critical_threshold ? 1 : 0;
    std::vector<std::uint64_t> weight(n);
    std::vector<std::uint64_t> out(n);
    const uint128 needed = uint128(critical) * minimum;
    if (needed > total) {
      for (std::size_t i = 0; i < n; ++i)
        if (pool.agents[i].priority >= critical_threshold)
          weight[i] = static_cast<std::uint64_t>(pool.agents[i].priority);
      detail::split_by_weights<Amount>(total, weight, pool.agents, out);
      return detail::amounts_from_raw<Amount>(out);
    }
    for (std::size_t i = 0; i < n; ++i) {
      bool is_critical = pool.agents[i].priority >= critical_threshold;
      out[i] = is_critical ? minimum : 0;
      weight[i] = is_critical && critical_get_minimum_only
                      ? 0
                      : static_cast<std::uint64_t>(pool.agents[i].priority);
    }
    detail::split_by_weights<Amount>(total - static_cast<std::uint64_t>(needed), weight,
                                     pool.agents, out);
    return detail::amounts_from_raw<Amount>(out);
  }

  friend bool operator==(const PriorityAllocation&, const PriorityAllocation&) = default;
};

/// The guide's rebalancing: all the pool's spendable money is redistributed by a weight that
/// mixes priority and recent usage. Use it for periodic rebalancing of a pool whose agents'
/// workloads shift: busy agents get more, important agents keep a large share regardless.
///
/// Formula, with D = distributable, p_i the priority and u_i = usage_sum_i / usage_count_i the
/// mean usage per history entry in the last `window`:
/// - `normalize = true` (default): weight_i = a × p_i / Σp + b × u_i / Σu, where
///   a = priority_weight / (priority_weight + usage_weight) and b likewise: each factor is a
///   share of the pool, so the two settings mean what they say (70 % of the money follows
///   priority, 30 % follows usage) whatever the pool's size or currency. Agents without history
///   have u_i = 0; with no usage anywhere the weight is the priority share alone.
/// - `normalize = false`: the guide's formula exactly, weight_i = priority_weight × p_i +
///   usage_weight × u_i, with u_i = 1.0 (one unit of the amount) for agents without history.
///   It adds priorities (1..10) to money, so its meaning depends on the currency; offered for
///   users porting guide code.
///
/// Then D is split in proportion to the weights, exactly (largest remainder, ties to higher
/// priority, then lower id): the balances add up to D. If every weight is zero, D is split
/// equally.
///
/// The split is exact and free of floating point, but the weights are rounded first so that no
/// product needs more than 128 bits: normalized weights are shares of the pool rounded down to
/// multiples of 2^-62, unnormalized ones are rounded to the 64 leading bits of the largest
/// weight; means keep at least 63 − log2(n) fractional bits of a quantum (64 when usage is
/// small), and settings with more than 30 significant bits (after cancelling common factors:
/// 0.7 and 0.3 are 7 and 3) are rounded to 30. A balance may therefore differ from the exact
/// formula by up to 1 + 3·n·D / 2^62 quanta (n agents, D the distributable in quanta) instead
/// of 1: less than 2 while n·D < 1.5·10^18, e.g. a thousand agents sharing a billion dollars.
/// When the weights are plain priorities (no usage anywhere, or `usage_weight = 0`) nothing is
/// rounded.
///
/// **Example**
/// ```
/// // 1000 over (priority 9, mean 30), (5, 10), (1, no history):
/// // normalize: shares 0.645, 0.308333.., 0.046666.. -> 645.0, 308.333333, 46.666667
/// coord.allocate(pool, RebalanceAllocation{});
/// // guide: weights 15.3, 6.5, 1.0 -> 671.052632, 285.087719, 43.859649
/// coord.allocate(pool, RebalanceAllocation{.normalize = false});
/// ```
struct RebalanceAllocation {
  Decimal priority_weight = Decimal("0.7");
  Decimal usage_weight = Decimal("0.3");
  bool normalize = true;
  std::chrono::seconds window = std::chrono::hours(24);

  std::string_view name() const noexcept { return "rebalance"; }
  std::chrono::seconds usage_window() const noexcept { return window; }

  template <SplittableAmount Amount>
  std::vector<Amount> allocate(const PoolSnapshot<Amount>& pool) const {
    using detail::uint128;
    detail::check_not_negative(priority_weight, name(), "priority_weight");
    detail::check_not_negative(usage_weight, name(), "usage_weight");
    if (priority_weight == Decimal() && usage_weight == Decimal())
      throw InvalidArgument("safeguards: rebalance allocation: priority_weight and usage_weight "
                            "are both zero");
    detail::check_window(window, name());
    detail::check_snapshot(pool, name());
    const std::size_t n = pool.agents.size();
    if (n == 0)
      return {};
    const auto [a, b] = coefficients();
    const auto unit = static_cast<std::uint64_t>(detail::raw_per_unit<Amount>());
    // Means keep as many fractional bits as the pool's usage leaves room for: every mean is at
    // most its sum, so with 2^bits × Σ sums < 2^126 no mean and no total of means overflows.
    uint128 sums = 0;
    for (const auto& agent : pool.agents)
      sums += agent.usage_count != 0 ? static_cast<std::uint64_t>(detail::to_raw(agent.usage_sum))
              : normalize            ? 0
                                     : unit;
    const int mean_bits = std::min(64, 126 - detail::bit_width_128(sums));
    std::vector<uint128> mean(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& agent = pool.agents[i];
      if (agent.usage_count != 0)
        mean[i] =
            (uint128(static_cast<std::uint64_t>(detail::to_raw(agent.usage_sum))) << mean_bits) /
            agent.usage_count;
      else
        mean[i] = normalize ? 0 : uint128(unit) << mean_bits;
    }
    std::vector<std::uint64_t> weight(n);
    if (normalize)
      normalized_weights(pool.agents, mean, a, b, weight);
    else
      guide_weights(pool.agents, mean, a, b, uint128(unit) << mean_bits, weight);
    const auto total = static_cast<std::uint64_t>(detail::to_raw(pool.distributable));
    std::vector<std::uint64_t> out(n);
    if (detail::split_by_weights<Amount>(total, weight, pool.agents, out) == 0 && total != 0) {
      std::fill(weight.begin(), weight.end(), 1);
      detail::split_by_weights<Amount>(total, weight, pool.agents, out);
    }
    return detail::amounts_from_raw<Amount>(out);
  }

  friend bool operator==(const RebalanceAllocation&, const RebalanceAllocation&) = default;

private:
  // The two settings as small integers with the same ratio: 0.7 and 0.3 become 7 and 3.
  std::pair<std::uint64_t, std::uint64_t> coefficients() const {
    auto a = static_cast<std::uint64_t>(priority_weight.raw());
    auto b = static_cast<std::uint64_t>(usage_weight.raw());
    std::uint64_t g = std::gcd(a, b);
    a /= g;
    b /= g;
    constexpr std::uint64_t limit = std::uint64_t{1} << 30;
    if (std::uint64_t largest = std::max(a, b); largest > limit) {
      a = static_cast<std::uint64_t>(
          detail::div_round_half_even_128(detail::uint128(a) * limit, largest));
      b = static_cast<std::uint64_t>(
          detail::div_round_half_even_128(detail::uint128(b) * limit, largest));
    }
    return {a, b};
  }

  template <class Amount>
  static void normalized_weights(std::span<const AllocationAgent<Amount>> agents,
                                 std::span<detail::uint128> mean, std::uint64_t a, std::uint64_t b,
                                 std::span<std::uint64_t> weight) {
    using detail::uint128;
    const std::size_t n = agents.size();
    uint128 usage_total = 0;
    for (uint128 m : mean)
      usage_total += m;
    if (usage_total == 0 || b == 0) {
      for (std::size_t i = 0; i < n; ++i)
        weight[i] = static_cast<std::uint64_t>(agents[i].priority);
      return;
    }
    // Means and their total lose the same low bits, so that a share's numerator, below 2^64,
    // times 2^62 still fits 128 bits. Only agents with less than 2^-63 of the usage lose digits.
    const int shift = std::max(0, detail::bit_width_128(usage_total) - 64);
    for (auto& m : mean)
      m >>= shift;
    usage_total >>= shift;
    if (a == 0) {
      for (std::size_t i = 0; i < n; ++i)
        weight[i] = static_cast<std::uint64_t>(mean[i]);
      return;
    }
    std::uint64_t priority_total = 0;
    for (const auto& agent : agents)
      priority_total += static_cast<std::uint64_t>(agent.priority);
    constexpr int share_bits = 62;
    uint128 priority_share[11] = {};
    for (int p = 1; p <= 10; ++p)
      priority_share[p] = (uint128(static_cast<std::uint64_t>(p)) << share_bits) / priority_total;
    for (std::size_t i = 0; i < n; ++i) {
      uint128 usage_share = (mean[i] << share_bits) / usage_total;
      // Both shares <= 2^62 and a, b <= 2^30: the sum stays below 2^93.
      uint128 combined = priority_share[agents[i].priority] * a + usage_share * b;
      weight[i] = static_cast<std::uint64_t>(combined / (a + b));
    }
  }

  template <class Amount>
  static void guide_weights(std::span<const AllocationAgent<Amount>> agents,
                            std::span<detail::uint128> mean, std::uint64_t a, std::uint64_t b,
                            detail::uint128 one_unit, std::span<std::uint64_t> weight) {
    using detail::uint128;
    // The priority term counts priorities in units of the amount, as the guide does. Terms lose
    // the same low bits until (10a + b) × the largest of them, below 2^35 × that, fits 2^127.
    uint128 largest = one_unit;
    for (uint128 m : mean)
      largest = std::max(largest, m);
    const int shift = std::max(0, detail::bit_width_128(largest) - 92);
    const uint128 unit = one_unit >> shift;
    for (std::size_t i = 0; i < agents.size(); ++i) {
      uint128 priority = static_cast<unsigned>(agents[i].priority);
      mean[i] = priority * a * unit + (mean[i] >> shift) * b;
    }
    detail::narrow_weights(mean, weight);
  }
};

/// Checks what a strategy returned before it is applied: one balance per agent, each finite and
/// >= 0, and (for exact amount types; inexact sums may differ in the last digit from the
/// coordinator's own) a sum no larger than the distributable amount. Throws `InvalidArgument`
/// naming the strategy. Useful for strategies you did not write.
///
/// **Example**
/// ```
/// auto balances = strategy.allocate(snapshot);
/// validate_allocation(snapshot, balances, strategy.name());
/// ```
template <BudgetAmount Amount>
void validate_allocation(const PoolSnapshot<Amount>& pool, const std::vector<Amount>& balances,
                         std::string_view strategy) {
  if (balances.size() != pool.agents.size())
    throw InvalidArgument(fmt::format("safeguards: allocation strategy \"{}\" returned {} balances "
                                      "for {} agents",
                                      strategy, balances.size(), pool.agents.size()));
  const Amount zero = amount_zero<Amount>();
  Amount sum = zero;
  bool overflow = false;
  for (std::size_t i = 0; i < balances.size(); ++i) {
    if (!amount_is_finite(balances[i]) || balances[i] < zero)
      throw InvalidArgument(fmt::format("safeguards: allocation strategy \"{}\" gave {} the "
                                        "balance {}",
                                        strategy, pool.agents[i].id,
                                        amount_to_string(balances[i])));
    if (auto next = checked_add(sum, balances[i]))
      sum = *next;
    else
      overflow = true;
  }
  if (amount_traits<Amount>::exact && (overflow || pool.distributable < sum))
    throw InvalidArgument(
        fmt::format("safeguards: allocation strategy \"{}\" handed out {}, more "
                    "than {} can distribute ({})",
                    strategy, overflow ? "more than the largest amount" : amount_to_string(sum),
                    pool.pool, amount_to_string(pool.distributable)));
}

} // namespace v1
} // namespace safeguards
