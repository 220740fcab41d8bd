// The MoE feed-forward sublayer of DeepSeek-V4 (spec §9): a router (score or hash), routed SwiGLU
// experts and an optional shared expert, as a policy of the `ffn_policy` concept.
//
// forward() on a batch of n tokens:
//   1. route: experts (n, k), weights (n, k), affinities (n, E)               (router.hpp)
//   2. plan the dispatch and gather each pair's token row, sorted by expert    (dispatch.hpp)
//   3. one SwiGLU pass per expert over its block of rows, the routing weight applied before w2
//   4. the shared expert over all n tokens
//   5. combine: per token, its k outputs in slot order, then the shared output
// Every GEMM row depends only on its own token (core/linear_op.hpp's order contract) and the combine
// order is fixed, so a batch gives bit for bit what its tokens give one at a time, with any thread
// count. A failed call (bad shape, token id outside the vocabulary) writes nothing to y. A second
// forward allocates nothing: every buffer, the experts' GEMM inputs in FP8/FP4 lane order among
// them, comes from the caller's workspace, sized by workspace_bytes(n), and the checks build no
// strings unless they fail (an FP8 or FP4 router gate would still allocate its GEMM input: the
// router concept has no workspace; the released gates are BF16).
//
// Hyper-parameters have no defaults: `from(cfg, params, router, experts, shared)` takes
// swiglu_limit from model_params (route_scale and k reach the router through its own from()) and
// checks the experts' shapes against the config; forward() validates every field again
// (swiglu_limit finite and >= 0, 0 meaning no clamp).
//
// Numerics (core/numerics.hpp, the template argument Num): numerics::exact is fp32 throughout.
// numerics::released follows the official MoE.forward (spec §18.3): the router stays fp32 (logits
// of the input as given, which the released model feeds in BF16), every expert runs the released
// SwiGLU of experts.hpp (BF16 outputs, FP8 inputs to FP8/FP4 weights), each token's routed outputs
// are summed in fp32 in increasing expert id (the reference's loop order, not the slot order), the
// shared output is added last, and the sum is cast to BF16 once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/moe/checks.hpp"
#include "dsv4/moe/concepts.hpp"
#include "dsv4/moe/dispatch.hpp"
#include "dsv4/moe/experts.hpp"
#include "dsv4/moe/router.hpp"

namespace dsv4::moe {

template <router R, weight_matrix W, weight_matrix S = W, numerics Num = numerics::exact>
struct moe_ffn {
  R gate;                                      // the router
  std::span<const swiglu_weights<W>> experts;  // (n_experts) routed experts, all of one shape
  std::optional<swiglu_weights<S>> shared;     // the shared expert, if the model has one
  float swiglu_limit;                          // finite, >= 0, 0: no clamp (model_params::swiglu_limit)

  // The MoE sublayer of a model: swiglu_limit from its parameters; the router (built by its own
  // from()) must have n_routed_experts experts and route to n_experts_per_tok of them; every
  // routed expert is (moe_inter_dim, d_model), and the shared expert, present exactly when the
  // config has n_shared_experts, is n_shared_experts * moe_inter_dim wide.
  static result<moe_ffn> from(const config::model_config& cfg, const config::model_params& params,
                              const R& gate, std::span<const swiglu_weights<W>> experts,
                              std::optional<swiglu_weights<S>> shared) {
    if (gate.n_experts() != cfg.n_routed_experts || gate.top_k() != cfg.n_experts_per_tok) {
      return status{errc::invalid_argument,
                    "router: " + std::to_string(gate.top_k()) + " of " + std::to_string(gate.n_experts()) +
                        " experts, the config says " + std::to_string(cfg.n_experts_per_tok) + " of " +
                        std::to_string(cfg.n_routed_experts)};
    }
    if (shared.has_value() != (cfg.n_shared_experts > 0)) {
      return status{errc::invalid_argument, "shared_experts: the config has " +
                                                std::to_string(cfg.n_shared_experts) + " shared experts"};
    }
    const moe_ffn f{gate, experts, shared, params.swiglu_limit};
    DSV4_TRY(f.check_weights());
    if (f.dim() != cfg.d_model || f.experts[0].inter() != cfg.moe_inter_dim) {
      return status{errc::shape_mismatch, "experts: (inter, d) = (" + std::to_string(f.experts[0].inter()) +
                                              ", " + std::to_string(f.dim()) + "), the config says (" +
                                              std::to_string(cfg.moe_inter_dim) + ", " +
                                              std::to_string(cfg.d_model) + ")"};
    }
    if (shared && shared->inter() != index_t{cfg.n_shared_experts} * cfg.moe_inter_dim) {
      return status{errc::shape_mismatch,
                    "shared_experts: inter = " + std::to_string(shared->inter()) + ", the config says " +
                        std::to_string(index_t{cfg.n_shared_experts} * cfg.moe_inter_dim)};
    }
    return f;
  }

