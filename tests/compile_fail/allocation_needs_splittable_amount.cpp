// expect: (SplittableAmount<Amount>.* .with Amount = double|'double' does not satisfy 'Splittable)
// The built-in strategies split amounts exactly in int64 quanta; `double` cannot be split so that
// the parts add up, so asking DynamicAllocation to allocate doubles does not compile.
#include <safeguards/allocation.hpp>
#include <vector>

int main() {
  std::vector<safeguards::AllocationAgent<std::int64_t>> tokens(2);
  safeguards::PoolSnapshot<std::int64_t> pool{.distributable = 100, .agents = tokens};
  auto ok = safeguards::DynamicAllocation{}.allocate(pool);
#ifdef SAFEGUARDS_COMPILE_FAIL
  std::vector<safeguards::AllocationAgent<double>> dollars(2);
  safeguards::PoolSnapshot<double> loose{.distributable = 100.0, .agents = dollars};
  auto bad = safeguards::DynamicAllocation{}.allocate(loose);
  (void)bad;
#endif
  return static_cast<int>(ok.size()) - 2;
}
