// A policy bundle is checked once, at model<C, Policies>, with a message that names the alias that
// is wrong.
// expected-error attention: Policies::csa_attention must satisfy attn::attention_policy
// expected-error residual: Policies::residual must carry C.hc_mult streams
// expected-error router: Policies::score_router must satisfy moe::router
#include "dsv4/config/presets.hpp"
#include "dsv4/mhc/residual.hpp"
#include "dsv4/model/causal_lm.hpp"

namespace {
constexpr dsv4::config::model_config C = dsv4::config::tiny_v4;

struct bundle : dsv4::model::default_policies<C> {
#if defined(DSV4_CASE_attention)
  using csa_attention = int;
#elif defined(DSV4_CASE_residual)
  using residual = dsv4::mhc::plain_residual;  // one stream where the checkpoint has four
#elif defined(DSV4_CASE_router)
  using score_router = float;
#endif
};
}  // namespace

int main() { return dsv4::model::causal_lm<C, bundle>::model_config.n_layers > 0 ? 0 : 1; }