  // Bytes of workspace forward() needs for n tokens; SIZE_MAX when n tokens of k pairs each cannot
  // be numbered in int32 (forward rejects that batch).
  std::size_t workspace_bytes(index_t n) const {
    const index_t k = std::max<index_t>(gate.top_k(), 0);
    if (n > 0 && k > 0 && n > detail::max_pairs / k) return SIZE_MAX;
    workspace_layout size_only;
    carve(size_only, std::max<index_t>(n, 0));
    return size_only.used;
  }

  // The experts and the limit, independent of a batch (the router checks itself when it routes).
  status check_weights() const {
    DSV4_TRY(detail::check_swiglu_limit(swiglu_limit, "moe_ffn"));
    if (gate.n_experts() < 1 || static_cast<index_t>(experts.size()) != gate.n_experts()) {
      return {errc::shape_mismatch, "experts: the router has " + std::to_string(gate.n_experts()) +
                                        " experts, got " + std::to_string(experts.size())};
    }
    for (std::size_t e = 0; e < experts.size(); ++e) {
      // The name is built only for a message: forward() runs this and must not allocate.
      if (!experts[e].check({}).ok()) return experts[e].check("experts." + std::to_string(e));
      if (experts[e].dim() != dim() || experts[e].inter() != experts[0].inter()) {
        return {errc::shape_mismatch,
                "experts." + std::to_string(e) + ": every routed expert must have the shape of experts.0"};
      }
    }
    if (shared) {
      DSV4_TRY(shared->check("shared_experts"));
      if (shared->dim() != dim())
        return {errc::shape_mismatch, "shared_experts: d differs from the routed experts'"};
    }
    return {};
  }

  status forward(const ffn_input& in, tensor_view<float, 2> y, std::span<std::byte> ws) const {
    index_t n = 0;
    DSV4_TRY(check(in, y, ws, n));
    const index_t k = gate.top_k(), pairs = n * k;
    workspace_layout layout{ws.data()};
    const buffers b = carve(layout, n);

    DSV4_TRY(gate.route(in, routes{b.ids, b.weights, b.scores}));
    DSV4_TRY(plan_dispatch(b.ids, gate.n_experts(), b.plan));
    // Rows are sorted by expert, so ascending rows per token are ascending expert ids.
    if constexpr (rounds_activations(Num))
      for (index_t t = 0; t < n; ++t)
        std::sort(b.plan.inverse.data() + t * k, b.plan.inverse.data() + (t + 1) * k);
    DSV4_TRY(gather_tokens(in.x, b.plan.order, k, b.xs));
    for (index_t r = 0; r < pairs; ++r)
      b.row_weight[static_cast<std::size_t>(r)] = b.weights.data()[b.plan.order(r)];

    for (index_t e = 0; e < gate.n_experts(); ++e) {
      const index_t begin = b.plan.offsets(e), end = b.plan.offsets(e + 1);
      if (begin == end) continue;
      DSV4_TRY(swiglu_forward(
          experts[static_cast<std::size_t>(e)], tensor_view<const float, 2>(b.xs.slice(begin, end)),
          b.row_weight.subspan(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin)),
          swiglu_limit, b.ys.slice(begin, end), b.scratch, Num));
    }
    if (shared) DSV4_TRY(swiglu_forward(*shared, in.x, {}, swiglu_limit, b.shared_y, b.scratch, Num));
    DSV4_TRY(combine(b.ys, b.plan.inverse, k, b.shared_y, y));
    if constexpr (rounds_activations(Num)) {
      parallel_for(0, n, [&](index_t t) {
        if (y.stride(1) == 1) {
          to_activation(Num,
                        std::span<float>(y.data() + t * y.stride(0), static_cast<std::size_t>(y.extent(1))));
        } else {
          for (index_t c = 0; c < y.extent(1); ++c) y(t, c) = to_activation(Num, y(t, c));
        }
      });
    }
    return {};
  }

