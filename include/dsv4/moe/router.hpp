// The two routers of DeepSeek-V4's MoE (spec §9.1, §9.2), as policies of the `router` concept.
//
// score_router (layers >= n_hash_layers and the MTP block): logits = x . gate^T in fp32, affinity
// s_e = sqrt(softplus(logit_e)); the top-k experts of s_e + bias_e are selected (the bias, tuned by
// the auxiliary-loss-free balancing of load_balance.hpp, only selects), and their weights are the
// unbiased affinities renormalized over the selection, times route_scale. There is no
// group-limited routing. The renormalization divides with no epsilon, as the released model does
// (Hugging Face adds 1e-20; affinities are positive, so the sum never vanishes).
//
// hash_router (the first n_hash_layers layers): the frozen table tid2eid (vocab, k) names the
// experts of each token id; the weights come from the same affinities. A token id outside the
// vocabulary, or a table entry that names no expert, is reported as invalid_argument before
// anything is written.
//
// Selection order: descending biased score, ties to the lower expert id. The k ids of a token are
// written in that order (the hash router keeps the table's order); the MoE output does not depend
// on it beyond the fp32 summation order of the combine step.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "dsv4/core/gemv.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/moe/concepts.hpp"

namespace dsv4::moe {

// sqrt(softplus(logit)): V4's expert affinity (V3 used a sigmoid).
inline float affinity(float logit) { return std::sqrt(softplus(logit)); }

namespace detail {

// The shapes every router writes, for n tokens, k experts each, out of n_experts.
inline status check_routes(const routes& out, index_t n, index_t k, index_t n_experts) {
  DSV4_TRY(check_shape(out.experts, {n, k}, "routes.experts"));
  DSV4_TRY(check_shape(out.weights, {n, k}, "routes.weights"));
  return check_shape(out.scores, {n, n_experts}, "routes.scores");
}

// scores (n, E) = affinity(x (n, d) . gate^T).
template <weight_matrix W>
status compute_affinities(const W& gate, tensor_view<const float, 2> x, tensor_view<float, 2> scores) {
  DSV4_TRY(gemm(gate, x, scores));
  parallel_for(0, scores.extent(0), [&](index_t t) {
    for (index_t e = 0; e < scores.extent(1); ++e) scores(t, e) = affinity(scores(t, e));
  });
  return {};
}

// weights[j] = route_scale * s[ids[j]] / sum_j s[ids[j]], summed in slot order.
inline void mix_weights(tensor_view<const float, 1> s, tensor_view<const std::int32_t, 1> ids,
                        float route_scale, tensor_view<float, 1> weights) {
  float sum = 0.0f;
  for (index_t j = 0; j < ids.extent(0); ++j) sum += s(ids(j));
  for (index_t j = 0; j < ids.extent(0); ++j) weights(j) = s(ids(j)) / sum * route_scale;
}

}  // namespace detail

// ids[0 .. k) = the k largest of s[e] + bias[e] (bias may be empty), descending, ties to the lower
// id. A NaN key is never preferred over a number.
inline void select_top_k(tensor_view<const float, 1> s, tensor_view<const float, 1> bias,
                         tensor_view<std::int32_t, 1> ids) {
  const index_t n_experts = s.extent(0);
  auto key = [&](index_t e) { return bias.empty() ? s(e) : s(e) + bias(e); };
  for (index_t j = 0; j < ids.extent(0); ++j) {
    index_t best = -1;
    for (index_t e = 0; e < n_experts; ++e) {
      bool taken = false;
      for (index_t i = 0; i < j; ++i) taken = taken || ids(i) == e;
      if (!taken && (best < 0 || key(e) > key(best) || (std::isnan(key(best)) && !std::isnan(key(e)))))
        best = e;
    }
    ids(j) = static_cast<std::int32_t>(best);
  }
}

template <weight_matrix W = bf16_matrix>
struct score_router {
  W gate;                            // (n_experts, d)
  tensor_view<const float, 1> bias;  // (n_experts) selection-only correction, or empty
  index_t k = 0;                     // experts per token
  float route_scale = 1.0f;

  index_t n_experts() const { return gate.rows(); }
  index_t top_k() const { return k; }

  status route(const ffn_input& in, const routes& out) const {
    const index_t n = in.x.extent(0);
    if (k < 1 || k > n_experts()) {
      return {errc::invalid_argument, "score_router: k = " + std::to_string(k) + " is not in [1, " +
                                          std::to_string(n_experts()) + "]"};
    }
    if (!bias.empty()) DSV4_TRY(check_shape(bias, {n_experts()}, "gate.bias"));
    DSV4_TRY(detail::check_routes(out, n, k, n_experts()));
    DSV4_TRY(detail::compute_affinities(gate, in.x, out.scores));
    parallel_for(0, n, [&](index_t t) {
      select_top_k(out.scores[t], bias, out.experts[t]);
      detail::mix_weights(out.scores[t], out.experts[t], route_scale, out.weights[t]);
    });
    return {};
  }
};

template <weight_matrix W = bf16_matrix>
struct hash_router {
  W gate;                                      // (n_experts, d)
  tensor_view<const std::int32_t, 2> tid2eid;  // (vocab, k) expert ids per token id
  float route_scale = 1.0f;

  index_t n_experts() const { return gate.rows(); }
  index_t top_k() const { return tid2eid.extent(1); }

  status route(const ffn_input& in, const routes& out) const {
    const index_t n = in.x.extent(0), vocab = tid2eid.extent(0);
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
      for (index_t j = 0; j < top_k(); ++j) {
        const std::int32_t e = tid2eid(id, j);
        if (e < 0 || e >= n_experts()) {
          return {errc::invalid_argument, "tid2eid[" + std::to_string(id) + "][" + std::to_string(j) +
                                              "] = " + std::to_string(e) + " is not an expert id in [0, " +
                                              std::to_string(n_experts()) + ")"};
        }
      }
    }
    DSV4_TRY(detail::compute_affinities(gate, in.x, out.scores));
    parallel_for(0, n, [&](index_t t) {
      const auto row = tid2eid[in.token_ids[static_cast<std::size_t>(t)]];
      for (index_t j = 0; j < top_k(); ++j) out.experts(t, j) = row(j);
      detail::mix_weights(out.scores[t], out.experts[t], route_scale, out.weights[t]);
    });
    return {};
  }
};

static_assert(router<score_router<bf16_matrix>> && router<score_router<f32_matrix>>);
static_assert(router<hash_router<bf16_matrix>> && router<hash_router<f32_matrix>>);

}  // namespace dsv4::moe
