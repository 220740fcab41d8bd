// GEMV and GEMM whose weight is stored in a checkpoint format: f32, bf16, FP8 e4m3 with 128x128
// ue8m0 block scales, or packed FP4 e2m1 with 1x32 ue8m0 scales (spec §11.1). docs/gemv.md has
// the contract, the decoders and the reasons behind each choice.
//
// Why here and why this way: every linear of the MoE (router gate, routed and shared experts)
// reads weights that are mostly bytes of FP8 or nibbles of FP4. Expanding them to float would
// multiply the memory traffic by 4 to 8, so rows are decoded 32 columns at a time (a "chunk": one
// FP4 scale block, a quarter of an FP8 one), never further than L1. A one-token GEMV decodes a
// chunk of 4 rows straight into registers and multiplies it with the chunk of x at once, while it
// prefetches the same chunk of the next 4 rows (rows of FP8 or FP4 are a page or less, where the
// hardware prefetcher stops). A GEMM
// decodes 12 rows x 384 columns into an L1 tile that serves 64 tokens through a 3-row x 4-token
// register-blocked micro-kernel. Decoding is exact: every format decodes to the float
// dequantize_fp8_at / dequantize_fp4_at give, NaN codes and NaN scales included.
//
// Accumulation order (the contract that makes results reproducible): each output y[t][o] has
// eight fp32 lane accumulators; lane l sums w[o][k] * x[t][k] over k = l (mod 8) in increasing k,
// where w is the decoded weight (code times scale, the scale applied per weight, not folded after
// the sum), then the lanes are added as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)), the
// tree of dsv4::dot. FP8 and FP4 assign the columns of each whole 32-column chunk to the lanes in
// the order their fastest decoders produce, before the next chunk: FP8 lane l sums columns 2l,
// 2l + 1, 16 + 2l, 17 + 2l, FP4 lane l columns l/4 + 4 (l mod 4) + 0, 2, 16, 18, in that order
// (lanes_from_columns); a column tail (FP8 only) keeps lane = k mod 8. The kernels read x in that
// order (lane_order: one pass over x per call). Every output is computed by one thread and does
// not depend on the other rows or tokens, so results are bit-identical for any thread count, and
// gemv(x) equals the row of gemm(X) that holds x (a batch equals its tokens one by one). Products
// use fused multiply-add where the target has it.
//
// Vectorization: GCC vector extensions for the products; with AVX2 and F16C the FP8 codes are
// read as fp32 patterns worth code * 2^-120 (five integer operations per 16 codes, no conversion:
// widen_fp8_pow2_lanes), the FP4 nibbles looked up in two 16-entry byte tables that give the float
// bits directly; without them the scalar decoders of quant.hpp are used. The GEMM's FP8 tiles
// multiply those patterns by scale * 2^120 for scales up to 2^7 (every real checkpoint), a
// chunk with a larger scale takes the half decoder (codes rewritten as IEEE half bits, widened
// by the hardware) up to 2^119 and the scalar decoder beyond or where it holds a NaN code, so
// decoding stays exact everywhere. The FP4 kernels scale by adding the exponent to the looked-up
// patterns (decode_fp4_lanes). The one-token FP8 GEMV multiplies x, not the weights, by the block
// scale where that leaves every product unchanged: the code * 2^-120 patterns against x times
// scale * 2^120 (gemv_fp8_pow2_chunks), the halves against x times scale * 2^8 (gemv_fp8_chunk),
// and the decoded weights where the scale, x's range or a NaN code rules both out.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

#if defined(__FMA__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4 {

// Columns a weight row is decoded in at a time: one FP4 scale block, a quarter of an FP8 one.
inline constexpr index_t weight_chunk = 32;

