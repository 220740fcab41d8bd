// model_config: every integer that shapes a DeepSeek-V4 model (spec §1.1), as one structural
// aggregate usable as a non-type template parameter, plus its layer schedule and its validation.
//
// Why one aggregate: block types, cache layouts and accounting are all functions of these numbers,
// so `template <model_config C>` lets a whole model be instantiated from a preset or a user's own
// config, and `validate<C>` rejects an inconsistent config at compile time with one message per
// rule instead of a shape error deep inside a kernel. Floating-point hyper-parameters (eps, RoPE
// theta, route scale) are run-time values in `model_params`, filled from a preset or config.json.
//
// A DeepSeek-V3.2 config (attention_family::v32_mla_dsa) is supported only as far as the accounting
// needs it (parameters, KV bytes, FLOPs) to reproduce the report's comparisons.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/storage_format.hpp"

namespace dsv4::config {

// Capacity of `compress_ratios` (n_layers + 1 entries: Pro needs 62; later releases append 3).
inline constexpr int max_schedule = 128;

enum class attention_family : std::uint8_t {
  v4_hybrid,    // SWA / CSA / HCA layers per compress_ratios (DeepSeek-V4)
  v32_mla_dsa,  // MLA with the Lightning Indexer over every raw token (DeepSeek-V3.2), for comparison
};

// Storage formats of the weights and of the KV cache (core/storage_format.hpp).
using dsv4::kv_format;
using dsv4::weight_format;

enum class layer_kind : std::uint8_t {
  swa,  // sliding window only (compress ratio 0)
  csa,  // window + indexer-selected top-k of ratio-4 overlapping compressed entries
  hca,  // window + every ratio-128 compressed entry
};

// Which checkpoint tensors use which weight_format: FP32 tensors (mHC, ape, attn_sink, gate.bias)
// are FP32 in every release and have no field.
struct model_config {
  attention_family family = attention_family::v4_hybrid;

  int vocab_size = 0, d_model = 0;
  int n_layers = 0;  // backbone layers; the MTP block is layer n_layers

  // Attention (spec §4). V4: head_dim is the shared K=V latent (512 = 448 NoPE + 64 RoPE).
  // V3.2: head_dim = qk_nope + qk_rope (192) of the query/key heads.
  int n_heads = 0, head_dim = 0, rope_dim = 0, nope_dim = 0, q_lora_rank = 0;
  int o_groups = 0, o_lora_rank = 0;  // V4 grouped low-rank output projection: groups, rank per group
  int window = 0;                     // sliding-window entries, the query's own token included

  // V3.2 MLA only (kv latent rank and value head dim).
  int kv_lora_rank = 0, v_head_dim = 0;

  // KV compression (spec §6): compress_ratios[l] is 0 (SWA), csa_ratio or hca_ratio for layer l,
  // and compress_ratios[n_layers] is the MTP block's.
  int csa_ratio = 0, hca_ratio = 0;
  std::array<int, max_schedule> compress_ratios{};
  int n_schedule = 0;  // entries used in compress_ratios

  // Lightning Indexer (spec §7).
  int index_n_heads = 0, index_head_dim = 0, index_topk = 0;

  // Manifold-constrained hyper-connections (spec §3): streams, Sinkhorn iterations.
  int hc_mult = 0, hc_sinkhorn_iters = 0;

  // Mixture of experts (spec §9). Layers [0, n_hash_layers) route by token-id hash.
  int n_routed_experts = 0, n_shared_experts = 0, n_experts_per_tok = 0, moe_inter_dim = 0;
  int n_hash_layers = 0;
  int first_k_dense = 0, dense_inter_dim = 0;  // V3.2: leading dense-FFN layers, their FFN width
  int n_mtp_layers = 0;

  weight_format linear_format = weight_format::bf16;  // attention and shared-expert linears, MTP projections
  weight_format expert_format = weight_format::bf16;  // routed experts
  weight_format other_format = weight_format::bf16;   // embedding, head, norms, router, compressors
  kv_format cache_format = kv_format::bf16;
};

// ---- layer schedule ----------------------------------------------------------------------------

// Builds compress_ratios so that a preset reads like its config.json:
//   compress_schedule{}.append({0, 0}).append({4, 128}, 20).append({4}).append({0})
// is [0, 0] + [4, 128] * 20 + [4] + [0].
struct compress_schedule {
  std::array<int, max_schedule> ratios{};
  int size = 0;

  constexpr compress_schedule append(std::initializer_list<int> pattern, int times = 1) const {
    compress_schedule s = *this;
    for (int t = 0; t < times; ++t) {
      for (int r : pattern) {
        // Not constexpr: a schedule that overflows stops constant evaluation here, naming the cause.
        if (s.size >= max_schedule) compress_schedule_exceeds_max_schedule();
        s.ratios[static_cast<std::size_t>(s.size++)] = r;
      }
    }
    return s;
  }

