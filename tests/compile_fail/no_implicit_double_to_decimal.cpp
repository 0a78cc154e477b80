// expect: (deleted function .*Decimal\(F\) .with F = double|double.* invokes a deleted function)
// 1.5 happens to be exact in binary, 0.1 is not: Decimal never takes a double silently.
#include <safeguards/decimal.hpp>

int main() {
  safeguards::Decimal ok = safeguards::Decimal::from_double(1.5);
#ifdef SAFEGUARDS_COMPILE_FAIL
  safeguards::Decimal d = 1.5;
  (void)d;
#endif
  return ok == safeguards::Decimal("1.5") ? 0 : 1;
}
