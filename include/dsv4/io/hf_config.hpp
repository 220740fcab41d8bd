// config.json of a DeepSeek-V4 checkpoint (Hugging Face `DeepseekV4Config`) -> model_shape and
// config::model_params (spec §1.1, §16.7, §16.8, §18.2).
//
// Three spellings of the same config exist, and all are read by one entry point (parse_hf_config,
// read_hf_config), which tells them apart by their keys:
//   released   (the deepseek-ai repos)  `compress_ratios` [n_layers + 1 ints, the last is the MTP
//              block's], `num_hash_layers`, `qk_rope_head_dim`, `rope_scaling` {type: yarn, ...},
//              `quantization_config` {quant_method: fp8, weight_block_size: [128, 128]} and
//              `expert_dtype` (fp4 | fp8);
//   transformers (save_pretrained)     `layer_types` [n_layers names] with `compress_rates`
//              {compressed_sparse_attention: 4, heavily_compressed_attention: 128},
//              `mlp_layer_types` [hash_moe | moe], `partial_rotary_factor`, `rope_parameters`
//              {main: {...}, compress: {rope_type: yarn, ...}}, `dtype`.
//   inference  (the repos' inference/config.json, the official code's ModelArgs fields) `dim`,
//              `n_layers`, `n_heads`, `moe_inter_dim`, `n_activated_experts`, `n_hash_layers`,
//              `rope_head_dim`, `window_size`, `score_func`, `route_scale`, `norm_eps`,
//              `rope_factor` / `original_seq_len` / `beta_fast` / `beta_slow` (YaRN when
//              original_seq_len > 0), `dtype` (fp8 | bf16), `expert_dtype` (fp4 | null: as dtype),
//              `scale_fmt`, `scale_dtype`; every other key is an error, as in that code
//              (ModelArgs(**json)). Shape integers are required except n_mtp_layers (1); the
//              numbers missing take that code's defaults (spec §18.2: norm_eps and hc_eps 1e-6,
//              scale_dtype fp8, which implies ue8m0 scales; also route_scale 1, swiglu_limit 0,
//              compress_rope_theta 40000, original_seq_len 0, ...); max_seq_len and max_batch_size
//              are run-time limits (max_seq_len lands in model_params when given). Activation
//              scales must be powers of two (scale_dtype fp8 or scale_fmt ue8m0).
// read_hf_config(dir) reads dir/config.json, else dir/inference/config.json (config_path).
// The Hugging Face spellings, rules (where a key has both forms the released one wins, as in
// transformers):
//   - every integer the shape needs is required (a missing `hidden_size` is an error naming the key;
//     transformers would silently take V4-Flash's value);
//   - the schedule comes from compress_ratios (n_layers entries get the MTP block's 0 appended),
//     else from layer_types, else from transformers' default ([HCA, HCA] + [HCA, CSA] * ...,
//     spec §16.7); the MTP block is SWA (spec §10);
//   - hash layers: num_hash_layers, else the leading `hash_moe` entries of mlp_layer_types (a
//     hash_moe after a moe layer is an error), else 3;
//   - rope_dim: qk_rope_head_dim, else partial_rotary_factor * head_dim (must be an integer), else
//     head_dim / 8 (transformers' default 64/512);
//   - YaRN applies to compressed layers when rope_scaling / rope_parameters.compress has type yarn;
//     otherwise model_params::yarn_original_seq_len = 0 (no YaRN);
//   - formats: quantization_config fp8 -> FP8 block-128 linears, experts per expert_dtype (fp4:
//     FP4 block-32; fp8 or absent: FP8), other tensors bf16; without quantization, dtype
//     (or torch_dtype) float32 / bfloat16 sets all three;
//   - n_mtp_layers: num_nextn_predict_layers, else 1 (spec §18.2).
// Settings with one supported value are checked when present: num_key_value_heads 1, scoring_func
// sqrtsoftplus, hidden_act silu, norm_topk_prob true, no tied embeddings, no biases.
// The result passes the run-time form of config::validate's rules (check_rules) and
// config::check_params (bos_token_id / eos_token_id, the first of a list, land in model_params).
// The settings both spellings carry are read from one table of (Hugging Face key, inference key,
// field, bounds): shape_ints and param_floats, so that a bound or a default cannot differ between
// the two readers; what only one spelling has (token ids, rope_dim from partial_rotary_factor,
// layer_types, mlp_layer_types, the formats) is read in a step named by the table.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/io/safetensors.hpp"

