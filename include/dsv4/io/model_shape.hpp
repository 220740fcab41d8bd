// model_shape: the run-time twin of config::model_config, for shapes read from files.
//
// config::model_config is a compile-time value (a template argument); a config.json or a
// checkpoint describes a shape only at run time. model_shape has the same fields with the same
// names and types, so the two convert field by field, and check_matches() can say which field of a
// file disagrees with the model type a program was compiled for:
//   "config.json: compress_ratios[3] is 128, the model type has 4"
// check_rules() runs the same validation rules validate<C> runs at compile time (config::rules),
// naming the first one a file breaks.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4::io {

struct model_shape {
  config::attention_family family = config::attention_family::v4_hybrid;
  int vocab_size = 0;
  int d_model = 0;
  int n_layers = 0;
  int n_heads = 0;
  int head_dim = 0;
  int rope_dim = 0;
  int nope_dim = 0;
  int q_lora_rank = 0;
  int o_groups = 0;
  int o_lora_rank = 0;
  int window = 0;
  int kv_lora_rank = 0;
  int v_head_dim = 0;
  int csa_ratio = 0;
  int hca_ratio = 0;
  std::array<int, config::max_schedule> compress_ratios{};  // n_layers + 1 used; the last is the MTP block's
  int n_schedule = 0;
  int index_n_heads = 0;
  int index_head_dim = 0;
  int index_topk = 0;
  int hc_mult = 0;
  int hc_sinkhorn_iters = 0;
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int n_experts_per_tok = 0;
  int moe_inter_dim = 0;
  int n_hash_layers = 0;
  int first_k_dense = 0;
  int dense_inter_dim = 0;
  int n_mtp_layers = 0;
  config::weight_format linear_format = config::weight_format::bf16;
  config::weight_format expert_format = config::weight_format::bf16;
  config::weight_format other_format = config::weight_format::bf16;
  config::kv_format cache_format = config::kv_format::bf16;  // not stored in files: a run-time choice
};

namespace detail {
// The int fields of model_shape and config::model_config (same names, same order), so that one
// loop converts and compares them.
template <class S>
struct int_field {
  std::string_view name;
  int S::*member;
};
template <class S>
constexpr std::array<int_field<S>, 29> int_fields() {
  return {{
      {"vocab_size", &S::vocab_size},
      {"d_model", &S::d_model},
      {"n_layers", &S::n_layers},
      {"n_heads", &S::n_heads},
      {"head_dim", &S::head_dim},
      {"rope_dim", &S::rope_dim},
      {"nope_dim", &S::nope_dim},
      {"q_lora_rank", &S::q_lora_rank},
      {"o_groups", &S::o_groups},
      {"o_lora_rank", &S::o_lora_rank},
      {"window", &S::window},
      {"kv_lora_rank", &S::kv_lora_rank},
      {"v_head_dim", &S::v_head_dim},
      {"csa_ratio", &S::csa_ratio},
      {"hca_ratio", &S::hca_ratio},
      {"n_schedule", &S::n_schedule},
      {"index_n_heads", &S::index_n_heads},
      {"index_head_dim", &S::index_head_dim},
      {"index_topk", &S::index_topk},
      {"hc_mult", &S::hc_mult},
      {"hc_sinkhorn_iters", &S::hc_sinkhorn_iters},
      {"n_routed_experts", &S::n_routed_experts},
      {"n_shared_experts", &S::n_shared_experts},
      {"n_experts_per_tok", &S::n_experts_per_tok},
      {"moe_inter_dim", &S::moe_inter_dim},
      {"n_hash_layers", &S::n_hash_layers},
      {"first_k_dense", &S::first_k_dense},
      {"dense_inter_dim", &S::dense_inter_dim},
      {"n_mtp_layers", &S::n_mtp_layers},
  }};
}

constexpr std::string_view format_name(config::weight_format f) {
  switch (f) {
    case config::weight_format::f32:
      return "f32";
    case config::weight_format::bf16:
      return "bf16";
    case config::weight_format::fp8_e4m3_block128:
      return "fp8_e4m3_block128";
    case config::weight_format::fp4_e2m1_block32:
      return "fp4_e2m1_block32";
  }
  return "?";
}

// Field by field between model_shape and config::model_config (either way); compress_ratios
// entries past n_schedule are zero in both.
template <class To, class From>
constexpr To convert_shape(const From& f) {
  To t;
  t.family = f.family;
  const auto from = int_fields<From>();
  const auto to = int_fields<To>();
  for (std::size_t i = 0; i < from.size(); ++i) t.*(to[i].member) = f.*(from[i].member);
  t.compress_ratios = f.compress_ratios;
  t.linear_format = f.linear_format;
  t.expert_format = f.expert_format;
  t.other_format = f.other_format;
  t.cache_format = f.cache_format;
  return t;
}
}  // namespace detail

