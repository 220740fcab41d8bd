// Negative-compile test: validate<C> rejects a config whose head_dim differs from nope_dim + rope_dim.
// expected-error: dsv4 model_config: head_dim must equal nope_dim \+ rope_dim
#include "dsv4/config/presets.hpp"

namespace cfg = dsv4::config;

constexpr cfg::model_config broken = [] {
  cfg::model_config c = cfg::tiny_hybrid;
  c.nope_dim = 8;  // 8 + 16 != 32
  return c;
}();

#ifdef DSV4_EXPECT_FAILURE
static_assert(cfg::is_valid_config<broken>);
#else
static_assert(cfg::is_valid_config<cfg::tiny_hybrid>);
#endif