namespace detail {

using v8u32 = std::uint32_t __attribute__((vector_size(32)));
using v8u16 = std::uint16_t __attribute__((vector_size(16)));

// The scalar twin of fma8, for the column tail.
DSV4_FORCEINLINE float fma1(float a, float b, float c) {
#if defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  return c + a * b;
#endif
}

// A chunk of 32 decoded weights, held in registers: chunk[i] = columns [8i, 8i + 8).
using chunk_regs = v8f[4];

// out = the 8 bf16 values at w as floats (a bf16 is the top half of a float).
DSV4_FORCEINLINE void widen_bf16(const bf16* w, v8f& out) {
#if defined(__AVX2__)
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  out = reinterpret_cast<v8f>(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
#else
  v8u16 h;
  std::memcpy(&h, w, sizeof h);
  out = reinterpret_cast<v8f>(__builtin_convertvector(h, v8u32) << 16);
#endif
}

#if defined(__F16C__) && defined(__AVX2__)

// scale * 2^e built from bits (no branches), for scale bits + e in [1, 254] (a normal float).
DSV4_FORCEINLINE float scale_times_pow2(ue8m0 scale, int e) {
  return bits_to_float(static_cast<std::uint32_t>(scale.bits + e) << 23);
}

// ue8m0::to_float for every code: 2^(bits - 127), the subnormal 2^-127 for 0, NaN for 0xff. A
// table, so that the GEMV broadcasts the scale straight from L1 (computing it takes two selects,
// which GCC puts through the stack: a store and a reload on every chunk).
struct ue8m0_float_table {
  alignas(64) float v[256];
  constexpr ue8m0_float_table() : v{} {
    for (int b = 0; b < 256; ++b) {
      const std::uint32_t u =
          b == 0 ? 0x00400000u : (b == 0xff ? f32_quiet_nan_bits : static_cast<std::uint32_t>(b) << 23);
      v[b] = bits_to_float(u);
    }
  }
};
inline constexpr ue8m0_float_table ue8m0_floats{};
DSV4_FORCEINLINE const float& scale_float(ue8m0 scale) { return ue8m0_floats.v[scale.bits]; }

// An FP8 e4m3 code re-biased into a half (s eeee mmm -> s 0eeee mmm0000000) is its value times
// 2^-8, subnormals included: sign-extending the byte to 16 bits and shifting it left by 7 puts
// every field in place but one copy of the sign at bit 14, which the mask clears. The half is
// widened by the hardware and multiplied by scale * 2^8; the product is the real number code *
// scale, rounded once, as dequantize_fp8_at's is. Exact while scale * 2^8 is a finite float.
inline constexpr std::uint8_t fp8_half_scale_max_bits = 127 + 119;
// out = the 32 codes w[0 .. 32) times 2^-8 (the widened halves); false when the chunk holds a NaN
// code (S.1111.111), which the half would turn into 480.
DSV4_FORCEINLINE bool decode_fp8_unscaled(const fp8_e4m3* w, chunk_regs& out) {
  const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i nan =
      _mm256_cmpeq_epi8(_mm256_or_si256(codes, _mm256_set1_epi8(-0x80)), _mm256_set1_epi8(-1));
  if (!_mm256_testz_si256(nan, nan)) return false;
  for (int i = 0; i < 2; ++i) {
    const __m256i wide = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * i)));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(wide, 7), _mm256_set1_epi16(-0x4080));  // 0xbf80
    out[2 * i] = reinterpret_cast<v8f>(_mm256_cvtph_ps(_mm256_castsi256_si128(h)));
    out[2 * i + 1] = reinterpret_cast<v8f>(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
  }
  return true;
}

// An FP8 e4m3 code read as an fp32 bit pattern worth the code times 2^-120 (normals as normal
// floats, subnormals as fp32 subnormals, the same factor for both): the byte s eeee mmm,
// sign-extended and shifted so that s lands at bit 31, eeee at bits 26..23 and mmm at 22..20,
// carries copies of s at bits 30..27, which the mask 0x87f00000 clears. NaN codes read as finite
// numbers, so the caller must rule them out. The GEMV multiplies x by scale * 2^120 =
// 2^(bits - 7), a normal float while bits <= 134 (scales up to 2^7).
//
// widen_fp8_pow2_lanes reads 32 codes so, in FP8 lane order (lanes_from_columns): each half of 16
// codes is sign-extended to 16-bit words once, and every 32-bit lane holds two codes, the even one
// in its low word and the odd one in its high word. Shifting the lane left by 20 puts the even
// code in place; shifting the words left by 4 puts the odd one in place (copies of its sign at
// bits 28..31, above the sign itself at 27, so bit 31 is the sign); the mask clears the rest. Five
// operations per 16 codes, against six with each code sign-extended to 32 bits.
inline constexpr std::uint8_t fp8_pow2_scale_max_bits = 134;
DSV4_FORCEINLINE void widen_fp8_pow2_lanes(const fp8_e4m3* w, chunk_regs& out) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(0x87f00000u));
  for (int h = 0; h < 2; ++h) {
    const __m256i words = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * h)));
    out[2 * h] = reinterpret_cast<v8f>(_mm256_and_si256(_mm256_slli_epi32(words, 20), mask));
    out[2 * h + 1] = reinterpret_cast<v8f>(_mm256_and_si256(_mm256_slli_epi16(words, 4), mask));
  }
}
// Whether any of the 32 codes at w is a NaN (S.1111.111): or-ing in the sign bit makes it the only
// code equal to 0xff, so an unsigned maximum over rows followed by one compare finds it.
DSV4_FORCEINLINE __m256i fp8_nan_probe(const fp8_e4m3* w) {
  return _mm256_or_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)), _mm256_set1_epi8(-0x80));
}
DSV4_FORCEINLINE bool fp8_probe_has_nan(__m256i probe) {
  const __m256i nan = _mm256_cmpeq_epi8(probe, _mm256_set1_epi8(-1));
  return !_mm256_testz_si256(nan, nan);
}

