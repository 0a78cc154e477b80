// safeguards: LlmCallGuard and guarded_call, one guard for a model call's time, calls, tokens
// and money.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <fmt/format.h>
#include <functional>
#include <limits>
#include <optional>
#include <safeguards/budget.hpp>
#include <safeguards/consume_result.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/coordinator.hpp>
#include <safeguards/decimal.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/llm_usage.hpp>
#include <safeguards/price_table.hpp>
#include <safeguards/run_budget.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace safeguards {
inline namespace v1 {

/// The token kinds a guarded call records, council-style: `<model>:prompt_tokens` and so on.
/// A run budget limits them with e.g. `Consumption::token(50'000, "gpt-4o:total_tokens")`.
namespace detail {
inline constexpr std::string_view prompt_suffix = ":prompt_tokens";
inline constexpr std::string_view completion_suffix = ":completion_tokens";
inline constexpr std::string_view total_suffix = ":total_tokens";
} // namespace detail

namespace llm_kinds {
inline std::string prompt_tokens(std::string_view model) {
  return std::string(model).append(detail::prompt_suffix);
}
inline std::string completion_tokens(std::string_view model) {
  return std::string(model).append(detail::completion_suffix);
}
inline std::string total_tokens(std::string_view model) {
  return std::string(model).append(detail::total_suffix);
}
} // namespace llm_kinds

/// What a call is about to ask for, before it is made.
struct LlmRequest {
  /// The prompt's size in tokens. Count it (the prompt is known before the call); what the API
  /// reports afterwards is charged either way, but only the estimate is reserved.
  std::int64_t prompt_tokens = 0;
  /// The most completion tokens wanted. The guard may give fewer (`max_output_tokens()`); pass
  /// that as the request's `max_tokens`.
  std::int64_t max_completion_tokens = 0;
  /// The call is refused when the limits and the money allow fewer completion tokens than this.
  std::int64_t min_completion_tokens = 1;
};

/// Which kind of limit refused a call.
enum class LlmLimit : std::uint8_t {
  deadline, ///< the run budget's deadline has passed
  duration, ///< a `second` limit of the model is used up
  calls,    ///< a `call` limit of the model
  tokens,   ///< a `token` limit of one of the model's token kinds
  cost,     ///< a `USD` limit of the model in the run budget
  money     ///< the agent's account in the coordinator (see `status`)
};

constexpr std::string_view to_string(LlmLimit l) noexcept {
  switch (l) {
  case LlmLimit::deadline:
    return "deadline";
  case LlmLimit::duration:
    return "duration";
  case LlmLimit::calls:
    return "calls";
  case LlmLimit::tokens:
    return "tokens";
  case LlmLimit::cost:
    return "cost";
  case LlmLimit::money:
    return "money";
  }
  return "unknown";
}

/// Why a call was not made: which limit, in council's terms (unit and kind), the limit's value
/// and the total the call would have brought it to.
struct LlmRefusal {
  LlmLimit what = LlmLimit::deadline;
  std::string unit{};                ///< "second", "call", "token" or "USD"
  std::string kind{};                ///< the limit's kind; for `money`, the agent's name
  std::optional<Decimal> limit{};    ///< the limit as given; for `money`, the agent's balance
  std::optional<Decimal> would_be{}; ///< used + held + this call's need
  /// For `money`: `insufficient`, `denied_by_monitor`, `unknown_agent`, ...; else
  /// `insufficient`.
  ConsumeStatus status = ConsumeStatus::insufficient;
};

/// A guarded call that was refused before it was made. `refusal()` says which limit.
class LlmCallRefused : public BudgetExceeded {
public:
  explicit LlmCallRefused(LlmRefusal refusal);
  const LlmRefusal& refusal() const noexcept { return refusal_; }

private:
  LlmRefusal refusal_;
};

/// What a finished call was charged.
struct LlmCallRecord {
  LlmUsage usage{};  ///< the tokens recorded (the model's name as reported)
  Decimal cost{};    ///< USD, exact and rounded up once for the call
  Decimal seconds{}; ///< wall time, rounded up to the microsecond
  /// The agent's money for the whole call, streamed charges included: charged, refunded from
  /// what was set aside, and overspent (usage nobody could pay). All zero without a coordinator.
  BasicCommitResult<Decimal> money{};
};

/// Where a guarded call is charged. Every part is optional except the model: a run budget (time,
/// calls, tokens, USD per model), a coordinator and agent (money), and the prices (needed with a
/// coordinator or a `USD` limit). The pointed-to objects must outlive the guards made from it.
///
/// **Example**
/// ```
/// LlmCallContext ctx{.run = &run, .coordinator = &coord, .agent = agent,
///                    .prices = &prices, .model = "gpt-4o"};
/// ```
template <RunBudget Run = SharedBudget, class Coordinator = BudgetCoordinator>
struct BasicLlmCallContext {
  Run* run = nullptr;
  Coordinator* coordinator = nullptr;
  AgentId agent{};
  const PriceTable* prices = nullptr;
  std::string model{};
  /// The consumption events' source when there is no coordinator (else the agent's name).
  std::string source{};
};

/// For calls from any number of threads against one `SharedBudget`.
using LlmCallContext = BasicLlmCallContext<>;

/// One model call, guarded: before it, the run's deadline, its call, token and cost limits and
/// the agent's money are checked and what the call may use is set aside; during it,
/// `time_left()` and `max_output_tokens()` tell the client how long to wait and how many tokens
/// to ask for; after it, `commit(usage)` records exactly what happened.
///
/// What it records, council-style, in the run budget (source: the agent's name): 1 `call` of
/// kind = model, the `duration` in seconds, `token`s of kinds `<model>:prompt_tokens`,
/// `<model>:completion_tokens` and `<model>:total_tokens`, and the cost in `USD` of kind = model;
/// in the coordinator, the agent's reservation settled to the cost.
///
/// Nothing the call may use can be taken by another call in the meantime: the run budget holds
/// the call, the tokens and the cost (`Budget::try_hold`), the agent's account reserves the cost.
/// So calls from several threads never exceed a token, call or money limit together, as long as
/// each model keeps to the `max_tokens` it was given and no prompt is larger than its estimate
/// (what is used beyond what was held is still recorded: count prompts, or estimate from above).
///
/// A guard that is destroyed without `commit` (the call threw, the stream was cut) records what
/// was reported so far (`add_usage`, `add_output_tokens`; the prompt estimate once any output
/// arrived), counts the call and releases the rest. Movable, not copyable; usable from any
/// thread, one thread at a time.
///
/// **Example**
/// ```
/// LlmCallGuard guard(ctx, {.prompt_tokens = 1200, .max_completion_tokens = 800});
/// auto reply = client.chat(prompt, guard.max_output_tokens(), guard.time_left());
/// guard.commit(reply.usage);
/// ```
template <RunBudget Run = SharedBudget, class Coordinator = BudgetCoordinator>
class BasicLlmCallGuard {
public:
  using context_type = BasicLlmCallContext<Run, Coordinator>;
  using clock_type = typename Run::clock_type;
  using duration = typename clock_type::duration;
  using time_point = typename clock_type::time_point;
  using Reservation = typename Coordinator::Reservation;
  using CommitResult = BasicCommitResult<Decimal>;

  static_assert(std::is_same_v<typename Coordinator::amount_type, Decimal>,
                "a guarded call's cost is a Decimal: the coordinator must count in Decimal");

  /// Checks and sets aside; throws `LlmCallRefused` when a limit refuses (nothing is held then),
  /// `UnknownModel` when the prices do not know the model, `InvalidArgument` for a bad request
  /// or context.
  BasicLlmCallGuard(const context_type& ctx, const LlmRequest& request)
      : BasicLlmCallGuard(try_begin(ctx, request)) {
    if (refusal_)
      throw LlmCallRefused(*refusal_);
  }

  /// Like the constructor, but a refusal is returned: check `ok()` and `refusal()`.
  static BasicLlmCallGuard try_begin(const context_type& ctx, const LlmRequest& request);

  BasicLlmCallGuard(BasicLlmCallGuard&& other) noexcept { take(other); }
  BasicLlmCallGuard& operator=(BasicLlmCallGuard&& other) noexcept {
    if (this != &other) {
      abandon();
      take(other);
    }
    return *this;
  }
  BasicLlmCallGuard(const BasicLlmCallGuard&) = delete;
  BasicLlmCallGuard& operator=(const BasicLlmCallGuard&) = delete;
  ~BasicLlmCallGuard() { abandon(); }

  /// True when the call was allowed (even after it has been committed).
  bool ok() const noexcept { return !refusal_; }
  explicit operator bool() const noexcept { return ok(); }
  const std::optional<LlmRefusal>& refusal() const noexcept { return refusal_; }
  /// True from a granted start until the call is committed.
  bool active() const noexcept { return active_; }

  /// The most completion tokens the call may produce: what was asked, cut to what the token
  /// limits and the money allow. Pass it as the request's `max_tokens`.
  std::int64_t max_output_tokens() const noexcept { return allowance_; }
  /// The model the call was checked, reserved and will be priced for (the context's).
  const std::string& model() const noexcept { return model_; }
  /// The prompt size the guard reserved for.
  std::int64_t prompt_estimate() const noexcept { return prompt_estimate_; }
  /// The money set aside for the call (prompt estimate plus `max_output_tokens()`).
  Decimal reserved_cost() const noexcept { return reserved_cost_; }

  /// Time the call may still take: to the run's deadline, and within the model's `second`
  /// limit. `duration::max()` with no run budget. Use it as the client's timeout.
  duration time_left() const;

  /// True once the next chunk of `next_chunk_tokens` output tokens could cross a limit (the
  /// tokens or money set aside, the deadline): cancel the stream then.
  bool should_stop(std::int64_t next_chunk_tokens = 1) const;

  /// Streaming: `n` more output tokens arrived. Their money is charged now (the cost so far,
  /// rounded up once, minus what was already charged); the run budget's tokens are recorded at
  /// the end, held until then. Throws `InvalidArgument` for a negative `n` or a running total
  /// past what a count can hold (nothing changes), `std::logic_error` after `commit`.
  void add_output_tokens(std::int64_t n);

  /// Streaming: usage reported in pieces (a prompt count up front, deltas per chunk). Each field
  /// is added to what was reported so far; see `add_output_tokens`.
  void add_usage(const LlmUsage& delta);

  /// The call's final usage as the API reported it. Each count charged is the larger of the
  /// report and what was streamed, so a stream is never charged less than it delivered. Throws
  /// `InvalidArgument` for an impossible report (the guard stays active and its destructor
  /// records what was streamed), `std::logic_error` after `commit`.
  LlmCallRecord commit(const LlmUsage& usage);

  /// Records what was reported so far (`add_usage`, `add_output_tokens`), as the destructor
  /// does: for a stream cut off by `should_stop`, or a call that failed.
  LlmCallRecord commit_reported() { return finish(reported_usage()); }

  /// Charges everything set aside (the prompt estimate and `max_output_tokens()`): for a call
  /// whose response lost its usage, where the provider did the work but nobody knows how much.
  LlmCallRecord commit_reserved();

  /// What was reported so far, with the prompt estimate standing in for an unreported prompt
  /// once output has arrived.
  LlmUsage reported_usage() const;

private:
  explicit BasicLlmCallGuard(const context_type& ctx);

  enum class Step : std::uint8_t { granted, retry, refused };
  Step try_take(const LlmRequest& request, bool last_try);
  template <class B>
  bool try_hold_on(B& budget, std::int64_t n, std::int64_t min_n);
  void set_allowance(std::int64_t n, std::int64_t min_n);
  // What the run budget holds for the call; the views refer to `model_` and `kinds_`.
  std::array<ConsumptionView, 5> holds() const;
  std::string_view prompt_kind() const noexcept;
  std::string_view completion_kind() const noexcept;
  std::string_view total_kind() const noexcept;
  std::int64_t afford(Decimal money) const;
  LlmCallRecord finish(LlmUsage usage);
  void abandon() noexcept;
  void take(BasicLlmCallGuard& other) noexcept;
  time_point now() const { return run_ ? run_->clock().now() : clock_type{}.now(); }
  LlmRefusal money_refusal(ConsumeStatus status) const;
  LlmRefusal run_refusal(const BasicLimitRefusal<Decimal>& r) const;
  void require_active(const char* what) const;

  Run* run_ = nullptr;
  Coordinator* coord_ = nullptr;
  AgentId agent_{};
  const ModelPrice* price_ = nullptr;
  std::string model_;
  // `<model>:prompt_tokens<model>:completion_tokens<model>:total_tokens`: the three token kinds
  // in one allocation; see `prompt_kind()` and the others.
  std::string kinds_;
  std::string source_;
  Reservation reservation_;
  std::optional<Decimal> seconds_left_; // the model's `second` limit at the start
  time_point start_{};
  std::int64_t prompt_estimate_ = 0;
  std::int64_t allowance_ = 0;
  Decimal reserved_cost_;
  Decimal overspent_; // by chunks that streamed past what was held and the balance could cover
  LlmUsage reported_;
  std::optional<LlmRefusal> refusal_;
  bool active_ = false;
  bool holding_ = false; // the run budget holds `holds()`
};

/// For calls against a `SharedBudget` and a `BudgetCoordinator`.
using LlmCallGuard = BasicLlmCallGuard<>;

/// Makes one guarded call: `fn(guard)` (or `fn()`) runs only if every limit allows it.
///
/// - When `fn` returns an `LlmUsage`, it is committed and the `LlmCallRecord` returned.
/// - Otherwise `fn`'s result is returned, after committing what `fn` reported through the guard
///   (if it did not commit itself).
/// - When `fn` throws, the call still counts, the usage reported so far is committed, the rest
///   released, and the exception propagates unchanged.
///
/// Throws `LlmCallRefused` (no call made) when a limit refuses.
///
/// **Example**
/// ```
/// LlmCallRecord r = guarded_call(ctx, {.prompt_tokens = 900, .max_completion_tokens = 500},
///                                [&](LlmCallGuard& g) { return model.complete(prompt, g); });
/// ```
template <RunBudget Run, class Coordinator, class Fn>
decltype(auto) guarded_call(const BasicLlmCallContext<Run, Coordinator>& ctx,
                            const LlmRequest& request, Fn&& fn) {
  using Guard = BasicLlmCallGuard<Run, Coordinator>;
  Guard guard(ctx, request);
  auto call = [&]() -> decltype(auto) {
    if constexpr (std::is_invocable_v<Fn&, Guard&>)
      return std::invoke(fn, guard);
    else
      return std::invoke(fn);
  };
  using R = decltype(call());
  if constexpr (std::is_same_v<std::remove_cvref_t<R>, LlmUsage>) {
    return guard.commit(call());
  } else if constexpr (std::is_void_v<R>) {
    call();
    if (guard.active())
      guard.commit_reported();
  } else {
    R result = call();
    if (guard.active())
      guard.commit_reported();
    return result;
  }
}

// ---- implementation --------------------------------------------------------------------------

namespace detail {

// The largest token count a Decimal limit can be compared with.
inline constexpr std::int64_t max_llm_tokens = std::numeric_limits<std::int64_t>::max() / 1'000'000;

inline std::int64_t floor_tokens(Decimal d) noexcept {
  const std::int64_t raw = d.raw();
  const std::int64_t whole = raw / 1'000'000;
  return raw % 1'000'000 < 0 ? whole - 1 : whole;
}

inline Decimal tokens_amount(std::int64_t n) {
  return Decimal::from_raw(n * 1'000'000);
}

inline LlmLimit limit_of_unit(std::string_view unit) noexcept {
  if (unit == units::call)
    return LlmLimit::calls;
  if (unit == units::token)
    return LlmLimit::tokens;
  if (unit == units::second)
    return LlmLimit::duration;
  return LlmLimit::cost;
}

inline std::string describe(const LlmRefusal& r) {
  auto value = [](const std::optional<Decimal>& d) {
    return d ? fmt::format("{}", *d) : std::string("?");
  };
  switch (r.what) {
  case LlmLimit::deadline:
    return "the run's deadline has passed";
  case LlmLimit::money:
    if (r.status == ConsumeStatus::insufficient)
      return fmt::format("agent \"{}\" has {} USD left, the call needs {}", r.kind, value(r.limit),
                         value(r.would_be));
    if (r.status == ConsumeStatus::denied_by_monitor)
      return fmt::format("a monitor of agent \"{}\" vetoed setting aside {} USD", r.kind,
                         value(r.would_be));
    return fmt::format("agent \"{}\": {}", r.kind, r.status);
  default:
    return fmt::format("the {} {} limit of {} would reach {}", r.kind, r.unit, value(r.limit),
                       value(r.would_be));
  }
}

} // namespace detail

inline LlmCallRefused::LlmCallRefused(LlmRefusal refusal)
    : BudgetExceeded("safeguards: LLM call refused: " + detail::describe(refusal)),
      refusal_(std::move(refusal)) {}

template <RunBudget Run, class Coordinator>
BasicLlmCallGuard<Run, Coordinator>::BasicLlmCallGuard(const context_type& ctx)
    : run_(ctx.run), coord_(ctx.coordinator), agent_(ctx.agent), model_(ctx.model) {
  if (model_.empty())
    throw InvalidArgument("safeguards: a guarded LLM call needs a model name");
  if (ctx.prices)
    price_ = &ctx.prices->at(model_); // UnknownModel: never a silent zero
  else if (coord_)
    throw InvalidArgument(fmt::format(
        "safeguards: a guarded call of \"{}\" charged to an agent needs a price table", model_));
  source_ = ctx.source.empty() ? model_ : ctx.source;
  if (run_) {
    kinds_.reserve(3 * model_.size() + detail::prompt_suffix.size() +
                   detail::completion_suffix.size() + detail::total_suffix.size());
    for (std::string_view suffix :
         {detail::prompt_suffix, detail::completion_suffix, detail::total_suffix})
      kinds_.append(model_).append(suffix);
  }
  if (coord_) {
    try {
      source_ = coord_->agent_name(agent_); // events name the agent that paid
    } catch (const UnknownAgent&) {
      // try_take refuses the call with `unknown_agent`.
    }
  }
}

template <RunBudget Run, class Coordinator>
auto BasicLlmCallGuard<Run, Coordinator>::try_begin(const context_type& ctx,
                                                    const LlmRequest& request)
    -> BasicLlmCallGuard {
  const auto& r = request;
  if (r.prompt_tokens < 0 || r.min_completion_tokens < 1 ||
      r.max_completion_tokens < r.min_completion_tokens ||
      r.max_completion_tokens > detail::max_llm_tokens - r.prompt_tokens)
    throw InvalidArgument(fmt::format(
        "safeguards: a guarded call needs 0 <= prompt_tokens, 1 <= min_completion_tokens <= "
        "max_completion_tokens and prompt + max_completion <= {}; got prompt {}, min {}, max {}",
        detail::max_llm_tokens, r.prompt_tokens, r.min_completion_tokens, r.max_completion_tokens));
  BasicLlmCallGuard g(ctx);
  g.prompt_estimate_ = r.prompt_tokens;
  // A retry means another call changed a limit between our read and our hold: it made progress,
  // so retrying is lock-free. The bound only guards against a limit that never settles.
  constexpr int max_tries = 64;
  for (int attempt = 1;; ++attempt) {
    Step step = g.try_take(r, attempt >= max_tries);
    if (step == Step::retry)
      continue;
    if (step == Step::granted)
      g.active_ = true;
    return g;
  }
}

template <RunBudget Run, class Coordinator>
std::int64_t BasicLlmCallGuard<Run, Coordinator>::afford(Decimal money) const {
  auto n = max_completion_tokens(*price_, prompt_estimate_, 0, money);
  return n ? *n : -1;
}

template <RunBudget Run, class Coordinator>
std::string_view BasicLlmCallGuard<Run, Coordinator>::prompt_kind() const noexcept {
  return std::string_view(kinds_).substr(0, model_.size() + detail::prompt_suffix.size());
}

template <RunBudget Run, class Coordinator>
std::string_view BasicLlmCallGuard<Run, Coordinator>::completion_kind() const noexcept {
  return std::string_view(kinds_).substr(prompt_kind().size(),
                                         model_.size() + detail::completion_suffix.size());
}

template <RunBudget Run, class Coordinator>
std::string_view BasicLlmCallGuard<Run, Coordinator>::total_kind() const noexcept {
  return std::string_view(kinds_).substr(prompt_kind().size() + completion_kind().size());
}

template <RunBudget Run, class Coordinator>
std::array<ConsumptionView, 5> BasicLlmCallGuard<Run, Coordinator>::holds() const {
  const std::int64_t prompt = prompt_estimate_, n = allowance_;
  // Without prices there is no cost to hold: a zero hold matches a USD limit and changes nothing.
  return {ConsumptionView(Decimal(1), units::call, model_),
          ConsumptionView(detail::tokens_amount(prompt), units::token, prompt_kind()),
          ConsumptionView(detail::tokens_amount(n), units::token, completion_kind()),
          ConsumptionView(detail::tokens_amount(prompt + n), units::token, total_kind()),
          ConsumptionView(reserved_cost_, units::usd, model_)};
}

// The call may produce `n` completion tokens, but never fewer than `min_n`: below the minimum,
// the hold or the reservation refuses and names the limit. What that costs is set aside.
template <RunBudget Run, class Coordinator>
void BasicLlmCallGuard<Run, Coordinator>::set_allowance(std::int64_t n, std::int64_t min_n) {
  allowance_ = std::max(n, min_n);
  reserved_cost_ =
      price_ ? cost(*price_, {.prompt_tokens = prompt_estimate_, .completion_tokens = allowance_})
             : Decimal();
}

// Under the run budget's lock: reads what its limits allow, cuts the call to it and holds that,
// so no other call can take the room between the read and the hold.
template <RunBudget Run, class Coordinator>
template <class B>
bool BasicLlmCallGuard<Run, Coordinator>::try_hold_on(B& b, std::int64_t n, std::int64_t min_n) {
  const std::int64_t prompt = prompt_estimate_;
  seconds_left_ = b.available(units::second, model_);
  if (seconds_left_ && !(Decimal() < *seconds_left_)) {
    // Hold the smallest duration only to have the budget name the limit and its numbers.
    const std::array probe{ConsumptionView(Decimal::epsilon(), units::second, model_)};
    if (auto refused = b.try_hold(probe)) {
      refusal_ = run_refusal(*refused);
      return false;
    }
    b.release_hold(probe);
  }
  if (auto a = b.available(units::token, completion_kind()))
    n = std::min(n, detail::floor_tokens(*a));
  if (auto a = b.available(units::token, total_kind()))
    n = std::min(n, detail::floor_tokens(*a) - prompt);
  if (price_)
    if (auto a = b.available(units::usd, model_))
      n = std::min(n, afford(*a));
  set_allowance(n, min_n);
  if (auto refused = b.try_hold(holds())) {
    refusal_ = run_refusal(*refused);
    return false;
  }
  holding_ = true;
  return true;
}

template <RunBudget Run, class Coordinator>
auto BasicLlmCallGuard<Run, Coordinator>::try_take(const LlmRequest& request, bool last_try)
    -> Step {
  std::int64_t n = request.max_completion_tokens;
  start_ = now(); // one clock read for the deadline and the call's duration
  if (coord_) {
    try {
      n = std::min(n, afford(coord_->get_budget(agent_)));
    } catch (const UnknownAgent&) {
      refusal_ = money_refusal(ConsumeStatus::unknown_agent);
      return Step::refused;
    }
  }
  // True when the money, as read, allows the smallest call: a failed reservation is then a race
  // with another call (which made progress) to retry, not a refusal.
  const bool room = !last_try && n >= request.min_completion_tokens;
  if (run_) {
    if (run_->deadline() <= start_) {
      refusal_ = LlmRefusal{
          .what = LlmLimit::deadline, .unit = std::string(units::second), .kind = "deadline"};
      return Step::refused;
    }
    if (!run_->atomically(
            [&](auto& b) { return try_hold_on(b, n, request.min_completion_tokens); }))
      return Step::refused;
  } else {
    set_allowance(n, request.min_completion_tokens);
  }
  if (coord_) {
    // At least a micro-dollar, so that a free call still has a reservation to settle and the
    // agent's monitors still see it.
    const Decimal hold = std::max(reserved_cost_, Decimal::epsilon());
    reservation_ = coord_->try_reserve(agent_, hold);
    if (!reservation_.ok()) {
      const ConsumeStatus status = reservation_.status();
      if (holding_) {
        run_->release_hold(holds());
        holding_ = false;
      }
      if (status == ConsumeStatus::insufficient && room)
        return Step::retry;
      refusal_ = money_refusal(status);
      return Step::refused;
    }
  }
  return Step::granted;
}

template <RunBudget Run, class Coordinator>
LlmRefusal BasicLlmCallGuard<Run, Coordinator>::money_refusal(ConsumeStatus status) const {
  LlmRefusal r{.what = LlmLimit::money, .unit = std::string(units::usd), .status = status};
  try {
    r.kind = coord_->agent_name(agent_);
    if (status == ConsumeStatus::insufficient)
      r.limit = coord_->get_budget(agent_);
  } catch (const UnknownAgent&) {
    r.kind = fmt::format("agent {}", agent_.value());
  }
  r.would_be = std::max(reserved_cost_, Decimal::epsilon());
  return r;
}

template <RunBudget Run, class Coordinator>
LlmRefusal
BasicLlmCallGuard<Run, Coordinator>::run_refusal(const BasicLimitRefusal<Decimal>& r) const {
  return LlmRefusal{.what = detail::limit_of_unit(r.limit.unit()),
                    .unit = r.limit.unit(),
                    .kind = r.limit.kind(),
                    .limit = r.limit.value(),
                    .would_be = r.would_be};
}

template <RunBudget Run, class Coordinator>
auto BasicLlmCallGuard<Run, Coordinator>::time_left() const -> duration {
  if (!run_)
    return duration::max();
  duration left = run_->time_left();
  if (seconds_left_ && active_) {
    using micros = std::chrono::microseconds;
    const auto budget_us = seconds_left_->raw();
    const auto spent_us = std::chrono::ceil<micros>(now() - start_).count();
    const auto rest_us = budget_us > spent_us ? budget_us - spent_us : 0;
    const auto max_us = std::chrono::duration_cast<micros>(duration::max()).count();
    if (rest_us < max_us)
      left = std::min(left, std::chrono::duration_cast<duration>(micros(rest_us)));
  }
  return left;
}

template <RunBudget Run, class Coordinator>
bool BasicLlmCallGuard<Run, Coordinator>::should_stop(std::int64_t next_chunk_tokens) const {
  if (!active_ || time_left() <= duration::zero())
    return true;
  const LlmUsage u = reported_usage();
  // A prompt larger than estimated eats into the total-token hold and into the money held.
  std::int64_t limit = allowance_ - std::max<std::int64_t>(0, u.prompt_tokens - prompt_estimate_);
  if (price_) {
    auto fits = max_completion_tokens(*price_, u.prompt_tokens, u.cached_prompt_tokens,
                                      coord_ ? std::max(reserved_cost_, Decimal::epsilon())
                                             : reserved_cost_);
    limit = std::min(limit, fits ? *fits : -1);
  }
  return next_chunk_tokens > limit - u.completion_tokens;
}

template <RunBudget Run, class Coordinator>
LlmUsage BasicLlmCallGuard<Run, Coordinator>::reported_usage() const {
  LlmUsage u = reported_;
  if (u.model.empty())
    u.model = model_;
  if (u.prompt_tokens == 0 && u.completion_tokens > 0)
    u.prompt_tokens = prompt_estimate_; // output arrived, so the prompt was read
  return u;
}

template <RunBudget Run, class Coordinator>
void BasicLlmCallGuard<Run, Coordinator>::require_active(const char* what) const {
  if (!active_)
    throw std::logic_error(fmt::format("safeguards: LlmCallGuard::{} on a guard that is not "
                                       "active (refused, moved from or already committed)",
                                       what));
}

template <RunBudget Run, class Coordinator>
void BasicLlmCallGuard<Run, Coordinator>::add_usage(const LlmUsage& delta) {
  require_active("add_usage");
  if (delta.prompt_tokens < 0 || delta.completion_tokens < 0 || delta.cached_prompt_tokens < 0 ||
      delta.reasoning_tokens < 0)
    throw InvalidArgument(
        fmt::format("safeguards: a usage delta for \"{}\" cannot be negative: {}", model_, delta));
  LlmUsage next = reported_;
  auto add = [&](std::int64_t& total, std::int64_t d) {
    if (d > detail::max_llm_tokens - total)
      throw InvalidArgument(
          fmt::format("safeguards: the usage reported for \"{}\" adds up past {} tokens", model_,
                      detail::max_llm_tokens));
    total += d;
  };
  add(next.prompt_tokens, delta.prompt_tokens);
  add(next.completion_tokens, delta.completion_tokens);
  add(next.cached_prompt_tokens, delta.cached_prompt_tokens);
  add(next.reasoning_tokens, delta.reasoning_tokens);
  if (!delta.model.empty())
    next.model = delta.model;
  validate_usage(next); // a delta may bring cached tokens of a prompt reported earlier
  if (coord_ && price_) {
    LlmUsage priced = next;
    if (priced.prompt_tokens == 0 && priced.completion_tokens > 0)
      priced.prompt_tokens = prompt_estimate_;
    priced.model = model_;
    const Decimal so_far = cost(*price_, priced);
    if (reservation_.settled() < so_far) {
      CommitResult r = reservation_.commit_partial(so_far - reservation_.settled());
      overspent_ = overspent_ + r.overspent;
    }
  }
  reported_ = std::move(next);
}

template <RunBudget Run, class Coordinator>
void BasicLlmCallGuard<Run, Coordinator>::add_output_tokens(std::int64_t n) {
  add_usage({.completion_tokens = n});
}

template <RunBudget Run, class Coordinator>
LlmCallRecord BasicLlmCallGuard<Run, Coordinator>::commit(const LlmUsage& usage) {
  require_active("commit");
  validate_usage(usage);
  const LlmUsage so_far = reported_usage();
  LlmUsage u = usage;
  if (u.model.empty())
    u.model = model_;
  u.prompt_tokens = std::max(u.prompt_tokens, so_far.prompt_tokens);
  u.completion_tokens = std::max(u.completion_tokens, so_far.completion_tokens);
  u.cached_prompt_tokens = std::max(u.cached_prompt_tokens, so_far.cached_prompt_tokens);
  u.reasoning_tokens = std::max(u.reasoning_tokens, so_far.reasoning_tokens);
  return finish(std::move(u));
}

template <RunBudget Run, class Coordinator>
LlmCallRecord BasicLlmCallGuard<Run, Coordinator>::commit_reserved() {
  require_active("commit_reserved");
  LlmUsage u = reported_usage();
  u.prompt_tokens = std::max(u.prompt_tokens, prompt_estimate_);
  u.completion_tokens = std::max(u.completion_tokens, allowance_);
  return finish(std::move(u));
}

template <RunBudget Run, class Coordinator>
LlmCallRecord BasicLlmCallGuard<Run, Coordinator>::finish(LlmUsage usage) {
  require_active("commit");
  validate_usage(usage);
  if (usage.prompt_tokens > detail::max_llm_tokens - usage.completion_tokens)
    throw InvalidArgument(fmt::format("safeguards: usage of \"{}\" past {} tokens: {}", model_,
                                      detail::max_llm_tokens, usage));
  LlmCallRecord record;
  record.seconds =
      Decimal::from_raw(std::chrono::ceil<std::chrono::microseconds>(now() - start_).count());
  if (price_)
    record.cost = cost(*price_, usage); // priced as the model asked for and reserved for
  if (run_) {
    const std::array actual{
        ConsumptionView(Decimal(1), units::call, model_),
        ConsumptionView(record.seconds, units::second, model_),
        ConsumptionView(detail::tokens_amount(usage.prompt_tokens), units::token, prompt_kind()),
        ConsumptionView(detail::tokens_amount(usage.completion_tokens), units::token,
                        completion_kind()),
        ConsumptionView(detail::tokens_amount(usage.total_tokens()), units::token, total_kind()),
        ConsumptionView(record.cost, units::usd, model_)};
    // Without prices no cost is recorded: the USD event is left out.
    run_->settle_hold(holds(), std::span(actual).first(price_ ? 6 : 5), source_);
    holding_ = false;
  }
  if (coord_) {
    CommitResult last = reservation_.commit(record.cost);
    record.money = {.status = last.status,
                    .charged = reservation_.charged(),
                    .refunded = last.refunded,
                    .overspent = overspent_ + last.overspent};
  }
  record.usage = std::move(usage);
  active_ = false;
  return record;
}

template <RunBudget Run, class Coordinator>
void BasicLlmCallGuard<Run, Coordinator>::abandon() noexcept {
  if (!active_)
    return;
  try {
    std::ignore = finish(reported_usage());
    return;
  } catch (...) {
  }
  // Nothing could be recorded (out of memory, say): give back what is held, keep what was
  // charged while streaming.
  if (holding_)
    run_->release_hold(holds());
  if (coord_)
    std::ignore = reservation_.commit(reservation_.settled());
  active_ = false;
}

template <RunBudget Run, class Coordinator>
void BasicLlmCallGuard<Run, Coordinator>::take(BasicLlmCallGuard& other) noexcept {
  run_ = other.run_;
  coord_ = other.coord_;
  agent_ = other.agent_;
  price_ = other.price_;
  model_ = std::move(other.model_);
  kinds_ = std::move(other.kinds_);
  source_ = std::move(other.source_);
  reservation_ = std::move(other.reservation_);
  seconds_left_ = other.seconds_left_;
  start_ = other.start_;
  prompt_estimate_ = other.prompt_estimate_;
  allowance_ = other.allowance_;
  reserved_cost_ = other.reserved_cost_;
  overspent_ = other.overspent_;
  reported_ = std::move(other.reported_);
  refusal_ = std::move(other.refusal_);
  active_ = std::exchange(other.active_, false);
  holding_ = std::exchange(other.holding_, false);
}

} // namespace v1
} // namespace safeguards

/// `the gpt-4o:total_tokens token limit of 1000.0 would reach 1200.0`.
template <>
struct fmt::formatter<safeguards::LlmRefusal> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const safeguards::LlmRefusal& r, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::detail::describe(r), ctx);
  }
};

template <>
struct fmt::formatter<safeguards::LlmLimit> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(safeguards::LlmLimit l, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(safeguards::to_string(l), ctx);
  }
};
