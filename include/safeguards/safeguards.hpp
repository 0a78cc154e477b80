// safeguards: everything, in one include.
// SPDX-License-Identifier: MIT
#pragma once

#include <safeguards/amount.hpp>
#include <safeguards/clock.hpp>
#include <safeguards/consumption.hpp>
#include <safeguards/decimal.hpp>
#include <safeguards/errors.hpp>
