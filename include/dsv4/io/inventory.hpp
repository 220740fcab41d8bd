// The tensors a DeepSeek-V4 checkpoint of a given shape holds, by canonical (official) name, with
// shape and accepted dtypes (spec §11.1, §11.2, §10).
//
// Per layer l (prefix `layers.l.`; the MTP block is `mtp.0.` with layer id n_layers), with
// h = hc_mult, mix = (2 + h) * h, c = head_dim, I = moe_inter_dim, E = n_routed_experts:
//   attn_norm.weight, ffn_norm.weight            (d)                       dense
//   hc_{attn,ffn}_fn / _base / _scale            (mix, h*d) / (mix) / (3)  F32
//   attn.wq_a (q_lora, d), attn.wq_b (n_heads*c, q_lora), attn.wkv (c, d),
//   attn.wo_a (o_groups*o_lora, n_heads*c/o_groups), attn.wo_b (d, o_groups*o_lora)   linear
//   attn.q_norm.weight (q_lora), attn.kv_norm.weight (c)                    dense
//   attn.attn_sink (n_heads)                                                F32
//   ratio > 0:  attn.compressor.{wkv,wgate}.weight (k*c, d) dense, .ape (ratio, k*c) F32,
//               .norm.weight (c) dense, with k = 2 for CSA (overlapping windows), 1 for HCA
//   CSA only:   attn.indexer.wq_b (index_heads*index_dim, q_lora) linear,
//               attn.indexer.weights_proj.weight (index_heads, d) dense,
//               attn.indexer.compressor.{wkv,wgate}.weight (2*index_dim, d), .ape (ratio,
//               2*index_dim) F32, .norm.weight (index_dim)
//   ffn.gate.weight (E, d) dense; hash layers ffn.gate.tid2eid (vocab, k) I64 or I32, the
//   others ffn.gate.bias (E) F32
//   ffn.experts.e.{w1,w3} (I, d), .w2 (d, I)                                  expert format
//   ffn.shared_experts.{w1,w3} (n_shared*I, d), .w2 (d, n_shared*I)          linear
// MTP block extras: e_proj, h_proj (d, d) linear; enorm, hnorm, norm (d) dense; hc_head_*.
// Top level: embed.weight, head.weight (vocab, d) dense; norm.weight (d); hc_head_fn (h, h*d),
// hc_head_base (h), hc_head_scale (1) F32.
//
// A "linear" or "expert format" tensor is `X.weight` in its format: f32/bf16 -> one dense
// tensor; fp8_e4m3_block128 -> `X.weight` F8_E4M3 (out, in) + `X.scale` F8_E8M0
// (ceil(out/128), ceil(in/128)); fp4_e2m1_block32 -> `X.weight` I8 (out, in/2) + `X.scale`
// F8_E8M0 (out, in/32). Dense tensors may be F32 or BF16 (transformers keeps some in F32 in a BF16
// model). For V4-Pro this list has 145,116 entries, the count of the released inventory.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/config/model_config.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/io/safetensors.hpp"

