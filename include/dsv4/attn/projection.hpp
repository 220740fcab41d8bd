// The projections of the attention layer (fp32 weights times a block of token rows) and the rule
// for when a loop is worth spreading over threads. parallel_for only distributes whole outputs,
// so no result depends on the thread count or on how many tokens a call carries.
#pragma once

#include <algorithm>
#include <cstring>
#include <span>

#include "dsv4/core/gemv.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// parallel_for_dynamic when the loop carries at least `work` multiply-adds worth a thread hand-off, a
// plain loop otherwise; the indices are processed identically either way.
template <class F>
void parallel_for_work(index_t work, index_t begin, index_t end, F&& f) {
  constexpr index_t min_parallel_work = index_t{1} << 16;
  if (work >= min_parallel_work) {
    parallel_for_dynamic(begin, end, f);
  } else {
    for (index_t i = begin; i < end; ++i) f(i);
  }
}

// y (n, out) = x (n, in) . w^T for fp32 weights (out, in): core/gemv.hpp's GEMM, whose rows are
// bit-identical to one-token calls, so a prefill chunk and a decode step compute every projection
// identically. Rows of x and y may be strided (a column block of a wider matrix).
inline void project(tensor_view<const float, 2> w, tensor_view<const float, 2> x, tensor_view<float, 2> y) {
  [[maybe_unused]] const status s = gemm(f32_matrix{w}, x, y);
  DSV4_ASSERT(s.ok(), "project: shapes differ");
}

}  // namespace dsv4::attn
