// expect: (deleted function .*Decimal\(F\) .with F = double|double.* invokes a deleted function)
// Arithmetic between Decimal and double would bring binary rounding back into exact money.
#include <safeguards/decimal.hpp>

int main() {
  auto ok = safeguards::Decimal(1) + 2;
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto bad = safeguards::Decimal(1) + 2.5;
  (void)bad;
#endif
  return ok == safeguards::Decimal(3) ? 0 : 1;
}
