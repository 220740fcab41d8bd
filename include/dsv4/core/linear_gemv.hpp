// The one-token kernel of linear_op (a GEMV): four rows at a time, each chunk of them decoded
// straight into registers and multiplied with the chunk of x at once, while the same chunk of the
// next four rows is prefetched (rows of FP8 or FP4 are a page or less, where the hardware
// prefetcher stops). The FP8 GEMV multiplies x, not the weights, by the block scale where that
// leaves every product unchanged: the code * 2^-120 patterns against x times scale * 2^120
// (gemv_fp8_pow2_chunks), the halves against x times scale * 2^8 (gemv_fp8_chunk), and the decoded
// weights where the scale, x's range or a NaN code rules both out. Accumulation follows the order
// contract of linear_op.hpp, so a token gives the bits it gives inside a batch.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>

#include "dsv4/core/chunk_decode.hpp"
#include "dsv4/core/linear_op.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/weight_lanes.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4 {

namespace detail {

// Rows a one-token GEMV decodes per chunk of x: four independent accumulation chains.
inline constexpr int gemv_rows = 4;

// The exponent fields of the finite nonzero entries of a token x: enough to know for which powers
// of two 2^e every x[k] * 2^e is exact (a normal float, or zero, infinity or NaN).
struct exponent_range {
  int lo = 255, hi = 0;  // lo > hi: no finite nonzero entry
  explicit exponent_range(std::span<const float> x) {
    // Eight lanes at a time, branch-free: one pass over x, small next to the pass over the
    // weights. The last partial group is padded with zeros, which do not count.
    v8u32 l8 = v8u32{} + 255u, h8 = {};
    auto add = [&](v8u32 a) {
      a &= 0x7fffffffu;
      const v8u32 field = a >> 23;
      const auto finite_nonzero = (a != 0u) & (a < f32_inf_bits);
      l8 = finite_nonzero && field < l8 ? field : l8;  // 0 for a subnormal: never scaled down
      h8 = finite_nonzero && field > h8 ? field : h8;
    };
    const std::size_t full = x.size() - x.size() % 8;
    for (std::size_t i = 0; i < full; i += 8) {
      v8u32 a;
      std::memcpy(&a, x.data() + i, sizeof a);
      add(a);
    }
    if (full < x.size()) {
      v8u32 a = {};
      std::memcpy(&a, x.data() + full, (x.size() - full) * sizeof(float));
      add(a);
    }
    std::uint32_t l = 255, h = 0;
    for (int j = 0; j < 8; ++j) {
      l = std::min(l, l8[j]);
      h = std::max(h, h8[j]);
    }
    lo = static_cast<int>(l);
    hi = static_cast<int>(h);
  }
  bool scales_exactly(int e) const { return lo > hi || (lo + e >= 1 && hi + e <= 254); }
};

// The bytes of a chunk of a row (an FP4 byte holds two columns), and where they start.
template <weight_matrix W>
inline constexpr index_t chunk_bytes = static_cast<index_t>(sizeof(*std::declval<const W&>().weight.data())) *
                                       weight_chunk / (std::same_as<W, fp4_matrix> ? 2 : 1);
template <weight_matrix W>
DSV4_FORCEINLINE const char* chunk_address(const W& m, index_t row, index_t k0) {
  return reinterpret_cast<const char*>(m.weight.data() + row * m.weight.stride(0)) +
         k0 / weight_chunk * chunk_bytes<W>;
}

// Asks for the chunk at k0 of the R rows after [row0, row0 + R) (those inside the matrix), one
// prefetch per 64-byte cache line: a chunk smaller than a line (FP8 32 bytes, FP4 16) asks for the
// line at its offset only where the offset is a multiple of 64, so each line is asked for once
// (a prefetch at every chunk would ask for a line two or four times, and the repeats cost the
// GEMV issue slots even when the rows are already in cache).
template <int R, weight_matrix W>
DSV4_FORCEINLINE void prefetch_next_rows(const W& m, index_t row0, index_t k0) {
  constexpr index_t line_bytes = 64;
  if constexpr (chunk_bytes<W> < line_bytes)
    if (k0 / weight_chunk % (line_bytes / chunk_bytes<W>) != 0) return;
  const index_t next = row0 + R, last = std::min<index_t>(next + R, m.rows());
  for (index_t r = next; r < last; ++r) {
    const char* a = chunk_address(m, r, k0);
    for (index_t b = 0; b < chunk_bytes<W>; b += line_bytes) __builtin_prefetch(a + b);
  }
}

// Whether the one-token FP8 GEMV moves the scale to x (gemv_fp8_pow2_chunks, gemv_fp8_chunk), and
// so needs x's range.
#if defined(__F16C__) && defined(__AVX2__)
inline constexpr bool fp8_gemv_scales_x = true;

// xs = the 32 floats of x at x0 times f, for the FP8 GEMV chunks below.
DSV4_FORCEINLINE void load_scaled_x(const float* x0, float f, chunk_regs& xs) {
  for (int i = 0; i < 4; ++i) {
    load8(xs[i], x0 + 8 * i);
    xs[i] = xs[i] * f;
  }
}

// C consecutive chunks of R FP8 rows (in one 128 x 128 scale block) against x for the GEMV, the
// common way: the codes are read as code * 2^-120 (widen_fp8_pow2_lanes) and each chunk of x is
// multiplied by scale * 2^120 once for the R rows. Where x * scale * 2^120 is exact for every x,
// the product the fused multiply-add sees is the real number code * scale * x, as with the decoded
// weight (code * scale is exact for every finite scale: an e4m3 code is a multiple of 2^-9 and the
// scale at least 2^-127), so it rounds to the same float; e4m3 subnormals become fp32 subnormals,
// which the multiply-add takes at full speed. false (nothing done) when the scale is above 2^7,
// x's range does not allow it or one of the R rows holds a NaN code in the C chunks (one unsigned
// maximum over them and one compare find it). A whole block at once (C = 4) reads its scale and
// checks it once; the chunks are consumed in order, so the bits do not depend on C.
template <int R, int C>
DSV4_FORCEINLINE bool gemv_fp8_pow2_chunks(const fp8_matrix& m, index_t row0, index_t k0, const float* x,
                                           const exponent_range& xr, v8f (&acc)[R]) {
  const ue8m0 s = m.block_scale(row0, k0);
  if (s.bits > fp8_pow2_scale_max_bits || !xr.scales_exactly(s.bits - 127 + 120)) return false;
  const index_t ld = m.weight.stride(0);
  const fp8_e4m3* w0 = m.weight.data() + row0 * ld + k0;
  __m256i probe = fp8_nan_probe(w0);
  for (int r = 0; r < R; ++r)
    for (int c = r == 0 ? 1 : 0; c < C; ++c)
      probe = _mm256_max_epu8(probe, fp8_nan_probe(w0 + r * ld + c * weight_chunk));
  if (fp8_probe_has_nan(probe)) return false;
  const float f = scale_times_pow2(s, 120);
  for (int c = 0; c < C; ++c) {
    prefetch_next_rows<R>(m, row0, k0 + c * weight_chunk);
    chunk_regs xs;
    load_scaled_x(x + k0 + c * weight_chunk, f, xs);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      chunk_regs w;
      widen_fp8_pow2_lanes(w0 + r * ld + c * weight_chunk, w);
      for (int i = 0; i < 4; ++i) fma8(acc[r], w[i], xs[i]);
    }
  }
  return true;
}

