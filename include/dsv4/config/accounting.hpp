// Accounting: parameter counts, KV-cache bytes, decode FLOPs and the bytes a decoded token reads of
// a model_config, all constexpr.
//
// Why here: the report's headline numbers (284B/13B, 1.6T/49B, "10% of V3.2's FLOPs, 7% of its KV
// cache at 1M tokens") are functions of the config alone, so they are reproduced at compile time and
// the KV-cache class allocates exactly what kv_layer_bytes says. Everything derives from two
// primitives: the checkpoint tensor inventory of a layer (for_each_layer_tensor) and the attention
// geometry of a layer kind (geometry_of). docs/accounting.md explains each count and what it includes.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/arith.hpp"

namespace dsv4::config {

// The MTP block is a separate module the main forward never calls: counts exclude it unless asked.
enum class mtp_mode : std::uint8_t { exclude, include };

// ---- tensor inventory ---------------------------------------------------------------------------

enum class tensor_group : std::uint8_t {
  embedding,
  head,
  attention,  // projections, q/kv norms, sinks, compressors, indexers
  mhc,        // hc_{attn,ffn}_{fn,base,scale} and the HC head
  norms,      // attn_norm, ffn_norm, final norm (and MTP enorm/hnorm/norm)
  router,     // gate.weight, gate.bias
  shared_experts,
  routed_experts,
  dense_ffn,        // V3.2's first_k_dense layers
  mtp_projections,  // MTP e_proj, h_proj
  hash_table,       // gate.tid2eid: a frozen token -> experts table, not a parameter
};

// One checkpoint tensor (or one per routed expert). Shapes are logical (out, in): FP4 stores
// (out, in / 2) bytes. The hash table is int64 in the checkpoint; its `format` (f32) is unused.
struct tensor_desc {
  const char* name;  // under layers.{i}. / mtp.0. or top level; * stands for the expert id
  tensor_group group;
  std::int64_t rows;  // (rows, cols): a vector is (n, 1)
  std::int64_t cols;
  weight_format format;
  std::int64_t copies = 1;  // routed experts: one entry stands for all n_routed_experts

