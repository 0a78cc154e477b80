// Linearizability of the hot path: threads consume, reserve, commit, release and reset usage on
// two agents and record every operation with its result and a real-time interval; a checker then
// shows that every result could have happened at one instant inside its interval, and that the
// final books are the exact sum of what the results say happened.
//
// The argument. Every operation acts on one agent's remaining balance at one instant (its
// linearization point, the ledger's compare-and-swap): a successful consume or reserve of x needs
// remaining >= x there and takes x; a refused one (insufficient) saw remaining < x; a commit
// gives back `refunded` or takes `extra` (the overage charged beyond what was held, all that was
// left when part of it stayed uncovered); a release gives back what was held, a usage reset what
// was used (`reset_usage` returns it). Each thread takes a ticket from one shared counter before
// and after an operation, so the point lies between the two tickets, and an operation whose end
// ticket is below another's start ticket is before it in every linearization. So at a point
// inside [start, end] of operation `op` the balance is
//
//   at least  budget - (takes of operations that started before op ended)
//                    + (gives of operations that ended before op started)
//   at most   budget - (takes of operations that ended before op started)
//                    + (gives of operations that started before op ended)
//
// A refusal of x needs the lower bound below x, a success of x needs the upper bound at or above
// x, and a commit that left part of its overage uncovered took exactly what was left, so its
// `extra` lies between the bounds. Each bound is what some ordering consistent with real time
// would give, so a result outside them cannot be explained by any sequential order: it would be
// a lost update, a stale read or an overspend. (These are per-operation conditions; together
// with the exact books below they leave no room for a lost or invented unit of money.) The books
// must equal, exactly: remaining = budget + gives - takes, used = consumed + charged - forgiven,
// reserved = 0 once everything is settled, overspent = what commits reported uncovered, and the
// charge count = successful consumes plus commits that charged something.
//
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <safeguards/coordinator.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace safeguards;

namespace {

std::uint64_t ops_per_thread() {
  const char* value = std::getenv("SAFEGUARDS_STRESS_OPS");
  return value && *value ? std::stoull(value) / 10 : 20'000;
}

enum class Kind : std::uint8_t { consume, reserve, commit, release, reset };

struct Record {
  Kind kind{};
  std::size_t agent = 0;
  std::int64_t amount = 0; // asked (consume, reserve, commit's actual) or released
  ConsumeStatus status{};
  std::int64_t take = 0; // what the operation took from remaining
  std::int64_t give = 0; // what it gave back to remaining
  bool took_all = false; // a commit that left part of its overage uncovered
  std::int64_t charged = 0, overspent = 0;
  std::uint64_t start = 0, end = 0;
};

// Sums of `take` or `give` over records sorted by a ticket, for "all before ticket t" queries.
class PrefixSums {
public:
  explicit PrefixSums(std::vector<std::pair<std::uint64_t, std::int64_t>> by_ticket)
      : points_(std::move(by_ticket)) {
    std::sort(points_.begin(), points_.end());
    sums_.reserve(points_.size() + 1);
    sums_.push_back(0);
    for (const auto& p : points_)
      sums_.push_back(sums_.back() + p.second);
  }
  // Sum over the records whose ticket is below `t`.
  std::int64_t below(std::uint64_t t) const {
    const auto it = std::lower_bound(
        points_.begin(), points_.end(),
        std::pair<std::uint64_t, std::int64_t>{t, std::numeric_limits<std::int64_t>::min()});
    return sums_[static_cast<std::size_t>(it - points_.begin())];
  }

private:
  std::vector<std::pair<std::uint64_t, std::int64_t>> points_;
  std::vector<std::int64_t> sums_;
};

} // namespace

