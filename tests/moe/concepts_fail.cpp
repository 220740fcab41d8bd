// moe_ffn names the concept a router argument misses, and so does a check of an FFN policy.
// expected-error not_a_router: constraint failure for .* requires \(router<R>\)
// expected-error not_an_ffn: the required expression [^ ]*f\.workspace_bytes\(n\)[^ ]* is invalid
#include "dsv4/moe/moe_ffn.hpp"

namespace {
// A router without route(): it cannot produce experts and weights.
struct no_route {
  dsv4::index_t n_experts() const { return 8; }
  dsv4::index_t top_k() const { return 2; }
};
// An FFN policy without a workspace query: engines could not size its scratch memory.
struct no_workspace {
  dsv4::status forward(const dsv4::moe::ffn_input&, dsv4::tensor_view<float, 2>, std::span<std::byte>) const {
    return {};
  }
};
}  // namespace

#if defined(DSV4_CASE_not_a_router)
using layer = dsv4::moe::moe_ffn<no_route, dsv4::f32_matrix>;
#else
using layer = dsv4::moe::moe_ffn<dsv4::moe::score_router<dsv4::f32_matrix>, dsv4::f32_matrix>;
#endif

#if defined(DSV4_CASE_not_an_ffn)
static_assert(dsv4::moe::ffn_policy<no_workspace>);
#endif

static_assert(!dsv4::moe::router<no_route> && !dsv4::moe::ffn_policy<no_workspace>);

int main() { return sizeof(layer) > 0 ? 0 : 1; }
