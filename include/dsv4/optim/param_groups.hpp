// Which optimizer DeepSeek-V4 trains each checkpoint tensor with (spec §12.3), from its name in
// the released checkpoint (spec §11: `embed.weight`, `layers.{i}.attn.wq_a.weight`, `mtp.0.*`).
//
// AdamW: the embedding, the head, every RMSNorm weight, the mHC static biases and gates
// (`hc_*_base`, `hc_*_scale`). Muon: every other weight matrix (attention, compressor and indexer
// projections, the mHC dynamic matrices `hc_*_fn`, experts, shared experts, MTP projections), each
// expert on its own. Not trained by either: the FP8/FP4 block scales (`*.scale`), the router bias
// `ffn.gate.bias` (moved by the load-balancing rule) and the frozen hash table `ffn.gate.tid2eid`.
//
// The report leaves four tensors open; the choices made here, and why:
//   ffn.gate.weight  Muon: a (n_experts, d) matrix of a hidden layer, "all other modules".
//   attn.attn_sink   AdamW: a vector (one logit per head); Muon needs a matrix.
//   compressor.ape   AdamW: an additive position bias (ratio, dim), a table of offsets and not a
//                    linear map, like the mHC static biases that go to AdamW.
//   attn.wo_a        Muon with o_groups independent matrices of (o_lora_rank, d_in / o_groups):
//                    each group maps its own heads, so the groups are as independent as experts.
#pragma once

#include <string>
#include <string_view>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::optim {

enum class param_rule : unsigned char {
  muon,
  adamw,
  none,  // not updated by an optimizer (block scales, router bias, hash table)
};

struct param_group {
  param_rule rule;
  // Independent matrices the tensor holds along its first dimension: a (rows, cols) tensor is
  // optimized as (matrices, rows / matrices, cols). 1 except for wo_a (o_groups).
  index_t matrices = 1;
};

namespace detail {
inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
// "layers.12.attn.wq_a.weight" -> "attn.wq_a.weight"; "mtp.0.e_proj.weight" -> "e_proj.weight".
inline std::string_view strip_block_prefix(std::string_view name) {
  for (std::string_view prefix : {std::string_view("layers."), std::string_view("mtp.")}) {
    if (name.substr(0, prefix.size()) != prefix) continue;
    const auto dot = name.find('.', prefix.size());
    const bool digits = dot != std::string_view::npos && dot > prefix.size() &&
                        name.substr(prefix.size(), dot - prefix.size()).find_first_not_of("0123456789") ==
                            std::string_view::npos;
    if (digits) return name.substr(dot + 1);
  }
  return name;
}
}  // namespace detail

// The rule for one checkpoint tensor; an unknown name is an error (invalid_argument) rather than
// a silent guess.
inline result<param_group> v4_param_group(std::string_view name, const config::model_config& c) {
  using detail::ends_with;
  const std::string_view leaf = detail::strip_block_prefix(name);
  const auto is_hc = [&](std::string_view kind) {
    return leaf.substr(0, 3) == "hc_" && ends_with(leaf, kind);  // hc_attn_fn, hc_head_base, ...
  };
  if (ends_with(leaf, ".scale") || leaf == "ffn.gate.bias" || leaf == "ffn.gate.tid2eid")
    return param_group{param_rule::none};
  if (leaf == "embed.weight" || leaf == "head.weight" || ends_with(leaf, "norm.weight") || is_hc("_base") ||
      is_hc("_scale") || leaf == "attn.attn_sink" || ends_with(leaf, "compressor.ape"))
    return param_group{param_rule::adamw};
  if (leaf == "attn.wo_a.weight") return param_group{param_rule::muon, c.o_groups > 0 ? c.o_groups : 1};
  if (is_hc("_fn") || ends_with(leaf, ".weight")) return param_group{param_rule::muon};
  return status{errc::invalid_argument, "v4_param_group: no rule for tensor " + std::string(name)};
}

}  // namespace dsv4::optim
