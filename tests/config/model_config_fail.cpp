// Negative-compile tests: validate<C> rejects each broken config with the message of its rule.
// Each case below is compiled alone with -DDSV4_EXPECT_FAILURE -DDSV4_CASE_<case>; without them
// the file must compile (the control), so a case fails for its rule and nothing else.
// expected-error head_dim: dsv4 model_config: head_dim must equal nope_dim \+ rope_dim
// expected-error o_groups: dsv4 model_config: n_heads must be divisible by o_groups
// expected-error schedule_length: dsv4 model_config: compress_ratios must have n_layers \+ 1 entries
// expected-error schedule_ratio: dsv4 model_config: every compress ratio must be 0, csa_ratio or hca_ratio
// expected-error index_topk: dsv4 model_config: index_topk must be positive when the schedule has CSA layers
// expected-error ratio_multiple: dsv4 model_config: hca_ratio must be a multiple of csa_ratio
// expected-error experts_per_tok: dsv4 model_config: n_experts_per_tok must be in \[1, n_routed_experts\]
#include "dsv4/config/presets.hpp"

namespace cfg = dsv4::config;

// tiny_hybrid with one edit.
template <class Edit>
constexpr cfg::model_config edited(Edit edit) {
  cfg::model_config c = cfg::tiny_hybrid;
  edit(c);
  return c;
}

#if defined(DSV4_CASE_head_dim)
constexpr auto broken = edited([](cfg::model_config& c) { c.nope_dim = 8; });  // 8 + 16 != 32
#elif defined(DSV4_CASE_o_groups)
constexpr auto broken = edited([](cfg::model_config& c) { c.o_groups = 3; });  // 4 heads
#elif defined(DSV4_CASE_schedule_length)
constexpr auto broken = edited([](cfg::model_config& c) { c.n_schedule = c.n_layers; });  // no MTP entry
#elif defined(DSV4_CASE_schedule_ratio)
constexpr auto broken = edited([](cfg::model_config& c) { c.compress_ratios[2] = 8; });  // neither 4 nor 16
#elif defined(DSV4_CASE_index_topk)
constexpr auto broken = edited([](cfg::model_config& c) { c.index_topk = 0; });
#elif defined(DSV4_CASE_ratio_multiple)
constexpr auto broken = edited([](cfg::model_config& c) {  // 16 -> 18 everywhere, not a multiple of 4
  for (int l = 0; l < c.n_schedule; ++l)
    if (c.compress_ratios[l] == c.hca_ratio) c.compress_ratios[l] = 18;
  c.hca_ratio = 18;
});
#elif defined(DSV4_CASE_experts_per_tok)
constexpr auto broken = edited([](cfg::model_config& c) { c.n_experts_per_tok = c.n_routed_experts + 1; });
#else
constexpr auto broken = edited([](cfg::model_config&) {});
#endif

#if defined(DSV4_EXPECT_FAILURE)
static_assert(cfg::is_valid_config<broken>);
#else
static_assert(cfg::is_valid_config<broken>, "the control must compile");
#endif
