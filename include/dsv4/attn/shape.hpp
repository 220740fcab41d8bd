// shape: the numbers an attention layer is made of, and kv_shape: the numbers a KV cache's
// rows are made of. Both are small structural aggregates used as template arguments, derived from
// a whole model_config by shape_of<C> and kv_shape_of<C>, so that a layer's type names only what
// shapes it (a profiler shows attn::attention<shape{4096, 64, 512, ...}, csa, ...> rather
// than every field of the model, its layer schedule included).
#pragma once

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/storage_format.hpp"

namespace dsv4::attn {

struct shape {
  int d_model = 0;
  int n_heads = 0;
  int head_dim = 0;  // the shared K=V latent: nope + rope
  int rope_dim = 0;
  int q_lora_rank = 0;
  int o_groups = 0;     // grouped low-rank output projection
  int o_lora_rank = 0;  // per-group rank
  int window = 0;       // sliding-window rows, the query's own token included
  int csa_ratio = 0;
  int hca_ratio = 0;
  int index_n_heads = 0;
  int index_head_dim = 0;
  int index_topk = 0;
  weight_format linear_format =
      weight_format::f32;  // the projections (wq_a, wq_b, wkv, wo_a, wo_b, indexer wq_b)
  weight_format other_format = weight_format::f32;  // compressors and the indexer's weights_proj
  kv_format cache_format = kv_format::f32;

  friend constexpr bool operator==(const shape&, const shape&) = default;
};

// The rows of a KV cache: compressed entries and window rows of head_dim (rope_dim of them
// rotated), index keys of index_head_dim, in one storage format.
struct kv_shape {
  int head_dim = 0;
  int rope_dim = 0;
  int index_head_dim = 0;
  kv_format format = kv_format::f32;

  friend constexpr bool operator==(const kv_shape&, const kv_shape&) = default;
};

constexpr kv_shape kv_shape_of(const shape& s) {
  return {s.head_dim, s.rope_dim, s.index_head_dim, s.cache_format};
}

// Rules a shape must follow whatever the policy (a policy's own are in layer_shape).
constexpr bool valid_shape(const shape& s) {
  return s.d_model > 0 && s.n_heads > 0 && s.rope_dim > 0 && s.rope_dim % 2 == 0 && s.head_dim > s.rope_dim &&
         s.q_lora_rank > 0 && s.o_groups > 0 && s.n_heads % s.o_groups == 0 && s.o_lora_rank > 0 &&
         s.window > 0 && s.csa_ratio >= 0 && s.hca_ratio >= 0 && s.index_n_heads >= 0 &&
         s.index_head_dim >= 0 && s.index_topk >= 0;
}

// The attention shape of model C (C is validated first).
template <config::model_config C>
inline constexpr shape shape_of = [] {
  static_assert(config::is_valid_config<C>);
  return shape{C.d_model,     C.n_heads,       C.head_dim,      C.rope_dim,
               C.q_lora_rank, C.o_groups,      C.o_lora_rank,   C.window,
               C.csa_ratio,   C.hca_ratio,     C.index_n_heads, C.index_head_dim,
               C.index_topk,  C.linear_format, C.other_format,  C.cache_format};
}();

}  // namespace dsv4::attn
