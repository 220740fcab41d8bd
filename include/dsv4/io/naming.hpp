// The three ways a DeepSeek-V4 checkpoint names its tensors, and the mapping between them
// (spec §11.1, §11.3; docs/checkpoints.md has the table).
//
//   official    the released checkpoints and the official inference code: `embed.weight`,
//               `layers.3.attn.wq_a.weight` with its `layers.3.attn.wq_a.scale`,
//               `layers.3.ffn.experts.17.w1.weight`, `mtp.0.e_proj.weight`, `hc_head_fn`.
//               This is the canonical form: every lookup of the library uses it.
//   hf_modules  transformers' module names (`DeepseekV4ForCausalLM.state_dict()`):
//               `model.layers.3.self_attn.q_a_proj.weight`, routed experts fused into
//               `model.layers.3.mlp.experts.gate_up_proj` (E, 2I, d) (rows [0, I) are w1, [I, 2I) w3)
//               and `...experts.down_proj` (E, d, I), `lm_head.weight`. Block scales follow
//               transformers' fine-grained FP8 convention: `X.weight_scale_inv`, and for the fused
//               experts `mlp.experts.gate_up_proj_scale_inv` (E, 2R, C) (halves as for the weights)
//               and `mlp.experts.down_proj_scale_inv` (transformers 5.25 FP8Linear / FP8Experts).
// In every scheme a block scale may be spelled `X.weight_scale_inv` instead of `X.scale`: in spite
// of its name it is the same multiplier (real weight = stored * scale_inv; transformers calls it
// the inverse of its quantization factor 448 / amax), so both map to the canonical `X.scale`.
//   hf_saved    what transformers 5.25's `save_pretrained` writes by default: it reverses its
//               conversion table, giving the official leaf names under `model.layers.N.`, with
//               `model.embed_tokens.weight`, `model.norm.weight`, `model.hc_head.hc_{fn,base,scale}`,
//               `head.weight`, and one irregular leaf: the attention's KV norm is `attn.norm.weight`
//               (official `attn.kv_norm.weight`). Checked on tests/fixtures/tiny_v4.
// transformers builds no MTP block, so `mtp.*` names are the same in every scheme.
//
// Everything here is string work on names; checkpoint.hpp applies it to files.
#pragma once

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/core/status.hpp"