// out = the 32 codes w[0 .. 32) times scale; false (out unspecified) when the scale is too large
// for the half trick or the chunk holds a NaN code.
DSV4_FORCEINLINE bool decode_fp8_chunk(const fp8_e4m3* w, ue8m0 scale, chunk_regs& out) {
  if (scale.bits > fp8_half_scale_max_bits || !decode_fp8_unscaled(w, out)) return false;
  const float f = scale_times_pow2(scale, 8);
  for (int i = 0; i < 4; ++i) out[i] = out[i] * f;
  return true;
}

// The FP4 byte tables, indexed by the nibble (bit 3 the sign, both 128-bit halves the same): bits
// 24..31 and 16..23 of the code's float, and the former with the exponent biased by 126 for
// decode_fp4_lanes (0 for both zeros).
DSV4_FORCEINLINE __m256i fp4_high_bytes() {
  return _mm256_broadcastsi128_si256(_mm_setr_epi8(0x00, 0x3f, 0x3f, 0x3f, 0x40, 0x40, 0x40, 0x40,  //
                                                   -0x80, -0x41, -0x41, -0x41, -0x40, -0x40, -0x40, -0x40));
}
DSV4_FORCEINLINE __m256i fp4_low_bytes() {
  return _mm256_broadcastsi128_si256(_mm_setr_epi8(0x00, 0x00, -0x80, -0x40, 0x00, 0x40, -0x80, -0x40,  //
                                                   0x00, 0x00, -0x80, -0x40, 0x00, 0x40, -0x80, -0x40));
}
DSV4_FORCEINLINE __m256i fp4_biased_high_bytes() {
  return _mm256_broadcastsi128_si256(_mm_setr_epi8(0x00, 0x7e, 0x7e, 0x7e, 0x7f, 0x7f, 0x7f, 0x7f,  //
                                                   0x00, -0x02, -0x02, -0x02, -0x01, -0x01, -0x01, -0x01));
}

// The table lookup of 32 nibble indices (bits 0..3 of each byte; a table shuffle zeroes its entry
// when bit 7 is set) into 16-bit patterns, high byte from `high`: first holds the patterns of bytes
// 0..7 of each 128-bit half, second those of bytes 8..15, two to a 32-bit lane.
DSV4_FORCEINLINE void fp4_lookup(__m256i nibbles, __m256i high, __m256i& first, __m256i& second) {
  const __m256i hi = _mm256_shuffle_epi8(high, nibbles), lo = _mm256_shuffle_epi8(fp4_low_bytes(), nibbles);
  first = _mm256_unpacklo_epi8(lo, hi);
  second = _mm256_unpackhi_epi8(lo, hi);
}

// The four chunk vectors of the 16-bit patterns in first and second: the even word of each
// 32-bit lane shifted up, the odd one masked.
DSV4_FORCEINLINE void fp4_split(__m256i first, __m256i second, chunk_regs& out) {
  const __m256i odd = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  out[0] = reinterpret_cast<v8f>(_mm256_slli_epi32(first, 16));
  out[1] = reinterpret_cast<v8f>(_mm256_and_si256(first, odd));
  out[2] = reinterpret_cast<v8f>(_mm256_slli_epi32(second, 16));
  out[3] = reinterpret_cast<v8f>(_mm256_and_si256(second, odd));
}

