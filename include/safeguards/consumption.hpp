// safeguards: Consumption and ConsumptionEvent, with council's vocabulary and text forms.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <safeguards/amount.hpp>
#include <safeguards/clock.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace safeguards {
inline namespace v1 {

/// The units council's factories use. Any other string is a valid unit too.
namespace units {
inline constexpr std::string_view call = "call";
inline constexpr std::string_view second = "second";
inline constexpr std::string_view token = "token";
inline constexpr std::string_view usd = "USD";
} // namespace units

/// A quantity of something: `value` in `unit`, of a `kind` ("gpt-4o", "search", ...).
///
/// A budget limit and a consumption are the same type; a consumption counts against a limit
/// when both unit and kind match.
///
/// **Example**
/// ```
/// auto c = Consumption::token(1200, "gpt-4o");
/// fmt::print("{}\n", c);   // gpt-4o consumption: 1200.0 token
/// ```
template <BudgetAmount Amount, Clock C>
class BasicBudget;

template <BudgetAmount Amount = Decimal>
class BasicConsumption {
public:
  using amount_type = Amount;

  BasicConsumption(Amount value, std::string unit, std::string kind)
      : value_(std::move(value)), unit_(std::move(unit)), kind_(std::move(kind)) {}

  /// `n` calls of `kind`.
  static BasicConsumption call(Amount n, std::string kind) {
    return {std::move(n), std::string(units::call), std::move(kind)};
  }
  /// `seconds` of wall time spent on `kind`.
  static BasicConsumption duration(Amount seconds, std::string kind) {
    return {std::move(seconds), std::string(units::second), std::move(kind)};
  }
  /// `n` tokens of `kind`.
  static BasicConsumption token(Amount n, std::string kind) {
    return {std::move(n), std::string(units::token), std::move(kind)};
  }
  /// `usd` US dollars spent on `kind`.
  static BasicConsumption cost(Amount usd, std::string kind) {
    return {std::move(usd), std::string(units::usd), std::move(kind)};
  }

  const Amount& value() const noexcept { return value_; }
  const std::string& unit() const noexcept { return unit_; }
  const std::string& kind() const noexcept { return kind_; }

  /// True when `other` counts against this one: same unit and same kind.
  bool matches(const BasicConsumption& other) const noexcept {
    return unit_ == other.unit_ && kind_ == other.kind_;
  }

  /// The same unit and kind with another value.
  BasicConsumption with_value(Amount value) const { return {std::move(value), unit_, kind_}; }

  friend bool operator==(const BasicConsumption&, const BasicConsumption&) = default;

private:
  // A budget updates its remaining limits in place: `with_value` would copy both strings.
  template <BudgetAmount, Clock>
  friend class BasicBudget;
  void set_value(Amount value) noexcept { value_ = std::move(value); }

  Amount value_;
  std::string unit_;
  std::string kind_;
};

/// A consumption whose unit and kind refer to strings owned elsewhere, as `std::string_view`
/// refers to a string: what `Budget::try_hold` and `settle_hold` take, so that a guarded model
/// call asks for room without building a string. Converts from a `Consumption` that outlives it
/// (not from a temporary one).
///
/// **Example**
/// ```
/// const std::string kind = "gpt-4o:total_tokens";
/// std::array<ConsumptionView, 1> held{ConsumptionView(Decimal(1500), units::token, kind)};
/// run.try_hold(held);
/// ```
template <BudgetAmount Amount = Decimal>
class BasicConsumptionView {
public:
  using amount_type = Amount;

  BasicConsumptionView(Amount value, std::string_view unit,
                       std::string_view kind) noexcept(std::is_nothrow_move_constructible_v<Amount>)
      : value_(std::move(value)), unit_(unit), kind_(kind) {}
  // NOLINTNEXTLINE(google-explicit-constructor): a view of a consumption, as string_view is
  BasicConsumptionView(const BasicConsumption<Amount>& c)
      : value_(c.value()), unit_(c.unit()), kind_(c.kind()) {}
  // A view of a temporary would dangle at the end of the statement that made it.
  BasicConsumptionView(const BasicConsumption<Amount>&&) = delete;

  const Amount& value() const noexcept { return value_; }
  std::string_view unit() const noexcept { return unit_; }
  std::string_view kind() const noexcept { return kind_; }

  /// True when this counts against `limit`: same unit and same kind.
  bool counts_against(const BasicConsumption<Amount>& limit) const noexcept {
    return unit_ == limit.unit() && kind_ == limit.kind();
  }

  /// An owning copy, for a record that outlives the strings viewed.
  BasicConsumption<Amount> to_consumption() const {
    return {value_, std::string(unit_), std::string(kind_)};
  }

private:
  Amount value_;
  std::string_view unit_;
  std::string_view kind_;
};

/// A consumption as it happened: what, from which source, and when (by `Clock`: wall time by
/// default, like every record the library makes; see `timestamp_clock`).
template <BudgetAmount Amount = Decimal, Clock C = std::chrono::system_clock>
class BasicConsumptionEvent {
public:
  using amount_type = Amount;
  using clock_type = C;
  using time_point = typename C::time_point;

  BasicConsumptionEvent(BasicConsumption<Amount> consumption, std::string source,
                        time_point timestamp)
      : consumption_(std::move(consumption)), source_(std::move(source)), timestamp_(timestamp) {}

  const BasicConsumption<Amount>& consumption() const noexcept { return consumption_; }
  const std::string& source() const noexcept { return source_; }
  time_point timestamp() const noexcept { return timestamp_; }

  friend bool operator==(const BasicConsumptionEvent&, const BasicConsumptionEvent&) = default;

private:
  BasicConsumption<Amount> consumption_;
  std::string source_;
  time_point timestamp_;
};

using Consumption = BasicConsumption<Decimal>;
using ConsumptionView = BasicConsumptionView<Decimal>;
using ConsumptionEvent = BasicConsumptionEvent<Decimal>;

namespace detail {

// Wall-clock time points print as UTC ISO 8601 with microseconds; the time points of other
// clocks have no calendar meaning, so they print as seconds since that clock's epoch.
template <class TimePoint>
std::string timestamp_to_string(TimePoint t) {
  using Clk = typename TimePoint::clock;
  if constexpr (std::is_same_v<Clk, std::chrono::system_clock>) {
    auto secs = std::chrono::floor<std::chrono::seconds>(t);
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(t - secs).count();
    return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06}Z",
                       std::chrono::time_point_cast<std::chrono::seconds>(secs), micros);
  } else {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch());
    return Decimal::from_raw(us.count()).to_string() + "s";
  }
}

} // namespace detail

} // namespace v1
} // namespace safeguards

/// council's form: "{kind} consumption: {value} {unit}".
template <safeguards::BudgetAmount A>
struct fmt::formatter<safeguards::BasicConsumption<A>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicConsumption<A>& c, FormatContext& ctx) const {
    auto text = fmt::format("{} consumption: {} {}", c.kind(),
                            safeguards::amount_to_string(c.value()), c.unit());
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};

/// council's form: "{consumption} at {timestamp} from {source}".
template <safeguards::BudgetAmount A, safeguards::Clock C>
struct fmt::formatter<safeguards::BasicConsumptionEvent<A, C>> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::BasicConsumptionEvent<A, C>& e, FormatContext& ctx) const {
    auto text = fmt::format("{} at {} from {}", e.consumption(),
                            safeguards::detail::timestamp_to_string(e.timestamp()), e.source());
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
