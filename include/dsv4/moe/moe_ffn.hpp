// The MoE feed-forward sublayer of DeepSeek-V4 (spec §9): a router (score or hash), routed SwiGLU
// experts and an optional shared expert, as a policy of the `ffn_policy` concept.
//
// forward() on a batch of n tokens:
//   1. route: experts (n, k), weights (n, k), affinities (n, E)               (router.hpp)
//   2. plan the dispatch and gather each pair's token row, sorted by expert    (dispatch.hpp)
//   3. one SwiGLU pass per expert over its block of rows, the routing weight applied before w2
//   4. the shared expert over all n tokens
//   5. combine: per token, its k outputs in slot order, then the shared output
// Every GEMM row depends only on its own token (core/gemv.hpp's order contract) and the combine
// order is fixed, so a batch gives bit for bit what its tokens give one at a time, with any thread
// count. A failed call (bad shape, token id outside the vocabulary) writes nothing to y.
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

#include "dsv4/core/gemv.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
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
  float swiglu_limit = 10.0f;                  // <= 0: no clamp

  std::size_t workspace_bytes(index_t n) const {
    detail::workspace_layout size_only;
    carve(size_only, n);
    return size_only.used;
  }

  status forward(const ffn_input& in, tensor_view<float, 2> y, std::span<std::byte> ws) const {
    const index_t n = in.x.extent(0), k = gate.top_k(), pairs = n * k;
    DSV4_TRY(check(in, y, ws));
    detail::workspace_layout layout{ws.data()};
    const buffers b = carve(layout, n);

    DSV4_TRY(gate.route(in, routes{b.ids, b.weights, b.scores}));
    DSV4_TRY(plan_dispatch(b.ids, gate.n_experts(), b.plan));
    // Rows are sorted by expert, so ascending rows per token are ascending expert ids.
    if constexpr (Num == numerics::released)
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
    if constexpr (Num == numerics::released) {
      parallel_for(0, n, [&](index_t t) {
        to_activation(Num,
                      std::span<float>(y.data() + t * y.stride(0), static_cast<std::size_t>(y.extent(1))));
      });
    }
    return {};
  }

 private:
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

  index_t dim() const { return experts.empty() ? 0 : experts[0].dim(); }

  // The one layout of the workspace, for both the size query and forward().
  buffers carve(detail::workspace_layout& l, index_t n) const {
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

  // Everything that can be checked before the first write.
  status check(const ffn_input& in, tensor_view<float, 2> y, std::span<std::byte> ws) const {
    if (static_cast<index_t>(experts.size()) != gate.n_experts()) {
      return {errc::shape_mismatch, "experts: the router has " + std::to_string(gate.n_experts()) +
                                        " experts, got " + std::to_string(experts.size())};
    }
    for (std::size_t e = 0; e < experts.size(); ++e) {
      DSV4_TRY(experts[e].check("experts." + std::to_string(e)));
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
    const index_t n = in.x.extent(0);
    DSV4_TRY(check_shape(in.x, {n, dim()}, "x"));
    DSV4_TRY(check_shape(y, {n, dim()}, "y"));
    return detail::check_workspace(ws, workspace_bytes(n));
  }
};

static_assert(ffn_policy<moe_ffn<score_router<bf16_matrix>, fp4_matrix, fp8_matrix>>);
static_assert(ffn_policy<moe_ffn<hash_router<bf16_matrix>, fp4_matrix, fp8_matrix>>);
static_assert(ffn_policy<moe_ffn<score_router<f32_matrix>, f32_matrix>>);
static_assert(ffn_policy<moe_ffn<score_router<bf16_matrix>, fp4_matrix, fp8_matrix, numerics::released>>);

}  // namespace dsv4::moe
