// A type that misses part of the residual_policy interface is rejected where it is checked, and an
// mHC width outside what the kernels hold is rejected where the policy is instantiated.
// expected-error no_head: the required expression [^ ]*R::head\(hw, cfg, streams_in, rows_out\)
// expected-error bad_width: hyper_connection: N must be in \[1, max_hc_mult\]
#include "dsv4/mhc/residual.hpp"

namespace {
// plain_residual's interface without head().
struct no_head {
  static constexpr int streams = 1;
  using site_weights = dsv4::mhc::plain_residual::site_weights;
  using head_weights = dsv4::mhc::plain_residual::head_weights;
  using site_state = dsv4::mhc::plain_residual::site_state;
  static constexpr dsv4::index_t state_floats(dsv4::index_t) { return 0; }
  static site_state make_state(float*, dsv4::index_t) { return {}; }
  static dsv4::status expand(dsv4::tensor_view<const float, 2>, dsv4::tensor_view<float, 3>) { return {}; }
  static dsv4::status pre(const site_weights&, const dsv4::mhc::hc_settings&,
                          dsv4::tensor_view<const float, 3>, dsv4::tensor_view<float, 2>, const site_state&) {
    return {};
  }
  static dsv4::status post(dsv4::tensor_view<const float, 2>, dsv4::tensor_view<const float, 3>,
                           const site_state&, dsv4::tensor_view<float, 3>) {
    return {};
  }
};
}  // namespace

#if defined(DSV4_EXPECT_FAILURE) && defined(DSV4_CASE_no_head)
static_assert(dsv4::mhc::residual_policy<no_head>);
#endif
#if defined(DSV4_EXPECT_FAILURE) && defined(DSV4_CASE_bad_width)
static_assert(dsv4::mhc::constrained_hc<17>::streams == 17);
#endif

int main() { return dsv4::mhc::residual_policy<no_head> ? 1 : 0; }
