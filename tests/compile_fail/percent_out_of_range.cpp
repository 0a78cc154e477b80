// expect: throw_bad_percent
// A threshold alert at 150 % can never fire: in a constant expression it does not compile.
#include <safeguards/monitor.hpp>

int main() {
  using namespace safeguards;
  constexpr LowBudgetAlert alert{.percent = 15};
#ifdef SAFEGUARDS_COMPILE_FAIL
  constexpr LowBudgetAlert bad{.percent = 150};
  (void)bad;
#endif
  return alert.percent.value() == 15 ? 0 : 1;
}