  constexpr std::int64_t elements() const { return rows * cols * copies; }
  // ue8m0 scales: one per 128x128 block (FP8) or per 1x32 block along the input (FP4).
  constexpr std::int64_t scale_elements() const {
    if (format == weight_format::fp8_e4m3_block128) return ceil_div(rows, 128) * ceil_div(cols, 128) * copies;
    if (format == weight_format::fp4_e2m1_block32) return rows * ceil_div(cols, 32) * copies;
    return 0;
  }
  constexpr std::int64_t stored_bytes() const {
    if (group == tensor_group::hash_table) return 8 * elements();
    constexpr std::int64_t bits[] = {32, 16, 8, 4};  // indexed by weight_format
    return elements() * bits[static_cast<int>(format)] / 8 + scale_elements();
  }
};

namespace detail {
struct compressor_names {
  const char* wkv;
  const char* wgate;
  const char* ape;
  const char* norm;
};

// Overlapping (coff 2) or plain (coff 1) KV compressor of `width` channels (spec §6.2).
template <class Visit>
constexpr void visit_compressor(const model_config& c, const compressor_names& n, std::int64_t width,
                                std::int64_t coff, std::int64_t ratio, Visit& visit) {
  const std::int64_t d = c.d_model;
  visit(tensor_desc{n.wkv, tensor_group::attention, coff * width, d, c.other_format});    // (coff*w, d)
  visit(tensor_desc{n.wgate, tensor_group::attention, coff * width, d, c.other_format});  // (coff*w, d)
  visit(tensor_desc{n.ape, tensor_group::attention, ratio, coff * width, weight_format::f32});
  visit(tensor_desc{n.norm, tensor_group::attention, width, 1, c.other_format});
}

// SwiGLU w1 (gate), w3 (up), w2 (down) of width `inter`, `copies` times.
template <class Visit>
constexpr void visit_swiglu(const model_config& c, const char* const (&names)[3], tensor_group g,
                            std::int64_t inter, weight_format f, std::int64_t copies, Visit& visit) {
  const std::int64_t d = c.d_model;
  visit(tensor_desc{names[0], g, inter, d, f, copies});  // (I, d)
  visit(tensor_desc{names[1], g, inter, d, f, copies});  // (I, d)
  visit(tensor_desc{names[2], g, d, inter, f, copies});  // (d, I)
}

// HC head: collapses the n_hc streams before the final norm (spec §3.4); the MTP has its own.
template <class Visit>
constexpr void visit_hc_head(const model_config& c, Visit& visit) {
  if (!is_v4_hybrid(c)) return;
  const std::int64_t hc = c.hc_mult;
  visit(tensor_desc{"hc_head_fn", tensor_group::mhc, hc, hc * c.d_model, weight_format::f32});
  visit(tensor_desc{"hc_head_base", tensor_group::mhc, hc, 1, weight_format::f32});
  visit(tensor_desc{"hc_head_scale", tensor_group::mhc, 1, 1, weight_format::f32});
}

template <class Visit>
constexpr void visit_v4_attention(const model_config& c, layer_kind kind, Visit& visit) {
  const std::int64_t d = c.d_model, nh = c.n_heads, hd = c.head_dim, dc = c.q_lora_rank;
  const std::int64_t ni = c.index_n_heads, ci = c.index_head_dim,
                     go = std::int64_t{c.o_groups} * c.o_lora_rank;
  const weight_format lin = c.linear_format, oth = c.other_format;
  visit(tensor_desc{"attn.wq_a.weight", tensor_group::attention, dc, d, lin});
  visit(tensor_desc{"attn.q_norm.weight", tensor_group::attention, dc, 1, oth});
  visit(tensor_desc{"attn.wq_b.weight", tensor_group::attention, nh * hd, dc, lin});
  visit(tensor_desc{"attn.wkv.weight", tensor_group::attention, hd, d, lin});
  visit(tensor_desc{"attn.kv_norm.weight", tensor_group::attention, hd, 1, oth});
  // (g*d_g, n_h/g*c): block-diagonal grouped projection stored as one matrix
  visit(tensor_desc{"attn.wo_a.weight", tensor_group::attention, go, nh / c.o_groups * hd, lin});
  visit(tensor_desc{"attn.wo_b.weight", tensor_group::attention, d, go, lin});
  visit(tensor_desc{"attn.attn_sink", tensor_group::attention, nh, 1, weight_format::f32});
  if (kind == layer_kind::swa) return;
  const bool csa = kind == layer_kind::csa;
  visit_compressor(c,
                   {"attn.compressor.wkv.weight", "attn.compressor.wgate.weight", "attn.compressor.ape",
                    "attn.compressor.norm.weight"},
                   hd, csa ? 2 : 1, csa ? c.csa_ratio : c.hca_ratio, visit);
  if (!csa) return;
  visit(tensor_desc{"attn.indexer.wq_b.weight", tensor_group::attention, ni * ci, dc, lin});
  visit(tensor_desc{"attn.indexer.weights_proj.weight", tensor_group::attention, ni, d, oth});
  visit_compressor(c,
                   {"attn.indexer.compressor.wkv.weight", "attn.indexer.compressor.wgate.weight",
                    "attn.indexer.compressor.ape", "attn.indexer.compressor.norm.weight"},
                   ci, 2, c.csa_ratio, visit);
}

// V3.2 MLA with its Lightning Indexer (own wk and LayerNorm k_norm), V3.2 inference names.
template <class Visit>
constexpr void visit_mla_attention(const model_config& c, Visit& visit) {
  const std::int64_t d = c.d_model, nh = c.n_heads, dc = c.q_lora_rank, kvr = c.kv_lora_rank;
  const std::int64_t ni = c.index_n_heads, ci = c.index_head_dim;
  const weight_format lin = c.linear_format, oth = c.other_format;
  visit(tensor_desc{"attn.wq_a.weight", tensor_group::attention, dc, d, lin});
  visit(tensor_desc{"attn.q_norm.weight", tensor_group::attention, dc, 1, oth});
  visit(tensor_desc{"attn.wq_b.weight", tensor_group::attention, nh * c.head_dim, dc, lin});
  visit(tensor_desc{"attn.wkv_a.weight", tensor_group::attention, kvr + c.rope_dim, d, lin});
  visit(tensor_desc{"attn.kv_norm.weight", tensor_group::attention, kvr, 1, oth});
  visit(
      tensor_desc{"attn.wkv_b.weight", tensor_group::attention, nh * (c.nope_dim + c.v_head_dim), kvr, lin});
  visit(tensor_desc{"attn.wo.weight", tensor_group::attention, d, nh * c.v_head_dim, lin});
  visit(tensor_desc{"attn.indexer.wq_b.weight", tensor_group::attention, ni * ci, dc, lin});
  visit(tensor_desc{"attn.indexer.wk.weight", tensor_group::attention, ci, d, lin});
  visit(tensor_desc{"attn.indexer.k_norm.weight", tensor_group::attention, ci, 1, oth});
  visit(tensor_desc{"attn.indexer.k_norm.bias", tensor_group::attention, ci, 1, oth});
  visit(tensor_desc{"attn.indexer.weights_proj.weight", tensor_group::attention, ni, d, oth});
}
}  // namespace detail

// Every checkpoint tensor of block `layer` (layer n_layers: the MTP block's decoder layer).
template <class Visit>
constexpr void for_each_layer_tensor(const model_config& c, int layer, Visit&& visit) {
  const std::int64_t d = c.d_model;
  const weight_format oth = c.other_format, f32 = weight_format::f32;
  visit(tensor_desc{"attn_norm.weight", tensor_group::norms, d, 1, oth});
  visit(tensor_desc{"ffn_norm.weight", tensor_group::norms, d, 1, oth});
  if (is_v4_hybrid(c)) {
    // Two mHC sites; fn rows: pre (n_hc), post (n_hc), comb (n_hc^2) over the flattened streams.
    const std::int64_t mix = (2 + std::int64_t{c.hc_mult}) * c.hc_mult, width = c.hc_mult * d;
    visit(tensor_desc{"hc_attn_fn", tensor_group::mhc, mix, width, f32});
    visit(tensor_desc{"hc_attn_base", tensor_group::mhc, mix, 1, f32});
    visit(tensor_desc{"hc_attn_scale", tensor_group::mhc, 3, 1, f32});
    visit(tensor_desc{"hc_ffn_fn", tensor_group::mhc, mix, width, f32});
    visit(tensor_desc{"hc_ffn_base", tensor_group::mhc, mix, 1, f32});
    visit(tensor_desc{"hc_ffn_scale", tensor_group::mhc, 3, 1, f32});
    detail::visit_v4_attention(c, layer_kind_of(c, layer), visit);
  } else {
    detail::visit_mla_attention(c, visit);
  }
  if (is_dense_layer(c, layer)) {
    detail::visit_swiglu(c, {"ffn.w1.weight", "ffn.w3.weight", "ffn.w2.weight"}, tensor_group::dense_ffn,
                         c.dense_inter_dim, c.linear_format, 1, visit);
    return;
  }
  const std::int64_t experts = c.n_routed_experts;
  visit(tensor_desc{"ffn.gate.weight", tensor_group::router, experts, d, oth});
  if (is_hash_layer(c, layer)) {
    visit(tensor_desc{"ffn.gate.tid2eid", tensor_group::hash_table, c.vocab_size, c.n_experts_per_tok, f32});
  } else {
    visit(tensor_desc{"ffn.gate.bias", tensor_group::router, experts, 1, f32});
  }
  detail::visit_swiglu(c, {"ffn.experts.*.w1.weight", "ffn.experts.*.w3.weight", "ffn.experts.*.w2.weight"},
                       tensor_group::routed_experts, c.moe_inter_dim, c.expert_format, experts, visit);
  if (c.n_shared_experts > 0) {  // several shared experts are one MLP of n_shared * I channels
    detail::visit_swiglu(
        c, {"ffn.shared_experts.w1.weight", "ffn.shared_experts.w3.weight", "ffn.shared_experts.w2.weight"},
        tensor_group::shared_experts, std::int64_t{c.n_shared_experts} * c.moe_inter_dim, c.linear_format, 1,
        visit);
  }
}

// Top-level tensors: embedding, head (untied), final norm, HC head.
template <class Visit>
constexpr void for_each_top_tensor(const model_config& c, Visit&& visit) {
  const std::int64_t v = c.vocab_size, d = c.d_model;
  visit(tensor_desc{"embed.weight", tensor_group::embedding, v, d, c.other_format});
  visit(tensor_desc{"head.weight", tensor_group::head, v, d, c.other_format});
  visit(tensor_desc{"norm.weight", tensor_group::norms, d, 1, c.other_format});
  detail::visit_hc_head(c, visit);
}

// MTP tensors besides its decoder layer (under mtp.0.); it shares the main embedding and head.
// V3.2's single eh_proj (d, 2d) has the same count (and FP8 scales) as e_proj + h_proj.
template <class Visit>
constexpr void for_each_mtp_extra_tensor(const model_config& c, Visit&& visit) {
  const std::int64_t d = c.d_model;
  visit(tensor_desc{"e_proj.weight", tensor_group::mtp_projections, d, d, c.linear_format});
  visit(tensor_desc{"h_proj.weight", tensor_group::mtp_projections, d, d, c.linear_format});
  visit(tensor_desc{"enorm.weight", tensor_group::norms, d, 1, c.other_format});
  visit(tensor_desc{"hnorm.weight", tensor_group::norms, d, 1, c.other_format});
  visit(tensor_desc{"norm.weight", tensor_group::norms, d, 1, c.other_format});
  detail::visit_hc_head(c, visit);
}

// ---- parameter counts ---------------------------------------------------------------------------

// Logical parameter counts by group (an FP4 value counts as one parameter).
struct tensor_group_counts {
  std::int64_t embedding = 0;
  std::int64_t head = 0;
  std::int64_t attention = 0;
  std::int64_t mhc = 0;
  std::int64_t norms = 0;
  std::int64_t router = 0;
  std::int64_t shared_experts = 0;
  std::int64_t routed_experts = 0;  // all n_routed_experts of every layer
  std::int64_t dense_ffn = 0;
  std::int64_t mtp_projections = 0;
  std::int64_t hash_table = 0;  // tid2eid entries: not parameters, excluded from total()

