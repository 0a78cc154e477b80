// safeguards: where a Redis-backed ledger finds its server and how it names its keys.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <safeguards/decimal.hpp>
#include <string>
#include <variant>

namespace safeguards {
inline namespace v1 {

/// When Redis cannot be reached, refuse every consume and reserve (`ledger_unavailable`):
/// nothing is spent that the server has not approved. The default, and the choice when a budget
/// is a hard limit.
struct FailClosed {};

/// When Redis cannot be reached, let each process spend up to `amount` on its own (per outage),
/// charged to the accounts when the server is back. For runtimes where an outage must not stop
/// the agents, and a bounded overshoot is acceptable: at most processes × `amount` beyond the
/// budgets (what the accounts cannot pay when it is charged is counted in
/// `RedisLedger::overshoot()`). `amount` is in the ledger's amount units.
struct FailOpenWithAllowance {
  Decimal amount;
};

using WhenUnreachable = std::variant<FailClosed, FailOpenWithAllowance>;

/// How a `RedisLedger` reaches Redis. Several deployments can share one server: each uses its
/// own `key_prefix`, and an ACL user limited to `key_prefix:*` keeps one from touching another's
/// budgets.
///
/// **Example**
/// ```
/// RedisOptions options{.host = "10.0.0.5", .user = "billing", .password = secret,
///                      .key_prefix = "billing-prod"};
/// ```
struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user{};                      ///< ACL user; empty: the default user
  std::string password{};                  ///< empty: no AUTH
  std::string key_prefix = "safeguards";   ///< every key is `key_prefix:...`
  std::chrono::milliseconds timeout{1000}; ///< to connect, and for each command
  /// How long reservations outlive their process: a ledger renews its lease while it lives
  /// (every third of it, from a background thread); once a process dies, any client's sweep
  /// gives its reservations back after this long. Longer than any pause of a live process
  /// (a partition, a stop-the-world), or its reservations are given back under it.
  std::chrono::milliseconds lease{30'000};
  /// Run the lease renewal, the sweep and the resending of requests in doubt from a thread of
  /// the ledger's own. Off: the application calls `RedisLedger::maintain()` itself, more often
  /// than a third of the lease.
  bool background = true;
  /// What consumes do while the server cannot be reached: `FailClosed{}` or
  /// `FailOpenWithAllowance{amount}`.
  WhenUnreachable when_unreachable = FailClosed{};
};

} // namespace v1
} // namespace safeguards