namespace dsv4::io {

enum class naming_scheme : std::uint8_t { official, hf_modules, hf_saved };

constexpr std::string_view to_string(naming_scheme s) {
  constexpr std::array<std::string_view, 3> names{"official", "transformers modules",
                                                  "transformers save_pretrained"};
  const auto i = static_cast<std::size_t>(s);
  return i < names.size() ? names[i] : "?";
}

// Where a canonical tensor lives in a file: a whole stored tensor, or a part of a fused experts
// tensor (hf_modules only).
enum class fused_part : std::uint8_t {
  whole,
  gate_rows,  // w1 of expert e: gate_up_proj[e, 0:I, :]
  up_rows,    // w3 of expert e: gate_up_proj[e, I:2I, :]
  expert,     // w2 of expert e: down_proj[e]
};

struct stored_name {
  std::string name;  // the name in the file's scheme
  fused_part part = fused_part::whole;
  std::int64_t expert = -1;  // for the fused parts
};

namespace detail {

// Per-layer modules: official leaf (without .weight / .scale) -> transformers module path.
struct leaf_pair {
  std::string_view official, module;
};
inline constexpr std::array<leaf_pair, 21> module_leaves{{
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
    {"attn.wq_a", "self_attn.q_a_proj"},
    {"attn.q_norm", "self_attn.q_a_norm"},
    {"attn.wq_b", "self_attn.q_b_proj"},
    {"attn.wkv", "self_attn.kv_proj"},
    {"attn.kv_norm", "self_attn.kv_norm"},
    {"attn.wo_a", "self_attn.o_a_proj"},
    {"attn.wo_b", "self_attn.o_b_proj"},
    {"attn.compressor.wkv", "self_attn.compressor.kv_proj"},
    {"attn.compressor.wgate", "self_attn.compressor.gate_proj"},
    {"attn.compressor.norm", "self_attn.compressor.kv_norm"},
    {"attn.indexer.wq_b", "self_attn.compressor.indexer.q_b_proj"},
    {"attn.indexer.weights_proj", "self_attn.compressor.indexer.scorer.weights_proj"},
    {"attn.indexer.compressor.wkv", "self_attn.compressor.indexer.kv_proj"},
    {"attn.indexer.compressor.wgate", "self_attn.compressor.indexer.gate_proj"},
    {"attn.indexer.compressor.norm", "self_attn.compressor.indexer.kv_norm"},
    {"ffn.gate", "mlp.gate"},
    {"ffn.shared_experts.w1", "mlp.shared_experts.gate_proj"},
    {"ffn.shared_experts.w3", "mlp.shared_experts.up_proj"},
    {"ffn.shared_experts.w2", "mlp.shared_experts.down_proj"},
}};
// Per-layer parameters (full leaf names).
inline constexpr std::array<leaf_pair, 11> param_leaves{{
    {"hc_attn_fn", "attn_hc.fn"},
    {"hc_attn_base", "attn_hc.base"},
    {"hc_attn_scale", "attn_hc.scale"},
    {"hc_ffn_fn", "ffn_hc.fn"},
    {"hc_ffn_base", "ffn_hc.base"},
    {"hc_ffn_scale", "ffn_hc.scale"},
    {"attn.attn_sink", "self_attn.sinks"},
    {"attn.compressor.ape", "self_attn.compressor.position_bias"},
    {"attn.indexer.compressor.ape", "self_attn.compressor.indexer.position_bias"},
    {"ffn.gate.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn.gate.tid2eid", "mlp.gate.tid2eid"},
}};
// Top-level tensors: official, hf_modules, hf_saved.
struct top_triple {
  std::string_view official, modules, saved;
};
inline constexpr std::array<top_triple, 6> top_names{{
    {"embed.weight", "model.embed_tokens.weight", "model.embed_tokens.weight"},
    {"head.weight", "lm_head.weight", "head.weight"},
    {"norm.weight", "model.norm.weight", "model.norm.weight"},
    {"hc_head_fn", "model.hc_head.hc_fn", "model.hc_head.hc_fn"},
    {"hc_head_base", "model.hc_head.hc_base", "model.hc_head.hc_base"},
    {"hc_head_scale", "model.hc_head.hc_scale", "model.hc_head.hc_scale"},
}};

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// "layers.12.rest" -> (12, "rest") with the given prefix ("layers." or "model.layers.").
inline bool split_layer(std::string_view name, std::string_view prefix, std::int64_t& layer,
                        std::string_view& rest) {
  if (!starts_with(name, prefix)) return false;
  const std::string_view tail = name.substr(prefix.size());
  const auto dot = tail.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 9) return false;
  const std::string_view digits = tail.substr(0, dot);
  if (digits.size() > 1 && digits[0] == '0') return false;  // one spelling per number
  for (char ch : digits)
    if (ch < '0' || ch > '9') return false;  // from_chars would take a sign
  const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), layer);
  if (ec != std::errc() || p != digits.data() + digits.size()) return false;
  rest = tail.substr(dot + 1);
  return true;
}

// "ffn.experts.E.wK.weight" -> (E, K).
inline bool split_expert(std::string_view leaf, std::int64_t& expert, int& which) {
  std::int64_t e = 0;
  std::string_view rest;
  if (!split_layer(leaf, "ffn.experts.", e, rest)) return false;
  if (rest == "w1.weight")
    which = 1;
  else if (rest == "w2.weight")
    which = 2;
  else if (rest == "w3.weight")
    which = 3;
  else
    return false;
  expert = e;
  return true;
}