constexpr model_shape shape_of(const config::model_config& c) {
  return detail::convert_shape<model_shape>(c);
}

constexpr config::model_config to_model_config(const model_shape& s) {
  return detail::convert_shape<config::model_config>(s);
}

// ok when `file` describes the model `expected` describes; otherwise names the first field that
// differs: "<source>: d_model is 4096, the model type has 7168". cache_format is not compared: files
// do not store it, the engine chooses it.
inline status check_matches(const model_shape& file, const config::model_config& expected,
                            std::string_view source) {
  auto differs = [&](std::string_view field, const std::string& got, const std::string& want) {
    return status{errc::invalid_argument, std::string(source) + ": " + std::string(field) + " is " + got +
                                              ", the model type has " + want};
  };
  if (file.family != expected.family)
    return differs("family", config::is_v4_hybrid(to_model_config(file)) ? "v4_hybrid" : "v32_mla_dsa",
                   config::is_v4_hybrid(expected) ? "v4_hybrid" : "v32_mla_dsa");
  const auto f = detail::int_fields<model_shape>();
  const auto e = detail::int_fields<config::model_config>();
  for (std::size_t i = 0; i < f.size(); ++i) {
    const int a = file.*(f[i].member), b = expected.*(e[i].member);
    if (a != b) return differs(f[i].name, std::to_string(a), std::to_string(b));
  }
  for (std::size_t l = 0; l < file.compress_ratios.size(); ++l) {
    if (file.compress_ratios[l] != expected.compress_ratios[l])
      return differs("compress_ratios[" + std::to_string(l) + "]", std::to_string(file.compress_ratios[l]),
                     std::to_string(expected.compress_ratios[l]));
  }
  const std::array<std::pair<std::string_view, std::pair<config::weight_format, config::weight_format>>, 3>
      formats{{
          {"linear_format", {file.linear_format, expected.linear_format}},
          {"expert_format", {file.expert_format, expected.expert_format}},
          {"other_format", {file.other_format, expected.other_format}},
      }};
  for (const auto& [name, ab] : formats)
    if (ab.first != ab.second)
      return differs(name, std::string(detail::format_name(ab.first)),
                     std::string(detail::format_name(ab.second)));
  return {};
}

// The compile-time form: check_matches<config::v4_flash>(shape, "config.json").
template <config::model_config C>
status check_matches(const model_shape& file, std::string_view source) {
  static_assert(config::is_valid_config<C>);
  return check_matches(file, C, source);
}

// The rules config::validate<C> enforces at compile time, at run time: the first broken rule, by
// the name of its predicate in config::rules.
inline status check_rules(const model_shape& s, std::string_view source) {
  const config::model_config c = to_model_config(s);
  using rule = bool (*)(const config::model_config&);
  // In validate<C>'s order; the schedule rules guard the ones that walk the schedule.
  const std::array<std::pair<std::string_view, rule>, 23> rules{{
      {"core_dims_positive", config::rules::core_dims_positive},
      {"head_dim_split", config::rules::head_dim_split},
      {"rope_dim_fits", config::rules::rope_dim_fits},
      {"schedule_fits_capacity", config::rules::schedule_fits_capacity},
      {"schedule_length", config::rules::schedule_length},
      {"ratios_known", config::rules::ratios_known},
      {"csa_ratio_positive", config::rules::csa_ratio_positive},
      {"hca_multiple_of_csa", config::rules::hca_multiple_of_csa},
      {"window_positive", config::rules::window_positive},
      {"output_groups_divide_heads", config::rules::output_groups_divide_heads},
      {"o_lora_rank_positive", config::rules::o_lora_rank_positive},
      {"hyper_connections_positive", config::rules::hyper_connections_positive},
      {"index_topk_positive", config::rules::index_topk_positive},
      {"indexer_dims_positive", config::rules::indexer_dims_positive},
      {"indexer_head_dim_shape", config::rules::indexer_head_dim_shape},
      {"mla_dims_positive", config::rules::mla_dims_positive},
      {"experts_positive", config::rules::experts_positive},
      {"experts_per_token_range", config::rules::experts_per_token_range},
      {"hash_layers_range", config::rules::hash_layers_range},
      {"dense_layers_range", config::rules::dense_layers_range},
      {"mtp_depth", config::rules::mtp_depth},
      {"kv_layout_tiles", config::rules::kv_layout_tiles},
      {"fp4_expert_tiles", config::rules::fp4_expert_tiles},
  }};
  for (const auto& [name, ok] : rules)
    if (!ok(c))
      return {errc::invalid_argument,
              std::string(source) + ": breaks the model_config rule " + std::string(name)};
  return {};
}

}  // namespace dsv4::io
