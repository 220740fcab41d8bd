// The tiled kernel of linear_op for two tokens or more: output rows in tasks of 12, each task
// decoding its 12 rows 384 columns at a time into an L1 tile that serves up to 64 tokens through
// a 3-row x 4-token register-blocked micro-kernel, so that decoding is a few percent of the
// multiply-adds. Accumulation follows the order contract of linear_op.hpp.
#pragma once

#include <algorithm>

#include "dsv4/core/linear_op.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/weight_lanes.hpp"

namespace dsv4 {

namespace detail {

// Register block of the GEMM: 3 rows x 4 tokens = 12 accumulators, plus 3 weight vectors and one
// x vector, fill the 16 AVX registers; per 8 columns 7 loads feed 12 multiply-adds.
inline constexpr int gemm_mr = 3;
inline constexpr int gemm_mt = 4;
// Output rows per parallel task: four register blocks share every chunk of x brought into L1.
inline constexpr index_t task_rows = 12;
// Columns decoded per tile: 12 rows x 384 floats = 18 KiB, resident in L1 with the 6 KiB of x a
// register block reads. A micro-kernel call runs 48 steps of 8 columns between the loads and
// stores of its 12 accumulators, which a wider slice spreads over more multiply-adds.
inline constexpr index_t gemm_kc = 384;
// Tokens per pass: each decoded tile serves 64 tokens (decoding is then a few percent of the
// multiply-adds); their 64 x 12 lane accumulators (24 KiB, on the stack) are read and written
// once per micro-kernel call.
inline constexpr index_t gemm_pass = 64;

// acc[t][r] += tile[r][0 .. kc) . x[t][k0 .. k0 + kc) lane by lane (the order contract), for R
// rows of the tile and T tokens; kc need not be a multiple of 8 (the tail keeps lane = k mod 8).
// acc holds (T, task_rows) accumulators; the R x T block of them stays in registers.
template <int R, int T>
DSV4_FORCEINLINE void gemm_micro(const float* tile, const float* const* x, index_t k0, index_t kc, v8f* acc) {
  v8f a[R][T];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) a[r][t] = acc[t * task_rows + r];
  const index_t kv = kc & ~index_t{7};
  for (index_t k = 0; k < kv; k += 8) {
    v8f w[R];
    for (int r = 0; r < R; ++r) {
      load8(w[r], tile + r * gemm_kc + k);
      pin_register(w[r]);
    }
    for (int t = 0; t < T; ++t) {
      v8f xv;
      load8(xv, x[t] + k0 + k);
      pin_register(xv);
      for (int r = 0; r < R; ++r) fma8(a[r][t], w[r], xv);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc[t * task_rows + r] = a[r][t];
  if (kv == kc) return;
  // The column tail through a buffer (indexing a at run time would keep it out of registers).
  alignas(32) float lanes[8];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) {
      store8(lanes, acc[t * task_rows + r]);
      for (index_t k = kv; k < kc; ++k)
        lanes[k & 7] = fma1(tile[r * gemm_kc + k], x[t][k0 + k], lanes[k & 7]);
      load8(acc[t * task_rows + r], lanes);
    }
}

template <int R>
void gemm_micro_tokens(const float* tile, const float* const* x, index_t k0, index_t kc, v8f* acc,
                       int tokens) {
  switch (tokens) {
    case 4:
      return gemm_micro<R, 4>(tile, x, k0, kc, acc);
    case 3:
      return gemm_micro<R, 3>(tile, x, k0, kc, acc);
    case 2:
      return gemm_micro<R, 2>(tile, x, k0, kc, acc);
    default:
      return gemm_micro<R, 1>(tile, x, k0, kc, acc);
  }
}

inline void gemm_micro_any(const float* tile, const float* const* x, index_t k0, index_t kc, v8f* acc,
                           int rows, int tokens) {
  switch (rows) {
    case 3:
      return gemm_micro_tokens<3>(tile, x, k0, kc, acc, tokens);
    case 2:
      return gemm_micro_tokens<2>(tile, x, k0, kc, acc, tokens);
    default:
      return gemm_micro_tokens<1>(tile, x, k0, kc, acc, tokens);
  }
}

// Columns [k0, k0 + kc) of `rows` weight rows from row0 into tile rows of gemm_kc floats.
template <weight_matrix W>
void decode_tile(const W& m, index_t row0, index_t rows, index_t k0, index_t kc, float* tile) {
  for (index_t r = 0; r < rows; ++r) {
    float* out = tile + r * gemm_kc;
    index_t c = 0;
    for (; c + weight_chunk <= kc; c += weight_chunk) {
      chunk_regs w;
      load_chunk(m, row0 + r, k0 + c, w);
      for (int i = 0; i < 4; ++i) store8(out + c + 8 * i, w[i]);
    }
    if (c < kc) m.decode(row0 + r, k0 + c, kc - c, out + c);
  }
}

// Rows [row0, row0 + rows) of y for all tokens: tokens in passes of gemm_pass, and for each pass
// the weight rows decoded gemm_kc columns at a time into an L1 tile that every register block of
// the pass reads, so each decoded weight serves up to gemm_pass tokens and each chunk of x loaded
// into L1 serves all the task's rows.
template <weight_matrix W>
void gemm_row_block(const typename linear_op<W>::params& p, index_t row0, index_t rows) {
  alignas(64) float tile[task_rows * gemm_kc];  // (task_rows, gemm_kc)
  v8f acc[gemm_pass * task_rows];               // (gemm_pass, task_rows) lane accumulators
  const index_t n = p.x.extent(0), in = p.weight.cols();
  for (index_t t0 = 0; t0 < n; t0 += gemm_pass) {
    const index_t nt = std::min(gemm_pass, n - t0);
    std::fill(acc, acc + nt * task_rows, v8f{});
    for (index_t k0 = 0; k0 < in; k0 += gemm_kc) {
      const index_t kc = std::min(gemm_kc, in - k0);
      decode_tile(p.weight, row0, rows, k0, kc, tile);
      for (index_t t = 0; t < nt; t += gemm_mt) {
        const int tokens = static_cast<int>(std::min<index_t>(gemm_mt, nt - t));
        const float* x[gemm_mt];
        for (int j = 0; j < tokens; ++j) x[j] = p.x.data() + (t0 + t + j) * p.x.stride(0);
        for (index_t r = 0; r < rows; r += gemm_mr)
          gemm_micro_any(tile + r * gemm_kc, x, k0, kc, acc + t * task_rows + r,
                         static_cast<int>(std::min<index_t>(gemm_mr, rows - r)), tokens);
      }
    }
    for (index_t t = 0; t < nt; ++t)
      for (index_t r = 0; r < rows; ++r) p.y(t0 + t, row0 + r) = reduce_lanes(acc[t * task_rows + r]);
  }
}

}  // namespace detail

}  // namespace dsv4
