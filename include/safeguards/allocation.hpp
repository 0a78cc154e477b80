// safeguards: allocation policies.
// SPDX-License-Identifier: MIT
#pragma once

namespace safeguards {
inline namespace v1 {

/// The guide's fixed allocation: every agent keeps the budget it was created with or given by
/// `update_budget`; nothing is redistributed behind your back. Use it when budgets are set by
/// hand or by your own control plane. The coordinator's default policy.
struct FixedAllocation {};

} // namespace v1
} // namespace safeguards