 private:
  [[noreturn]] static void compress_schedule_exceeds_max_schedule() {
    ::dsv4::detail::assert_fail("size < max_schedule", "compress_schedule exceeds max_schedule", __FILE__,
                                __LINE__);
  }
};

// c with the layer schedule s: compress_ratios and n_schedule.
constexpr model_config with_schedule(model_config c, const compress_schedule& s) {
  c.compress_ratios = s.ratios;
  c.n_schedule = s.size;
  return c;
}

constexpr bool is_v4_hybrid(const model_config& c) { return c.family == attention_family::v4_hybrid; }

// Layer `layer` in [0, n_layers]; layer n_layers is the MTP block. Every layer of a V3.2 config
// reports csa: like CSA it attends to indexer-selected entries (of raw tokens, with no window).
constexpr layer_kind layer_kind_of(const model_config& c, int layer) {
  DSV4_ASSERT(layer >= 0 && layer <= c.n_layers, "layer_kind_of: layer outside [0, n_layers]");
  if (!is_v4_hybrid(c)) return layer_kind::csa;
  const int ratio = c.compress_ratios[static_cast<std::size_t>(layer)];
  if (ratio == 0) return layer_kind::swa;
  if (ratio == c.csa_ratio) return layer_kind::csa;
  DSV4_ASSERT(ratio == c.hca_ratio, "layer_kind_of: compress ratio is not 0, csa_ratio or hca_ratio");
  return layer_kind::hca;
}

// Backbone layers of a kind (the MTP block is not counted).
constexpr int count_layers(const model_config& c, layer_kind kind) {
  int n = 0;
  for (int l = 0; l < c.n_layers; ++l) n += layer_kind_of(c, l) == kind ? 1 : 0;
  return n;
}

// Hash routing covers the first n_hash_layers backbone layers; the MTP block is score-routed.
constexpr bool is_hash_layer(const model_config& c, int layer) {
  return layer >= 0 && layer < c.n_hash_layers;
}

// Dense-FFN layers (V3.2's first_k_dense); V4 uses MoE in every layer.
constexpr bool is_dense_layer(const model_config& c, int layer) {
  return layer >= 0 && layer < c.first_k_dense;
}

// ---- run-time hyper-parameters -----------------------------------------------------------------

struct model_params {
  float rms_norm_eps = 1e-6f;
  float hc_eps = 1e-6f;
  float rope_theta = 10000.0f;            // SWA-only layers (and V3.2)
  float compress_rope_theta = 160000.0f;  // CSA and HCA layers, with YaRN
  float yarn_factor = 16.0f;
  int yarn_original_seq_len = 65536;  // 0 disables YaRN
  float yarn_beta_fast = 32.0f;
  float yarn_beta_slow = 1.0f;
  float route_scale = 1.5f;
  float swiglu_limit = 10.0f;  // 0: no clamp
  int max_seq_len = 1048576;
  int bos_id = 0;  // begin-of-sentence token
  int eos_id = 1;  // end-of-sentence token
};

// The run-time rules of model_params for a model of config c: every module that reads a value
// relies on these (norm epsilons and RoPE bases positive, the YaRN ramp ordered, special tokens
// inside the vocabulary). Returns the first broken rule, naming the field.
inline status check_params(const model_config& c, const model_params& p) {
  const auto positive = [](float v) { return std::isfinite(v) && v > 0.0f; };
  const auto fail = [](const char* what) {
    return status{errc::invalid_argument, std::string("model_params: ") + what};
  };
  if (!positive(p.rms_norm_eps)) return fail("rms_norm_eps must be finite and positive");
  if (!positive(p.hc_eps)) return fail("hc_eps must be finite and positive");
  if (!positive(p.rope_theta)) return fail("rope_theta must be finite and positive");
  if (!positive(p.compress_rope_theta)) return fail("compress_rope_theta must be finite and positive");
  if (p.yarn_original_seq_len < 0) return fail("yarn_original_seq_len must be >= 0 (0: no YaRN)");
  if (p.yarn_original_seq_len > 0 &&
      (!positive(p.yarn_factor) || !positive(p.yarn_beta_slow) || !(p.yarn_beta_fast > p.yarn_beta_slow) ||
       !std::isfinite(p.yarn_beta_fast)))
    return fail("YaRN needs a positive factor and finite betas with beta_fast > beta_slow > 0");
  if (!positive(p.route_scale)) return fail("route_scale must be finite and positive");
  if (!std::isfinite(p.swiglu_limit) || p.swiglu_limit < 0.0f)
    return fail("swiglu_limit must be finite and >= 0");
  if (p.max_seq_len <= 0) return fail("max_seq_len must be positive");
  if (p.bos_id < 0 || p.bos_id >= c.vocab_size) return fail("bos_id must be a token of the vocabulary");
  if (p.eos_id < 0 || p.eos_id >= c.vocab_size) return fail("eos_id must be a token of the vocabulary");
  return {};
}

// ---- validation ---------------------------------------------------------------------------------

// One predicate per rule, public so that a run-time loader (config.json) can check the same rules.
namespace rules {
constexpr bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

constexpr bool core_dims_positive(const model_config& c) {
  return c.vocab_size > 0 && c.d_model > 0 && c.n_layers > 0 && c.n_heads > 0 && c.q_lora_rank > 0;
}
constexpr bool head_dim_split(const model_config& c) { return c.head_dim == c.nope_dim + c.rope_dim; }
constexpr bool rope_dim_fits(const model_config& c) {
  return c.rope_dim > 0 && c.rope_dim % 2 == 0 && c.rope_dim <= c.head_dim;
}
constexpr bool schedule_fits_capacity(const model_config& c) {
  return !is_v4_hybrid(c) ||
         (c.n_layers + 1 <= max_schedule && c.n_schedule >= 0 && c.n_schedule <= max_schedule);
}
constexpr bool schedule_length(const model_config& c) {
  return !is_v4_hybrid(c) || c.n_schedule == c.n_layers + 1;
}
constexpr bool ratios_known(const model_config& c) {
  if (!is_v4_hybrid(c)) return true;
  for (int l = 0; l < c.n_schedule && l < max_schedule; ++l) {
    const int r = c.compress_ratios[static_cast<std::size_t>(l)];
    if (r != 0 && r != c.csa_ratio && r != c.hca_ratio) return false;
  }
  return true;
}
constexpr bool csa_ratio_positive(const model_config& c) { return !is_v4_hybrid(c) || c.csa_ratio > 0; }
// Both compressors must tile the same pages: lcm(m, m') = m' raw tokens per page (spec §5).
constexpr bool hca_multiple_of_csa(const model_config& c) {
  return !is_v4_hybrid(c) || (c.csa_ratio > 0 && c.hca_ratio > c.csa_ratio && c.hca_ratio % c.csa_ratio == 0);
}
constexpr bool window_positive(const model_config& c) { return !is_v4_hybrid(c) || c.window > 0; }
constexpr bool output_groups_divide_heads(const model_config& c) {
  return !is_v4_hybrid(c) || (c.o_groups > 0 && c.n_heads % c.o_groups == 0);
}
constexpr bool o_lora_rank_positive(const model_config& c) { return !is_v4_hybrid(c) || c.o_lora_rank > 0; }
constexpr bool hyper_connections_positive(const model_config& c) {
  return !is_v4_hybrid(c) || (c.hc_mult > 0 && c.hc_sinkhorn_iters > 0);
}
// Schedule-dependent rules look at valid schedules only; the rules above report broken ones.
constexpr bool has_csa_layers(const model_config& c) {
  return schedule_fits_capacity(c) && schedule_length(c) && ratios_known(c) &&
         count_layers(c, layer_kind::csa) > 0;
}
constexpr bool index_topk_positive(const model_config& c) { return !has_csa_layers(c) || c.index_topk > 0; }
constexpr bool indexer_dims_positive(const model_config& c) {
  return !has_csa_layers(c) || (c.index_n_heads > 0 && c.index_head_dim > 0);
}
// The indexer rotates q and keys with a Walsh-Hadamard transform and ropes their last rope_dim dims.
constexpr bool indexer_head_dim_shape(const model_config& c) {
  return !has_csa_layers(c) || (is_pow2(c.index_head_dim) && c.index_head_dim >= c.rope_dim);
}
constexpr bool mla_dims_positive(const model_config& c) {
  return is_v4_hybrid(c) || (c.kv_lora_rank > 0 && c.v_head_dim > 0);
}
constexpr bool experts_positive(const model_config& c) {
  return c.n_routed_experts > 0 && c.moe_inter_dim > 0 && c.n_shared_experts >= 0;
}
constexpr bool experts_per_token_range(const model_config& c) {
  return c.n_experts_per_tok > 0 && c.n_experts_per_tok <= c.n_routed_experts;
}
constexpr bool hash_layers_range(const model_config& c) {
  return c.n_hash_layers >= 0 && c.n_hash_layers <= c.n_layers;
}
// Both occupy the leading layers, and a hash-routed layer must be an MoE layer.
constexpr bool dense_layers_range(const model_config& c) {
  return c.first_k_dense >= 0 && c.first_k_dense <= c.n_layers &&
         (c.first_k_dense == 0 || c.dense_inter_dim > 0) && (c.first_k_dense == 0 || c.n_hash_layers == 0);
}
constexpr bool mtp_depth(const model_config& c) { return c.n_mtp_layers == 0 || c.n_mtp_layers == 1; }
// Released KV layout: one ue8m0 scale per 64 NoPE values, FP4 index keys in 1x32 tiles (spec §8.2).
constexpr bool kv_layout_tiles(const model_config& c) {
  return !is_v4_hybrid(c) || c.cache_format != kv_format::fp8_released ||
         (c.nope_dim % 64 == 0 && (!has_csa_layers(c) || c.index_head_dim % 32 == 0));
}
// FP4 experts are stored two values per byte with one scale per 32 inputs (spec §11.1).
constexpr bool fp4_expert_tiles(const model_config& c) {
  return c.expert_format != weight_format::fp4_e2m1_block32 ||
         (c.d_model % 32 == 0 && c.moe_inter_dim % 32 == 0);
}
}  // namespace rules

// Instantiating validate<C> checks every rule, each with its own message; ::value is then true.
template <model_config C>
struct validate {
  static_assert(rules::core_dims_positive(C),
                "dsv4 model_config: vocab_size, d_model, n_layers, n_heads and q_lora_rank must be positive");
  static_assert(rules::head_dim_split(C), "dsv4 model_config: head_dim must equal nope_dim + rope_dim");
  static_assert(rules::rope_dim_fits(C),
                "dsv4 model_config: rope_dim must be positive, even and <= head_dim");
  static_assert(rules::schedule_fits_capacity(C),
                "dsv4 model_config: n_layers + 1 schedule entries must fit in max_schedule");
  static_assert(
      rules::schedule_length(C),
      "dsv4 model_config: compress_ratios must have n_layers + 1 entries (the last is the MTP block)");
  static_assert(rules::ratios_known(C),
                "dsv4 model_config: every compress ratio must be 0, csa_ratio or hca_ratio");
  static_assert(rules::csa_ratio_positive(C), "dsv4 model_config: csa_ratio must be positive");
  static_assert(rules::hca_multiple_of_csa(C),
                "dsv4 model_config: hca_ratio must be a multiple of csa_ratio and larger than it");
  static_assert(rules::window_positive(C), "dsv4 model_config: window must be positive");
  static_assert(rules::output_groups_divide_heads(C),
                "dsv4 model_config: n_heads must be divisible by o_groups");
  static_assert(rules::o_lora_rank_positive(C), "dsv4 model_config: o_lora_rank must be positive");
  static_assert(rules::hyper_connections_positive(C),
                "dsv4 model_config: hc_mult and hc_sinkhorn_iters must be positive");
  static_assert(rules::index_topk_positive(C),
                "dsv4 model_config: index_topk must be positive when the schedule has CSA layers");
  static_assert(
      rules::indexer_dims_positive(C),
      "dsv4 model_config: index_n_heads and index_head_dim must be positive when the schedule has CSA "
      "layers");
  static_assert(
      rules::indexer_head_dim_shape(C),
      "dsv4 model_config: index_head_dim must be a power of two (Hadamard rotation) and >= rope_dim");
  static_assert(rules::mla_dims_positive(C),
                "dsv4 model_config: a v32_mla_dsa config needs positive kv_lora_rank and v_head_dim");
  static_assert(
      rules::experts_positive(C),
      "dsv4 model_config: n_routed_experts and moe_inter_dim must be positive, n_shared_experts >= 0");
  static_assert(rules::experts_per_token_range(C),
                "dsv4 model_config: n_experts_per_tok must be in [1, n_routed_experts]");
  static_assert(rules::hash_layers_range(C), "dsv4 model_config: n_hash_layers must be in [0, n_layers]");
  static_assert(
      rules::dense_layers_range(C),
      "dsv4 model_config: first_k_dense must be in [0, n_layers] with a positive dense_inter_dim, and "
      "cannot be combined with hash layers");
  static_assert(rules::mtp_depth(C),
                "dsv4 model_config: n_mtp_layers must be 0 or 1 (compress_ratios holds one MTP entry)");
  static_assert(
      rules::kv_layout_tiles(C),
      "dsv4 model_config: cache_format fp8_released needs nope_dim divisible by 64 and index_head_dim by 32");
  static_assert(rules::fp4_expert_tiles(C),
                "dsv4 model_config: fp4 routed experts need d_model and moe_inter_dim divisible by 32");
  static constexpr bool value = true;
};

template <model_config C>
inline constexpr bool is_valid_config = validate<C>::value;

}  // namespace dsv4::config
