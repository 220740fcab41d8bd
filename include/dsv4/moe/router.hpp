// The two routers of DeepSeek-V4's MoE (spec §9.1, §9.2), as policies of the `router` concept.
//
// score_router (layers >= n_hash_layers and the MTP block): logits = x . gate^T in fp32, affinity
// s_e = sqrt(softplus(logit_e)); the top-k experts of s_e + bias_e are selected (the bias, tuned by
// the auxiliary-loss-free balancing of load_balance.hpp, only selects), and their weights are the
// unbiased affinities renormalized over the selection, times route_scale. There is no
// group-limited routing. The renormalization divides with no epsilon, as the released model does
// (Hugging Face adds 1e-20). Affinities are never negative but do underflow: below a logit of
// about -104, softplus is 0 in fp32, and a token whose k selected affinities are all 0 would get
// 0/0. Its weights are then equal shares, route_scale / k each: the limit of the renormalization
// when the k logits are about equal, and the only choice that keeps the weights summing to
// route_scale (which of them was larger is lost with the underflow).
//
// hash_router (the first n_hash_layers layers): the frozen table tid2eid (vocab, k) names the
// experts of each token id; the weights come from the same affinities. The table is read as the
// checkpoint stores it (int64) or as int32 (narrow_tid2eid makes one, checked). A token id outside
// the vocabulary, a table entry that names no expert, or a row that names an expert twice is
// reported as invalid_argument before anything is written. The repeat check also catches an int64
// table read as int32 by a cast of its bytes: the high halves make every other entry 0.
//
// Hyper-parameters have no defaults: `from(cfg, params, ...)` takes k from the config
// (n_experts_per_tok) and route_scale from model_params, and every route() validates them
// (k in [1, n_experts], route_scale finite and > 0), so a router built field by field is held to
// the same rules.
//
// Selection (core/top_k.hpp, the library's one top-k rule): descending biased score, NaN below
// every number, ties to the lower expert id. The k ids of a token are written in that order (the
// hash router keeps the table's order); the MoE output does not depend on it beyond the fp32
// summation order of the combine step.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/top_k.hpp"
#include "dsv4/moe/checks.hpp"
#include "dsv4/moe/concepts.hpp"

namespace dsv4::moe {

// sqrt(softplus(logit)): V4's expert affinity (V3 used a sigmoid).
inline float affinity(float logit) { return std::sqrt(softplus(logit)); }

namespace detail {

// The views every router writes, for n tokens, k experts each, out of n_experts. The rows of
// `experts` and `scores` are written through spans (the top-k and the gate's GEMM).
inline status check_routes(const routes& out, index_t n, index_t k, index_t n_experts) {
  DSV4_TRY(check_view(out.experts, {n, k}, "routes.experts"));
  DSV4_TRY(check_unit_inner_stride(out.experts, "routes.experts"));
  DSV4_TRY(check_view(out.weights, {n, k}, "routes.weights"));
  DSV4_TRY(check_view(out.scores, {n, n_experts}, "routes.scores"));
  return check_unit_inner_stride(out.scores, "routes.scores");
}

// scores (n, E) = affinity(x (n, d) . gate^T); the caller has checked the shapes, which the GEMM
// checks again before it writes.
template <weight_matrix W>
status compute_affinities(const W& gate, tensor_view<const float, 2> x, tensor_view<float, 2> scores) {
  DSV4_TRY(linear(gate, x, scores));
  parallel_for(0, scores.extent(0), [&](index_t t) {
    for (index_t e = 0; e < scores.extent(1); ++e) scores(t, e) = affinity(scores(t, e));
  });
  return {};
}

// weights[j] = route_scale * s[ids[j]] / sum_j s[ids[j]], summed in slot order; equal shares
// route_scale / k when every selected affinity is 0 (underflow: see the banner).
inline void mix_weights(tensor_view<const float, 1> s, tensor_view<const std::int32_t, 1> ids,
                        float route_scale, tensor_view<float, 1> weights) {
  const index_t k = ids.extent(0);
  float sum = 0.0f;
  for (index_t j = 0; j < k; ++j) sum += s(ids(j));
  if (sum == 0.0f) {
    for (index_t j = 0; j < k; ++j) weights(j) = route_scale / static_cast<float>(k);
    return;
  }
  for (index_t j = 0; j < k; ++j) weights(j) = s(ids(j)) / sum * route_scale;
}

template <class V>
std::span<typename V::element_type> row_span(const V& v) {  // a 1-D view of unit stride
  return {v.data(), static_cast<std::size_t>(v.extent(0))};
}

// A router's gate is (n_routed_experts, d_model) of the config it is built for.
template <weight_matrix W>
status check_gate_for_config(const W& gate, const config::model_config& cfg) {
  if (gate.rows() == cfg.n_routed_experts && gate.cols() == cfg.d_model) return {};
  return {errc::shape_mismatch, "gate: expected (" + std::to_string(cfg.n_routed_experts) + ", " +
                                    std::to_string(cfg.d_model) + ") for the config, got (" +
                                    std::to_string(gate.rows()) + ", " + std::to_string(gate.cols()) + ")"};
}
}  // namespace detail

// ids[0 .. k) = the k best of s[e] + bias[e] (bias may be empty) by core/top_k.hpp's rule, in rank
// order: descending, NaN below every number, ties to the lower id. s (n), bias (n) or empty,
// ids (k) with k <= n, each of unit stride.
inline status select_top_k(tensor_view<const float, 1> s, tensor_view<const float, 1> bias,
                           tensor_view<std::int32_t, 1> ids) {
  DSV4_TRY(detail::check_extents(s, "scores"));
  DSV4_TRY(detail::check_unit_inner_stride(s, "scores"));
  if (!bias.empty()) {
    DSV4_TRY(detail::check_view(bias, {s.extent(0)}, "bias"));
    DSV4_TRY(detail::check_unit_inner_stride(bias, "bias"));
  }
  DSV4_TRY(detail::check_extents(ids, "ids"));
  DSV4_TRY(detail::check_unit_inner_stride(ids, "ids"));
  if (ids.extent(0) > s.extent(0)) {
    return {errc::invalid_argument, "ids: " + std::to_string(ids.extent(0)) + " slots for a top-k of " +
                                        std::to_string(s.extent(0)) + " scores"};
  }
  select_top_k_ranked(detail::row_span(s), bias.empty() ? std::span<const float>() : detail::row_span(bias),
                      detail::row_span(ids));
  return {};
}

template <weight_matrix W = bf16_matrix>
struct score_router {
  W gate;                            // (n_experts, d)
  tensor_view<const float, 1> bias;  // (n_experts) selection-only correction, or empty
  index_t k;                         // experts per token, in [1, n_experts]: config n_experts_per_tok
  float route_scale;                 // finite, > 0: model_params::route_scale

