// expect: constexpr.* function .*decimal_literal_has_more_than_6_fractional_digits
// A literal that would lose money is a compile error, not a runtime surprise.
#include <safeguards/decimal.hpp>

using namespace safeguards::literals;

int main() {
  auto ok = 1.000001_d;
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto x = 1.0000001_d;
  (void)x;
#endif
  return ok == safeguards::Decimal("1.000001") ? 0 : 1;
}
