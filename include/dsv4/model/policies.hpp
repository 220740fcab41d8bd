// The policy bundle of a model: which attention each layer kind runs, how the residual is carried,
// which routers and FFN the MoE blocks use, and the numerics. A user changes one piece by deriving
// from the default bundle and redefining one alias:
//
//   struct my_policies : dsv4::model::default_policies<C> {
//     using csa_attention = my_csa;  // every CSA layer of the model now runs my_csa
//   };
//   using my_model = dsv4::model::causal_lm<C, my_policies>;
//
// Requirements of each alias (check_policies names the alias that misses one):
//   swa_attention, csa_attention, hca_attention   attn::attention_policy; the layers of that kind
//                                                   and their cache geometry follow it
//   residual                                       mhc::residual_policy with C.hc_mult streams
//                                                   (its site and head weights are the mHC views,
//                                                   or empty structs for a policy without weights)
//   score_router, hash_router                      moe::router, built by
//                                                   from(cfg, params, gate, bias) and
//                                                   from(cfg, params, gate, tid2eid)
//   ffn<Router>                                    moe::ffn_policy, built by
//                                                   from(cfg, params, router, experts, shared)
//   num                                            numerics::exact or numerics::released, for the
//                                                   norms, the embedding and the head the model
//                                                   itself computes (each policy takes its own)
#pragma once

#include <cstdint>
#include <type_traits>

#include "dsv4/attn/concepts.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/mhc/concepts.hpp"
#include "dsv4/mhc/hyper_connection.hpp"
#include "dsv4/model/weights.hpp"
#include "dsv4/moe/concepts.hpp"
#include "dsv4/moe/moe_ffn.hpp"
#include "dsv4/moe/router.hpp"

namespace dsv4::model {

// DeepSeek-V4 as released: SWA, CSA and HCA layers, mHC over C.hc_mult streams, score and hash
// routers over the other_format gate, the MoE of expert_format experts and a linear_format shared
// expert, in numerics Num.
template <config::model_config C, numerics Num = numerics::exact>
struct default_policies {
  static constexpr numerics num = Num;
  using swa_attention = attn::swa;
  using csa_attention = attn::csa;
  using hca_attention = attn::hca;
  using residual = mhc::constrained_hc<C.hc_mult, Num>;
  using score_router = moe::score_router<typename matrices_of<C>::other>;
  using hash_router = moe::hash_router<typename matrices_of<C>::other, std::int32_t>;
  template <class Router>
  using ffn = moe::moe_ffn<Router, typename matrices_of<C>::expert, typename matrices_of<C>::linear, Num>;
};

// The released model's roundings everywhere (BF16 activations, FP8 inputs to FP8/FP4 linears).
template <config::model_config C>
using released_policies = default_policies<C, numerics::released>;

// The released roundings with int8 inputs to FP4-weight linears (the routed experts of the released
// checkpoints): opt-in and approximate, for speed (core/linear_q8.hpp; docs/linear.md has its
// accuracy).
template <config::model_config C>
using fast_policies = default_policies<C, numerics::fast>;

// The checks of a bundle, one static_assert per alias with a message that names it.
template <config::model_config C, class P>
struct check_policies {
  static_assert(attn::attention_policy<typename P::swa_attention>,
                "dsv4::model: Policies::swa_attention must satisfy attn::attention_policy");
  static_assert(attn::attention_policy<typename P::csa_attention>,
                "dsv4::model: Policies::csa_attention must satisfy attn::attention_policy");
  static_assert(attn::attention_policy<typename P::hca_attention>,
                "dsv4::model: Policies::hca_attention must satisfy attn::attention_policy");
  static_assert(mhc::residual_policy<typename P::residual>,
                "dsv4::model: Policies::residual must satisfy mhc::residual_policy");
  static_assert(P::residual::streams == C.hc_mult,
                "dsv4::model: Policies::residual must carry C.hc_mult streams (the checkpoint's hc_mult)");
  static_assert(moe::router<typename P::score_router>,
                "dsv4::model: Policies::score_router must satisfy moe::router");
  static_assert(moe::router<typename P::hash_router>,
                "dsv4::model: Policies::hash_router must satisfy moe::router");
  static_assert(moe::ffn_policy<typename P::template ffn<typename P::score_router>>,
                "dsv4::model: Policies::ffn<score_router> must satisfy moe::ffn_policy");
  static_assert(moe::ffn_policy<typename P::template ffn<typename P::hash_router>>,
                "dsv4::model: Policies::ffn<hash_router> must satisfy moe::ffn_policy");
  static_assert(P::num == numerics::exact || P::num == numerics::released || P::num == numerics::fast,
                "dsv4::model: Policies::num must be numerics::exact, numerics::released or numerics::fast");
  static constexpr bool ok = true;
};

}  // namespace dsv4::model