// out = the 32 FP4 e2m1 nibbles of w[0 .. 16) (low nibble first) times scale, 8 consecutive
// columns per vector (the KV cache's rows, decode_fp4_32). An e2m1 value is a float whose low 16
// bits are zero, so two 16-entry byte tables indexed by the nibble give it without any
// conversion, and the product with the scale is the very float multiplication dequantize_fp4_at
// does: exact for every scale, subnormal, overflowing or NaN. One in-lane byte shuffle of the
// broadcast bytes puts the nibbles of columns (c, c + 8) next to each other, so that after the
// lookup each 32-bit lane holds the patterns of columns c and c + 8:
//   nibble bytes, lane 0: c0 c8 c1 c9 c2 c10 c3 c11 | c16 c24 c17 c25 ..   lane 1: c4 c12 c5 c13 ..
DSV4_FORCEINLINE void decode_fp4_chunk(const fp4x2* w, float scale, chunk_regs& out) {
  const __m256i select = _mm256_setr_epi8(0, 4, 0, 4, 1, 5, 1, 5, 8, 12, 8, 12, 9, 13, 9, 13,  //
                                          2, 6, 2, 6, 3, 7, 3, 7, 10, 14, 10, 14, 11, 15, 11, 15);
  const __m256i bytes = _mm256_shuffle_epi8(
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))), select);
  // Positions 0, 1 of every 4 take the low nibble, positions 2, 3 the high one (the odd 16-bit
  // word shifted right by 4); clearing bit 7 is all the cleaning the table shuffles need.
  const __m256i nibbles =
      _mm256_and_si256(_mm256_blend_epi16(bytes, _mm256_srli_epi16(bytes, 4), 0xaa), _mm256_set1_epi8(0x7f));
  __m256i first, second;
  fp4_lookup(nibbles, fp4_high_bytes(), first, second);
  fp4_split(first, second, out);
  for (int i = 0; i < 4; ++i) out[i] = out[i] * scale;
}

// ---- FP4 in lane order (the GEMV's and GEMM's decoder) ----
//
// decode_fp4_chunk's column order costs three operations (a byte shuffle, a shift and a blend) to
// put the nibbles of 8 consecutive columns side by side. The order the tables give without them,
// with the low nibbles of the 16 bytes in the lower 128-bit half and the high nibbles in the upper
// one, is lane order (lanes_from_columns): the 32-bit lanes of the first interleave hold the
// patterns of columns (4d, 4d + 2) below and (4d + 1, 4d + 3) above, d = 0 .. 3. The scale is
// applied to the 16-bit patterns before they are split, by subtracting from the exponent field:
// the table entries carry the exponent plus 126 (0x3f00 added to every nonzero pattern) and one
// saturating subtraction of (126 - e) << 7 per 16 weights leaves each nonzero code's pattern with
// its exponent plus e, which is code * 2^e exactly while that is a normal float (e in [-125, 125]:
// codes are 0.5 to 6), and takes the zero codes to 0. That is two operations per 32 weights
// against four multiplies. Both zeros decode to +0, which no output can tell from -0: every lane
// sum starts at +0 and, rounding to nearest, a sum or multiply-add can only give -0 from two -0
// operands, so the lanes never hold -0 and adding a +0 or a -0 product to them gives the same.
inline constexpr std::uint8_t fp4_exponent_scale_min_bits = 2, fp4_exponent_scale_max_bits = 252;
DSV4_FORCEINLINE bool fp4_exponent_scalable(ue8m0 s) {
  return s.bits >= fp4_exponent_scale_min_bits && s.bits <= fp4_exponent_scale_max_bits;
}

// (126 - e) << 7 in both 16-bit halves, for the scale 2^e with bits = e + 127 in the range above.
struct fp4_exponent_table {
  alignas(64) std::uint32_t v[256];
  constexpr fp4_exponent_table() : v{} {
    for (int b = fp4_exponent_scale_min_bits; b <= fp4_exponent_scale_max_bits; ++b) {
      const auto sub = static_cast<std::uint32_t>(253 - b) << 7;
      v[b] = sub | sub << 16;
    }
  }
};
inline constexpr fp4_exponent_table fp4_exponent_subtrahends{};

