// linear_op<W>: y (n, out) = x (n, in) . W^T, activations times a weight stored in a checkpoint
// format (weight_matrix.hpp). Every linear of the model runs through it: attention projections,
// the router gate, routed and shared experts, the mHC mixing. docs/linear.md has the contract, the
// kernels and the reasons behind each choice.
//
// Why decoding chunk by chunk: FP8 and FP4 weights are mostly bytes and nibbles; expanding them to
// float would multiply the memory traffic by 4 to 8, so rows are decoded 32 columns at a time (a
// chunk), never further than L1 (linear_gemv.hpp for one token, linear_gemm.hpp for more).
//
// Accumulation order (the contract that makes results reproducible): each output y[t][o] has
// eight fp32 lane accumulators; lane l sums w[o][k] * x[t][k] over k = l (mod 8) in increasing k,
// where w is the decoded weight (code times scale, the scale applied per weight, not folded after
// the sum), then the lanes are added as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)), the
// tree of dsv4::dot. FP8 and FP4 assign the columns of each whole 32-column chunk to the lanes in
// the order their fastest decoders produce, before the next chunk: FP8 lane l sums columns 2l,
// 2l + 1, 16 + 2l, 17 + 2l, FP4 lane l columns l/4 + 4 (l mod 4) + 0, 2, 16, 18, in that order
// (weight_lanes.hpp); a column tail (FP8 only) keeps lane = k mod 8. Every output is computed by
// one thread and does not depend on the other rows or tokens, so results are bit-identical for
// any thread count, and gemv(x) equals the row of linear(X) that holds x (a batch equals its
// tokens one by one). Products use fused multiply-add where the target has it.
#pragma once

#include <span>
#include <string>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/linear_q8.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_lanes.hpp"
#include "dsv4/core/weight_matrix.hpp"

namespace dsv4 {

template <weight_matrix W>
struct linear_op {
  struct params {
    using op = linear_op;
    W weight;                        // (out, in)
    tensor_view<const float, 2> x;   // (n, in), rows may be strided
    tensor_view<float, 2> y;         // (n, out), rows may be strided
    std::span<float> workspace{};    // (workspace_floats(n, in)) x in W's lane order, or its int8 blocks
    numerics num = numerics::exact;  // numerics::fast: FP4 weights take x as int8 blocks (linear_q8.hpp)
  };

  // Floats of workspace a call with n tokens of `in` columns needs: FP8 and FP4 read x in their
  // lane orders (a permuted copy, or for FP4 under numerics::fast its int8 blocks, which take
  // less), other formats read x where it is.
  static constexpr index_t workspace_floats(index_t n, index_t in) {
    return detail::has_lane_order<W> ? n * in : 0;
  }

  static status check(const params& p) {
    DSV4_TRY(check_numerics(p.num));
    DSV4_TRY(p.weight.check("weight"));
    DSV4_TRY(check_shape(p.x, {any_extent, p.weight.cols()}, "x"));
    DSV4_TRY(detail::check_unit_inner_stride(p.x, "x"));
    DSV4_TRY(check_shape(p.y, {p.x.extent(0), p.weight.rows()}, "y"));
    DSV4_TRY(detail::check_unit_inner_stride(p.y, "y"));
    const index_t need = workspace_floats(p.x.extent(0), p.x.extent(1));
    if (static_cast<index_t>(p.workspace.size()) < need)
      return {errc::shape_mismatch, "workspace: expected at least " + std::to_string(need) + " floats, got " +
                                        std::to_string(p.workspace.size())};
    const tensor_view<const float, 1> ws(p.workspace.data(), {need});
    if (overlaps(p.y, p.x) || overlaps(p.y, ws) || overlaps(p.x, ws))
      return {errc::invalid_argument, "x, y and the workspace must not overlap"};
    return {};
  }
};

}  // namespace dsv4