  constexpr std::int64_t total() const {
    return embedding + head + attention + mhc + norms + router + shared_experts + routed_experts + dense_ffn +
           mtp_projections;
  }
  constexpr std::int64_t& operator[](tensor_group g) {
    using counts = tensor_group_counts;
    // The member of each tensor_group, in the enumeration's order.
    constexpr std::int64_t counts::*members[] = {&counts::embedding,      &counts::head,
                                                 &counts::attention,      &counts::mhc,
                                                 &counts::norms,          &counts::router,
                                                 &counts::shared_experts, &counts::routed_experts,
                                                 &counts::dense_ffn,      &counts::mtp_projections,
                                                 &counts::hash_table};
    static_assert(std::size(members) == static_cast<std::size_t>(tensor_group::hash_table) + 1);
    const auto i = static_cast<std::size_t>(g);
    return i < std::size(members) ? this->*members[i] : hash_table;
  }
};

struct param_breakdown {
  tensor_group_counts main;  // backbone layers and top-level tensors
  tensor_group_counts mtp;   // the MTP module: its decoder layer, projections, norms, HC head
  // Checkpoint view (main and MTP): ue8m0 scale elements, tensor count (weights, scales, tables)
  // and stored bytes at the configured weight formats.
  std::int64_t scale_elements = 0;
  std::int64_t tensor_count = 0;
  std::int64_t checkpoint_bytes = 0;
};

constexpr param_breakdown breakdown_params(const model_config& c) {
  param_breakdown b;
  const auto into = [&b](tensor_group_counts& groups) {
    return [&b, &groups](const tensor_desc& t) {
      groups[t.group] += t.elements();
      b.scale_elements += t.scale_elements();
      b.tensor_count += t.copies * (t.scale_elements() > 0 ? 2 : 1);
      b.checkpoint_bytes += t.stored_bytes();
    };
  };
  for (int l = 0; l < c.n_layers; ++l) for_each_layer_tensor(c, l, into(b.main));
  for_each_top_tensor(c, into(b.main));
  if (c.n_mtp_layers > 0) {
    for_each_layer_tensor(c, c.n_layers, into(b.mtp));
    for_each_mtp_extra_tensor(c, into(b.mtp));
  }
  return b;
}

struct param_counts {
  std::int64_t total = 0;
  // Everything a token touches: all but the routed experts, plus n_experts_per_tok of them per
  // layer. Embedding and head both count (as in total).
  std::int64_t activated = 0;
};

constexpr param_counts count_params(const model_config& c, mtp_mode mtp = mtp_mode::exclude) {
  const param_breakdown b = breakdown_params(c);
  const auto counts = [&c](const tensor_group_counts& g) {
    const std::int64_t per_token = g.routed_experts / c.n_routed_experts * c.n_experts_per_tok;
    return param_counts{g.total(), g.total() - g.routed_experts + per_token};
  };
  param_counts r = counts(b.main);
  if (mtp == mtp_mode::include) {
    const param_counts m = counts(b.mtp);
    r.total += m.total;
    r.activated += m.activated;
  }
  return r;
}

// ---- attention geometry -------------------------------------------------------------------------

// How a layer's attention reads the past; KV bytes and FLOPs both derive from it.
struct attention_geometry {
  std::int64_t window = 0;  // raw sliding-window entries, the query's own token included
  std::int64_t ratio = 0;   // raw tokens per long-range entry; 0: no long-range path
  bool indexed = false;     // long-range entries are chosen by the Lightning Indexer (top-k)
  std::int64_t coff = 0;    // compressor overlap factor: 2 (CSA), 1 (HCA), 0 (no compressor)

