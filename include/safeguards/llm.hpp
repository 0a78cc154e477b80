// safeguards: the LLM-call parts in one include: usage, prices (code, CSV, built-in table) and
// the call guard. The LiteLLM JSON loader (price_json.hpp) needs nlohmann-json and is not
// included here.
// SPDX-License-Identifier: MIT
#pragma once

#include <safeguards/builtin_prices.hpp>
#include <safeguards/llm_guard.hpp>
#include <safeguards/llm_usage.hpp>
#include <safeguards/price_csv.hpp>
#include <safeguards/price_table.hpp>
#include <safeguards/run_budget.hpp>