// A module's parameters: the official suffix and the transformers one.
inline constexpr std::array<leaf_pair, 2> leaf_suffixes{
    {{".weight", ".weight"}, {".scale", ".weight_scale_inv"}}};

// Maps a leaf between the two spellings: official to transformers modules (to_module) or back.
inline std::optional<std::string> map_leaf(std::string_view leaf, bool to_module) {
  const auto from = [&](const leaf_pair& p) { return to_module ? p.official : p.module; };
  const auto to = [&](const leaf_pair& p) { return to_module ? p.module : p.official; };
  for (const auto& p : param_leaves)
    if (leaf == from(p)) return std::string(to(p));
  for (const auto& s : leaf_suffixes) {
    const std::string_view suffix = from(s);
    if (leaf.size() > suffix.size() && leaf.ends_with(suffix)) {
      const auto base = leaf.substr(0, leaf.size() - suffix.size());
      for (const auto& p : module_leaves)
        if (base == from(p)) return std::string(to(p)) + std::string(to(s));
    }
  }
  return std::nullopt;
}

inline std::optional<std::string> leaf_to_module(std::string_view leaf) { return map_leaf(leaf, true); }
inline std::optional<std::string> module_to_leaf(std::string_view leaf) { return map_leaf(leaf, false); }

}  // namespace detail

// The name of canonical (official) tensor `canonical` in `scheme`, or nullopt when the scheme has
// no name for it (an unknown leaf in a transformers scheme). Scales are named `X.scale` except in
// hf_modules (`weight_scale_inv`, fused for routed experts).
inline std::optional<stored_name> to_scheme(std::string_view canonical, naming_scheme scheme) {
  if (scheme == naming_scheme::official || detail::starts_with(canonical, "mtp.")) {
    return stored_name{std::string(canonical)};
  }
  for (const auto& t : detail::top_names)
    if (canonical == t.official)
      return stored_name{std::string(scheme == naming_scheme::hf_modules ? t.modules : t.saved)};
  std::int64_t layer = 0;
  std::string_view leaf;
  if (!detail::split_layer(canonical, "layers.", layer, leaf)) return std::nullopt;
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  if (scheme == naming_scheme::hf_saved) {
    if (leaf == "attn.kv_norm.weight") return stored_name{prefix + "attn.norm.weight"};
    if (leaf == "attn.norm.weight") return std::nullopt;  // the official form has no such tensor
    return stored_name{prefix + std::string(leaf)};
  }
  std::int64_t expert = 0;
  int which = 0;
  const bool expert_scale = leaf.ends_with(".scale");
  const std::string expert_leaf =
      expert_scale ? std::string(leaf.substr(0, leaf.size() - 6)) + ".weight" : std::string(leaf);
  if (detail::split_expert(expert_leaf, expert, which)) {
    const std::string suffix = expert_scale ? "_scale_inv" : "";
    if (which == 2) return stored_name{prefix + "mlp.experts.down_proj" + suffix, fused_part::expert, expert};
    return stored_name{prefix + "mlp.experts.gate_up_proj" + suffix,
                       which == 1 ? fused_part::gate_rows : fused_part::up_rows, expert};
  }
  auto module = detail::leaf_to_module(leaf);
  if (!module) return std::nullopt;
  return stored_name{prefix + *module};
}

