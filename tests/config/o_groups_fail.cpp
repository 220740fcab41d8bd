// Negative-compile test: validate<C> rejects a config whose heads do not split into o_groups.
// expected-error: dsv4 model_config: n_heads must be divisible by o_groups
#include "dsv4/config/presets.hpp"

namespace cfg = dsv4::config;

constexpr cfg::model_config broken = [] {
  cfg::model_config c = cfg::tiny_hybrid;
  c.o_groups = 3;  // 4 heads
  return c;
}();

#ifdef DSV4_EXPECT_FAILURE
static_assert(cfg::is_valid_config<broken>);
#else
static_assert(cfg::is_valid_config<cfg::tiny_hybrid>);
#endif