namespace dsv4::io {

enum class tensor_kind : std::uint8_t {
  dense,       // F32 or BF16
  fp32,        // F32
  fp8_weight,  // F8_E4M3
  fp4_weight,  // I8, two E2M1 a byte
  scale,       // F8_E8M0, or F32 holding powers of two (transformers' scale_fmt "float")
  ids,         // I64 or I32
};

namespace detail {
// What each kind accepts, in tensor_kind order: one or two stored dtypes and how a message says so.
struct kind_dtypes {
  dtype first, second;
  std::string_view text;
};
inline constexpr std::array<kind_dtypes, 6> kind_table{{
    {dtype::f32, dtype::bf16, "F32 or BF16"},                        // dense
    {dtype::f32, dtype::f32, "F32"},                                 // fp32
    {dtype::f8_e4m3, dtype::f8_e4m3, "F8_E4M3"},                     // fp8_weight
    {dtype::i8, dtype::i8, "I8 (packed FP4)"},                       // fp4_weight
    {dtype::f8_e8m0, dtype::f32, "F8_E8M0 (or F32 powers of two)"},  // scale
    {dtype::i64, dtype::i32, "I64 or I32"},                          // ids
}};
static_assert(kind_table.size() == static_cast<std::size_t>(tensor_kind::ids) + 1);
}  // namespace detail

// Whether a stored dtype is acceptable for a kind.
constexpr bool accepts(tensor_kind k, dtype t) {
  const auto i = static_cast<std::size_t>(k);
  return i < detail::kind_table.size() &&
         (t == detail::kind_table[i].first || t == detail::kind_table[i].second);
}

constexpr std::string_view accepted_dtypes(tensor_kind k) {
  const auto i = static_cast<std::size_t>(k);
  return i < detail::kind_table.size() ? detail::kind_table[i].text : "?";
}

struct expected_tensor {
  std::string name;  // canonical
  tensor_kind kind = tensor_kind::dense;
  std::vector<std::int64_t> shape;
};

namespace detail {

class inventory_builder {
 public:
  explicit inventory_builder(const model_shape& s) : s_(s) {}
  std::vector<expected_tensor> out;

