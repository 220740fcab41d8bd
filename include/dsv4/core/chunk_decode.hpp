// Decoders of 32-value chunks of the checkpoint's FP8 e4m3 and FP4 e2m1 codes with their ue8m0
// scale: a chunk is one FP4 scale block and a quarter of an FP8 one, small enough to stay in
// registers. The weight matrices (weight_matrix.hpp), the linear kernels and the KV cache's FP8
// rows decode through them. Every decoder is exact: it gives the float dequantize_fp8_at /
// dequantize_fp4_at give, NaN codes and NaN scales included.
//
// With AVX2 and F16C the FP8 codes are read as fp32 patterns worth code * 2^-120 (five integer
// operations per 16 codes, no conversion: widen_fp8_pow2_lanes) or rewritten as IEEE half bits
// widened by the hardware (decode_fp8_unscaled, for scales up to 2^119); the FP4 nibbles are
// looked up in two 16-entry byte tables that give the float bits directly, scaled by adding to
// their exponent (decode_fp4_lanes). Some decoders give a chunk in lane order, the order the
// linear kernels accumulate in (weight_lanes.hpp). Without AVX2 and F16C the scalar decoders of
// quant.hpp are used.
#pragma once

#include <cstdint>
#include <cstring>

#include "dsv4/core/dtype.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/tensor_view.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4 {

// Columns a weight row is decoded in at a time: one FP4 scale block, a quarter of an FP8 one.
inline constexpr index_t weight_chunk = 32;

namespace detail {

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

}  // namespace dsv4
