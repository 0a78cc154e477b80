// The Redis accounts under `RedisLedger`, against a real redis-server started for each test
// (tests/support/redis_server.hpp): every operation's numbers, exact spending from several
// threads, a retried request applied once, passwords and ACL users confined to their prefix, and
// what happens while the server is down and after it restarts. No mocks of Redis.
// SPDX-License-Identifier: MIT
#include "support/redis_server.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <safeguards/detail/redis_accounts.hpp>
#include <thread>
#include <vector>

using namespace safeguards;
using detail::RawBalance;
using detail::RedisAccounts;
using test::RedisServer;

namespace {

std::optional<std::uint64_t> id_of(std::optional<detail::OpenedAccount> opened) {
  if (!opened)
    return std::nullopt;
  return opened->id;
}

RawBalance balance_of(RedisAccounts& accounts, std::uint64_t id) {
  auto b = accounts.balance(id);
  REQUIRE(b);
  return *b;
}

} // namespace

TEST_CASE("Redis accounts: each operation moves exactly its amounts, never below zero", "[redis]") {
  RedisServer server;
  RedisAccounts accounts(server.options());
  const auto id = id_of(accounts.open(1'000));
  REQUIRE(id);

  SECTION("debit and refusal") {
    CHECK(accounts.debit(*id, 400) == LedgerStatus::ok);
    CHECK(accounts.debit(*id, 601) == LedgerStatus::insufficient);
    CHECK(accounts.debit(*id, 600) == LedgerStatus::ok);
    CHECK(accounts.debit(*id, 1) == LedgerStatus::insufficient);
    const auto b = balance_of(accounts, *id);
    CHECK(b.remaining == 0);
    CHECK(b.used == 1'000);
    CHECK(b.charges == 2);
  }
  SECTION("reserve, then settle under, over and far over the hold") {
    CHECK(accounts.reserve(*id, 300) == LedgerStatus::ok);
    CHECK(accounts.reserve(*id, 800) == LedgerStatus::insufficient);
    auto under = accounts.settle(*id, 300, 100); // 200 back to remaining
    REQUIRE_FALSE(under.pending);
    CHECK(under.charged == 100);
    CHECK(under.refunded == 200);
    CHECK(under.uncovered == 0);
    CHECK(accounts.reserve(*id, 100) == LedgerStatus::ok);
    auto over = accounts.settle(*id, 100, 150); // 50 more from remaining
    CHECK(over.charged == 150);
    CHECK(over.uncovered == 0);
    CHECK(accounts.reserve(*id, 10) == LedgerStatus::ok);
    auto far = accounts.settle(*id, 10, 5'000); // remaining runs out: the rest is uncovered
    const auto b = balance_of(accounts, *id);
    CHECK(b.remaining == 0);
    CHECK(far.charged == 10 + 740);
    CHECK(far.uncovered == 5'000 - 750);
    CHECK(b.used == 1'000);
    CHECK(b.reserved == 0);
    CHECK(b.charges == 3);
  }
  SECTION("a negative settlement of nothing held gives usage back") {
    CHECK(accounts.debit(*id, 250) == LedgerStatus::ok);
    auto back = accounts.settle(*id, 0, -250);
    CHECK(back.charged == -250);
    CHECK(back.refunded == 250);
    const auto b = balance_of(accounts, *id);
    CHECK(b.remaining == 1'000);
    CHECK(b.used == 0);
    CHECK(b.charges == 1);
    // Forgiving more than was used forgives what was used, never below zero.
    CHECK(accounts.debit(*id, 100) == LedgerStatus::ok);
    auto capped = accounts.settle(*id, 0, -5'000);
    CHECK(capped.charged == -100);
    CHECK(balance_of(accounts, *id).used == 0);
    CHECK(balance_of(accounts, *id).remaining == 1'000);
  }
  SECTION("release, credit, compare-and-set") {
    CHECK(accounts.reserve(*id, 700) == LedgerStatus::ok);
    CHECK(accounts.release(*id, 700));
    CHECK(accounts.credit(*id, 500) == LedgerStatus::ok);
    CHECK(accounts.credit(*id, detail::redis_max_raw) == LedgerStatus::overflow);
    std::int64_t expected = 1;
    CHECK(accounts.compare_exchange_remaining(*id, expected, 5) == LedgerStatus::conflict);
    CHECK(expected == 1'500);
    CHECK(accounts.compare_exchange_remaining(*id, expected, 2'000) == LedgerStatus::ok);
    CHECK(balance_of(accounts, *id).remaining == 2'000);
  }
  SECTION("a closed account refuses, and its reservations settle to the caller") {
    CHECK(accounts.reserve(*id, 300) == LedgerStatus::ok);
    const auto [status, swept] = accounts.close(*id);
    CHECK(status == LedgerStatus::ok);
    CHECK(swept == 700);
    CHECK(accounts.close(*id).first == LedgerStatus::closed);
    CHECK(accounts.debit(*id, 1) == LedgerStatus::closed);
    CHECK(accounts.credit(*id, 1) == LedgerStatus::closed);
    auto s = accounts.settle(*id, 300, 100);
    CHECK(s.account_closed);
    CHECK(s.charged == 100);
    CHECK(s.refunded == 200); // the caller's, not the account's
    const auto b = balance_of(accounts, *id);
    CHECK(b.closed);
    CHECK(b.remaining == 0);
    CHECK(b.reserved == 0);
    CHECK(b.used == 100);
  }
  SECTION("an account that does not exist is closed") {
    CHECK(accounts.debit(*id + 1000, 1) == LedgerStatus::closed);
    CHECK(balance_of(accounts, *id + 1000).closed);
  }
}

TEST_CASE("Redis accounts: amounts up to 2^53 - 1 raw units stay exact", "[redis]") {
  RedisServer server;
  RedisAccounts accounts(server.options());
  const std::int64_t big = detail::redis_max_raw - 7;
  const auto id = id_of(accounts.open(big));
  REQUIRE(id);
  CHECK(accounts.debit(*id, big - 1) == LedgerStatus::ok);
  CHECK(accounts.debit(*id, 2) == LedgerStatus::insufficient);
  const auto b = balance_of(accounts, *id);
  CHECK(b.remaining == 1);
  CHECK(b.used == big - 1);
  CHECK(accounts.credit(*id, 7) == LedgerStatus::ok);
  CHECK(accounts.credit(*id, 1) == LedgerStatus::overflow);
  CHECK(balance_of(accounts, *id).remaining == 8);
}

TEST_CASE("Redis accounts: threads spending one account spend exactly its budget", "[redis]") {
  RedisServer server;
  RedisAccounts accounts(server.options());
  constexpr std::int64_t budget = 2'000;
  const auto id = id_of(accounts.open(budget));
  REQUIRE(id);
  std::atomic<std::int64_t> granted{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (;;) {
        const auto s = accounts.debit(*id, 3);
        if (s == LedgerStatus::ok)
          granted += 3;
        else if (s == LedgerStatus::insufficient)
          break;
        else
          ++failures;
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(failures == 0);
  CHECK(granted == budget - budget % 3);
  const auto b = balance_of(accounts, *id);
  CHECK(b.remaining == budget % 3);
  CHECK(b.used == granted.load());
}

TEST_CASE("Redis accounts: a request sent again with its number is applied once", "[redis]") {
  RedisServer server;
  RedisAccounts accounts(server.options());
  const auto id = id_of(accounts.open(100));
  REQUIRE(id);
  // What a retry after a lost reply sends: the same script, client and request number.
  std::atomic<std::uint64_t> round_trips{0};
  detail::RedisSession session(server.options(), round_trips);
  const std::string key = accounts.account_key(*id);
  auto& debit = *session.scripts[static_cast<std::size_t>(detail::RedisOp::debit)];
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto reply =
        debit.run(session.connection, {key, "t:client:test"}, {"7", "1", "1000", "t", "40"});
    REQUIRE(reply);
    REQUIRE((*reply)->type == REDIS_REPLY_ARRAY);
    CHECK((*reply)->element[0]->integer == 0);
  }
  CHECK(balance_of(accounts, *id).remaining == 60);
  auto next = debit.run(session.connection, {key, "t:client:test"}, {"8", "1", "1000", "t", "40"});
  REQUIRE(next);
  CHECK(balance_of(accounts, *id).remaining == 20);
  // A stale copy of request 7 (held in a stalled server's buffers while its client moved on)
  // arrives last: answered 9, not run.
  auto stale = debit.run(session.connection, {key, "t:client:test"}, {"7", "1", "1000", "t", "40"});
  REQUIRE(stale);
  CHECK((*stale)->element[0]->integer == 9);
  CHECK(balance_of(accounts, *id).remaining == 20);
}

TEST_CASE("Redis accounts: passwords, and ACL users confined to their prefix", "[redis]") {
  RedisServer::Options secured;
  secured.requirepass = "s3cret";
  secured.users = {"user app on >apppw ~app:* +@all"};
  RedisServer server(secured);
  SECTION("the default user needs the password") {
    RedisAccounts anonymous(server.options());
    CHECK_FALSE(anonymous.open(10));
    RedisOptions wrong = server.options();
    wrong.password = "guess";
    RedisAccounts guessing(wrong);
    CHECK_FALSE(guessing.open(10));
    RedisOptions right = server.options();
    right.password = "s3cret";
    RedisAccounts admin(right);
    const auto id = id_of(admin.open(10));
    REQUIRE(id);
    CHECK(admin.debit(*id, 4) == LedgerStatus::ok);
  }
  SECTION("an ACL user works under its prefix and nowhere else") {
    RedisOptions own = server.options("app");
    own.user = "app";
    own.password = "apppw";
    RedisAccounts app(own);
    const auto id = id_of(app.open(10));
    REQUIRE(id);
    CHECK(app.debit(*id, 4) == LedgerStatus::ok);
    RedisOptions other = own;
    other.key_prefix = "billing";
    RedisAccounts trespasser(other);
    CHECK_FALSE(trespasser.open(10));
    CHECK(trespasser.debit(*id, 1) == LedgerStatus::unavailable);
    CHECK(balance_of(app, *id).remaining == 6);
  }
}

TEST_CASE("Redis accounts: unavailable while the server is down, exact after it restarts",
          "[redis]") {
  RedisServer::Options durable;
  durable.append_only = true;
  RedisServer server(durable);
  // A killed server refuses connections at once: the timeout only bounds a hung one, and is
  // generous so that a loaded machine (CI under a sanitizer) is not mistaken for a dead server.
  RedisOptions o = server.options();
  o.timeout = std::chrono::seconds(5);
  RedisAccounts accounts(o);
  const auto id = id_of(accounts.open(1'000));
  REQUIRE(id);
  CHECK(accounts.debit(*id, 100) == LedgerStatus::ok);
  CHECK(accounts.reserve(*id, 50) == LedgerStatus::ok);

  server.kill(); // a crash: only what the append-only file holds survives
  CHECK(accounts.debit(*id, 1) == LedgerStatus::unavailable);
  CHECK_FALSE(accounts.balance(*id));
  // A settlement cannot be refused (the call was made): it is kept, answered as it will land.
  const auto s = accounts.settle(*id, 50, 10);
  CHECK(s.pending);
  CHECK(s.charged == 10);
  CHECK(s.refunded == 40);
  // The settlement, and the debit: written to the connection the server's death closed, it
  // may have reached it (a debit sent after a refused connection is not in doubt: below).
  CHECK(accounts.in_doubt() == 2);
  CHECK(accounts.debit(*id, 1) == LedgerStatus::unavailable);
  CHECK(accounts.in_doubt() == 2);
  CHECK_FALSE(accounts.flush());

  server.restart(); // its scripts are gone: the accounts load them again (NOSCRIPT)
  CHECK(accounts.flush());
  CHECK(accounts.in_doubt() == 0);
  const auto b = balance_of(accounts, *id);
  CHECK(b.remaining == 890); // every acknowledged change survived the kill, and the settlement
  CHECK(b.used == 110);      // landed once; the refused debit did not run
  CHECK(b.reserved == 0);
  CHECK(accounts.debit(*id, 1) == LedgerStatus::ok);
  CHECK(balance_of(accounts, *id).remaining == 889);
}
