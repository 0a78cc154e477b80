// expect: decimal_literal_with_a_leading_zero_is_octal_in_cpp
// C++ reads 010 as eight; a `_d` literal must not quietly read it as ten.
#include <safeguards/decimal.hpp>

using namespace safeguards::literals;

int main() {
  auto ten = 10_d;         // decimal integer literal
  auto zero = 0_d;         // a lone zero is not octal
  auto fraction = 010.5_d; // floating literals are decimal whatever their leading zeros
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto x = 010_d;
  (void)x;
#endif
  return ten == safeguards::Decimal(10) && zero == safeguards::Decimal(0) &&
                 fraction == safeguards::Decimal("10.5")
             ? 0
             : 1;
}