TEST_CASE("every result of concurrent consumes, reserves, commits and releases fits a sequential "
          "order, and the books are its exact sum",
          "[concurrency][linearizability]") {
  constexpr int threads = 3;
  constexpr std::size_t agents = 2;
  constexpr std::int64_t budget = 4'000; // raw units: small, so refusals are frequent
  const std::uint64_t n = ops_per_thread();

  BudgetCoordinator coord;
  std::vector<AgentId> ids;
  for (std::size_t i = 0; i < agents; ++i)
    ids.push_back(coord.create_agent(
        {.name = "agent-" + std::to_string(i), .initial_budget = Decimal::from_raw(budget)}));

  std::atomic<std::uint64_t> ticket{0};
  std::vector<std::vector<Record>> logs(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) * 7919 + 20261203);
      auto& log = logs[static_cast<std::size_t>(t)];
      log.reserve(n + 4);
      struct Open {
        BudgetCoordinator::Reservation r;
        std::size_t agent;
        std::int64_t held;
      };
      std::vector<Open> open;
      auto stamp = [&] { return ticket.fetch_add(1, std::memory_order_acq_rel); };
      auto settle = [&](std::size_t k, bool commit) {
        Open o = std::move(open[k]);
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(k));
        Record rec{commit ? Kind::commit : Kind::release, o.agent};
        if (commit) {
          const std::int64_t actual = static_cast<std::int64_t>(rng() % 41); // 0..40 vs held 1..20
          rec.amount = actual;
          rec.start = stamp();
          const auto c = o.r.commit(Decimal::from_raw(actual));
          rec.end = stamp();
          rec.status = c.status;
          rec.charged = c.charged.raw();
          rec.overspent = c.overspent.raw();
          const std::int64_t from_hold = std::min(actual, o.held);
          rec.give = c.refunded.raw();
          rec.take = rec.charged - from_hold;
          rec.took_all = rec.overspent > 0;
        } else {
          rec.amount = o.held;
          rec.start = stamp();
          o.r.release();
          rec.end = stamp();
          rec.status = ConsumeStatus::ok;
          rec.give = o.held;
        }
        log.push_back(rec);
      };
      for (std::uint64_t i = 0; i < n; ++i) {
        if (rng() % 256 == 0) { // gives the used budget back, so the balance keeps moving
          Record rec{Kind::reset, rng() % agents};
          rec.start = stamp();
          rec.give = coord.reset_usage(ids[rec.agent], "linearizability").raw();
          rec.end = stamp();
          rec.status = ConsumeStatus::ok;
          log.push_back(rec);
          continue;
        }
        const auto choice = rng() % 8;
        if (choice >= 5 && !open.empty()) {
          settle(rng() % open.size(), choice != 7);
          continue;
        }
        const std::size_t agent = rng() % agents;
        const std::int64_t x = 1 + static_cast<std::int64_t>(rng() % 20);
        Record rec{choice < 3 || open.size() >= 3 ? Kind::consume : Kind::reserve, agent, x};
        if (rec.kind == Kind::consume) {
          rec.start = stamp();
          rec.status = coord.try_consume(ids[agent], Decimal::from_raw(x)).status();
          rec.end = stamp();
        } else {
          rec.start = stamp();
          auto r = coord.try_reserve(ids[agent], Decimal::from_raw(x));
          rec.end = stamp();
          rec.status = r.status();
          if (r.ok())
            open.push_back({std::move(r), agent, x});
        }
        if (rec.status == ConsumeStatus::ok)
          rec.take = x;
        log.push_back(rec);
      }
      while (!open.empty())
        settle(0, true);
    });
  for (auto& w : workers)
    w.join();

  for (std::size_t agent = 0; agent < agents; ++agent) {
    std::vector<const Record*> recs;
    for (const auto& log : logs)
      for (const Record& r : log)
        if (r.agent == agent)
          recs.push_back(&r);
    std::vector<std::pair<std::uint64_t, std::int64_t>> takes_by_start, takes_by_end,
        gives_by_start, gives_by_end;
    std::int64_t takes = 0, gives = 0, consumed = 0, charged = 0, overspent = 0, forgiven = 0;
    std::uint64_t charges = 0, refusals = 0, successes = 0;
    for (const Record* r : recs) {
      takes_by_start.emplace_back(r->start, r->take);
      takes_by_end.emplace_back(r->end, r->take);
      gives_by_start.emplace_back(r->start, r->give);
      gives_by_end.emplace_back(r->end, r->give);
      takes += r->take;
      gives += r->give;
      if (r->kind == Kind::consume && r->status == ConsumeStatus::ok) {
        consumed += r->amount;
        ++charges;
      }
      if (r->kind == Kind::reset)
        forgiven += r->give;
      if (r->kind == Kind::commit) {
        charged += r->charged;
        overspent += r->overspent;
        if (r->charged > 0)
          ++charges;
      }
    }
    const PrefixSums took_started(takes_by_start), took_ended(takes_by_end),
        gave_started(gives_by_start), gave_ended(gives_by_end);

    std::size_t unexplained = 0;
    std::string first;
    for (const Record* r : recs) {
      // The balance at the operation's point, over every order consistent with real time. The
      // operation's own take or give is in neither sum: it starts before it ends, and it is
      // excluded from the "ended before it started" sums by definition; the "started before it
      // ended" sums include it, so it is taken out again.
      const std::int64_t lowest =
          budget - (took_started.below(r->end) - r->take) + gave_ended.below(r->start);
      const std::int64_t highest =
          budget - took_ended.below(r->start) + (gave_started.below(r->end) - r->give);
      bool ok = true;
      if (r->kind == Kind::consume || r->kind == Kind::reserve) {
        if (r->status == ConsumeStatus::ok) {
          ok = highest >= r->amount;
          ++successes;
        } else if (r->status == ConsumeStatus::insufficient) {
          ok = lowest < r->amount;
          ++refusals;
        } else
          ok = false;
      } else if (r->kind == Kind::commit) {
        // Took `take` beyond what was held: at least that much was left, exactly that much when
        // part of the overage stayed uncovered.
        ok = r->status == ConsumeStatus::ok && highest >= r->take &&
             (!r->took_all || lowest <= r->take);
      }
      if (!ok && unexplained++ == 0)
        first = "kind " + std::to_string(static_cast<int>(r->kind)) + " amount " +
                std::to_string(r->amount) + " status " + std::string(to_string(r->status)) +
                " possible balance [" + std::to_string(lowest) + ", " + std::to_string(highest) +
                "]";
    }
    INFO("agent " << agent << ": " << recs.size() << " operations, " << successes << " granted, "
                  << refusals << " refusals; first unexplained: " << first);
    CHECK(unexplained == 0);
    // The budget is tight enough to test refusals, and resets keep it from running dry.
    CHECK(refusals > recs.size() / 20);
    CHECK(successes > recs.size() / 4);

    const auto m = coord.agent_metrics(ids[agent]);
    CHECK(m.remaining_budget.raw() == budget + gives - takes);
    CHECK(m.used_budget.raw() == consumed + charged - forgiven);
    CHECK(m.reserved_budget.raw() == 0);
    CHECK(m.overspent_budget.raw() == overspent);
    CHECK(m.consumption_count == charges);
    CHECK(m.initial_budget.raw() == budget);
  }
  CHECK(coord.check_invariants().empty());
}
