// Negative-compile test: validate<C> rejects a config whose compress_ratios lacks the MTP entry.
// expected-error: dsv4 model_config: compress_ratios must have n_layers \+ 1 entries
#include "dsv4/config/presets.hpp"

namespace cfg = dsv4::config;

constexpr cfg::model_config broken = [] {
  cfg::model_config c = cfg::tiny_hybrid;
  c.n_schedule = c.n_layers;  // MTP entry dropped
  return c;
}();

#ifdef DSV4_EXPECT_FAILURE
static_assert(cfg::is_valid_config<broken>);
#else
static_assert(cfg::is_valid_config<cfg::tiny_hybrid>);
#endif