  // Long-range entries visible to the query at position tokens - 1: floor(tokens / ratio).
  constexpr std::int64_t entries(std::int64_t tokens) const { return ratio > 0 ? tokens / ratio : 0; }
};

// V3.2's DSA reads indexer-selected raw tokens (ratio 1) with neither window nor compressor.
constexpr attention_geometry geometry_of(const model_config& c, layer_kind kind) {
  if (!is_v4_hybrid(c)) return {0, 1, true, 0};
  switch (kind) {
    case layer_kind::swa:
      return {c.window, 0, false, 0};
    case layer_kind::csa:
      return {c.window, c.csa_ratio, true, 2};
    case layer_kind::hca:
      return {c.window, c.hca_ratio, false, 1};
  }
  return {};
}

// Width of one cached entry as scored (q.k) and as read for the output.
// V4: the shared K=V latent (512). V3.2 absorbed MLA: latent + RoPE key (576) / latent (512).
constexpr std::int64_t score_dim(const model_config& c) {
  return is_v4_hybrid(c) ? c.head_dim : std::int64_t{c.kv_lora_rank} + c.rope_dim;
}
constexpr std::int64_t value_dim(const model_config& c) {
  return is_v4_hybrid(c) ? c.head_dim : c.kv_lora_rank;
}

// ---- KV-cache bytes -----------------------------------------------------------------------------

struct kv_entry_size {
  std::int64_t entry = 0;      // one window or compressed entry
  std::int64_t index_key = 0;  // one indexer key
};

constexpr kv_entry_size kv_entry_bytes(const model_config& c, kv_format f) {
  const std::int64_t dims = score_dim(c), key = c.index_head_dim, rope = c.rope_dim;
  switch (f) {
    case kv_format::f32:
      return {4 * dims, 4 * key};
    case kv_format::bf16:
      return {2 * dims, 2 * key};
    case kv_format::fp8_released:
      break;
  }
  if (is_v4_hybrid(c)) {
    // e4m3 NoPE + bf16 RoPE + one ue8m0 per 64 NoPE values padded to 8 bytes: 448 + 128 + 7 + 1 = 584.
    // Key: e2m1 pairs + one ue8m0 per 32 values: 64 + 4 = 68.
    const std::int64_t nope = c.nope_dim, scales = (ceil_div(nope, 64) + 7) / 8 * 8;
    return {nope + 2 * rope + scales, key / 2 + ceil_div(key, 32)};
  }
  // V3.2: e4m3 latent + one fp32 scale per 128 + bf16 RoPE = 512 + 16 + 128 = 656; key 128 + 4 = 132.
  const std::int64_t kvr = c.kv_lora_rank;
  return {kvr + 4 * ceil_div(kvr, 128) + 2 * rope, key + 4 * ceil_div(key, 128)};
}

// Bytes one sequence holds in one layer.
struct kv_bytes {
  std::int64_t window = 0;      // min(tokens, window) entries (a ring once full)
  std::int64_t compressed = 0;  // floor(tokens / ratio) entries
  std::int64_t indexer = 0;     // floor(tokens / ratio) index keys (indexed layers)
  std::int64_t state = 0;       // compressor tails: fp32 kv + score, fixed size

