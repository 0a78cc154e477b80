// safeguards: the exceptions management calls throw. The hot path never throws.
// SPDX-License-Identifier: MIT
#pragma once

#include <stdexcept>

namespace safeguards {
inline namespace v1 {

/// Base of every error safeguards throws from its budget layer; the message names the offending
/// id or value. (Decimal, which knows nothing of budgets, throws the standard exceptions.)
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A value that can never be right: a negative budget, a negative duration, a zero amount.
class InvalidArgument : public Error {
public:
  using Error::Error;
};

/// A priority outside 1..10.
class InvalidPriority : public InvalidArgument {
public:
  using InvalidArgument::InvalidArgument;
};

/// An id that was never issued, or whose agent or pool was removed.
class UnknownId : public Error {
public:
  using Error::Error;
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
class DuplicateName : public Error {
public:
  using Error::Error;
};

/// A pool that cannot cover what was asked of it; nothing was changed.
class PoolExhausted : public Error {
public:
  using Error::Error;
};

/// A throwing consume that the balance could not cover, or that a monitor vetoed.
class BudgetExceeded : public Error {
public:
  using Error::Error;
};

/// Configuration from the environment that cannot be used as it is.
class ConfigError : public Error {
public:
  using Error::Error;
};

} // namespace v1
} // namespace safeguards