  // The router of a model: k and route_scale from the config and its parameters, the gate
  // (n_routed_experts, d_model) and its bias (n_routed_experts, or empty) from the checkpoint.
  static result<score_router> from(const config::model_config& cfg, const config::model_params& params,
                                   const W& gate, tensor_view<const float, 1> bias) {
    DSV4_TRY(detail::check_gate_for_config(gate, cfg));
    const score_router r{gate, bias, cfg.n_experts_per_tok, params.route_scale};
    DSV4_TRY(r.check());
    return r;
  }

  index_t n_experts() const { return gate.rows(); }
  index_t top_k() const { return k; }

  // The weights and hyper-parameters, independent of a batch.
  status check() const {
    DSV4_TRY(detail::check_matrix(gate, "gate"));
    DSV4_TRY(detail::check_top_k(k, n_experts(), "score_router"));
    DSV4_TRY(detail::check_route_scale(route_scale, "score_router"));
    if (!bias.empty()) {
      DSV4_TRY(detail::check_view(bias, {n_experts()}, "gate.bias"));
      DSV4_TRY(detail::check_unit_inner_stride(bias, "gate.bias"));
    }
    return {};
  }

  status route(const ffn_input& in, const routes& out) const {
    DSV4_TRY(check());
    index_t n = 0;
    DSV4_TRY(detail::check_input_x(in, gate.cols(), n));
    DSV4_TRY(detail::check_routes(out, n, k, n_experts()));
    DSV4_TRY(detail::compute_affinities(gate, in.x, out.scores));
    const std::span<const float> b = bias.empty() ? std::span<const float>() : detail::row_span(bias);
    parallel_for(0, n, [&](index_t t) {
      select_top_k_ranked(detail::row_span(out.scores[t]), b, detail::row_span(out.experts[t]));
      detail::mix_weights(out.scores[t], out.experts[t], route_scale, out.weights[t]);
    });
    return {};
  }
};

// The element types a tid2eid table may have: the checkpoint's int64, or int32.
template <class Id>
concept expert_id_type = std::same_as<Id, std::int64_t> || std::same_as<Id, std::int32_t>;

namespace detail {
// Row `id` of tid2eid names k distinct experts in [0, n_experts); `where` prefixes the message.
template <expert_id_type Id>
status check_tid2eid_row(tensor_view<const Id, 2> table, index_t id, index_t n_experts,
                         const std::string& where) {
  const index_t k = table.extent(1);
  for (index_t j = 0; j < k; ++j) {
    const Id e = table(id, j);
    if (e < 0 || e >= n_experts) {
      return {errc::invalid_argument, where + "tid2eid[" + std::to_string(id) + "][" + std::to_string(j) +
                                          "] = " + std::to_string(e) + " is not an expert id in [0, " +
                                          std::to_string(n_experts) + ")"};
    }
    for (index_t i = 0; i < j; ++i) {
      if (table(id, i) == e) {
        std::string row;
        for (index_t c = 0; c < k; ++c) row += (c ? ", " : "") + std::to_string(table(id, c));
        return {errc::invalid_argument, where + "tid2eid[" + std::to_string(id) + "] = (" + row +
                                            ") names expert " + std::to_string(e) + " twice"};
      }
    }
  }
  return {};
}
}  // namespace detail

// Every row of tid2eid (vocab, k) names k distinct experts in [0, n_experts): the check a loader
// runs once on the table (route() checks the rows of each batch's tokens again).
template <expert_id_type Id>
status check_tid2eid(tensor_view<const Id, 2> table, index_t n_experts) {
  DSV4_TRY(detail::check_extents(table, "tid2eid"));
  DSV4_TRY(detail::check_top_k(table.extent(1), n_experts, "tid2eid"));
  for (index_t id = 0; id < table.extent(0); ++id)
    DSV4_TRY(detail::check_tid2eid_row(table, id, n_experts, ""));
  return {};
}

// dst (vocab, k) = src (vocab, k), the checkpoint's int64 table narrowed to int32 after
// check_tid2eid(src, n_experts) passed; nothing is written otherwise.
inline status narrow_tid2eid(tensor_view<const std::int64_t, 2> src, index_t n_experts,
                             tensor_view<std::int32_t, 2> dst) {
  DSV4_TRY(check_tid2eid(src, n_experts));
  DSV4_TRY(detail::check_view(dst, {src.extent(0), src.extent(1)}, "tid2eid (int32)"));
  for (index_t id = 0; id < src.extent(0); ++id)
    for (index_t j = 0; j < src.extent(1); ++j) dst(id, j) = static_cast<std::int32_t>(src(id, j));
  return {};
}

template <weight_matrix W = bf16_matrix, expert_id_type Id = std::int64_t>
struct hash_router {
  W gate;                            // (n_experts, d)
  tensor_view<const Id, 2> tid2eid;  // (vocab, k) expert ids per token id
  float route_scale;                 // finite, > 0: model_params::route_scale

