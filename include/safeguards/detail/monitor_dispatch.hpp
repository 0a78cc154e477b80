// safeguards: running monitors on a usage event, where a throwing monitor is reported, not
// propagated.
// SPDX-License-Identifier: MIT
#pragma once

#include <exception>
#include <safeguards/monitor.hpp>
#include <safeguards/violation.hpp>
#include <string>

namespace safeguards {
inline namespace v1 {
namespace detail {

// Reports the exception in flight as a `MonitorFailure` violation. Balances never depend on a
// monitor's success; `on_sink_failure()` counts a violation sink that threw in turn. It is taken
// by value, copied only when a monitor throws: by reference, its callers kept it in memory on
// every call (a store in front of the locked instruction that follows an observed change).
template <class Event, class Reporter, class OnSinkFailure>
[[gnu::noinline, gnu::cold]] void report_monitor_failure(const Event& e, const Reporter& r,
                                                         OnSinkFailure on_sink_failure) noexcept {
  std::string what = "unknown exception";
  try {
    throw;
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
  }
  try {
    r.report(ViolationType::MonitorFailure, AlertSeverity::High,
             "a monitor threw; balances are unaffected",
             {{"exception", what}, {"usage", std::string(to_string(e.kind))}});
  } catch (...) {
    on_sink_failure();
  }
}

// The veto of one monitor; one that throws cannot decide and so fails closed.
template <class Entry, class Event, class Reporter, class OnSinkFailure>
bool run_check(const Entry& m, const Event& e, const Reporter& r,
               OnSinkFailure&& on_sink_failure) noexcept {
  try {
    return m.call_check(e, r);
  } catch (...) {
    report_monitor_failure(e, r, on_sink_failure);
    return false;
  }
}

// Tells every active observer of `monitors` about `e`, in registration order.
template <class List, class Event, class Reporter, class OnSinkFailure>
void notify(const List& monitors, const Event& e, const Reporter& r,
            OnSinkFailure&& on_sink_failure) noexcept {
  for (const auto& m : monitors) {
    if (!m->observe || !m->is_active())
      continue;
    try {
      m->call_observe(e, r);
    } catch (...) {
      report_monitor_failure(e, r, on_sink_failure);
    }
  }
}

} // namespace detail
} // namespace v1
} // namespace safeguards
