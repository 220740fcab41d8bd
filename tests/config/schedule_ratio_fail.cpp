// Negative-compile test: validate<C> rejects a schedule ratio other than 0, csa_ratio and hca_ratio.
// expected-error: dsv4 model_config: every compress ratio must be 0, csa_ratio or hca_ratio
#include "dsv4/config/presets.hpp"

namespace cfg = dsv4::config;

constexpr cfg::model_config broken = [] {
  cfg::model_config c = cfg::tiny_hybrid;
  c.compress_ratios[2] = 8;  // neither 4 nor 16
  return c;
}();

#ifdef DSV4_EXPECT_FAILURE
static_assert(cfg::is_valid_config<broken>);
#else
static_assert(cfg::is_valid_config<cfg::tiny_hybrid>);
#endif
