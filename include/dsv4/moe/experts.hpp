// SwiGLU experts of DeepSeek-V4 (spec §9.3) and the dense SwiGLU FFN policy built from one.
//
//   g = w1 . x,  u = w3 . x                       (fp32 accumulation, core/linear.hpp)
//   u <- clamp(u, -limit, limit),  g <- min(g, limit)   (the gate is clamped from above only)
//   a = silu(g) * u * weight                      (a routed expert's mixing weight, before w2)
//   y = w2 . a
//
// The clamp (swiglu_limit, 10 in both releases, model_params::swiglu_limit; 0 disables it, a
// negative or non-finite limit is rejected) applies to the routed and the shared expert alike: the current
// official revision clamps the shared expert too (§16.3, §18.1). Applying the routing weight before w2 is the
// released model's order; Hugging Face applies it after w2, which is the same up to fp32 rounding. Weights
// may be stored in any format of core/weight_matrix.hpp and are decoded on the fly.
//
// Numerics (core/numerics.hpp). numerics::exact is the fp32 path above. numerics::released adds the
// official inference code's roundings (spec §18.3 "Experts"), where every linear is `linear()`:
//   x  <- bf16(x), then FP8-simulated in 1x128 tiles if the weight is FP8 or FP4 (act_quant)
//   g, u <- bf16(w1 . x), bf16(w3 . x)            (the GEMMs write BF16 tensors)
//   a  <- bf16(silu(min(g, limit)) * clamp(u) * weight), all in fp32 before the one cast
//   a  <- FP8-simulated in 1x128 tiles if w2 is FP8 or FP4;   y <- bf16(w2 . a)
// BF16 weights (and f32 ones, which the released model does not have) take BF16 inputs without
// the FP8 step, as F.linear does. The GEMMs still accumulate in fp32 (the reference's tensor cores
// do too, in an unspecified order), so a released result agrees with the reference's BF16 value
// except where the two fp32 sums fall on different sides of a BF16 rounding boundary.
// numerics::fast is released's roundings with FP4 weights taking int8 inputs in blocks of 32 in
// place of the FP8 step (core/linear_q8.hpp).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/workspace.hpp"
#include "dsv4/moe/checks.hpp"
#include "dsv4/moe/concepts.hpp"

namespace dsv4::moe {

// silu(min(g, limit)) * clamp(u, -limit, limit); limit 0 means no clamp (the operations below
// reject a negative limit before they get here; this scalar form leaves any limit <= 0 unclamped).
inline float clamped_swiglu(float g, float u, float limit) {
  if (limit > 0.0f) {
    g = std::min(g, limit);
    u = std::clamp(u, -limit, limit);
  }
  return silu(g) * u;
}

// The three matrices of one SwiGLU expert.
template <weight_matrix W>
struct swiglu_weights {
  W w1;  // (inter, d) gate projection
  W w3;  // (inter, d) up projection
  W w2;  // (d, inter) down projection

  index_t dim() const { return w1.cols(); }
  index_t inter() const { return w1.rows(); }

  // Both dimensions positive, w1 and w3 (inter, d), w2 (d, inter), each valid by its own check.
  // Asked under empty names first (no string is built unless something fails: the MoE layer checks
  // every expert on every forward), then under `name` for the message.
  status check(std::string_view name) const {
    if (check_named("", "", "", "").ok()) return {};
    const std::string n(name);
    return check_named(n, n + ".w1", n + ".w3", n + ".w2");
  }