  constexpr std::int64_t total() const { return window + compressed + indexer + state; }
  // The part that grows with the context (the asymptotic figure of spec §8.3).
  constexpr std::int64_t entries() const { return compressed + indexer; }
  constexpr kv_bytes& operator+=(const kv_bytes& o) {
    window += o.window;
    compressed += o.compressed;
    indexer += o.indexer;
    state += o.state;
    return *this;
  }
};

// The single source of truth for cache sizes: a cache for `tokens` tokens allocates exactly this.
// (V3.2: every layer is the same DSA layer, `kind` does not matter.)
constexpr kv_bytes kv_layer_bytes(const model_config& c, layer_kind kind, kv_format f, std::int64_t tokens) {
  const attention_geometry g = geometry_of(c, kind);
  const kv_entry_size e = kv_entry_bytes(c, f);
  const std::int64_t n = g.entries(tokens);
  // Spec §6.4: kv_state and score_state of (coff*ratio, coff*width) fp32 per compressor, whatever
  // the cache format; CSA layers also run the indexer's compressor (width index_head_dim).
  const std::int64_t widths = c.head_dim + (g.indexed ? c.index_head_dim : 0);
  return {std::min(tokens, g.window) * e.entry, n * e.entry, g.indexed ? n * e.index_key : 0,
          2 * 4 * (g.coff * g.ratio) * (g.coff * widths)};
}

struct kv_sequence {
  std::array<kv_bytes, 3> by_kind{};  // backbone layers, summed per layer_kind
  kv_bytes mtp{};                     // the MTP block's layer

