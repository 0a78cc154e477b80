// safeguards: a coordinator's books in an SQLite file, written whole or not at all, and read back
// to resume after a restart. Needs SQLite 3 (Debian: libsqlite3-dev; link with -lsqlite3).
// SPDX-License-Identifier: MIT
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <safeguards/amount.hpp>
#include <safeguards/coordinator_state.hpp>
#include <safeguards/errors.hpp>
#include <sqlite3.h>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace safeguards {
inline namespace v1 {
namespace detail {

// An open database, closed when destroyed, and the few statements the snapshot needs.
class SqliteFile {
public:
  SqliteFile(const std::filesystem::path& path, int flags) : path_(path.string()) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path_.c_str(), &db, flags, nullptr);
    db_.reset(db);
    if (rc != SQLITE_OK)
      fail("cannot open");
    sqlite3_busy_timeout(db_.get(), 10'000); // another process writing: wait for it
  }

  void exec(const char* sql) {
    if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      fail("cannot write");
  }

  class Statement {
  public:
    Statement(SqliteFile& file, const char* sql) : file_(file) {
      sqlite3_stmt* s = nullptr;
      if (sqlite3_prepare_v2(file.db_.get(), sql, -1, &s, nullptr) != SQLITE_OK)
        file.fail("not a safeguards snapshot, or damaged");
      stmt_.reset(s);
    }
    Statement& bind(int i, std::int64_t v) {
      check(sqlite3_bind_int64(stmt_.get(), i, v));
      return *this;
    }
    Statement& bind(int i, std::string_view v) {
      check(sqlite3_bind_text(stmt_.get(), i, v.data(), static_cast<int>(v.size()),
                              SQLITE_TRANSIENT));
      return *this;
    }
    // Runs an insert, then makes the statement ready for the next row.
    void run() {
      if (sqlite3_step(stmt_.get()) != SQLITE_DONE)
        file_.fail("cannot write");
      sqlite3_reset(stmt_.get());
      sqlite3_clear_bindings(stmt_.get());
    }
    // Steps a query: true while there is a row.
    bool next() {
      const int rc = sqlite3_step(stmt_.get());
      if (rc == SQLITE_ROW)
        return true;
      if (rc != SQLITE_DONE)
        file_.fail("cannot read");
      return false;
    }
    std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_.get(), column); }
    std::string text(int column) const {
      const auto* p = sqlite3_column_text(stmt_.get(), column);
      return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
    }

  private:
    void check(int rc) {
      if (rc != SQLITE_OK)
        file_.fail("cannot write");
    }
    struct Finalize {
      void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
    };
    SqliteFile& file_;
    std::unique_ptr<sqlite3_stmt, Finalize> stmt_;
  };

  // Throws `IoError` naming the file, `what` went wrong and SQLite's reason.
  [[noreturn]] void fail(const char* what) const {
    refuse(what + std::string(" (") + (db_ ? sqlite3_errmsg(db_.get()) : "out of memory") + ")");
  }
  [[noreturn]] void refuse(const std::string& what) const {
    throw IoError("safeguards: snapshot \"" + path_ + "\": " + what);
  }

private:
  struct Close {
    void operator()(sqlite3* db) const noexcept { sqlite3_close(db); }
  };
  std::string path_;
  std::unique_ptr<sqlite3, Close> db_;
};

inline constexpr const char* snapshot_schema = R"sql(
CREATE TABLE IF NOT EXISTS safeguards_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS safeguards_pools(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, priority INTEGER NOT NULL,
  implicit INTEGER NOT NULL, initial TEXT NOT NULL, unallocated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS safeguards_agents(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, pool INTEGER NOT NULL, priority INTEGER NOT NULL,
  removed INTEGER NOT NULL, allocated TEXT NOT NULL, remaining TEXT NOT NULL, used TEXT NOT NULL,
  reserved TEXT NOT NULL, overspent TEXT NOT NULL, charges INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS safeguards_metadata(
  owner TEXT NOT NULL, id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY(owner, id, key));
)sql";

inline constexpr std::string_view snapshot_format = "safeguards snapshot 1";

} // namespace detail