// The nibbles of the 16 bytes at w, low ones in the lower half and high ones in the upper half,
// each in the low 4 bits of its byte.
DSV4_FORCEINLINE __m256i fp4_lane_nibbles(const fp4x2* w) {
  const __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  return _mm256_and_si256(_mm256_srlv_epi32(bytes, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                          _mm256_set1_epi8(0x0f));
}

// out = the 32 FP4 weights at w times 2^(scale.bits - 127), in lane order, for scale bits in
// [fp4_exponent_scale_min_bits, fp4_exponent_scale_max_bits]; both zeros give +0 (see above).
DSV4_FORCEINLINE void decode_fp4_lanes(const fp4x2* w, ue8m0 scale, chunk_regs& out) {
  __m256i first, second;
  fp4_lookup(fp4_lane_nibbles(w), fp4_biased_high_bytes(), first, second);
  const __m256i sub = _mm256_castps_si256(
      _mm256_broadcast_ss(reinterpret_cast<const float*>(&fp4_exponent_subtrahends.v[scale.bits])));
  fp4_split(_mm256_subs_epu16(first, sub), _mm256_subs_epu16(second, sub), out);
}

// The same for any scale, in the way of decode_fp4_chunk: the code values, multiplied by the scale.
DSV4_FORCEINLINE void decode_fp4_lanes_multiplied(const fp4x2* w, float scale, chunk_regs& out) {
  __m256i first, second;
  fp4_lookup(fp4_lane_nibbles(w), fp4_high_bytes(), first, second);
  fp4_split(first, second, out);
  for (int i = 0; i < 4; ++i) out[i] = out[i] * scale;
}
#endif

}  // namespace detail

// ---- chunk decoders (also used by the KV cache's FP8/FP4 rows) ---------------------------------

// out[0 .. 32) = the 32 FP8 codes w[0 .. 32) times scale, exactly as dequantize_fp8_at decodes them.
inline void decode_fp8_32(const fp8_e4m3* w, ue8m0 scale, float* out) {
#if defined(__F16C__) && defined(__AVX2__)
  detail::chunk_regs c;
  if (detail::decode_fp8_chunk(w, scale, c)) {
    for (int i = 0; i < 4; ++i) detail::store8(out + 8 * i, c[i]);
    return;
  }
#endif
  const float s = scale.to_float();
  for (index_t i = 0; i < weight_chunk; ++i) out[i] = w[i].to_float() * s;
}

// out[0 .. 32) = the 32 FP4 nibbles of w[0 .. 16) (low nibble first) times scale, exactly.
inline void decode_fp4_32(const fp4x2* w, ue8m0 scale, float* out) {
#if defined(__F16C__) && defined(__AVX2__)
  detail::chunk_regs c;
  detail::decode_fp4_chunk(w, detail::scale_float(scale), c);
  for (int i = 0; i < 4; ++i) detail::store8(out + 8 * i, c[i]);
#else
  const float s = scale.to_float();
  for (index_t i = 0; i < weight_chunk / 2; ++i) {
    out[2 * i] = w[i].first().to_float() * s;
    out[2 * i + 1] = w[i].second().to_float() * s;
  }
#endif
}

// ---- weight matrices ---------------------------------------------------------------------------
// A weight_matrix is a view of an (out, in) matrix in one storage format that can decode columns
// [k0, k0 + n) of a row into floats; k0 is a multiple of weight_chunk and n <= weight_chunk.

template <class M>
concept weight_matrix = requires(const M& m, index_t i, float* out, std::string_view name) {
  { m.rows() } -> std::same_as<index_t>;
  { m.cols() } -> std::same_as<index_t>;
  { m.check(name) } -> std::same_as<status>;
  { m.decode(i, i, i, out) } -> std::same_as<void>;
};

// An unquantized matrix: float, or bf16 (the top half of a float).
template <class T>
struct dense_matrix {
  static_assert(std::same_as<T, float> || std::same_as<T, bf16>, "dense_matrix: float or bf16 elements");
  tensor_view<const T, 2> weight;  // (out, in)