  constexpr kv_bytes backbone() const {
    kv_bytes s;
    for (const kv_bytes& k : by_kind) s += k;
    return s;
  }
  constexpr std::int64_t total(mtp_mode m = mtp_mode::exclude) const {
    return backbone().total() + (m == mtp_mode::include ? mtp.total() : 0);
  }
};

constexpr kv_sequence kv_sequence_bytes(const model_config& c, kv_format f, std::int64_t tokens) {
  kv_sequence s;
  for (int l = 0; l < c.n_layers; ++l) {
    const layer_kind k = layer_kind_of(c, l);
    s.by_kind[static_cast<std::size_t>(k)] += kv_layer_bytes(c, k, f, tokens);
  }
  if (c.n_mtp_layers > 0) s.mtp = kv_layer_bytes(c, layer_kind_of(c, c.n_layers), f, tokens);
  return s;
}

// Backbone bytes per cached token as tokens grow (windows and states are bounded, so they vanish).
constexpr double kv_bytes_per_token(const model_config& c, kv_format f) {
  const kv_entry_size e = kv_entry_bytes(c, f);
  double bytes = 0.0;
  for (int l = 0; l < c.n_layers; ++l) {
    const attention_geometry g = geometry_of(c, layer_kind_of(c, l));
    if (g.ratio > 0)
      bytes += static_cast<double>(e.entry + (g.indexed ? e.index_key : 0)) / static_cast<double>(g.ratio);
  }
  return bytes;
}

// ---- FLOPs per decoded token --------------------------------------------------------------------

// The report's "equivalent FP8 FLOPs": a FLOP at b bits costs b/8 FP8 FLOPs (tensor-core throughput
// doubles as the width halves). Core attention runs in BF16 in both models; linears are FP8 GEMMs
// (V4's FP4 experts take FP8 activations); the indexer is FP4 in V4 and FP8 in V3.2.
struct fp8_weights {
  double core = 2.0;
  double indexer = 1.0;
  double linear = 1.0;
};

constexpr fp8_weights fp8_equivalent_weights(const model_config& c) {
  return {2.0, is_v4_hybrid(c) ? 0.5 : 1.0, 1.0};
}

// Entries one head attends to at context `tokens` (query at position tokens - 1).
constexpr std::int64_t attention_candidates(const model_config& c, layer_kind kind, std::int64_t tokens) {
  const attention_geometry g = geometry_of(c, kind);
  const std::int64_t n = g.entries(tokens);
  return std::min(tokens, g.window) + (g.indexed ? std::min<std::int64_t>(c.index_topk, n) : n);
}

// FLOPs (multiply-add = 2) to decode one token with `tokens` tokens visible, backbone only.
struct token_flops {
  std::int64_t core_attention = 0;  // 2 n_h (score_dim + value_dim) per candidate, all layers
  std::int64_t indexer = 0;         // 2 n_I c_I per visible index entry, indexed layers
  std::int64_t projections = 0;     // 2 x attention parameters: a part of `linear`, shown alone
  std::int64_t linear = 0;          // 2 x (activated parameters - embedding table)
  fp8_weights weights{};

