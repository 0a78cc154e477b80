// expect: (of .*BudgetAmount<A>.* .with A = std::.*string|string<char>' does not satisfy 'Budget)
// A budget counts in an amount type; text is not one, even though it is regular and ordered.
#include <safeguards/amount.hpp>
#include <string>

namespace {

template <safeguards::BudgetAmount A>
A twice(const A& a) {
  return safeguards::amount_traits<A>::add(a, a);
}

} // namespace

int main() {
  auto ok = twice(safeguards::Decimal("1.5"));
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto bad = twice(std::string("1.5"));
  (void)bad;
#endif
  return ok == safeguards::Decimal(3) ? 0 : 1;
}