  index_t rows() const { return weight.extent(0); }
  index_t cols() const { return weight.extent(1); }
  status check(std::string_view name) const {
    return detail::check_unit_inner_stride(weight, std::string(name) + ".weight");
  }
  // Rows [begin, end) as a matrix of their own.
  dense_matrix slice_rows(index_t begin, index_t end) const { return {weight.slice(begin, end)}; }
  void decode(index_t row, index_t k0, index_t n, float* out) const {
    const T* w = weight.data() + row * weight.stride(0) + k0;
    if constexpr (std::same_as<T, float>) {
      if (n == weight_chunk) {  // a fixed-size copy the compiler inlines
        std::memcpy(out, w, weight_chunk * sizeof(float));
      } else {
        std::memcpy(out, w, static_cast<std::size_t>(n) * sizeof(float));
      }
    } else {
      index_t i = 0;
      for (; i + 8 <= n; i += 8) {
        detail::v8f v;
        detail::widen_bf16(w + i, v);
        detail::store8(out + i, v);
      }
      for (; i < n; ++i) out[i] = w[i].to_float();
    }
  }
};
using f32_matrix = dense_matrix<float>;
using bf16_matrix = dense_matrix<bf16>;

struct fp8_matrix {
  tensor_view<const fp8_e4m3, 2> weight;  // (out, in)
  tensor_view<const ue8m0, 2> scale;      // (ceil(out/128), ceil(in/128))

  index_t rows() const { return weight.extent(0); }
  index_t cols() const { return weight.extent(1); }
  status check(std::string_view name) const {
    const std::string n(name);
    DSV4_TRY(detail::check_unit_inner_stride(weight, n + ".weight"));
    DSV4_TRY(check_shape(scale, {detail::blocks_of(rows(), fp8_block), detail::blocks_of(cols(), fp8_block)},
                         n + ".scale"));
    return detail::check_unit_inner_stride(scale, n + ".scale");
  }
  // Rows [begin, end) as a matrix of their own; begin is a multiple of 128 (the slice starts a
  // scale block), end one too or the last row.
  fp8_matrix slice_rows(index_t begin, index_t end) const {
    DSV4_ASSERT(begin % fp8_block == 0 && (end % fp8_block == 0 || end == rows()),
                "fp8_matrix::slice_rows: the rows must start and end on 128-row scale blocks");
    return {weight.slice(begin, end), scale.slice(begin / fp8_block, detail::blocks_of(end, fp8_block))};
  }
  // The scale of the 128 x 128 block that holds (row, col); unsigned offsets, so that the block
  // divisions are shifts.
  ue8m0 block_scale(index_t row, index_t col) const {
    const auto r = static_cast<std::size_t>(row), k = static_cast<std::size_t>(col);
    return scale.data()[(r / fp8_block) * static_cast<std::size_t>(scale.stride(0)) + k / fp8_block];
  }
  void decode(index_t row, index_t k0, index_t n, float* out) const {
    const fp8_e4m3* w = weight.data() + row * weight.stride(0);
    const ue8m0* s = scale.data() + (row / fp8_block) * scale.stride(0);
    if (n == weight_chunk) {
      decode_fp8_32(w + k0, s[k0 / fp8_block], out);
      return;
    }
    dequantize_fp8_row(w, s, k0, k0 + n, out);
  }
};

struct fp4_matrix {
  tensor_view<const fp4x2, 2> weight;  // (out, in/2), low nibble = even column
  tensor_view<const ue8m0, 2> scale;   // (out, in/32)

  index_t rows() const { return weight.extent(0); }
  index_t cols() const { return 2 * weight.extent(1); }
  status check(std::string_view name) const {
    const std::string n(name);
    if (cols() % fp4_block != 0) {
      return {errc::shape_mismatch, n + ".weight: expected (out, in/2) with in a multiple of 32, got " +
                                        shape_string<2>(weight.extents())};
    }
    DSV4_TRY(detail::check_unit_inner_stride(weight, n + ".weight"));
    DSV4_TRY(check_shape(scale, {rows(), cols() / fp4_block}, n + ".scale"));
    return detail::check_unit_inner_stride(scale, n + ".scale");
  }
  // Rows [begin, end) as a matrix of their own.
  fp4_matrix slice_rows(index_t begin, index_t end) const {
    return {weight.slice(begin, end), scale.slice(begin, end)};
  }
  void decode(index_t row, index_t k0, index_t n, float* out) const {
    const fp4x2* w = weight.data() + row * weight.stride(0);
    const ue8m0* s = scale.data() + row * scale.stride(0);
    if (n == weight_chunk) {
      decode_fp4_32(w + k0 / 2, s[k0 / fp4_block], out);
      return;
    }
    dequantize_fp4_row(w, s, k0, k0 + n, out);
  }
};