 private:
  index_t dim() const { return experts.empty() ? 0 : experts[0].dim(); }

  struct buffers {
    tensor_view<std::int32_t, 2> ids;  // (n, k)
    tensor_view<float, 2> weights;     // (n, k)
    tensor_view<float, 2> scores;      // (n, n_experts)
    dispatch_plan plan;
    tensor_view<float, 2> xs;        // (n*k, d) token rows sorted by expert
    tensor_view<float, 2> ys;        // (n*k, d) expert outputs, same order
    std::span<float> row_weight;     // (n*k) routing weight of each sorted row
    std::span<float> scratch;        // SwiGLU hidden states of the largest expert block or the shared expert
    tensor_view<float, 2> shared_y;  // (n, d), empty without a shared expert
  };

  // The one layout of the workspace, for both the size query and forward().
  buffers carve(workspace_layout& l, index_t n) const {
    const index_t k = gate.top_k(), ne = gate.n_experts(), pairs = n * k, d = dim();
    index_t scratch = experts.empty() ? 0 : swiglu_scratch_floats(experts[0], pairs, Num);
    if (shared) scratch = std::max(scratch, swiglu_scratch_floats(*shared, n, Num));
    buffers b;
    b.ids = {l.take<std::int32_t>(pairs), {n, k}};
    b.weights = {l.take<float>(pairs), {n, k}};
    b.scores = {l.take<float>(n * ne), {n, ne}};
    b.plan = {{l.take<std::int32_t>(ne), {ne}},
              {l.take<std::int32_t>(ne + 1), {ne + 1}},
              {l.take<std::int32_t>(pairs), {pairs}},
              {l.take<std::int32_t>(pairs), {pairs}}};
    b.xs = {l.take<float>(pairs * d), {pairs, d}};
    b.ys = {l.take<float>(pairs * d), {pairs, d}};
    b.row_weight = {l.take<float>(pairs), static_cast<std::size_t>(pairs)};
    b.scratch = {l.take<float>(scratch), static_cast<std::size_t>(scratch)};
    if (shared) b.shared_y = {l.take<float>(n * d), {n, d}};
    return b;
  }

  // Everything that can be checked before the first write; sets n from x (n, d).
  status check(const ffn_input& in, tensor_view<float, 2> y, std::span<std::byte> ws, index_t& n) const {
    DSV4_TRY(check_weights());
    DSV4_TRY(detail::check_top_k(gate.top_k(), gate.n_experts(), "moe_ffn router"));
    DSV4_TRY(detail::check_input_x(in, dim(), n));
    DSV4_TRY(detail::check_view(y, {n, dim()}, "y"));
    DSV4_TRY(detail::check_pairs(n, gate.top_k(), "x"));
    return check_workspace(ws, workspace_bytes(n));
  }
};

static_assert(ffn_policy<moe_ffn<score_router<bf16_matrix>, fp4_matrix, fp8_matrix>>);
static_assert(ffn_policy<moe_ffn<hash_router<bf16_matrix>, fp4_matrix, fp8_matrix>>);
static_assert(ffn_policy<moe_ffn<score_router<f32_matrix>, f32_matrix>>);
static_assert(ffn_policy<moe_ffn<score_router<bf16_matrix>, fp4_matrix, fp8_matrix, numerics::released>>);

}  // namespace dsv4::moe