 private:
  status check_named(std::string_view n, std::string_view n1, std::string_view n3,
                     std::string_view n2) const {
    DSV4_TRY(detail::check_matrix(w1, n1));
    DSV4_TRY(detail::check_matrix(w3, n3));
    DSV4_TRY(detail::check_matrix(w2, n2));
    if (w3.rows() != inter() || w3.cols() != dim() || w2.rows() != dim() || w2.cols() != inter()) {
      return {errc::shape_mismatch,
              std::string(n) + ": expected w1, w3 (inter, d) and w2 (d, inter), got w1 (" +
                  std::to_string(inter()) + ", " + std::to_string(dim()) + "), w3 (" +
                  std::to_string(w3.rows()) + ", " + std::to_string(w3.cols()) + "), w2 (" +
                  std::to_string(w2.rows()) + ", " + std::to_string(w2.cols()) + ")"};
    }
    return {};
  }
};

// Floats of scratch swiglu_forward needs for n tokens: g and u (n, inter), the released path's
// rounded copy of x (n, d), and the GEMM inputs in W's lane order (core/weight_lanes.hpp; FP8 and FP4
// only): x for w1 and w3, then the activation for w2, one after the other in one region. A
// negative n counts as none (swiglu_forward rejects it).
template <weight_matrix W>
index_t swiglu_scratch_floats(const swiglu_weights<W>& e, index_t n, numerics num = numerics::exact) {
  const index_t t = std::max<index_t>(n, 0), inter = std::max<index_t>(e.inter(), 0),
                d = std::max<index_t>(e.dim(), 0);
  index_t floats = 0;  // saturated: no scratch that large passes swiglu_forward
  if (__builtin_mul_overflow(t, 2 * inter + d + std::max(inter, d), &floats))
    return std::numeric_limits<index_t>::max();
  const index_t lanes =
      std::max(linear_op<W>::workspace_floats(t, d), linear_op<W>::workspace_floats(t, inter));
  return 2 * t * inter + (rounds_activations(num) ? t * d : 0) + lanes;
}

// y (n, d) = w2 . (clamped_swiglu(w1 . x_t, w3 . x_t) * row_weight[t]) for every token t; an empty
// row_weight means weight 1 (shared and dense experts). limit: finite, >= 0, 0 for no clamp.
// scratch holds swiglu_scratch_floats(e, n, num). Under numerics::released the roundings of the
// banner are applied and y holds BF16 values. Everything is checked before y is written.
template <weight_matrix W>
status swiglu_forward(const swiglu_weights<W>& e, tensor_view<const float, 2> x,
                      std::span<const float> row_weight, float limit, tensor_view<float, 2> y,
                      std::span<float> scratch, numerics num = numerics::exact) {
  DSV4_TRY(detail::check_swiglu_limit(limit, "swiglu_forward"));
  DSV4_TRY(e.check("expert"));
  DSV4_TRY(detail::check_extents(x, "x"));
  const index_t n = x.extent(0), d = e.dim(), inter = e.inter();
  DSV4_TRY(check_shape(x, {n, d}, "x"));
  DSV4_TRY(detail::check_view(y, {n, d}, "y"));
  if (!row_weight.empty() && static_cast<index_t>(row_weight.size()) != n) {
    return {errc::shape_mismatch, "row_weight: expected " + std::to_string(n) + " weights, got " +
                                      std::to_string(row_weight.size())};
  }
  const index_t need = swiglu_scratch_floats(e, n, num);
  if (static_cast<index_t>(scratch.size()) < need) {
    return {errc::out_of_range, "scratch: expected at least " + std::to_string(need) + " floats, got " +
                                    std::to_string(scratch.size())};
  }
  float* const base = scratch.data();
  const tensor_view<float, 2> g(base, {n, inter});                                             // (n, inter)
  const tensor_view<float, 2> u(base + n * inter, {n, inter});                                 // (n, inter)
  const tensor_view<float, 2> xq(base + 2 * n * inter, {n, rounds_activations(num) ? d : 0});  // (n, d)
  float* const lanes = xq.data() + xq.size();
  const std::span<float> x_lanes(lanes, static_cast<std::size_t>(linear_op<W>::workspace_floats(n, d)));
  const std::span<float> g_lanes(lanes, static_cast<std::size_t>(linear_op<W>::workspace_floats(n, inter)));
  const auto row = [](const tensor_view<float, 2>& v, index_t t) {
    return std::span<float>(v.data() + t * v.stride(0), static_cast<std::size_t>(v.extent(1)));
  };
  // (n, d) what w1 and w3 read: x, or its rounded copy under the released numerics.
  const tensor_view<const float, 2> in = rounds_activations(num) ? tensor_view<const float, 2>(xq) : x;
  // Every GEMM's shapes, strides and overlaps (x's and y's among them) before any write.
  DSV4_TRY(linear_op<W>::check({e.w1, in, g, x_lanes, num}));
  DSV4_TRY(linear_op<W>::check({e.w3, in, u, x_lanes, num}));
  DSV4_TRY(linear_op<W>::check({e.w2, tensor_view<const float, 2>(g), y, g_lanes, num}));
  if (rounds_activations(num)) {
    parallel_for(0, n, [&](index_t t) {
      for (index_t c = 0; c < d; ++c) xq(t, c) = x(t, c);
      to_linear_input<W>(num, row(xq, t));
    });
  }
  // The gate and up projections and the activation in one parallel region: each task computes
  // its rows of g and u for every token, then the activation of those columns.
  const linear_input<W> xin(in, x_lanes, num);
  parallel_for(0, linear_input<W>::tasks(inter), [&](index_t b) {
    xin.run_task(e.w1, g, b);
    xin.run_task(e.w3, u, b);
    const index_t i0 = b * linear_input<W>::task_rows, i1 = std::min(inter, i0 + linear_input<W>::task_rows);
    for (index_t t = 0; t < n; ++t) {
      const float w = row_weight.empty() ? 1.0f : row_weight[static_cast<std::size_t>(t)];
      for (index_t i = i0; i < i1; ++i) {
        const float a = clamped_swiglu(to_activation(num, g(t, i)), to_activation(num, u(t, i)), limit);
        g(t, i) = row_weight.empty() ? a : a * w;
      }
    }
  });
  if (rounds_activations(num)) parallel_for(0, n, [&](index_t t) { to_linear_input<W>(num, row(g, t)); });
  DSV4_TRY(linear(e.w2, tensor_view<const float, 2>(g), y, g_lanes, num));
  if (rounds_activations(num)) parallel_for(0, n, [&](index_t t) { to_activation(num, row(y, t)); });
  return {};
}

// The dense SwiGLU FFN: the baseline an MoE is compared with (no routing, weight 1), with the
// numerics Num (core/numerics.hpp).
template <weight_matrix W, numerics Num = numerics::exact>
struct dense_swiglu_ffn {
  swiglu_weights<W> weights;
  float swiglu_limit;  // finite, >= 0, 0: the plain SwiGLU (model_params::swiglu_limit)

