// safeguards: the core in one include. Opt-in parts have their own headers and are not
// included here: big_decimal.hpp (BigDecimal; compiles Boost's cpp_dec_float), audit_file.hpp
// (the JSON-lines audit file; needs POSIX), sqlite_snapshot.hpp (needs SQLite) and the Redis
// accounts (detail/redis_accounts.hpp; needs hiredis).
// SPDX-License-Identifier: MIT
#pragma once

#include <safeguards/allocation.hpp>
#include <safeguards/amount.hpp>
#include <safeguards/audit.hpp>
#include <safeguards/budget.hpp>
#include <safeguards/clock.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/coordinator.hpp>
#include <safeguards/decimal.hpp>
#include <safeguards/degradation.hpp>
#include <safeguards/errors.hpp>
#include <safeguards/ids.hpp>
#include <safeguards/ledger.hpp>
#include <safeguards/monitor.hpp>
#include <safeguards/period.hpp>
#include <safeguards/periodic_review.hpp>
#include <safeguards/prometheus.hpp>
#include <safeguards/review.hpp>
#include <safeguards/service_levels.hpp>
#include <safeguards/subscription.hpp>
#include <safeguards/violation.hpp>