// The way for a chunk gemv_fp8_pow2_chunks cannot take (a scale up to 2^119, or x too close to
// the ends of the float range), with the half decoder and the scale moved from the weights to x
// as well: the block's 128 x 128 weights share scale * 2^8, so x is multiplied by it
// once for the R rows instead of every weight. When x * scale * 2^8 is exact the product of a
// re-biased code (code * 2^-8) with it is the real number code * scale * x, the same as the
// decoded weight's product, so the fused multiply-add rounds it to the same float: the order
// contract holds bit for bit. false (nothing done) when the scale or x's range does not allow it.
template <int R>
DSV4_FORCEINLINE bool gemv_fp8_chunk(const fp8_matrix& m, index_t row0, index_t k0, const float* x,
                                     const exponent_range& xr, v8f (&acc)[R]) {
  const ue8m0 s = m.block_scale(row0, k0);
  if (s.bits > fp8_half_scale_max_bits || !xr.scales_exactly(s.bits - 127 + 8)) return false;
  const float f = scale_times_pow2(s, 8);
  chunk_regs xs;
  load_scaled_x(x + k0, f, xs);
#pragma GCC unroll 8  // every accumulator in its own register
  for (int r = 0; r < R; ++r) {
    chunk_regs w;
    if (__builtin_expect(decode_fp8_unscaled(m.weight.data() + (row0 + r) * m.weight.stride(0) + k0, w),
                         true)) {
      lanes_from_columns<fp8_matrix>(w);
      for (int i = 0; i < 4; ++i) fma8(acc[r], w[i], xs[i]);
    } else {  // a NaN code: the decoded weights against x itself
      load_chunk(m, row0 + r, k0, w);
      for (int i = 0; i < 4; ++i) {
        v8f xv;
        load8(xv, x + k0 + 8 * i);
        fma8(acc[r], w[i], xv);
      }
    }
  }
  return true;
}
#else
inline constexpr bool fp8_gemv_scales_x = false;
#endif