  // The FFN of a model: swiglu_limit from its parameters, weights of width d_model.
  static result<dense_swiglu_ffn> from(const config::model_config& cfg, const config::model_params& params,
                                       const swiglu_weights<W>& weights) {
    const dense_swiglu_ffn f{weights, params.swiglu_limit};
    DSV4_TRY(f.check());
    if (weights.dim() != cfg.d_model) {
      return status{errc::shape_mismatch,
                    "ffn: d = " + std::to_string(weights.dim()) +
                        " differs from the config's d_model = " + std::to_string(cfg.d_model)};
    }
    return f;
  }

  // The weights and the limit, independent of a batch.
  status check() const {
    DSV4_TRY(detail::check_swiglu_limit(swiglu_limit, "dense_swiglu_ffn"));
    return weights.check("ffn");
  }

  std::size_t workspace_bytes(index_t n) const {
    workspace_layout size_only;
    size_only.take<float>(swiglu_scratch_floats(weights, n, Num));
    return size_only.used;
  }

  status forward(const ffn_input& in, tensor_view<float, 2> y, std::span<std::byte> ws) const {
    DSV4_TRY(check());
    index_t n = 0;
    DSV4_TRY(detail::check_input_x(in, weights.dim(), n));
    DSV4_TRY(detail::check_view(y, {n, weights.dim()}, "y"));
    DSV4_TRY(check_workspace(ws, workspace_bytes(n)));
    const index_t floats = swiglu_scratch_floats(weights, n, Num);
    workspace_layout layout{ws.data()};
    return swiglu_forward(weights, in.x, {}, swiglu_limit, y,
                          std::span<float>(layout.take<float>(floats), static_cast<std::size_t>(floats)),
                          Num);
  }
};

static_assert(ffn_policy<dense_swiglu_ffn<f32_matrix>> && ffn_policy<dense_swiglu_ffn<bf16_matrix>> &&
              ffn_policy<dense_swiglu_ffn<fp8_matrix>> && ffn_policy<dense_swiglu_ffn<fp4_matrix>> &&
              ffn_policy<dense_swiglu_ffn<fp8_matrix, numerics::released>>);

}  // namespace dsv4::moe
