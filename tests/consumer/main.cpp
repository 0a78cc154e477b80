// Uses the library as an outside project would: umbrella header, public names only.
#include <fmt/format.h>
#include <safeguards/safeguards.hpp>

int main() {
  using namespace safeguards;
  Budget run{std::chrono::seconds(30), {Consumption::token(1000, "gpt-4o")}};
  run.add_consumption(Consumption::token(200, "gpt-4o"), "consumer");
  bool ok = !run.can_consume(Consumption::token(900, "gpt-4o")) && !run.is_expired() &&
            fmt::format("{}", Decimal("1000.0")) == "1000.0";
  fmt::print("consumer: {}\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
