// The projections of the attention layer (weights in any format of core/weight_matrix.hpp times a block
// of token rows), their shape checks, and the rule for when a loop is worth spreading over
// threads. parallel_for only distributes whole outputs, so no result depends on the thread count
// or on how many tokens a call carries.
#pragma once

#include <algorithm>
#include <cstring>
#include <span>
#include <string>

#include "dsv4/core/linear.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// core/parallel.hpp's rule for when a loop is worth spreading over threads, under its older name.
using dsv4::parallel_for_work;

// y (n, out) = x (n, in) . w^T for weights (out, in) in any format: core/linear.hpp, whose
// rows are bit-identical to one-token calls, so a prefill chunk and a decode step compute every
// projection identically. Rows of x and y may be strided (a column block of a wider matrix).
// lanes: the GEMM's workspace (linear_op<W>::workspace_floats(n, in) floats at least); num: the
// layer's numerics where the linear follows them (int8 inputs to FP4 weights under numerics::fast).
template <weight_matrix W>
status project(const W& w, tensor_view<const float, 2> x, tensor_view<float, 2> y, std::span<float> lanes,
               numerics num = numerics::exact) {
  return linear(w, x, y, lanes, num);
}

// w is a valid matrix of its format with (rows, cols); name is its checkpoint name without ".weight".
template <weight_matrix W>
status check_matrix(const W& w, index_t rows, index_t cols, const std::string& name) {
  DSV4_TRY(w.check(name));
  if (w.rows() != rows || w.cols() != cols)
    return {errc::shape_mismatch, name + ".weight: expected " + shape_string<2>({rows, cols}) + ", got " +
                                      shape_string<2>({w.rows(), w.cols()})};
  return {};
}

}  // namespace dsv4::attn
