// A type that is not an attention policy is rejected at the layer's boundary with the concept's
// name, and a policy whose numbers contradict each other is rejected with the rule it breaks.
// expected-error not_a_policy: constraint failure for .* requires +attention_policy<P> struct
// expected-error top_k_without_compressor: dsv4 attention_policy: top_k > 0 needs a compressor
#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"

namespace {
// Selects top-k entries but compresses nothing: there would be no entries to select from.
struct topk_over_nothing : dsv4::attn::windowed_policy {
  static constexpr std::string_view name = "topk_over_nothing";
  static constexpr int top_k(const dsv4::attn::shape&) { return 4; }
};
static_assert(dsv4::attn::attention_policy<topk_over_nothing>);  // the interface is complete
}  // namespace

#if defined(DSV4_CASE_not_a_policy)
using policy = int;
#elif defined(DSV4_CASE_top_k_without_compressor)
using policy = topk_over_nothing;
#else
using policy = dsv4::attn::csa;
#endif

constexpr auto heads =
    dsv4::attn::layer_shape<dsv4::attn::shape_of<dsv4::config::tiny_hybrid>, policy>::heads;

int main() { return heads > 0 ? 0 : 1; }