  void add(std::string name, tensor_kind k, std::vector<std::int64_t> shape) {
    out.push_back({std::move(name), k, std::move(shape)});
  }
  void linear(const std::string& prefix, config::weight_format f, std::int64_t rows, std::int64_t cols) {
    switch (f) {
      case config::weight_format::f32:
      case config::weight_format::bf16:
        add(prefix + ".weight", tensor_kind::dense, {rows, cols});
        break;
      case config::weight_format::fp8_e4m3_block128:
        add(prefix + ".weight", tensor_kind::fp8_weight, {rows, cols});
        add(prefix + ".scale", tensor_kind::scale, {(rows + 127) / 128, (cols + 127) / 128});
        break;
      case config::weight_format::fp4_e2m1_block32:
        add(prefix + ".weight", tensor_kind::fp4_weight, {rows, cols / 2});
        add(prefix + ".scale", tensor_kind::scale, {rows, cols / 32});
        break;
    }
  }
  void block(const std::string& p, int layer, bool mtp) {
    const model_shape& s = s_;
    const std::int64_t d = s.d_model, h = s.hc_mult, mix = (2 + h) * h, c = s.head_dim;
    const std::int64_t heads_c = std::int64_t{s.n_heads} * c,
                       o_rows = std::int64_t{s.o_groups} * s.o_lora_rank;
    add(p + "attn_norm.weight", tensor_kind::dense, {d});
    add(p + "ffn_norm.weight", tensor_kind::dense, {d});
    for (const char* site : {"attn", "ffn"}) {
      add(p + "hc_" + site + "_fn", tensor_kind::fp32, {mix, h * d});
      add(p + "hc_" + site + "_base", tensor_kind::fp32, {mix});
      add(p + "hc_" + site + "_scale", tensor_kind::fp32, {3});
    }
    linear(p + "attn.wq_a", s.linear_format, s.q_lora_rank, d);
    add(p + "attn.q_norm.weight", tensor_kind::dense, {s.q_lora_rank});
    linear(p + "attn.wq_b", s.linear_format, heads_c, s.q_lora_rank);
    linear(p + "attn.wkv", s.linear_format, c, d);
    add(p + "attn.kv_norm.weight", tensor_kind::dense, {c});
    linear(p + "attn.wo_a", s.linear_format, o_rows, s.o_groups > 0 ? heads_c / s.o_groups : 0);
    linear(p + "attn.wo_b", s.linear_format, d, o_rows);
    add(p + "attn.attn_sink", tensor_kind::fp32, {s.n_heads});
    const int ratio = s.compress_ratios[static_cast<std::size_t>(layer)];
    if (ratio > 0) {
      const std::int64_t k = ratio == s.csa_ratio ? 2 : 1;
      add(p + "attn.compressor.wkv.weight", tensor_kind::dense, {k * c, d});
      add(p + "attn.compressor.wgate.weight", tensor_kind::dense, {k * c, d});
      add(p + "attn.compressor.ape", tensor_kind::fp32, {ratio, k * c});
      add(p + "attn.compressor.norm.weight", tensor_kind::dense, {c});
      if (ratio == s.csa_ratio) {
        const std::int64_t ic = s.index_head_dim;
        linear(p + "attn.indexer.wq_b", s.linear_format, std::int64_t{s.index_n_heads} * ic, s.q_lora_rank);
        add(p + "attn.indexer.weights_proj.weight", tensor_kind::dense, {s.index_n_heads, d});
        add(p + "attn.indexer.compressor.wkv.weight", tensor_kind::dense, {2 * ic, d});
        add(p + "attn.indexer.compressor.wgate.weight", tensor_kind::dense, {2 * ic, d});
        add(p + "attn.indexer.compressor.ape", tensor_kind::fp32, {ratio, 2 * ic});
        add(p + "attn.indexer.compressor.norm.weight", tensor_kind::dense, {ic});
      }
    }
    add(p + "ffn.gate.weight", tensor_kind::dense, {s.n_routed_experts, d});
    if (!mtp && layer < s.n_hash_layers)
      add(p + "ffn.gate.tid2eid", tensor_kind::ids, {s.vocab_size, s.n_experts_per_tok});
    else
      add(p + "ffn.gate.bias", tensor_kind::fp32, {s.n_routed_experts});
    for (int e = 0; e < s.n_routed_experts; ++e) {
      const std::string ep = p + "ffn.experts." + std::to_string(e) + ".";
      linear(ep + "w1", s.expert_format, s.moe_inter_dim, d);
      linear(ep + "w2", s.expert_format, d, s.moe_inter_dim);
      linear(ep + "w3", s.expert_format, s.moe_inter_dim, d);
    }
    if (s.n_shared_experts > 0) {
      const std::int64_t w = std::int64_t{s.n_shared_experts} * s.moe_inter_dim;
      linear(p + "ffn.shared_experts.w1", s.linear_format, w, d);
      linear(p + "ffn.shared_experts.w2", s.linear_format, d, w);
      linear(p + "ffn.shared_experts.w3", s.linear_format, w, d);
    }
    if (mtp) {
      linear(p + "e_proj", s.linear_format, d, d);
      linear(p + "h_proj", s.linear_format, d, d);
      add(p + "enorm.weight", tensor_kind::dense, {d});
      add(p + "hnorm.weight", tensor_kind::dense, {d});
      head(p);
    }
  }
  void head(const std::string& p) {
    const std::int64_t d = s_.d_model, h = s_.hc_mult;
    add(p + "norm.weight", tensor_kind::dense, {d});
    add(p + "hc_head_fn", tensor_kind::fp32, {h, h * d});
    add(p + "hc_head_base", tensor_kind::fp32, {h});
    add(p + "hc_head_scale", tensor_kind::fp32, {1});
  }

 private:
  const model_shape& s_;
};

}  // namespace detail

// The full inventory of a checkpoint of shape `s` (which should pass check_rules), the MTP block
// included when with_mtp and s.n_mtp_layers > 0. Order: top level, then layers, then MTP.
inline std::vector<expected_tensor> expected_tensors(const model_shape& s, bool with_mtp) {
  detail::inventory_builder b(s);
  b.add("embed.weight", tensor_kind::dense, {s.vocab_size, s.d_model});
  b.add("head.weight", tensor_kind::dense, {s.vocab_size, s.d_model});
  b.head("");
  for (int l = 0; l < s.n_layers; ++l) b.block("layers." + std::to_string(l) + ".", l, false);
  if (with_mtp)
    for (int m = 0; m < s.n_mtp_layers; ++m) b.block("mtp." + std::to_string(m) + ".", s.n_layers + m, true);
  return std::move(b.out);
}

}  // namespace dsv4::io
