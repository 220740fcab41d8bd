// Weight chunks in lane order: how the linear kernels (linear.hpp) load 32 columns of a weight row
// into registers, and how they arrange x to match. Each of the eight fp32 lanes of an output's
// accumulator sums a fixed set of columns (the order contract of linear_op.hpp); FP8 and FP4 assign
// the columns of each chunk to the lanes in the order their fastest decoders produce
// (lanes_from_columns), and x is copied once per call into that order (lane_order), so that no
// kernel shuffles inside its inner loop.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <utility>

#include "dsv4/core/chunk_decode.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/weight_matrix.hpp"

namespace dsv4 {

namespace detail {

// Columns [k0, k0 + weight_chunk) of a row through W::decode and a buffer in L1: the way of any
// weight_matrix, and the rare way out of the fast decoders below.
template <weight_matrix W>
DSV4_FORCEINLINE void load_chunk_buffered(const W& m, index_t row, index_t k0, chunk_regs& out) {
  alignas(32) float buf[weight_chunk];
  m.decode(row, k0, weight_chunk, buf);
  for (int i = 0; i < 4; ++i) load8(out[i], buf + 8 * i);
}

// Columns [k0, k0 + weight_chunk) of a row, decoded into registers by the format's fastest exact
// decoder.
template <weight_matrix W>
DSV4_FORCEINLINE void load_chunk(const W& m, index_t row, index_t k0, chunk_regs& out) {
  load_chunk_buffered(m, row, k0, out);
}
DSV4_FORCEINLINE void load_chunk(const f32_matrix& m, index_t row, index_t k0, chunk_regs& out) {
  const float* w = m.weight.data() + row * m.weight.stride(0) + k0;
  for (int i = 0; i < 4; ++i) load8(out[i], w + 8 * i);
}
DSV4_FORCEINLINE void load_chunk(const bf16_matrix& m, index_t row, index_t k0, chunk_regs& out) {
  const bf16* w = m.weight.data() + row * m.weight.stride(0) + k0;
  for (int i = 0; i < 4; ++i) widen_bf16(w + 8 * i, out[i]);
}
// The lane orders of the contract (top of the file): the 32 values of a chunk, given in column
// order, rearranged so that vector i, lane l holds the column lane l sums i-th. FP8 (the order of
// widen_fp8_pow2_lanes): columns 2l, 2l + 1, 16 + 2l, 17 + 2l. FP4 (the order of
// decode_fp4_lanes): columns l/4 + 4 (l mod 4) + 0, 2, 16, 18. Other formats keep column order.
template <weight_matrix W>
inline constexpr bool has_lane_order = std::same_as<W, fp8_matrix> || std::same_as<W, fp4_matrix>;
// Vector V of a chunk in lane order, from the chunk's half V / 2 in column order (a: its columns
// 0..7, b: 8..15): lane l takes the column index_math names, less the half's first column.
template <weight_matrix W, int V>
inline constexpr std::array<int, 8> lane_sources = [] {
  std::array<int, 8> c{};
  for (int l = 0; l < 8; ++l)
    c[static_cast<std::size_t>(l)] = (std::same_as<W, fp8_matrix> ? index_math::fp8_lane_column(V, l)
                                                                  : index_math::fp4_lane_column(V, l)) -
                                     16 * (V / 2);
  return c;
}();
template <weight_matrix W, int V>
DSV4_FORCEINLINE v8f lane_vector(const v8f& a, const v8f& b) {
  constexpr std::array<int, 8> c = lane_sources<W, V>;
  return __builtin_shufflevector(a, b, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
}
template <weight_matrix W>
DSV4_FORCEINLINE void lanes_from_columns(chunk_regs& v) {
  static_assert(has_lane_order<W>);
  const chunk_regs c = {v[0], v[1], v[2], v[3]};
  v[0] = lane_vector<W, 0>(c[0], c[1]);
  v[1] = lane_vector<W, 1>(c[0], c[1]);
  v[2] = lane_vector<W, 2>(c[2], c[3]);
  v[3] = lane_vector<W, 3>(c[2], c[3]);
}

// x's n columns in W's lane order: every whole chunk rearranged by lanes_from_columns, the column
// tail (n mod 32, FP8 only), which every kernel takes in column order, copied as it is.
template <weight_matrix W>
inline void lane_order(const float* x, index_t n, float* out) {
  index_t b = 0;
  for (; b + weight_chunk <= n; b += weight_chunk) {
    chunk_regs v;
    for (int i = 0; i < 4; ++i) load8(v[i], x + b + 8 * i);
    lanes_from_columns<W>(v);
    for (int i = 0; i < 4; ++i) store8(out + b + 8 * i, v[i]);
  }
  std::copy(x + b, x + n, out + b);
}

// FP4: columns [k0, k0 + weight_chunk) of a row in lane order (the GEMV's and GEMM's, whose x is in
// lane order too).
DSV4_FORCEINLINE void load_chunk(const fp4_matrix& m, index_t row, index_t k0, chunk_regs& out) {
#if defined(__F16C__) && defined(__AVX2__)
  const auto k = static_cast<std::size_t>(k0);
  const fp4x2* w = m.weight.data() + row * m.weight.stride(0) + index_math::fp4_byte(k);
  const ue8m0 s =
      m.scale.data()[index_math::row_scale_index<std::size_t>(row, k, m.scale.stride(0), fp4_block)];
  if (__builtin_expect(fp4_exponent_scalable(s), true)) {
    decode_fp4_lanes(w, s, out);
  } else {
    decode_fp4_lanes_multiplied(w, scale_float(s), out);
  }
#else
  load_chunk_buffered(m, row, k0, out);
  lanes_from_columns<fp4_matrix>(out);
#endif
}

// FP8: columns [k0, k0 + weight_chunk) of a row in lane order. The codes are read as code *
// 2^-120 (widen_fp8_pow2_lanes) and multiplied by scale * 2^120 for scales up to 2^7: the product
// is code * scale, which is a float for every such scale (down to 2^-136 for the smallest
// subnormal code at scale 2^-127), so it is exact. A NaN code or a larger scale decodes in column
// order (the half decoder up to 2^119, the scalar one beyond) and is rearranged.
DSV4_FORCEINLINE void load_chunk(const fp8_matrix& m, index_t row, index_t k0, chunk_regs& out) {
#if defined(__F16C__) && defined(__AVX2__)
  const fp8_e4m3* w = m.weight.data() + row * m.weight.stride(0) + k0;
  const ue8m0 s = m.block_scale(row, k0);
  if (__builtin_expect(s.bits <= fp8_pow2_scale_max_bits && !fp8_probe_has_nan(fp8_nan_probe(w)), true)) {
    widen_fp8_pow2_lanes(w, out);
    const float f = scale_times_pow2(s, 120);
    for (int i = 0; i < 4; ++i) out[i] = out[i] * f;
    return;
  }
  if (!decode_fp8_chunk(w, s, out)) load_chunk_buffered(m, row, k0, out);
#else
  load_chunk_buffered(m, row, k0, out);
#endif
  lanes_from_columns<fp8_matrix>(out);
}

}  // namespace detail

}  // namespace dsv4