static_assert(weight_matrix<f32_matrix> && weight_matrix<bf16_matrix> && weight_matrix<fp8_matrix> &&
              weight_matrix<fp4_matrix>);

// The matrix type of a checkpoint weight_format: how a model described at compile time names the
// types of its weights (config::model_config's linear_format, expert_format, other_format).
template <config::weight_format F>
using weight_matrix_for =
    std::conditional_t<F == config::weight_format::f32, f32_matrix,
                       std::conditional_t<F == config::weight_format::bf16, bf16_matrix,
                                          std::conditional_t<F == config::weight_format::fp8_e4m3_block128,
                                                             fp8_matrix, fp4_matrix>>>;

// Whether the released model quantizes the input of a linear with weights W to FP8 (1x128 tiles):
// its `linear()` does so for FP8 and FP4 weights, whose GEMM kernels take FP8 activations.
template <weight_matrix W>
inline constexpr bool takes_fp8_input = std::same_as<W, fp8_matrix> || std::same_as<W, fp4_matrix>;

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
template <weight_matrix W>
DSV4_FORCEINLINE void lanes_from_columns(chunk_regs& v) {
  static_assert(has_lane_order<W>);
  const chunk_regs c = {v[0], v[1], v[2], v[3]};
  for (int h = 0; h < 2; ++h) {
    const v8f& a = c[2 * h];
    const v8f& b = c[2 * h + 1];
    if constexpr (std::same_as<W, fp8_matrix>) {
      v[2 * h] = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
      v[2 * h + 1] = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
    } else {
      v[2 * h] = __builtin_shufflevector(a, b, 0, 4, 8, 12, 1, 5, 9, 13);
      v[2 * h + 1] = __builtin_shufflevector(a, b, 2, 6, 10, 14, 3, 7, 11, 15);
    }
  }
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
  const fp4x2* w = m.weight.data() + row * m.weight.stride(0) + k / 2;
  const ue8m0 s = m.scale.data()[row * m.scale.stride(0) + static_cast<index_t>(k / fp4_block)];
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

// ---- gemm_op: y (n, out) = x (n, in) . W^T ---------------------------------------------------------
template <weight_matrix W>
struct gemm_op {
  struct params {
    using op = gemm_op;
    W weight;                       // (out, in)
    tensor_view<const float, 2> x;  // (n, in), rows may be strided
    tensor_view<float, 2> y;        // (n, out), rows may be strided
    std::span<float> workspace{};   // (workspace_floats(n, in)) x in W's lane order
  };

  // Floats of workspace a call with n tokens of `in` columns needs: FP8 and FP4 read x in their
  // lane orders (a permuted copy), other formats read x where it is.
  static constexpr index_t workspace_floats(index_t n, index_t in) {
    return detail::has_lane_order<W> ? n * in : 0;
  }

  static status check(const params& p) {
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
// Rows a one-token GEMV decodes per chunk of x: four independent accumulation chains.
inline constexpr int gemv_rows = 4;

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
void gemm_row_block(const typename gemm_op<W>::params& p, index_t row0, index_t rows) {
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
void gemv_row_block(const typename gemm_op<W>::params& p, index_t row0,
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

template <weight_matrix W>
void row_block(const typename gemm_op<W>::params& p, index_t row0, index_t rows, const exponent_range& xr) {
  if (p.x.extent(0) != 1) return gemm_row_block<W>(p, row0, rows);
  index_t r = 0;
  for (; r + gemv_rows <= rows; r += gemv_rows) gemv_row_block<gemv_rows, W>(p, row0 + r, xr);
  for (; r < rows; ++r) gemv_row_block<1, W>(p, row0 + r, xr);
}

}  // namespace detail

// The input x of gemm_op<W> prepared once for any number of row tasks: FP8 and FP4 read x in their
// lane orders (a permuted copy), the one-token FP8 GEMV needs x's exponent range. The kernel below
// runs every task of one matrix on it; a caller can also run the tasks of several matrices that
// share x in one parallel region (an expert's gate and up projections: moe/experts.hpp), which
// saves a region start per matrix. The caller checks the shapes (gemm_op<W>::check) first.
template <weight_matrix W>
class gemm_input {
 public:
  // lanes: gemm_op<W>::workspace_floats(n, in) floats that receive x in W's lane order.
  gemm_input(tensor_view<const float, 2> x, std::span<float> lanes) : x_(x), range_(range_of(x)) {
    arrange(lanes);
  }
  // The same with the lanes in memory of its own.
  explicit gemm_input(tensor_view<const float, 2> x) : x_(x), range_(range_of(x)) {
    const auto floats = static_cast<std::size_t>(gemm_op<W>::workspace_floats(x.extent(0), x.extent(1)));
    if (floats > 0) lanes_.reset(new float[floats]);
    arrange({lanes_.get(), floats});
  }

  // Output rows per task, and the tasks of a matrix with `out` rows.
  static constexpr index_t task_rows = detail::task_rows;
  static index_t tasks(index_t out) { return detail::blocks_of(out, task_rows); }
  // Task b of y = x . w^T: rows [b * task_rows, (b + 1) * task_rows) of y (fewer in the last) for
  // every token.
  void run_task(const W& w, tensor_view<float, 2> y, index_t b) const {
    const index_t row0 = b * task_rows;
    detail::row_block<W>(typename gemm_op<W>::params{w, x_, y}, row0, std::min(task_rows, w.rows() - row0),
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
    if constexpr (detail::has_lane_order<W>) {
      const index_t n = x_.extent(0), in = x_.extent(1);
      DSV4_ASSERT(static_cast<index_t>(lanes.size()) >= n * in, "gemm_input: lanes too short");
      for (index_t t = 0; t < n; ++t)
        detail::lane_order<W>(x_.data() + t * x_.stride(0), in, lanes.data() + t * in);
      x_ = tensor_view<const float, 2>(lanes.data(), {n, in});
    }
  }
  tensor_view<const float, 2> x_;
  detail::exponent_range range_;
  std::unique_ptr<float[]> lanes_;  // the lanes of the allocating constructor
};

// Parallel over blocks of task_rows output rows.
template <weight_matrix W>
struct kernel<gemm_op<W>, cpu> {
  static status run(const typename gemm_op<W>::params& p) {
    DSV4_TRY(gemm_op<W>::check(p));
    const gemm_input<W> in(p.x, p.workspace);
    parallel_for(0, gemm_input<W>::tasks(p.weight.rows()), [&](index_t b) { in.run_task(p.weight, p.y, b); });
    return {};
  }
};

// y (n, out) = x (n, in) . W^T, with gemm_op<W>::workspace_floats(n, in) floats of workspace.
template <weight_matrix W>
status gemm(const W& weight, tensor_view<const float, 2> x, tensor_view<float, 2> y,
            std::span<float> workspace) {
  return run<cpu>(typename gemm_op<W>::params{weight, x, y, workspace});
}
// The same with a workspace allocated for the call (FP8 and FP4 only; a convenience: engines
// pass their own).
template <weight_matrix W>
status gemm(const W& weight, tensor_view<const float, 2> x, tensor_view<float, 2> y) {
  DSV4_TRY(check_shape(x, {any_extent, any_extent}, "x"));
  const index_t floats = gemm_op<W>::workspace_floats(x.extent(0), x.extent(1));
  if (floats == 0) return gemm(weight, x, y, {});
  const std::unique_ptr<float[]> ws(new (std::nothrow) float[static_cast<std::size_t>(floats)]);
  if (!ws) return {errc::out_of_range, "workspace: cannot allocate " + std::to_string(floats) + " floats"};
  return gemm(weight, x, y, {ws.get(), static_cast<std::size_t>(floats)});
}

// y (out) = W . x (in): the one-token gemm, bit-identical to the matching row of any batch.
template <weight_matrix W>
status gemv(const W& weight, std::span<const float> x, std::span<float> y) {
  const auto in = static_cast<index_t>(x.size()), out = static_cast<index_t>(y.size());
  return gemm(weight, tensor_view<const float, 2>(x.data(), {1, in}),
              tensor_view<float, 2>(y.data(), {1, out}));
}

}  // namespace dsv4
