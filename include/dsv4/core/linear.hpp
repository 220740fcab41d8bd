// linear(W, x, y): y (n, out) = x (n, in) . W^T for a weight in any checkpoint format, and gemv
// for one token: the CPU kernel of linear_op (linear_op.hpp has the contract), parallel over
// blocks of output rows, one token through linear_gemv.hpp and more through linear_gemm.hpp.
// linear_input lets a caller run the row tasks of several matrices that share x in one region.
#pragma once

#include <algorithm>
#include <concepts>
#include <memory>
#include <new>
#include <span>
#include <string>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/linear_gemm.hpp"
#include "dsv4/core/linear_gemv.hpp"
#include "dsv4/core/linear_op.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_matrix.hpp"

namespace dsv4 {

namespace detail {

template <weight_matrix W>
void row_block(const typename linear_op<W>::params& p, index_t row0, index_t rows, const exponent_range& xr) {
  if (p.x.extent(0) != 1) return gemm_row_block<W>(p, row0, rows);
  index_t r = 0;
  for (; r + gemv_rows <= rows; r += gemv_rows) gemv_row_block<gemv_rows, W>(p, row0 + r, xr);
  for (; r < rows; ++r) gemv_row_block<1, W>(p, row0 + r, xr);
}

}  // namespace detail

// The input x of linear_op<W> prepared once for any number of row tasks: FP8 and FP4 read x in their
// lane orders (a permuted copy), the one-token FP8 GEMV needs x's exponent range. The kernel below
// runs every task of one matrix on it; a caller can also run the tasks of several matrices that
// share x in one parallel region (an expert's gate and up projections: moe/experts.hpp), which
// saves a region start per matrix. The caller checks the shapes (linear_op<W>::check) first.
template <weight_matrix W>
class linear_input {
 public:
  // lanes: linear_op<W>::workspace_floats(n, in) floats that receive x in W's lane order (or as
  // int8 blocks, where num makes W take them: takes_int8_input).
  linear_input(tensor_view<const float, 2> x, std::span<float> lanes, numerics num = numerics::exact)
      : x_(x), range_(range_of(x)), int8_(takes_int8_input<W>(num)) {
    arrange(lanes);
  }
  // The same with the lanes in memory of its own.
  explicit linear_input(tensor_view<const float, 2> x, numerics num = numerics::exact)
      : x_(x), range_(range_of(x)), int8_(takes_int8_input<W>(num)) {
    const auto floats = static_cast<std::size_t>(linear_op<W>::workspace_floats(x.extent(0), x.extent(1)));
    if (floats > 0) lanes_.reset(new float[floats]);
    arrange({lanes_.get(), floats});
  }

  // Output rows per task, and the tasks of a matrix with `out` rows.
  static constexpr index_t task_rows = detail::task_rows;
  static index_t tasks(index_t out) { return ceil_div(out, task_rows); }
  // Task b of y = x . w^T: rows [b * task_rows, (b + 1) * task_rows) of y (fewer in the last) for
  // every token.
  void run_task(const W& w, tensor_view<float, 2> y, index_t b) const {
    const index_t row0 = b * task_rows;
    if constexpr (std::same_as<W, fp4_matrix>)
      if (int8_) return detail::q8_row_block(w, x_.data(), y, row0, std::min(task_rows, w.rows() - row0));
    detail::row_block<W>(typename linear_op<W>::params{w, x_, y}, row0, std::min(task_rows, w.rows() - row0),
                         range_);
  }

 private:
  // Only the one-token FP8 path reads the range: a pass over x, against one over the whole matrix.
  static bool scans_range(const tensor_view<const float, 2>& x) {
    return detail::fp8_gemv_scales_x && std::same_as<W, fp8_matrix> && x.extent(0) == 1;
  }
  static detail::exponent_range range_of(tensor_view<const float, 2> x) {
    return detail::exponent_range(std::span<const float>(x.data(), scans_range(x) ? x.extent(1) : 0));
  }
  void arrange(std::span<float> lanes) {
    if (int8_) {  // x_ then points at the blocks, n tokens of q8_floats(in) floats
      const index_t n = x_.extent(0), in = x_.extent(1), per_token = detail::q8_floats(in);
      DSV4_ASSERT(static_cast<index_t>(lanes.size()) >= n * per_token, "linear_input: lanes too short");
      for (index_t t = 0; t < n; ++t)
        detail::quantize_q8(x_.data() + t * x_.stride(0), in, lanes.data() + t * per_token);
      x_ = tensor_view<const float, 2>(lanes.data(), {n, per_token});
      return;
    }
    if constexpr (detail::has_lane_order<W>) {
      const index_t n = x_.extent(0), in = x_.extent(1);
      DSV4_ASSERT(static_cast<index_t>(lanes.size()) >= n * in, "linear_input: lanes too short");
      for (index_t t = 0; t < n; ++t)
        detail::lane_order<W>(x_.data() + t * x_.stride(0), in, lanes.data() + t * in);
      x_ = tensor_view<const float, 2>(lanes.data(), {n, in});
    }
  }
  tensor_view<const float, 2> x_;
  detail::exponent_range range_;
  bool int8_;
  std::unique_ptr<float[]> lanes_;  // the lanes of the allocating constructor
};

// Parallel over blocks of task_rows output rows.
template <weight_matrix W>
struct kernel<linear_op<W>, cpu> {
  static status run(const typename linear_op<W>::params& p) {
    DSV4_TRY(linear_op<W>::check(p));
    const linear_input<W> in(p.x, p.workspace, p.num);
    parallel_for(0, linear_input<W>::tasks(p.weight.rows()),
                 [&](index_t b) { in.run_task(p.weight, p.y, b); });
    return {};
  }
};

// y (n, out) = x (n, in) . W^T, with linear_op<W>::workspace_floats(n, in) floats of workspace;
// num picks the int8 path for FP4 weights (numerics::fast) and is otherwise not read.
template <weight_matrix W>
status linear(const W& weight, tensor_view<const float, 2> x, tensor_view<float, 2> y,
              std::span<float> workspace, numerics num = numerics::exact) {
  return run<cpu>(typename linear_op<W>::params{weight, x, y, workspace, num});
}
// The same with a workspace allocated for the call (FP8 and FP4 only; a convenience: engines
// pass their own).
template <weight_matrix W>
status linear(const W& weight, tensor_view<const float, 2> x, tensor_view<float, 2> y) {
  DSV4_TRY(check_shape(x, {any_extent, any_extent}, "x"));
  const index_t floats = linear_op<W>::workspace_floats(x.extent(0), x.extent(1));
  if (floats == 0) return linear(weight, x, y, {});
  const std::unique_ptr<float[]> ws(new (std::nothrow) float[static_cast<std::size_t>(floats)]);
  if (!ws) return {errc::out_of_range, "workspace: cannot allocate " + std::to_string(floats) + " floats"};
  return linear(weight, x, y, {ws.get(), static_cast<std::size_t>(floats)});
}

// y (out) = W . x (in): the one-token linear, bit-identical to the matching row of any batch.
template <weight_matrix W>
status gemv(const W& weight, std::span<const float> x, std::span<float> y) {
  const auto in = static_cast<index_t>(x.size()), out = static_cast<index_t>(y.size());
  return linear(weight, tensor_view<const float, 2>(x.data(), {1, in}),
                tensor_view<float, 2>(y.data(), {1, out}));
}

}  // namespace dsv4