#if defined(__F16C__) && defined(__AVX2__)
// Chunks of an FP4 one-token GEMV step: 8 chunks (256 columns, 128 bytes of each row, whose 8 scale
// bytes lie side by side).
inline constexpr index_t fp4_gemv_step_chunks = 8;

// C = fp4_gemv_step_chunks consecutive chunks of R FP4 rows from column k0 against x (lane order),
// the common way: every scale of the R x C blocks within decode_fp4_lanes' range, which one
// unsigned minimum and maximum over the R rows' scale bytes show (false, nothing done, otherwise;
// one check per step costs less than R byte loads, compares and flag merges per chunk).
template <int R>
DSV4_FORCEINLINE bool gemv_fp4_chunks(const fp4_matrix& m, index_t row0, index_t k0, const float* x,
                                      v8f (&acc)[R]) {
  constexpr index_t C = fp4_gemv_step_chunks;
  const auto k = static_cast<std::size_t>(k0);
  const index_t ss = m.scale.stride(0), ws = m.weight.stride(0);
  const ue8m0* s = m.scale.data() + row0 * ss + static_cast<index_t>(k / fp4_block);
  __m128i lo = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)), hi = lo;
  for (int r = 1; r < R; ++r) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + r * ss));
    lo = _mm_min_epu8(lo, v);
    hi = _mm_max_epu8(hi, v);
  }
  const __m128i ok = _mm_and_si128(
      _mm_cmpeq_epi8(_mm_max_epu8(lo, _mm_set1_epi8(fp4_exponent_scale_min_bits)), lo),
      _mm_cmpeq_epi8(_mm_min_epu8(hi, _mm_set1_epi8(static_cast<char>(fp4_exponent_scale_max_bits))), hi));
  if ((_mm_movemask_epi8(ok) & 0xff) != 0xff) return false;
  const fp4x2* w = m.weight.data() + row0 * ws + k / 2;
  for (index_t c = 0; c < C; c += 64 / chunk_bytes<fp4_matrix>)  // the chunks that start a line
    prefetch_next_rows<R>(m, row0, k0 + c * weight_chunk);
  for (index_t c = 0; c < C; ++c) {
#pragma GCC unroll 8  // every accumulator in its own register
    for (int r = 0; r < R; ++r) {
      chunk_regs d;
      decode_fp4_lanes(w + r * ws + c * weight_chunk / 2, s[r * ss + c], d);
      for (int i = 0; i < 4; ++i) {
        v8f xv;
        load8(xv, x + k0 + c * weight_chunk + 8 * i);
        fma8(acc[r], d[i], xv);
      }
    }
  }
  return true;
}
#endif

