// expect: (AllocationStrategy<Strategy.*OnlyAName|OnlyAName' does not satisfy 'AllocationStrategy)
// A type without `allocate` is not an allocation strategy: a function constrained on the concept
// (as the coordinator's `allocate(pool, strategy)` is) refuses it and says which part is missing.
#include <safeguards/allocation.hpp>

namespace {

template <safeguards::AllocationStrategy Strategy>
std::string_view strategy_name(const Strategy& strategy) {
  return strategy.name();
}

// Has a name, but nothing that hands out money.
struct OnlyAName {
  std::string_view name() const { return "only a name"; }
};

} // namespace

int main() {
  auto ok = strategy_name(safeguards::PriorityAllocation{});
#ifdef SAFEGUARDS_COMPILE_FAIL
  auto bad = strategy_name(OnlyAName{});
  (void)bad;
#endif
  return ok.empty() ? 1 : 0;
}
