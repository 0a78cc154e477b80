// expect: (of .*BudgetAmount<A>.* .with A = int\*|'int \*' does not satisfy 'BudgetAmount')
// Pointers are regular and totally ordered, but no arithmetic on them is an amount.
#include <safeguards/amount.hpp>

namespace {

template <safeguards::BudgetAmount A>
A zero_of() {
  return safeguards::amount_zero<A>();
}

} // namespace

int main() {
  auto ok = zero_of<std::int64_t>();
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto bad = zero_of<int*>();
  (void)bad;
#endif
  return static_cast<int>(ok);
}