// The one-token case of gemm_row_block, with the same per-lane operations in the same order (so
// bit-identical to it): each 32-column chunk of the R rows is decoded straight into registers
// and consumed at once, the chunk of x loaded once for all R rows. FP8 rows lie in one 128-row
// scale block (row0 is a multiple of gemv_rows, which divides 128).
template <int R, weight_matrix W>
void gemv_row_block(const typename linear_op<W>::params& p, index_t row0,
                    [[maybe_unused]] const exponent_range& xr) {
  v8f acc[R] = {};
  const float* x = p.x.data();
  const index_t in = p.weight.cols(), full = in - in % weight_chunk;
  for (index_t k0 = 0; k0 < full; k0 += weight_chunk) {
#if defined(__F16C__) && defined(__AVX2__)
    if constexpr (std::same_as<W, fp8_matrix>) {
      // The common chunks in a loop of their own, a whole scale block per step, left only at
      // the end or at a block it cannot take (whose chunks then go one by one): if the slower
      // ways merged into the same back edge, GCC would keep the accumulators in memory, a store
      // and a reload on every chunk's dependency chain.
      v8f a[R];
      for (int r = 0; r < R; ++r) a[r] = acc[r];
      while (k0 % fp8_block == 0 && k0 + fp8_block <= full &&
             __builtin_expect(gemv_fp8_pow2_chunks<R, fp8_block / weight_chunk>(p.weight, row0, k0, x, xr, a),
                              true))
        k0 += fp8_block;
      for (int r = 0; r < R; ++r) acc[r] = a[r];
      if (k0 == full) break;
      if (gemv_fp8_pow2_chunks<R, 1>(p.weight, row0, k0, x, xr, acc) ||
          gemv_fp8_chunk<R>(p.weight, row0, k0, x, xr, acc))
        continue;
    }
    if constexpr (std::same_as<W, fp4_matrix>) {  // the same structure, for the same reason
      constexpr index_t step = fp4_gemv_step_chunks * weight_chunk;
      v8f a[R];
      for (int r = 0; r < R; ++r) a[r] = acc[r];
      while (k0 + step <= full && __builtin_expect(gemv_fp4_chunks<R>(p.weight, row0, k0, x, a), true))
        k0 += step;
      for (int r = 0; r < R; ++r) acc[r] = a[r];
      if (k0 == full) break;
    }
#endif
    prefetch_next_rows<R>(p.weight, row0, k0);
    chunk_regs xv;
    for (int i = 0; i < 4; ++i) load8(xv[i], x + k0 + 8 * i);
#pragma GCC unroll 8  // every accumulator in its own register
    for (int r = 0; r < R; ++r) {
      chunk_regs w;
      load_chunk(p.weight, row0 + r, k0, w);
      for (int i = 0; i < 4; ++i) fma8(acc[r], w[i], xv[i]);
    }
  }
  if (full < in) {  // the column tail, through buffers, lane = k mod 8 as everywhere
    // (the lanes go through memory: indexing acc at run time would keep it out of registers in
    // the loop above)
    alignas(32) float chunk[weight_chunk];
    alignas(32) float lanes[8];
    for (int r = 0; r < R; ++r) {
      p.weight.decode(row0 + r, full, in - full, chunk);
      store8(lanes, acc[r]);
      for (index_t k = full; k < in; ++k) lanes[k & 7] = fma1(chunk[k - full], x[k], lanes[k & 7]);
      load8(acc[r], lanes);
    }
  }
  for (int r = 0; r < R; ++r) p.y(0, row0 + r) = reduce_lanes(acc[r]);
}

}  // namespace detail

}  // namespace dsv4