  constexpr std::int64_t attention() const { return core_attention + indexer; }
  constexpr std::int64_t total() const { return core_attention + indexer + linear; }
  constexpr double fp8_equivalent() const {
    return weights.core * static_cast<double>(core_attention) +
           weights.indexer * static_cast<double>(indexer) + weights.linear * static_cast<double>(linear);
  }
};

constexpr token_flops decode_flops(const model_config& c, std::int64_t tokens) {
  token_flops f;
  f.weights = fp8_equivalent_weights(c);
  const std::int64_t per_entry = 2 * std::int64_t{c.n_heads} * (score_dim(c) + value_dim(c));
  const std::int64_t per_key = 2 * std::int64_t{c.index_n_heads} * c.index_head_dim;
  for (int l = 0; l < c.n_layers; ++l) {
    const layer_kind k = layer_kind_of(c, l);
    const attention_geometry g = geometry_of(c, k);
    f.core_attention += per_entry * attention_candidates(c, k, tokens);
    if (g.indexed) f.indexer += per_key * g.entries(tokens);
  }
  const param_breakdown b = breakdown_params(c);
  f.projections = 2 * b.main.attention;
  f.linear = 2 * (count_params(c).activated - b.main.embedding);
  return f;
}

// ---- bytes read per decoded token ---------------------------------------------------------------

// What the decode of one token reads from memory, for a roofline (a decode step is bound by these
// bytes over the machine's read bandwidth).
struct token_read_bytes {
  // Every backbone weight a token uses, as stored (its format and block scales): attention, mHC,
  // norms, the router, the shared experts, the LM head in full; n_experts_per_tok of the
  // n_routed_experts routed experts of each MoE layer; one row of the embedding and of each hash
  // layer's tid2eid table (as the checkpoint stores it, int64). Fractional where a row of a
  // block-quantized embedding takes a share of its scales.
  double weights = 0.0;
  // The KV cache one sequence of `tokens` tokens holds in the backbone (kv_sequence_bytes: window
  // rows, compressed entries, index keys and the compressors' fp32 state), in c.cache_format. An
  // upper bound on what attention reads: a CSA layer reads only the index_topk compressed entries
  // its indexer selects (and every index key).
  std::int64_t kv = 0;

  constexpr double total() const { return weights + static_cast<double>(kv); }
};

// The bytes one decoded token reads with `tokens` (>= 0) tokens in its sequence, the MTP block
// left out (see token_read_bytes).
constexpr token_read_bytes decode_read_bytes(const model_config& c, std::int64_t tokens) {
  token_read_bytes r;
  const auto add = [&](const tensor_desc& t) {
    auto b = static_cast<double>(t.stored_bytes());
    if (t.group == tensor_group::routed_experts)
      b *= static_cast<double>(c.n_experts_per_tok) / static_cast<double>(c.n_routed_experts);
    if (t.group == tensor_group::embedding || t.group == tensor_group::hash_table)
      b /= static_cast<double>(t.rows);
    r.weights += b;
  };
  for (int l = 0; l < c.n_layers; ++l) for_each_layer_tensor(c, l, add);
  for_each_top_tensor(c, add);
  r.kv = kv_sequence_bytes(c, c.cache_format, tokens).total();
  return r;
}

}  // namespace dsv4::config
