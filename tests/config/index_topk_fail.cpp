// Negative-compile test: validate<C> rejects a config whose CSA layers have no top-k to select.
// expected-error: dsv4 model_config: index_topk must be positive when the schedule has CSA layers
#include "dsv4/config/presets.hpp"

namespace cfg = dsv4::config;

constexpr cfg::model_config broken = [] {
  cfg::model_config c = cfg::tiny_hybrid;
  c.index_topk = 0;
  return c;
}();

#ifdef DSV4_EXPECT_FAILURE
static_assert(cfg::is_valid_config<broken>);
#else
static_assert(cfg::is_valid_config<cfg::tiny_hybrid>);
#endif