// The canonical name of stored tensor `stored` of `scheme`, for tensors stored whole; nullopt for
// names the scheme does not define and for the fused experts tensors (see is_fused_experts).
inline std::optional<std::string> to_canonical(std::string_view stored, naming_scheme scheme) {
  constexpr std::string_view scale_inv = ".weight_scale_inv";
  if (stored.size() > scale_inv.size() && stored.ends_with(scale_inv)) {  // X.weight_scale_inv -> X.scale
    auto weight =
        to_canonical(std::string(stored.substr(0, stored.size() - scale_inv.size())) + ".weight", scheme);
    if (!weight || !weight->ends_with(".weight")) return std::nullopt;
    weight->resize(weight->size() - 7);
    return *weight + ".scale";
  }
  if (scheme == naming_scheme::official || detail::starts_with(stored, "mtp.")) return std::string(stored);
  for (const auto& t : detail::top_names)
    if (stored == (scheme == naming_scheme::hf_modules ? t.modules : t.saved)) return std::string(t.official);
  std::int64_t layer = 0;
  std::string_view leaf;
  if (!detail::split_layer(stored, "model.layers.", layer, leaf)) return std::nullopt;
  const std::string prefix = "layers." + std::to_string(layer) + ".";
  if (scheme == naming_scheme::hf_saved) {
    if (leaf == "attn.norm.weight") return prefix + "attn.kv_norm.weight";
    if (leaf == "attn.kv_norm.weight") return std::nullopt;
    return prefix + std::string(leaf);
  }
  auto official = detail::module_to_leaf(leaf);
  if (!official) return std::nullopt;
  return prefix + *official;
}

// For hf_modules: whether `stored` is a fused experts tensor, and which layer and kind
// (gate_up: true for gate_up_proj, false for down_proj; scale: the `_scale_inv` companion).
inline bool is_fused_experts(std::string_view stored, naming_scheme scheme, std::int64_t& layer,
                             bool& gate_up, bool& scale) {
  if (scheme != naming_scheme::hf_modules) return false;
  std::string_view leaf;
  if (!detail::split_layer(stored, "model.layers.", layer, leaf)) return false;
  scale = leaf.ends_with("_scale_inv");
  if (scale) leaf.remove_suffix(10);
  if (leaf == "mlp.experts.gate_up_proj") {
    gate_up = true;
    return true;
  }
  if (leaf == "mlp.experts.down_proj") {
    gate_up = false;
    return true;
  }
  return false;
}
// The fused experts weights only (not their scales).
inline bool is_fused_experts(std::string_view stored, naming_scheme scheme, std::int64_t& layer,
                             bool& gate_up) {
  bool scale = false;
  return is_fused_experts(stored, scheme, layer, gate_up, scale) && !scale;
}

// The scheme of a file from the names it holds:
//   hf_modules  a `model.layers.N.` name with a transformers module (`self_attn.`, `mlp.`, ...)
//               or `lm_head.weight`;
//   hf_saved    other `model.` names;
//   official    no `model.` names.
// A file that holds both `model.`-prefixed names and official top-level or `layers.N.` names
// mixes schemes, and is rejected.
template <class Names>
result<naming_scheme> detect_scheme(const Names& names, std::string_view file) {
  bool modules = false, prefixed = false, bare = false;
  std::string bare_example, prefixed_example;
  for (const auto& n : names) {
    const std::string_view s = n;
    if (detail::starts_with(s, "model.") || s == "lm_head.weight") {
      prefixed = true;
      if (prefixed_example.empty()) prefixed_example = std::string(s);
      std::int64_t layer = 0;
      std::string_view leaf;
      if (s == "lm_head.weight" ||
          (detail::split_layer(s, "model.layers.", layer, leaf) &&
           (detail::starts_with(leaf, "self_attn.") || detail::starts_with(leaf, "mlp.") ||
            detail::starts_with(leaf, "attn_hc.") || detail::starts_with(leaf, "ffn_hc.") ||
            detail::starts_with(leaf, "input_layernorm.") ||
            detail::starts_with(leaf, "post_attention_layernorm."))))
        modules = true;
    } else if (detail::starts_with(s, "layers.") || s == "embed.weight" || s == "norm.weight" ||
               detail::starts_with(s, "hc_head_")) {
      bare = true;
      if (bare_example.empty()) bare_example = std::string(s);
    }
  }
  if (prefixed && bare)
    return status{errc::io_error, std::string(file) + ": mixes naming schemes (" + prefixed_example +
                                      " and " + bare_example + ")"};
  if (modules) return naming_scheme::hf_modules;
  if (prefixed) return naming_scheme::hf_saved;
  return naming_scheme::official;
}

}  // namespace dsv4::io
