// safeguards: the exceptions the library throws. The hot path never throws.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace safeguards {
inline namespace v1 {

/// What every exception safeguards throws has in common: `catch (const safeguards::Error& e)`
/// catches them all, from a malformed `Decimal` to an unknown agent, and `e.what()` names the
/// offending id or value.
///
/// `Error` is a mixin, not a `std::exception`: each concrete error also derives from exactly one
/// standard exception, the one a C++ programmer would expect (`InvalidArgument` is a
/// `std::invalid_argument`, `AmountOverflow` a `std::overflow_error`, ...), so existing
/// `catch (const std::invalid_argument&)` code keeps working and `catch (const std::exception&)`
/// is never ambiguous.
///
/// **Example**
/// ```
/// try {
///   coord.update_budget(agent, Decimal(user_text), "from the console");
/// } catch (const safeguards::Error& e) {
///   fmt::print("refused: {}\n", e.what());
/// }
/// ```
class Error {
public:
  virtual ~Error() = default;
  virtual const char* what() const noexcept = 0;

protected:
  Error() = default;
  Error(const Error&) = default;
  Error& operator=(const Error&) = default;
};

namespace detail {
// Joins a standard exception and `Error`; its `what` overrides both bases' at once.
template <class Std>
class StdError : public Std, public Error {
public:
  explicit StdError(const std::string& message) : Std(message) {}
  explicit StdError(const char* message) : Std(message) {}
  const char* what() const noexcept override { return Std::what(); }
};
} // namespace detail

/// A failure outside the caller's control: a file that cannot be opened or written.
class IoError : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

/// A ledger kept outside this process (Redis) could not be reached, refused the credentials or
/// answered with an error, where the operation may throw (opening an account). Balance
/// operations, which never throw, report `LedgerStatus::unavailable` instead.
class LedgerUnavailable : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

/// A value that can never be right: a negative budget, a negative duration, a zero amount, a
/// percent outside 0..100.
class InvalidArgument : public detail::StdError<std::invalid_argument> {
public:
  using StdError::StdError;
};

/// Text that is not an amount: `Decimal("12,5")`, an empty string, too many fractional digits.
class MalformedAmount : public InvalidArgument {
public:
  using InvalidArgument::InvalidArgument;
};

/// A priority outside 1..10.
class InvalidPriority : public InvalidArgument {
public:
  using InvalidArgument::InvalidArgument;
};

/// Arithmetic whose result the amount type cannot hold. Nothing ever wraps.
class AmountOverflow : public detail::StdError<std::overflow_error> {
public:
  using StdError::StdError;
};

/// Division (or a share) by zero.
class DivisionByZero : public detail::StdError<std::domain_error> {
public:
  using StdError::StdError;
};

/// An id that was never issued, or whose agent or pool was removed.
class UnknownId : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

class UnknownAgent : public UnknownId {
public:
  using UnknownId::UnknownId;
};

class UnknownPool : public UnknownId {
public:
  using UnknownId::UnknownId;
};

/// A name already taken by another agent or pool.
class DuplicateName : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

/// A pool that cannot cover what was asked of it; nothing was changed.
class PoolExhausted : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

/// A throwing consume that the balance could not cover, or that a monitor vetoed.
class BudgetExceeded : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

/// A model the price table has no price for (and no fallback price): the call is not made,
/// because charging it nothing would let it spend without limit.
class UnknownModel : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

/// Text that could not be read as what it claims to be (a price table, say). `line()` is the
/// 1-based line of the first problem, 0 when the input has no lines.
class ParseError : public InvalidArgument {
public:
  ParseError(const std::string& message, std::size_t line)
      : InvalidArgument(message), line_(line) {}
  std::size_t line() const noexcept { return line_; }

private:
  std::size_t line_;
};

/// Configuration from the environment that cannot be used as it is.
class ConfigError : public detail::StdError<std::runtime_error> {
public:
  using StdError::StdError;
};

} // namespace v1
} // namespace safeguards