namespace dsv4::io {

struct hf_config {
  model_shape shape;
  config::model_params params;
};

inline constexpr std::uintmax_t max_config_bytes = std::uintmax_t{16} << 20;

namespace detail {

class config_reader {
 public:
  config_reader(const nlohmann::json& j, std::string_view source) : j_(j), source_(source) {}

  status error(std::string_view what) const {
    return {errc::invalid_argument, std::string(source_) + ": " + std::string(what)};
  }
  [[nodiscard]] const nlohmann::json* find(std::string_view key) const {
    const auto it = j_.find(std::string(key));
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  // An integer in [lo, hi]; missing -> `fallback` when given, else an error naming the key.
  status get_int(std::string_view key, int& out, int lo, int hi,
                 std::optional<int> fallback = std::nullopt) const {
    const nlohmann::json* v = find(key);
    if (v == nullptr) {
      if (!fallback) return error("missing " + std::string(key));
      out = *fallback;
      return {};
    }
    return int_value(*v, std::string(key), out, lo, hi);
  }
  status int_value(const nlohmann::json& v, const std::string& what, int& out, int lo, int hi) const {
    if (!v.is_number_integer())
      return error(what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    if (v.is_number_unsigned() ? v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi)
                               : (v.get<std::int64_t>() < lo || v.get<std::int64_t>() > hi))
      return error(what + " = " + v.dump() + " is outside [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
    out = static_cast<int>(v.get<std::int64_t>());
    return {};
  }
  // A finite number (integer or float); missing -> keeps `out`.
  status get_float(const nlohmann::json& obj, std::string_view key, float& out, std::string_view what) const {
    const auto it = obj.find(std::string(key));
    if (it == obj.end() || it->is_null()) return {};
    if (!it->is_number() || !std::isfinite(it->get<double>()))
      return error(std::string(what) + " must be a finite number");
    out = static_cast<float>(it->get<double>());
    return {};
  }
  status get_float(std::string_view key, float& out) const { return get_float(j_, key, out, key); }
  status get_string(const nlohmann::json& obj, std::string_view key, std::string& out,
                    std::string_view what) const {
    const auto it = obj.find(std::string(key));
    if (it == obj.end() || it->is_null()) return {};
    if (!it->is_string()) return error(std::string(what) + " must be a string");
    out = it->get<std::string>();
    return {};
  }

 private:
  const nlohmann::json& j_;
  std::string_view source_;
};

inline constexpr int max_dim = 1 << 30;

inline status read_schedule(const config_reader& r, model_shape& s,
                            std::string_view layers_key = "num_hidden_layers") {
  const int n = s.n_layers;
  const std::string layers(layers_key);
  // compress_rates (transformers) or the legacy scalars.
  s.csa_ratio = 4;
  s.hca_ratio = 128;
  bool rates_given = false;
  if (const auto* rates = r.find("compress_rates")) {
    if (!rates->is_object()) return r.error("compress_rates must be an object");
    for (const auto& [k, v] : rates->items()) {
      if (k == "compressed_sparse_attention") {
        DSV4_TRY(r.int_value(v, "compress_rates.compressed_sparse_attention", s.csa_ratio, 1, max_dim));
      } else if (k == "heavily_compressed_attention") {
        DSV4_TRY(r.int_value(v, "compress_rates.heavily_compressed_attention", s.hca_ratio, 1, max_dim));
      } else {
        return r.error("compress_rates has an unknown layer type \"" + k + "\"");
      }
    }
    rates_given = true;
  }
  if (r.find("compress_rate_csa") || r.find("compress_rate_hca")) {
    DSV4_TRY(r.get_int("compress_rate_csa", s.csa_ratio, 1, max_dim, s.csa_ratio));
    DSV4_TRY(r.get_int("compress_rate_hca", s.hca_ratio, 1, max_dim, s.hca_ratio));
    rates_given = true;
  }
  s.n_schedule = n + 1;
  s.compress_ratios = {};
  if (const auto* ratios = r.find("compress_ratios")) {
    if (!ratios->is_array() ||
        (ratios->size() != static_cast<std::size_t>(n) && ratios->size() != static_cast<std::size_t>(n) + 1))
      return r.error("compress_ratios must be a list of " + layers + " or " + layers + " + 1 integers");
    int lo = 0, hi = 0;
    for (std::size_t l = 0; l < ratios->size(); ++l) {
      int v = 0;
      DSV4_TRY(r.int_value((*ratios)[l], "compress_ratios[" + std::to_string(l) + "]", v, 0, max_dim));
      s.compress_ratios[l] = v;
      if (v != 0) {
        lo = lo == 0 ? v : std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
    if (!rates_given && lo != 0) {  // the ratios name the two kinds themselves
      if (lo != hi) {
        s.csa_ratio = lo;
        s.hca_ratio = hi;
      } else if (lo != s.hca_ratio) {
        s.csa_ratio = lo;
      }
    }
    return {};
  }
  if (const auto* types = r.find("layer_types")) {
    if (!types->is_array() || types->size() != static_cast<std::size_t>(n))
      return r.error("layer_types must be a list of num_hidden_layers names");
    for (std::size_t l = 0; l < types->size(); ++l) {
      const auto& t = (*types)[l];
      const std::string name = t.is_string() ? t.get<std::string>() : t.dump();
      if (name == "sliding_attention")
        s.compress_ratios[l] = 0;
      else if (name == "compressed_sparse_attention")
        s.compress_ratios[l] = s.csa_ratio;
      else if (name == "heavily_compressed_attention")
        s.compress_ratios[l] = s.hca_ratio;
      else
        return r.error("layer_types[" + std::to_string(l) + "] = " + name +
                       " is not a DeepSeek-V4 layer type");
    }
    return {};
  }
  // transformers' default when neither is given (spec §16.7): [HCA, HCA] + [HCA, CSA, HCA, ...].
  for (int l = 0; l < n; ++l)
    s.compress_ratios[static_cast<std::size_t>(l)] = l < 2 || (l - 2) % 2 == 0 ? s.hca_ratio : s.csa_ratio;
  return {};
}

// Both spellings name one setting by two keys: Hugging Face's and the inference code's.
enum class spelling : std::uint8_t { hf, inference };

// n_hash_layers: num_hash_layers / n_hash_layers (required in the inference spelling), else the
// leading hash_moe entries of mlp_layer_types, else 3.
inline status read_hash_layers(const config_reader& r, spelling sp, model_shape& s) {
  const std::string_view key = sp == spelling::hf ? "num_hash_layers" : "n_hash_layers";
  if (sp == spelling::inference || r.find(key)) return r.get_int(key, s.n_hash_layers, 0, s.n_layers);
  if (const auto* types = r.find("mlp_layer_types")) {
    if (!types->is_array() || types->size() != static_cast<std::size_t>(s.n_layers))
      return r.error("mlp_layer_types must be a list of num_hidden_layers names");
    int leading = 0;
    bool seen_moe = false;
    for (std::size_t l = 0; l < types->size(); ++l) {
      const auto& t = (*types)[l];
      const std::string name = t.is_string() ? t.get<std::string>() : t.dump();
      if (name == "hash_moe") {
        if (seen_moe)
          return r.error("mlp_layer_types[" + std::to_string(l) +
                         "] is hash_moe after a moe layer; hash routing must lead the schedule");
        ++leading;
      } else if (name == "moe") {
        seen_moe = true;
      } else {
        return r.error("mlp_layer_types[" + std::to_string(l) + "] = " + name + " is not hash_moe or moe");
      }
    }
    s.n_hash_layers = leading;
    return {};
  }
  s.n_hash_layers = std::min(3, s.n_layers);
  return {};
}

// YaRN from rope_scaling (released) or rope_parameters.compress / a flat rope_parameters
// (transformers); the compressed layers' theta may also sit in rope_parameters.compress.
inline status read_rope(const config_reader& r, model_shape& /*s*/, config::model_params& p) {
  const nlohmann::json* yarn = nullptr;
  std::string what;
  if (const auto* rs = r.find("rope_scaling")) {
    if (!rs->is_object()) return r.error("rope_scaling must be an object");
    yarn = rs;
    what = "rope_scaling";
  } else if (const auto* rp = r.find("rope_parameters")) {
    if (!rp->is_object()) return r.error("rope_parameters must be an object");
    if (rp->contains("main") || rp->contains("compress")) {
      const auto main = rp->find("main");
      const auto compress = rp->find("compress");
      if (main != rp->end()) {
        if (!main->is_object()) return r.error("rope_parameters.main must be an object");
        DSV4_TRY(r.get_float(*main, "rope_theta", p.rope_theta, "rope_parameters.main.rope_theta"));
      }
      if (compress != rp->end()) {
        if (!compress->is_object()) return r.error("rope_parameters.compress must be an object");
        DSV4_TRY(r.get_float(*compress, "rope_theta", p.compress_rope_theta,
                             "rope_parameters.compress.rope_theta"));
        yarn = &*compress;
        what = "rope_parameters.compress";
      }
    } else {
      yarn = rp;
      what = "rope_parameters";
    }
  }
  std::string type = "default";
  if (yarn != nullptr) {
    DSV4_TRY(r.get_string(*yarn, "type", type, what + ".type"));
    DSV4_TRY(r.get_string(*yarn, "rope_type", type, what + ".rope_type"));
  }
  if (type != "yarn") {
    if (type != "default")
      return r.error(what + " has rope type " + type + "; DeepSeek-V4 uses yarn or none");
    p.yarn_original_seq_len = 0;
    return {};
  }
  DSV4_TRY(r.get_float(*yarn, "factor", p.yarn_factor, what + ".factor"));
  DSV4_TRY(r.get_float(*yarn, "beta_fast", p.yarn_beta_fast, what + ".beta_fast"));
  DSV4_TRY(r.get_float(*yarn, "beta_slow", p.yarn_beta_slow, what + ".beta_slow"));
  const auto orig = yarn->find("original_max_position_embeddings");
  if (orig == yarn->end()) return r.error("missing " + what + ".original_max_position_embeddings");
  DSV4_TRY(
      r.int_value(*orig, what + ".original_max_position_embeddings", p.yarn_original_seq_len, 1, max_dim));
  if (!(p.yarn_factor >= 1.0f)) return r.error(what + ".factor must be at least 1");
  return {};
}

inline status read_formats(const config_reader& r, const nlohmann::json& j, model_shape& s) {
  using config::weight_format;
  std::string expert_dtype;
  DSV4_TRY(r.get_string(j, "expert_dtype", expert_dtype, "expert_dtype"));
  if (const auto* q = r.find("quantization_config")) {
    if (!q->is_object()) return r.error("quantization_config must be an object");
    std::string method;
    DSV4_TRY(r.get_string(*q, "quant_method", method, "quantization_config.quant_method"));
    if (method != "fp8")
      return r.error("quantization_config.quant_method is \"" + method + "\"; only fp8 is supported");
    const auto block = q->find("weight_block_size");
    if (block != q->end() && *block != nlohmann::json::array({128, 128}))
      return r.error("quantization_config.weight_block_size is " + block->dump() +
                     "; only [128, 128] is supported");
    if (expert_dtype.empty())
      DSV4_TRY(r.get_string(*q, "expert_dtype", expert_dtype, "quantization_config.expert_dtype"));
    s.linear_format = weight_format::fp8_e4m3_block128;
    s.other_format = weight_format::bf16;
    if (expert_dtype == "fp4")
      s.expert_format = weight_format::fp4_e2m1_block32;
    else if (expert_dtype.empty() || expert_dtype == "fp8")
      s.expert_format = weight_format::fp8_e4m3_block128;
    else
      return r.error("expert_dtype is \"" + expert_dtype + "\"; expected fp4 or fp8");
    return {};
  }
  std::string dt;
  DSV4_TRY(r.get_string(j, "torch_dtype", dt, "torch_dtype"));
  DSV4_TRY(r.get_string(j, "dtype", dt, "dtype"));
  weight_format f = weight_format::bf16;
  if (dt == "float32")
    f = weight_format::f32;
  else if (dt.empty() || dt == "bfloat16")
    f = weight_format::bf16;
  else
    return r.error("dtype is \"" + dt + "\"; expected float32 or bfloat16 (or a quantization_config)");
  s.linear_format = s.expert_format = s.other_format = f;
  return {};
}

// What the two spellings read differently, in the place of the shape where it is read: after the
// table entry that names it, so that both read their keys (and find the first error) in one order.
enum class shape_step : std::uint8_t {
  none,
  token_ids,    // bos_token_id / eos_token_id (Hugging Face's only: ModelArgs has none)
  rope_dim,     // qk_rope_head_dim or partial_rotary_factor / rope_head_dim, then nope_dim
  schedule,     // compress_ratios (required by the inference code), layer_types, the default
  hash_layers,  // read_hash_layers
};

// A shape integer both spellings carry: its Hugging Face key, its inference-code key, the field,
// the bounds, the value when absent (none: the key is required) and the step read after it.
struct shape_int {
  std::string_view hf, inference;
  int model_shape::*field;
  int lo, hi;
  std::optional<int> fallback = std::nullopt;
  shape_step then = shape_step::none;
};

inline constexpr shape_int shape_ints[] = {
    {"vocab_size", "vocab_size", &model_shape::vocab_size, 1, max_dim},
    {"hidden_size", "dim", &model_shape::d_model, 1, max_dim},
    {"num_hidden_layers", "n_layers", &model_shape::n_layers, 1, config::max_schedule - 1, std::nullopt,
     shape_step::token_ids},
    {"num_attention_heads", "n_heads", &model_shape::n_heads, 1, max_dim},
    {"head_dim", "head_dim", &model_shape::head_dim, 1, max_dim, std::nullopt, shape_step::rope_dim},
    {"q_lora_rank", "q_lora_rank", &model_shape::q_lora_rank, 1, max_dim},
    {"o_groups", "o_groups", &model_shape::o_groups, 1, max_dim},
    {"o_lora_rank", "o_lora_rank", &model_shape::o_lora_rank, 1, max_dim},
    {"sliding_window", "window_size", &model_shape::window, 1, max_dim, std::nullopt, shape_step::schedule},
    {"index_n_heads", "index_n_heads", &model_shape::index_n_heads, 1, max_dim},
    {"index_head_dim", "index_head_dim", &model_shape::index_head_dim, 1, max_dim},
    {"index_topk", "index_topk", &model_shape::index_topk, 1, max_dim},
    {"hc_mult", "hc_mult", &model_shape::hc_mult, 1, 64},
    {"hc_sinkhorn_iters", "hc_sinkhorn_iters", &model_shape::hc_sinkhorn_iters, 1, 1 << 16},
    {"n_routed_experts", "n_routed_experts", &model_shape::n_routed_experts, 1, max_dim},
    {"n_shared_experts", "n_shared_experts", &model_shape::n_shared_experts, 0, 64},
    {"num_experts_per_tok", "n_activated_experts", &model_shape::n_experts_per_tok, 1, max_dim},
    {"moe_intermediate_size", "moe_inter_dim", &model_shape::moe_inter_dim, 1, max_dim, std::nullopt,
     shape_step::hash_layers},
    // Absent from the released repos' inference/config.json: the code's default.
    {"num_nextn_predict_layers", "n_mtp_layers", &model_shape::n_mtp_layers, 0, 1, 1},
};

// A number of model_params under its two keys (an empty Hugging Face key: read there from
// rope_scaling / rope_parameters, read_rope), and the inference code's value when it is absent
// (the Hugging Face spelling keeps model_params' own).
struct param_float {
  std::string_view hf, inference;
  float config::model_params::*field;
  float inference_default;
};

inline constexpr param_float param_floats[] = {
    {"rms_norm_eps", "norm_eps", &config::model_params::rms_norm_eps, 1e-6f},
    {"hc_eps", "hc_eps", &config::model_params::hc_eps, 1e-6f},
    {"rope_theta", "rope_theta", &config::model_params::rope_theta, 10000.0f},
    {"compress_rope_theta", "compress_rope_theta", &config::model_params::compress_rope_theta, 40000.0f},
    {"routed_scaling_factor", "route_scale", &config::model_params::route_scale, 1.0f},
    {"swiglu_limit", "swiglu_limit", &config::model_params::swiglu_limit, 0.0f},
    {"", "rope_factor", &config::model_params::yarn_factor, 40.0f},
    {"", "beta_fast", &config::model_params::yarn_beta_fast, 32.0f},
    {"", "beta_slow", &config::model_params::yarn_beta_slow, 1.0f},
};

// One step of the shape in spelling sp.
inline status read_shape_step(const config_reader& r, spelling sp, shape_step step, model_shape& s,
                              config::model_params& p) {
  const bool hf = sp == spelling::hf;
  switch (step) {
    case shape_step::none:
      return {};
    case shape_step::token_ids:
      if (!hf) return {};
      DSV4_TRY(r.get_int("bos_token_id", p.bos_id, 0, max_dim, 0));
      if (const auto* eos = r.find("eos_token_id"); eos != nullptr && eos->is_array()) {
        if (eos->empty()) return r.error("eos_token_id is an empty list");
        return r.int_value((*eos)[0], "eos_token_id[0]", p.eos_id, 0, max_dim);
      }
      return r.get_int("eos_token_id", p.eos_id, 0, max_dim, 1);
    case shape_step::rope_dim: {
      const std::string_view key = hf ? "qk_rope_head_dim" : "rope_head_dim";
      if (!hf || r.find(key)) {
        DSV4_TRY(r.get_int(key, s.rope_dim, 0, s.head_dim));
      } else {
        float factor = 0.125f;
        DSV4_TRY(r.get_float("partial_rotary_factor", factor));
        const double dims = static_cast<double>(factor) * s.head_dim;
        if (!(factor > 0.0f && factor <= 1.0f) || std::abs(dims - std::round(dims)) > 1e-6)
          return r.error("partial_rotary_factor * head_dim must be a whole number of dims in (0, head_dim]");
        s.rope_dim = static_cast<int>(std::round(dims));
      }
      s.nope_dim = s.head_dim - s.rope_dim;
      return {};
    }
    case shape_step::schedule:
      if (!hf && r.find("compress_ratios") == nullptr) return r.error("missing compress_ratios");
      return read_schedule(r, s, hf ? "num_hidden_layers" : "n_layers");
    case shape_step::hash_layers:
      return read_hash_layers(r, sp, s);
  }
  return {};
}

// Every shape integer of shape_ints, each followed by its step, in spelling sp.
inline status read_shape(const config_reader& r, spelling sp, model_shape& s, config::model_params& p) {
  s.family = config::attention_family::v4_hybrid;
  for (const shape_int& f : shape_ints) {
    DSV4_TRY(r.get_int(sp == spelling::hf ? f.hf : f.inference, s.*f.field, f.lo, f.hi, f.fallback));
    DSV4_TRY(read_shape_step(r, sp, f.then, s, p));
  }
  return {};
}

// The numbers of param_floats in spelling sp (a missing one: as param_floats says).
inline status read_param_floats(const config_reader& r, spelling sp, config::model_params& p) {
  for (const param_float& f : param_floats) {
    if (sp == spelling::inference) p.*f.field = f.inference_default;
    const std::string_view key = sp == spelling::hf ? f.hf : f.inference;
    if (!key.empty()) DSV4_TRY(r.get_float(key, p.*f.field));
  }
  return {};
}

// The Hugging Face spelling (see the banner).
inline result<hf_config> parse_hf_spelling(const nlohmann::json& j, std::string_view source) {
  const config_reader r(j, source);
  if (const auto* mt = r.find("model_type"); mt != nullptr && (!mt->is_string() || *mt != "deepseek_v4"))
    return r.error("model_type is " + mt->dump() + ", not deepseek_v4");
  // Settings the library implements one way only: anything else would load and compute wrongly.
  const std::array<std::pair<std::string_view, nlohmann::json>, 7> fixed{{
      {"num_key_value_heads", 1},
      {"scoring_func", "sqrtsoftplus"},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"norm_topk_prob", true},
  }};
  for (const auto& [key, want] : fixed)
    if (const auto* v = r.find(key); v != nullptr && *v != want)
      return status{errc::unsupported, std::string(source) + ": " + std::string(key) + " is " + v->dump() +
                                           "; DeepSeek-V4 as implemented here needs " + want.dump()};
  hf_config out;
  model_shape& s = out.shape;
  config::model_params& p = out.params;
  DSV4_TRY(read_shape(r, spelling::hf, s, p));
  DSV4_TRY(read_formats(r, j, s));
  DSV4_TRY(read_param_floats(r, spelling::hf, p));
  DSV4_TRY(r.get_int("max_position_embeddings", p.max_seq_len, 1, INT32_MAX, p.max_seq_len));
  DSV4_TRY(read_rope(r, s, p));
  DSV4_TRY(check_rules(s, source));
  if (auto params_ok = config::check_params(to_model_config(s), p); !params_ok.ok())
    return status{params_ok.code(), std::string(source) + ": " + params_ok.message()};
  return out;
}

// The fields of the official inference code's ModelArgs, which are the keys of inference/config.json
// (that code builds ModelArgs(**json), so any other key is an error there too).
inline constexpr std::array<std::string_view, 39> model_args_keys{
    "max_batch_size",
    "max_seq_len",
    "dtype",
    "scale_fmt",
    "expert_dtype",
    "scale_dtype",
    "vocab_size",
    "dim",
    "moe_inter_dim",
    "n_layers",
    "n_hash_layers",
    "n_mtp_layers",
    "n_heads",
    "n_routed_experts",
    "n_shared_experts",
    "n_activated_experts",
    "score_func",
    "route_scale",
    "swiglu_limit",
    "q_lora_rank",
    "head_dim",
    "rope_head_dim",
    "norm_eps",
    "o_groups",
    "o_lora_rank",
    "window_size",
    "compress_ratios",
    "compress_rope_theta",
    "original_seq_len",
    "rope_theta",
    "rope_factor",
    "beta_fast",
    "beta_slow",
    "index_n_heads",
    "index_head_dim",
    "index_topk",
    "hc_mult",
    "hc_sinkhorn_iters",
    "hc_eps",
};

// A string setting of ModelArgs: absent -> `fallback`; JSON null -> "" (Python None).
inline status model_args_string(const config_reader& r, const nlohmann::json& j, std::string_view key,
                                std::string& out, std::string_view fallback) {
  const auto it = j.find(std::string(key));
  if (it == j.end()) {
    out = std::string(fallback);
    return {};
  }
  if (it->is_null()) {
    out.clear();
    return {};
  }
  if (!it->is_string()) return r.error(std::string(key) + " must be a string or null");
  out = it->get<std::string>();
  return {};
}

// The official inference code's spelling (inference/config.json, ModelArgs; see the banner).
inline result<hf_config> parse_inference_spelling(const nlohmann::json& j, std::string_view source) {
  using config::weight_format;
  const config_reader r(j, source);
  for (const auto& [key, value] : j.items())
    if (std::find(model_args_keys.begin(), model_args_keys.end(), key) == model_args_keys.end())
      return r.error("unknown key \"" + key + "\" (not a field of the inference code's ModelArgs)");
  if (const auto* f = r.find("score_func"); f != nullptr && *f != "sqrtsoftplus")
    return status{errc::unsupported, std::string(source) + ": score_func is " + f->dump() +
                                         "; DeepSeek-V4 as implemented here needs \"sqrtsoftplus\""};
  hf_config out;
  model_shape& s = out.shape;
  config::model_params& p = out.params;
  DSV4_TRY(read_shape(r, spelling::inference, s, p));
  // Formats: dtype fp8 | bf16 (linears; other tensors bf16), expert_dtype fp4 | None (experts as
  // the linears). Weight scales are E8M0 in either case; activation scales are powers of two
  // (ue8m0) when scale_dtype is fp8 (the default) or scale_fmt is ue8m0, the only kind here.
  std::string dt, expert, scale_dtype, scale_fmt;
  DSV4_TRY(model_args_string(r, j, "dtype", dt, "fp8"));
  DSV4_TRY(model_args_string(r, j, "expert_dtype", expert, ""));
  DSV4_TRY(model_args_string(r, j, "scale_dtype", scale_dtype, "fp8"));
  DSV4_TRY(model_args_string(r, j, "scale_fmt", scale_fmt, "ue8m0"));
  if (dt == "fp8")
    s.linear_format = weight_format::fp8_e4m3_block128;
  else if (dt == "bf16")
    s.linear_format = weight_format::bf16;
  else
    return r.error("dtype is \"" + dt + "\"; expected fp8 or bf16");
  if (expert == "fp4")
    s.expert_format = weight_format::fp4_e2m1_block32;
  else if (expert.empty())
    s.expert_format = s.linear_format;
  else
    return r.error("expert_dtype is \"" + expert + "\"; expected fp4 or null");
  s.other_format = weight_format::bf16;
  if (scale_dtype != "fp8" && scale_dtype != "fp32")
    return r.error("scale_dtype is \"" + scale_dtype + "\"; expected fp8 or fp32");
  if (!scale_fmt.empty() && scale_fmt != "ue8m0")
    return r.error("scale_fmt is \"" + scale_fmt + "\"; expected ue8m0 or null");
  const bool quantized = s.linear_format != weight_format::bf16 || s.expert_format != weight_format::bf16;
  if (quantized && scale_dtype == "fp32" && scale_fmt.empty())
    return status{errc::unsupported,
                  std::string(source) +
                      ": scale_dtype fp32 with scale_fmt null quantizes activations with "
                      "scales that are not powers of two; only ue8m0 scales are implemented"};
  // Numbers: absent keys take the inference code's own defaults, as that code would.
  DSV4_TRY(read_param_floats(r, spelling::inference, p));
  DSV4_TRY(r.get_int("original_seq_len", p.yarn_original_seq_len, 0, max_dim, 0));  // 0: no YaRN
  if (p.yarn_original_seq_len > 0 && !(p.yarn_factor >= 1.0f))
    return r.error("rope_factor must be at least 1");
  DSV4_TRY(r.get_int("max_seq_len", p.max_seq_len, 1, INT32_MAX, p.max_seq_len));  // runtime
  int batch = 1;
  DSV4_TRY(r.get_int("max_batch_size", batch, 1, max_dim, 1));  // runtime; not a model setting
  DSV4_TRY(check_rules(s, source));
  if (auto params_ok = config::check_params(to_model_config(s), p); !params_ok.ok())
    return status{params_ok.code(), std::string(source) + ": " + params_ok.message()};
  return out;
}

// Either spelling, told apart by its keys: `dim` / `n_layers` / `n_heads` are the inference
// code's, `hidden_size` / `num_hidden_layers` / `num_attention_heads` / `model_type` Hugging
// Face's; a file with keys of both is refused, naming one of each.
inline result<hf_config> parse_hf_config(const nlohmann::json& j, std::string_view source) {
  const config_reader r(j, source);
  if (!j.is_object()) return r.error("is not a JSON object");
  constexpr std::array<std::string_view, 6> inference_keys{
      "dim", "n_layers", "n_heads", "moe_inter_dim", "window_size", "n_activated_experts"};
  constexpr std::array<std::string_view, 7> hf_keys{
      "hidden_size",   "num_hidden_layers",     "num_attention_heads", "model_type",
      "architectures", "moe_intermediate_size", "num_experts_per_tok"};
  std::string_view inference_key, hf_key;
  for (auto k : inference_keys)
    if (inference_key.empty() && j.contains(std::string(k))) inference_key = k;
  for (auto k : hf_keys)
    if (hf_key.empty() && j.contains(std::string(k))) hf_key = k;
  if (!inference_key.empty() && !hf_key.empty())
    return r.error("mixes the inference code's spelling (" + std::string(inference_key) +
                   ") and Hugging Face's (" + std::string(hf_key) + ")");
  if (!inference_key.empty()) return parse_inference_spelling(j, source);
  return parse_hf_spelling(j, source);
}

}  // namespace detail

// Parses config.json text. `source` labels messages ("model/config.json").
inline result<hf_config> parse_hf_config(std::string_view text, std::string_view source) {
  try {
    auto j = detail::parse_untrusted_json(text, source);
    if (!j) return j.error();
    return detail::parse_hf_config(*j, source);
  } catch (const std::exception& e) {
    return status{errc::invalid_argument, std::string(source) + ": " + e.what()};
  }
}

// The config file of a checkpoint directory: `config.json` (Hugging Face's spelling), else
// `inference/config.json` (the official inference code's), else an error naming both.
inline result<std::filesystem::path> config_path(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& p : {dir / "config.json", dir / "inference" / "config.json"})
    if (std::filesystem::is_regular_file(p, ec)) return p;
  return status{errc::io_error, dir.string() + ": holds neither config.json nor inference/config.json"};
}

// Reads and parses a config file of at most max_config_bytes, in either spelling; given a
// directory, the file config_path() picks there.
inline result<hf_config> read_hf_config(const std::filesystem::path& path_or_dir) {
  std::error_code ec;
  std::filesystem::path path = path_or_dir;
  if (std::filesystem::is_directory(path_or_dir, ec)) {
    auto p = config_path(path_or_dir);
    if (!p) return p.error();
    path = *p;
  }
  const std::string name = path.string();
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return status{errc::io_error, name + ": cannot read: " + ec.message()};
  if (size > max_config_bytes)
    return status{errc::io_error,
                  name + ": " + std::to_string(size) + " bytes, more than a config.json may have"};
  std::ifstream in(path, std::ios::binary);
  if (!in) return status{errc::io_error, name + ": cannot open"};
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_hf_config(text, name);
}

}  // namespace dsv4::io
