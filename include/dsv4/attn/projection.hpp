// y = W x with fp32 weights (the projections of the exact path), and the rule for when a loop is
// worth spreading over threads.
//
// Every dot product here sums in dsv4::dot's lane order (lane l takes elements l, l+8, ...; a fixed
// tree at the end), whether it is computed alone or in a block of rows, and parallel_for only
// distributes whole outputs, so no result depends on the thread count, the blocking, or on how
// many tokens a call carries (decode and prefill compute every value identically). Quantized
// weights go through the GEMV of core/ later.
#pragma once

#include <algorithm>
#include <cstring>
#include <span>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// parallel_for when the loop carries at least `work` multiply-adds worth a thread hand-off, a
// plain loop otherwise; the indices are processed identically either way.
template <class F>
void parallel_for_work(index_t work, index_t begin, index_t end, F&& f) {
  constexpr index_t min_parallel_work = index_t{1} << 16;
  if (work >= min_parallel_work) {
    parallel_for(begin, end, f);
  } else {
    for (index_t i = begin; i < end; ++i) f(i);
  }
}

// (out, in) x (in) -> (out). Rows of w must be contiguous.
inline void matvec(tensor_view<const float, 2> w, std::span<const float> x, std::span<float> y) {
  DSV4_ASSERT(w.stride(1) == 1 && static_cast<index_t>(x.size()) == w.extent(1) &&
                  static_cast<index_t>(y.size()) == w.extent(0),
              "matvec: shapes differ");
  // Rows in blocks of 64 so that small projections do not pay a thread hand-off per row.
  constexpr index_t block = 64;
  const index_t rows = w.extent(0), in = w.extent(1);
  parallel_for_work(rows * in, 0, (rows + block - 1) / block, [&](index_t b) {
    const index_t begin = b * block, end = std::min(rows, begin + block);
    dot_rows(&w(begin, 0), x.data(), in, end - begin, y.data() + begin);
  });
}

}  // namespace dsv4::attn
