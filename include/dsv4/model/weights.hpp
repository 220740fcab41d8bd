// The weights of a whole DeepSeek-V4 model as views (spec §2, §10, §11.2): the embedding, every
// decoder block (its attention, two mHC sites, two norms, router and experts), the HC head, the
// final norm, the LM head and the MTP blocks. Nothing here owns memory: the views point into a
// checkpoint's mapping or into buffers the loader (io/load_model.hpp) or the caller keeps alive.
//
// The storage formats come from the config (spec §13): linear_format for the attention
// projections, the shared expert and the MTP projections; expert_format for the routed experts;
// other_format for the embedding, the LM head, the router gates, the compressors and the indexer's
// weights_proj. Norm weights, mHC parameters, sinks, position biases and the gate bias are fp32
// views (a loader widens BF16 ones); tid2eid is int32 (a loader narrows the file's int64 after
// checking every row).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "dsv4/attn/attention.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_matrix.hpp"
#include "dsv4/mhc/hyper_connection.hpp"
#include "dsv4/moe/experts.hpp"

namespace dsv4::model {

// The matrix types of model C's three weight formats.
template <config::model_config C>
struct matrices_of {
  using linear = weight_matrix_for<C.linear_format>;
  using expert = weight_matrix_for<C.expert_format>;
  using other = weight_matrix_for<C.other_format>;
};

// One decoder block (checkpoint prefix layers.N. or mtp.M.).
template <config::model_config C>
struct block_weights {
  using m = matrices_of<C>;
  attn::attention_weights<typename m::linear, typename m::other> attn;  // attention_weights_for<shape_of<C>>
  tensor_view<const float, 1> attn_norm;                                // (d)
  tensor_view<const float, 1> ffn_norm;                                 // (d)
  mhc::hc_site_weights hc_attn;                                   // fn (mix, hc*d), scale (3), base (mix)
  mhc::hc_site_weights hc_ffn;                                    // the same for the FFN site
  typename m::other gate;                                         // (n_routed_experts, d)
  tensor_view<const float, 1> gate_bias;                          // (n_routed_experts) score-routed blocks
  tensor_view<const std::int32_t, 2> tid2eid;                     // (vocab, k) hash-routed blocks
  std::vector<moe::swiglu_weights<typename m::expert>> experts;   // (n_routed_experts)
  std::optional<moe::swiglu_weights<typename m::linear>> shared;  // when n_shared_experts > 0
};

// What an MTP block adds to its decoder block (spec §10).
template <config::model_config C>
struct mtp_weights {
  block_weights<C> block;
  typename matrices_of<C>::linear e_proj;  // (d, d) the embedding of the next token
  typename matrices_of<C>::linear h_proj;  // (d, d) the main model's streams
  tensor_view<const float, 1> enorm;       // (d)
  tensor_view<const float, 1> hnorm;       // (d)
  tensor_view<const float, 1> norm;        // (d) its final norm
  mhc::hc_head_weights hc_head;            // its own HC head
};

template <config::model_config C>
struct model_weights {
  using m = matrices_of<C>;
  typename m::other embed;               // (vocab, d)
  std::vector<block_weights<C>> layers;  // (n_layers)
  mhc::hc_head_weights hc_head;          // fn (hc, hc*d), scale (1), base (hc)
  tensor_view<const float, 1> norm;      // (d) the final norm
  typename m::other head;                // (vocab, d) the LM head
  std::vector<mtp_weights<C>> mtp;       // (n_mtp_layers) or empty when the file has none
};

}  // namespace dsv4::model
