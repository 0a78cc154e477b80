// Every public header compiles on its own, and the core does not drag in what only opt-in
// parts need: POSIX file calls (audit_file.hpp), Boost's cpp_dec_float (big_decimal.hpp), SQLite
// (sqlite_snapshot.hpp) and hiredis (the Redis accounts).
#include <safeguards/safeguards.hpp>

#ifdef O_APPEND
#error "safeguards.hpp pulls in <fcntl.h>; only audit_file.hpp may"
#endif
#ifdef BOOST_MP_CPP_DEC_FLOAT_BACKEND_HPP
#error "safeguards.hpp compiles Boost's cpp_dec_float; only big_decimal.hpp may"
#endif
#ifdef SQLITE_OK
#error "safeguards.hpp pulls in <sqlite3.h>; only sqlite_snapshot.hpp may"
#endif
#ifdef HIREDIS_MAJOR
#error "safeguards.hpp pulls in hiredis; only the Redis headers may"
#endif

#include <catch2/catch.hpp>
#include <type_traits>

using namespace safeguards;

TEST_CASE("the core headers leave out the opt-in parts", "[headers]") {
  // The checks are the #error lines above; this says what still comes with the core.
  STATIC_REQUIRE(std::is_class_v<BudgetCoordinator>);
  STATIC_REQUIRE(std::is_class_v<MemoryAuditLog>);
}
