// safeguards: RAII registration handles for monitors and sinks.
// SPDX-License-Identifier: MIT
#pragma once

#include <functional>
#include <memory>
#include <utility>

namespace safeguards {
inline namespace v1 {

/// Keeps a monitor or sink registered while it lives; destroying it (or `reset()`) unregisters.
/// Move-only. A handle that outlives its coordinator does nothing when destroyed. `detach()`
/// leaves the registration in place for the coordinator's lifetime.
class Subscription {
public:
  Subscription() noexcept = default;
  Subscription(std::weak_ptr<void> owner_alive, std::function<void()> cancel) noexcept
      : alive_(std::move(owner_alive)), cancel_(std::move(cancel)) {}
  Subscription(Subscription&& other) noexcept
      : alive_(std::move(other.alive_)), cancel_(std::exchange(other.cancel_, nullptr)) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      reset();
      alive_ = std::move(other.alive_);
      cancel_ = std::exchange(other.cancel_, nullptr);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { reset(); }

  /// True while this handle still controls a registration.
  bool active() const noexcept { return cancel_ != nullptr && !alive_.expired(); }

  /// Unregisters now.
  void reset() noexcept {
    auto cancel = std::exchange(cancel_, nullptr);
    if (auto owner = alive_.lock(); owner && cancel) {
      try {
        cancel();
      } catch (...) { // only allocation can fail here; the registration then stays, harmlessly
      }
    }
  }

  /// Gives up control: the registration lasts as long as the coordinator.
  void detach() noexcept { cancel_ = nullptr; }

private:
  std::weak_ptr<void> alive_;
  std::function<void()> cancel_;
};

/// Returned by `add_monitor`.
using MonitorHandle = Subscription;
/// Returned by `add_violation_sink` and `add_audit_sink`.
using SinkHandle = Subscription;

} // namespace v1
} // namespace safeguards