/// Writes `state` to the SQLite database at `path` (made if missing), replacing the snapshot it
/// held, in one transaction with `synchronous=FULL`: when `save_snapshot` returns, the snapshot
/// is on disk; a process killed, or a disk that fills up, part-way through leaves the previous
/// snapshot whole (SQLite's journal undoes the partial write when the file is next opened), and
/// a full disk throws. What a crash can lose is what changed since the last snapshot that
/// returned: take them as often as that loss is worth (docs/distributed.md). Amounts are
/// stored as text (`amount_to_string`), exactly. Throws `IoError` with SQLite's message.
///
/// **Example**
/// ```
/// save_snapshot(coord, "budgets.db"); // e.g. every few seconds, and at shutdown
/// ```
template <BudgetAmount Amount>
void save_snapshot(const BasicCoordinatorState<Amount>& state, const std::filesystem::path& path) {
  detail::SqliteFile file(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  file.exec("PRAGMA synchronous=FULL");
  file.exec("BEGIN IMMEDIATE");
  try {
    file.exec(detail::snapshot_schema);
    file.exec("DELETE FROM safeguards_meta; DELETE FROM safeguards_pools; "
              "DELETE FROM safeguards_agents; DELETE FROM safeguards_metadata;");
    using Statement = detail::SqliteFile::Statement;
    Statement meta(file, "INSERT INTO safeguards_meta VALUES (?, ?)");
    meta.bind(1, "format").bind(2, detail::snapshot_format).run();
    meta.bind(1, "sequence").bind(2, std::to_string(state.sequence)).run();
    Statement pools(file, "INSERT INTO safeguards_pools VALUES (?, ?, ?, ?, ?, ?)");
    Statement agents(file,
                     "INSERT INTO safeguards_agents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    Statement metadata(file, "INSERT INTO safeguards_metadata VALUES (?, ?, ?, ?)");
    const auto id = [](auto v) { return static_cast<std::int64_t>(v.value()); };
    for (const auto& p : state.pools) {
      pools.bind(1, id(p.id)).bind(2, p.name).bind(3, p.priority).bind(4, p.implicit ? 1 : 0);
      pools.bind(5, amount_to_string(p.initial)).bind(6, amount_to_string(p.unallocated)).run();
      for (const auto& [k, v] : p.metadata)
        metadata.bind(1, "pool").bind(2, id(p.id)).bind(3, k).bind(4, v).run();
    }
    for (const auto& a : state.agents) {
      agents.bind(1, id(a.id)).bind(2, a.name).bind(3, id(a.pool)).bind(4, a.priority);
      agents.bind(5, a.removed ? 1 : 0).bind(6, amount_to_string(a.allocated));
      agents.bind(7, amount_to_string(a.remaining)).bind(8, amount_to_string(a.used));
      agents.bind(9, amount_to_string(a.reserved)).bind(10, amount_to_string(a.overspent));
      agents.bind(11, static_cast<std::int64_t>(a.charges)).run();
      for (const auto& [k, v] : a.metadata)
        metadata.bind(1, "agent").bind(2, id(a.id)).bind(3, k).bind(4, v).run();
    }
    file.exec("COMMIT");
  } catch (...) {
    try {
      file.exec("ROLLBACK");
    } catch (...) { // already rolled back (SQLite does on some errors, a full disk among them)
    }
    throw;
  }
}

/// Writes the books of `coord` (its `snapshot()`); see above.
template <class Coordinator>
requires requires(const Coordinator& c) {
  c.snapshot();
}
void save_snapshot(const Coordinator& coord, const std::filesystem::path& path) {
  save_snapshot(coord.snapshot(), path);
}

/// Reads the snapshot at `path`, for `BasicBudgetCoordinator::restore`. Throws `IoError` when the
/// file is missing, unreadable or not a snapshot, and `MalformedAmount` for an amount that does
/// not read as `Amount`; `restore` then checks the books' invariants.
///
/// **Example**
/// ```
/// BudgetCoordinator coord;
/// if (std::filesystem::exists("budgets.db"))
///   coord.restore(load_snapshot("budgets.db"));
/// ```
template <BudgetAmount Amount = Decimal>
BasicCoordinatorState<Amount> load_snapshot(const std::filesystem::path& path) {
  // Read-write, though it only reads: after a writer was killed, SQLite must roll its journal
  // back before the file can be read, and a read-only connection cannot ("attempt to write a
  // readonly database"). Never created: a missing file is an error.
  detail::SqliteFile file(path, SQLITE_OPEN_READWRITE);
  using Statement = detail::SqliteFile::Statement;
  using traits = amount_traits<Amount>;
  file.exec("BEGIN"); // one read transaction: a writer's commit lands before or after it whole
  BasicCoordinatorState<Amount> state;
  bool formatted = false;
  Statement meta(file, "SELECT key, value FROM safeguards_meta");
  while (meta.next()) {
    const std::string key = meta.text(0);
    if (key == "format")
      formatted = meta.text(1) == detail::snapshot_format;
    else if (key == "sequence") {
      const std::string text = meta.text(1);
      const auto [end, ec] =
          std::from_chars(text.data(), text.data() + text.size(), state.sequence);
      if (ec != std::errc() || end != text.data() + text.size())
        file.refuse("damaged sequence number");
    }
  }
  if (!formatted)
    file.refuse("not a safeguards snapshot (or one of a newer format)");
  Statement pools(file, "SELECT id, name, priority, implicit, initial, unallocated "
                        "FROM safeguards_pools ORDER BY id");
  while (pools.next())
    state.pools.push_back({PoolId(static_cast<std::uint64_t>(pools.integer(0))),
                           pools.text(1),
                           static_cast<int>(pools.integer(2)),
                           pools.integer(3) != 0,
                           traits::parse(pools.text(4)),
                           traits::parse(pools.text(5)),
                           {}});
  Statement agents(file, "SELECT id, name, pool, priority, removed, allocated, remaining, used, "
                         "reserved, overspent, charges FROM safeguards_agents ORDER BY id");
  while (agents.next())
    state.agents.push_back({AgentId(static_cast<std::uint64_t>(agents.integer(0))),
                            agents.text(1),
                            PoolId(static_cast<std::uint64_t>(agents.integer(2))),
                            static_cast<int>(agents.integer(3)),
                            agents.integer(4) != 0,
                            traits::parse(agents.text(5)),
                            traits::parse(agents.text(6)),
                            traits::parse(agents.text(7)),
                            traits::parse(agents.text(8)),
                            traits::parse(agents.text(9)),
                            static_cast<std::uint64_t>(agents.integer(10)),
                            {}});
  Statement metadata(file, "SELECT owner, id, key, value FROM safeguards_metadata");
  while (metadata.next()) {
    const auto owner = static_cast<std::uint64_t>(metadata.integer(1));
    if (metadata.text(0) == "pool") {
      for (auto& p : state.pools)
        if (p.id.value() == owner)
          p.metadata.emplace(metadata.text(2), metadata.text(3));
    } else if (owner >= 1 && owner <= state.agents.size() &&
               state.agents[owner - 1].id.value() == owner) { // else `restore` refuses the ids
      state.agents[owner - 1].metadata.emplace(metadata.text(2), metadata.text(3));
    }
  }
  file.exec("COMMIT");
  return state;
}

} // namespace v1
} // namespace safeguards