  // The router of a hash layer: route_scale from the parameters, the gate (n_routed_experts,
  // d_model) and tid2eid (vocab_size, n_experts_per_tok) from the checkpoint, the whole table
  // checked once (check_tid2eid).
  static result<hash_router> from(const config::model_config& cfg, const config::model_params& params,
                                  const W& gate, tensor_view<const Id, 2> tid2eid) {
    DSV4_TRY(detail::check_gate_for_config(gate, cfg));
    DSV4_TRY(detail::check_view(tid2eid, {cfg.vocab_size, cfg.n_experts_per_tok}, "tid2eid"));
    const hash_router r{gate, tid2eid, params.route_scale};
    DSV4_TRY(r.check());
    DSV4_TRY(check_tid2eid(tid2eid, r.n_experts()));
    return r;
  }

  index_t n_experts() const { return gate.rows(); }
  index_t top_k() const { return tid2eid.extent(1); }

  // The weights and hyper-parameters, independent of a batch (the table's rows are checked per
  // token by route(), or all at once by check_tid2eid).
  status check() const {
    DSV4_TRY(detail::check_matrix(gate, "gate"));
    DSV4_TRY(detail::check_extents(tid2eid, "tid2eid"));
    DSV4_TRY(detail::check_top_k(top_k(), n_experts(), "hash_router (tid2eid columns)"));
    return detail::check_route_scale(route_scale, "hash_router");
  }

  status route(const ffn_input& in, const routes& out) const {
    DSV4_TRY(check());
    index_t n = 0;
    DSV4_TRY(detail::check_input_x(in, gate.cols(), n));
    const index_t vocab = tid2eid.extent(0);
    if (static_cast<index_t>(in.token_ids.size()) != n) {
      return {errc::shape_mismatch, "token_ids: hash routing needs one id per token: expected " +
                                        std::to_string(n) + ", got " + std::to_string(in.token_ids.size())};
    }
    DSV4_TRY(detail::check_routes(out, n, top_k(), n_experts()));
    for (index_t t = 0; t < n; ++t) {
      const std::int32_t id = in.token_ids[static_cast<std::size_t>(t)];
      if (id < 0 || id >= vocab) {
        return {errc::invalid_argument, "token_ids[" + std::to_string(t) + "] = " + std::to_string(id) +
                                            " is outside the vocabulary [0, " + std::to_string(vocab) + ")"};
      }
      // The prefix is built only for a message (route must not allocate).
      if (!detail::check_tid2eid_row(tid2eid, id, n_experts(), {}).ok()) {
        return detail::check_tid2eid_row(
            tid2eid, id, n_experts(), "token_ids[" + std::to_string(t) + "] = " + std::to_string(id) + ": ");
      }
    }
    DSV4_TRY(detail::compute_affinities(gate, in.x, out.scores));
    parallel_for(0, n, [&](index_t t) {
      const auto row = tid2eid[in.token_ids[static_cast<std::size_t>(t)]];
      for (index_t j = 0; j < top_k(); ++j) out.experts(t, j) = static_cast<std::int32_t>(row(j));
      detail::mix_weights(out.scores[t], out.experts[t], route_scale, out.weights[t]);
    });
    return {};
  }
};

static_assert(router<score_router<bf16_matrix>> && router<score_router<f32_matrix>>);
static_assert(router<hash_router<bf16_matrix>> && router<hash_router<f32_matrix>> &&
              router<hash_router<bf16_matrix, std::int32_t>>);

}  // namespace dsv4::moe
