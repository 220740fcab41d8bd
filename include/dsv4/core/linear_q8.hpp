// The int8 activation path of numerics::fast: y = x . W^T for FP4 weights with x quantized to int8
// in blocks of 32 columns, the products taken in integers. Opt-in and approximate (the only
// approximation is x's quantization); docs/linear.md states its accuracy.
//
// Why: an E2M1 value times 2 is an integer in [-12, 12], so a block of 32 FP4 weights times 32
// int8 activations is an exact int32 sum, which AVX2 forms with table lookups (vpshufb) and
// multiply-adds (vpmaddubsw, vpmaddwd) instead of decoding every weight to fp32.
// The one-token GEMV then does about half the vector work per weight of the exact path's decoding.
//
// Quantization (quantize_q8, one rule for every target): for each block of 32 columns,
// amax = max |x|, q = x * (127 / amax) rounded to nearest (ties to even), in [-127, 127], and
// step = amax / 127, in float arithmetic. A block holding a NaN or an infinity gets step NaN (its
// outputs become NaN, as the exact product's would); an all-zero block gets step 0. Blocks are
// stored in pairs, the codes of a pair as [even columns of its first block, even of its second,
// odd of the first, odd of the second] (the order in which one 32-byte load of the pair's FP4
// bytes splits into low and high nibbles), with step / 2 per block (the weights enter as
// 2 x E2M1); an odd count ends with a padding block of zeros.
//
// Accumulation order (bit-identical on every target and for any batch or thread count): output o
// has eight fp32 lane accumulators; for each pair of blocks in increasing order, lane l adds
// float(p_l) * (scale_b * step_b / 2) by a fused multiply-add, where b is block l / 4 of the pair
// and p_l the exact int32 sum of the products of its columns 8 (l mod 4) .. 8 (l mod 4) + 7 (a
// padding block adds +0 * +0); the lanes are then added by the tree of dsv4::dot (reduce_lanes).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_matrix.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4 {

// Whether a linear with weights W takes its input as int8 blocks under num (numerics::fast, FP4
// weights), and whether it takes it FP8-simulated instead (numerics::released and ::fast for FP8
// weights, ::released for FP4 weights): the two ways to_linear_input prepares x.
template <weight_matrix W>
constexpr bool takes_int8_input(numerics num) {
  return num == numerics::fast && std::same_as<W, fp4_matrix>;
}
template <weight_matrix W>
constexpr bool takes_fp8_simulated_input(numerics num) {
  return num != numerics::exact && takes_fp8_input<W> && !takes_int8_input<W>(num);
}

// x in place as a linear with weights W reads it under num (to_linear_input with W's format).
template <weight_matrix W>
void to_linear_input(numerics num, std::span<float> x) {
  to_linear_input(num, takes_fp8_simulated_input<W>(num), x);
}

namespace detail {

inline constexpr index_t q8_block = 32;  // columns per int8 block: fp4_block, one scale byte

// Blocks go in pairs (2p, 2p + 1); an odd count ends with a pair whose second block is padding
// (codes, offsets and step 0).
constexpr index_t q8_pairs(index_t in) { return (in / q8_block + 1) / 2; }

// Where column k's code lies among a token's codes: pair p = b / 2 of block b = k / 32 takes 64
// bytes, [even columns of 2p, even of 2p + 1, odd of 2p, odd of 2p + 1] (16 each): the order in
// which one 32-byte load of the pair's FP4 bytes splits into low and high nibbles.
constexpr index_t q8_code_at(index_t k) {
  const index_t b = k / q8_block, c = k % q8_block;
  return 64 * (b / 2) + 32 * (c % 2) + 16 * (b % 2) + c / 2;
}

// One token's x as int8 blocks: codes (64 bytes a pair), eight lane offsets a pair (lane l, the
// columns 8 (l mod 4) .. + 7 of block 2p + l / 4: 12 times the sum of their codes, the AVX2
// kernel's bias, below) and a half step a block (the padding's 0).
struct q8_row {
  const std::int8_t* codes;
  const std::int32_t* offsets;
  const float* half_steps;
};

// Floats of workspace one token's blocks take: 16 (codes), 8 (offsets) and 2 (steps) a pair, at
// most `in`.
constexpr index_t q8_floats(index_t in) { return 26 * q8_pairs(in); }

// Where the parts of one token's blocks lie in its q8_floats(in) floats from `base`.
struct q8_parts {
  std::int8_t* codes;
  std::int32_t* offsets;
  float* half_steps;
  q8_parts(float* base, index_t in)
      : codes(reinterpret_cast<std::int8_t*>(base)),
        offsets(reinterpret_cast<std::int32_t*>(base + 16 * q8_pairs(in))),
        half_steps(base + 24 * q8_pairs(in)) {}
  operator q8_row() const { return {codes, offsets, half_steps}; }
};
inline q8_row q8_row_at(const float* base, index_t in) { return q8_parts(const_cast<float*>(base), in); }

// Block b's step and codes from its largest magnitude amax (finite, nonzero): the float
// arithmetic both quantizers below share. A block below 2^-64 is scaled up by 2^64 (exactly) first,
// so that 127 / amax is finite; the codes are those of the unscaled values, the step is scaled back.
struct q8_scaling {
  float up, inv, half_step;
  explicit q8_scaling(float amax)
      : up(amax < 0x1p-64f ? 0x1p64f : 1.0f),
        inv(127.0f / (amax * up)),
        half_step(amax * up / 127.0f * (up != 1.0f ? 0x1p-65f : 0.5f)) {}
};

// The lane offsets of every pair, from the codes.
inline void q8_offsets(const q8_parts& p, index_t in) {
  for (index_t pair = 0; pair < q8_pairs(in); ++pair)
    for (int l = 0; l < 8; ++l) {
      const index_t b = 2 * pair + l / 4;
      std::int32_t sum = 0;
      if (b < in / q8_block)
        for (index_t c = 8 * (l % 4); c < 8 * (l % 4) + 8; ++c) sum += p.codes[q8_code_at(b * q8_block + c)];
      p.offsets[8 * pair + l] = 12 * sum;
    }
}

// The blocks of one token, x (in, a multiple of 32), written to `out` (q8_floats(in) floats): the
// rule in plain code.
inline q8_row quantize_q8_portable(const float* x, index_t in, float* out) {
  const q8_parts p(out, in);
  const index_t blocks = in / q8_block;
  std::fill(p.codes, p.codes + 64 * q8_pairs(in), std::int8_t{0});
  std::fill(p.half_steps, p.half_steps + 2 * q8_pairs(in), 0.0f);
  for (index_t b = 0; b < blocks; ++b) {
    const float* v = x + b * q8_block;
    float amax = 0.0f;
    bool finite = true;
    for (int k = 0; k < q8_block; ++k) {
      amax = std::max(amax, std::fabs(v[k]));
      finite = finite && std::isfinite(v[k]);
    }
    if (!finite) p.half_steps[b] = std::numeric_limits<float>::quiet_NaN();
    if (!finite || amax == 0.0f) continue;
    const q8_scaling s(amax);
    for (int k = 0; k < q8_block; ++k)
      p.codes[q8_code_at(b * q8_block + k)] =
          static_cast<std::int8_t>(std::clamp(std::nearbyint(v[k] * s.up * s.inv), -127.0f, 127.0f));
    p.half_steps[b] = s.half_step;
  }
  q8_offsets(p, in);
  return p;
}

#if defined(__AVX2__)
// The same with AVX2, bit-identical: the same float operations, eight columns at a time; the
// codes packed to bytes in column order, then split into even and odd columns by one byte shuffle
// and stored as the pair layout's halves.
inline q8_row quantize_q8(const float* x, index_t in, float* out) {
  const q8_parts p(out, in);
  const index_t blocks = in / q8_block;
  std::fill(p.codes, p.codes + 64 * q8_pairs(in), std::int8_t{0});
  std::fill(p.half_steps, p.half_steps + 2 * q8_pairs(in), 0.0f);
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  // Per 16 columns: even ones first, then odd ones.
  const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                         0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (index_t b = 0; b < blocks; ++b) {
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + b * q8_block + 8 * i);
    const __m256 m =
        _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], magnitude), _mm256_and_ps(v[1], magnitude)),
                      _mm256_max_ps(_mm256_and_ps(v[2], magnitude), _mm256_and_ps(v[3], magnitude)));
    // x * 0 is NaN exactly for a NaN or an infinity.
    const __m256 z = _mm256_setzero_ps();
    const __m256 poison = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(v[0], z), _mm256_mul_ps(v[1], z)),
                                        _mm256_add_ps(_mm256_mul_ps(v[2], z), _mm256_mul_ps(v[3], z)));
    const bool finite = _mm256_movemask_ps(_mm256_cmp_ps(poison, poison, _CMP_UNORD_Q)) == 0;
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    if (!finite) p.half_steps[b] = std::numeric_limits<float>::quiet_NaN();
    if (!finite || amax == 0.0f) continue;
    const q8_scaling s(amax);
    const __m256 up = _mm256_set1_ps(s.up), inv = _mm256_set1_ps(s.inv);
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) {
      const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_mul_ps(v[i], up), inv),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q[i] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    }
    // packs interleave the 128-bit halves: dwords come out as columns 0-3, 8-11, 16-19, 24-27,
    // 4-7, 12-15, 20-23, 28-31; the permutation puts them in column order.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // Quadwords: even 0-15, odd 0-15, even 16-31, odd 16-31; after the permutation the low half holds
    // the 16 even columns, the high half the 16 odd ones.
    const __m256i halves = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(ordered, split), 0xd8);
    std::int8_t* pair = p.codes + 64 * (b / 2) + 16 * (b % 2);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pair), _mm256_castsi256_si128(halves));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pair + 32), _mm256_extracti128_si256(halves, 1));
    p.half_steps[b] = s.half_step;
  }
  // The lane offsets as the kernel pairs its products: 16-bit sums of the even and odd codes, then
  // pairs of them, times 12.
  const __m256i twelve = _mm256_set1_epi8(12), ones = _mm256_set1_epi16(1);
  for (index_t pair = 0; pair < q8_pairs(in); ++pair) {
    const __m256i even = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.codes + 64 * pair));
    const __m256i odd = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.codes + 64 * pair + 32));
    const __m256i sums =
        _mm256_add_epi16(_mm256_maddubs_epi16(twelve, even), _mm256_maddubs_epi16(twelve, odd));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.offsets + 8 * pair), _mm256_madd_epi16(sums, ones));
  }
  return p;
}
#else
inline q8_row quantize_q8(const float* x, index_t in, float* out) { return quantize_q8_portable(x, in, out); }
#endif

// 2 x E2M1 of a code (its low nibble): an integer in [-12, 12].
inline constexpr std::int8_t e2m1_twice[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// The R outputs of rows [row0, row0 + R) of m against one token's blocks, in the order of the
// contract at the top of the file, in plain integer arithmetic: the readable form.
template <int R>
void q8_dot_rows_portable(const fp4_matrix& m, index_t row0, q8_row x, float (&out)[R]) {
  const index_t blocks = m.cols() / q8_block;
  for (int r = 0; r < R; ++r) {
    const std::uint8_t* w = &m.weight.data()[(row0 + r) * m.weight.stride(0)].bits;
    const ue8m0* s = m.scale.data() + (row0 + r) * m.scale.stride(0);
    v8f acc = {};
    for (index_t pair = 0; pair < q8_pairs(m.cols()); ++pair)
      for (int l = 0; l < 8; ++l) {
        const index_t b = 2 * pair + l / 4;
        std::int32_t p = 0;
        float d = 0.0f;  // the padding block adds +0 * +0
        if (b < blocks) {
          for (index_t c = 8 * (l % 4); c < 8 * (l % 4) + 8; ++c) {
            const std::uint8_t byte = w[b * (q8_block / 2) + c / 2];
            p += e2m1_twice[c % 2 == 0 ? byte & 0x0f : byte >> 4] * x.codes[q8_code_at(b * q8_block + c)];
          }
          d = s[b].to_float() * x.half_steps[b];
        }
        acc[l] = fma1(static_cast<float>(p), d, acc[l]);
      }
    out[r] = reduce_lanes(acc);
  }
}

// The R x T outputs of rows [row0, row0 + R) against T tokens' blocks: each token by
// q8_dot_rows_portable (the kernel of targets without AVX2).
template <int R, int T>
void q8_dot_tile_portable(const fp4_matrix& m, index_t row0, const q8_row (&x)[T], float (&out)[R][T]) {
  for (int t = 0; t < T; ++t) {
    float o[R];
    q8_dot_rows_portable<R>(m, row0, x[t], o);
    for (int r = 0; r < R; ++r) out[r][t] = o[r];
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// Eight floats f spread to the lanes of four pairs: pair i's lanes take f[2i] (its first block's
// four lanes) and f[2i + 1].
DSV4_FORCEINLINE void q8_spread(__m256 f, float (&lanes)[4][8]) {
  for (int i = 0; i < 4; ++i)
    _mm256_store_ps(lanes[i],
                    _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(2 * i, 2 * i, 2 * i, 2 * i, 2 * i + 1,
                                                                  2 * i + 1, 2 * i + 1, 2 * i + 1)));
}

// 2^(e - 127) for the eight scale bytes at s: the exponent field for e in [1, 254], 2^-127 (a
// subnormal) for e = 0, NaN for e = 255 (ue8m0::to_float).
DSV4_FORCEINLINE __m256 q8_scale_floats(const ue8m0* s) {
  const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)));
  __m256i bits = _mm256_slli_epi32(e, 23);
  bits =
      _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x00400000), _mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
  bits =
      _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7fc00000), _mm256_cmpeq_epi32(e, _mm256_set1_epi32(255)));
  return _mm256_castsi256_ps(bits);
}

// Pairs [p0, p0 + np) of R rows (w: each row's first byte) against T tokens x, into the lane
// accumulators (q8_dot_tile below): pair p0 + i's factors are sl[r][i0 + i] (row r's scales in
// its lanes) times hl[t][i0 + i] (token t's half steps), the product dsv4::linear's contract
// names. Each row's pair is looked up once for the T tokens. Lone: the pair holds one block (the
// row's last), whose 16 bytes are loaded alone.
template <int R, int T, bool Lone>
DSV4_FORCEINLINE void q8_pairs_of(const std::uint8_t* const (&w)[R], const q8_row (&x)[T], index_t p0,
                                  index_t np, const float (&sl)[R][4][8], const float (&hl)[T][4][8],
                                  index_t i0, __m256 (&acc)[R][T]) {
  const __m256i biased = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0,  //
                                          12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
  const __m256i nibble = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 a[R][T];  // the accumulators in registers for the loop (through acc, GCC stores them every pair)
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) a[r][t] = acc[r][t];
  for (index_t i = 0; i < np; ++i) {
    const index_t pair = p0 + i;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256i bytes =
          Lone ? _mm256_set_m128i(_mm_setzero_si128(),
                                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + 32 * pair)))
               : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + 32 * pair));
      const __m256i low = _mm256_shuffle_epi8(biased, _mm256_and_si256(bytes, nibble)),
                    high = _mm256_shuffle_epi8(biased, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble));
      const __m256 scale = _mm256_load_ps(sl[r][i0 + i]);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const std::int8_t* codes = x[t].codes + 64 * pair;
        const __m256i even = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
        const __m256i odd = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32));
        const __m256i offset = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t].offsets + 8 * pair));
        const __m256i sums =
            _mm256_add_epi16(_mm256_maddubs_epi16(low, even), _mm256_maddubs_epi16(high, odd));
        const __m256i p = _mm256_sub_epi32(_mm256_madd_epi16(sums, ones), offset);
        const __m256 d = _mm256_mul_ps(scale, _mm256_load_ps(hl[t][i0 + i]));
        a[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, a[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = a[r][t];
}

// q8_dot_tile_portable with AVX2, bit-identical (q8_dot_tile below; q8_tile_blocks takes the
// blocks [begin, end) of the rows, begin a multiple of eight, end one too or the row's end, into
// accumulators the caller keeps): a pair's 32 bytes in one register, masked and shifted into
// low and high nibbles (the even and odd columns of both blocks), looked up as 2 x E2M1 + 12, an
// unsigned byte in [0, 24] (vpmaddubsw multiplies unsigned by signed bytes); the even and odd
// products added as 16-bit sums (at most 4 x 24 x 127) and paired by vpmaddwd give the sums of
// (w + 12) q over the lanes' eight columns, and subtracting the lane offsets 12 x sum q, formed
// once per token, leaves p_l, exact. Eight blocks at a time, each row's scales and each token's
// half steps are spread to their four pairs' lanes once; the factor of a lane is their product,
// formed where it is used. T = 1 is the one-token GEMV; with more tokens each weight lookup serves
// T of them (the int8 GEMM of a batch).
template <int R, int T>
void q8_tile_blocks(const fp4_matrix& m, index_t row0, const q8_row (&x)[T], index_t begin, index_t end,
                    __m256 (&acc)[R][T]) {
  const index_t blocks = m.cols() / q8_block, ws = m.weight.stride(0), ss = m.scale.stride(0);
  const std::uint8_t* w[R];
  for (int r = 0; r < R; ++r) w[r] = &m.weight.data()[(row0 + r) * ws].bits;
  alignas(32) float sl[R][4][8], hl[T][4][8];
  index_t b0 = begin;
  for (; b0 + 8 <= end; b0 += 8) {
    for (int t = 0; t < T; ++t) q8_spread(_mm256_loadu_ps(x[t].half_steps + b0), hl[t]);
    for (int r = 0; r < R; ++r) {
      q8_spread(q8_scale_floats(m.scale.data() + (row0 + r) * ss + b0), sl[r]);
      if (row0 + R + r < m.rows())  // the next R rows' bytes of these blocks, two lines
        for (int line = 0; line < 2; ++line) __builtin_prefetch(w[r] + R * ws + b0 * 16 + 64 * line);
    }
    q8_pairs_of<R, T, false>(w, x, b0 / 2, 4, sl, hl, 0, acc);
  }
  if (b0 < end) {  // the row's last blocks, fewer than eight; the lanes past them get factor 0
    const index_t left = blocks - b0;
    for (int r = 0; r < R; ++r) {
      alignas(32) float f[8] = {};
      for (index_t i = 0; i < left; ++i) f[i] = m.scale.data()[(row0 + r) * ss + b0 + i].to_float();
      q8_spread(_mm256_load_ps(f), sl[r]);
    }
    for (int t = 0; t < T; ++t) {
      alignas(32) float f[8] = {};
      for (index_t i = 0; i < left; ++i) f[i] = x[t].half_steps[b0 + i];
      q8_spread(_mm256_load_ps(f), hl[t]);
    }
    q8_pairs_of<R, T, false>(w, x, b0 / 2, left / 2, sl, hl, 0, acc);
    if (left % 2 != 0) q8_pairs_of<R, T, true>(w, x, (blocks - 1) / 2, 1, sl, hl, left / 2, acc);
  }
}

template <int R, int T>
void q8_dot_tile(const fp4_matrix& m, index_t row0, const q8_row (&x)[T], float (&out)[R][T]) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  q8_tile_blocks<R, T>(m, row0, x, 0, m.cols() / q8_block, acc);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      v8f a;
      std::memcpy(&a, &acc[r][t], sizeof a);
      out[r][t] = reduce_lanes(a);
    }
}
#else
template <int R, int T>
void q8_dot_tile(const fp4_matrix& m, index_t row0, const q8_row (&x)[T], float (&out)[R][T]) {
  q8_dot_tile_portable<R, T>(m, row0, x, out);
}
#endif

// The int8 GEMM's tiles: two rows by three tokens (each weight lookup serves three tokens, and
// each token's codes two rows), over the tokens of a group of nine and the rows of a block of
// twelve, one chunk of 32 blocks (1024 columns) at a time: a chunk of the group's codes (15 KiB) and
// of the block's weights (6 KiB) stays in L1 while every tile passes over it. The tiles keep their
// lane accumulators between chunks, so each output still adds its pairs in order (the contract).
inline constexpr int q8_gemm_rows = 2, q8_gemm_tokens = 3;
inline constexpr index_t q8_gemm_group = 9, q8_gemm_row_block = 12, q8_gemm_chunk = 32;

#if defined(__AVX2__) && defined(__FMA__)
// Rows [row0 + r, + R) against tokens [t0 + t, + T) over blocks [c0, c1) of the chunk loop below:
// the accumulators start at zero (c0 = 0) or from part, and go back to part or, after the row's
// last block, to y.
template <int R, int T, class Token>
void q8_gemm_tile(const fp4_matrix& m, const Token& token, index_t row0, index_t r, index_t t0, index_t t,
                  index_t c0, index_t c1, __m256 (&part)[q8_gemm_row_block][q8_gemm_group],
                  tensor_view<float, 2> y) {
  q8_row x[T];
  for (int j = 0; j < T; ++j) x[j] = token(t0 + t + j);
  __m256 acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < T; ++j) acc[i][j] = c0 == 0 ? _mm256_setzero_ps() : part[r + i][t + j];
  q8_tile_blocks<R, T>(m, row0 + r, x, c0, c1, acc);
  const bool last = c1 == m.cols() / q8_block;
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < T; ++j) {
      if (!last) {
        part[r + i][t + j] = acc[i][j];
        continue;
      }
      v8f a;
      std::memcpy(&a, &acc[i][j], sizeof a);
      y(t0 + t + j, row0 + r + i) = reduce_lanes(a);
    }
}

// Rows [row0, row0 + rows) (at most q8_gemm_row_block) against tokens [t0, t1) (at most
// q8_gemm_group), chunk by chunk; rows and tokens past the last whole tile go one at a time.
template <class Token>
void q8_gemm_block(const fp4_matrix& m, const Token& token, index_t row0, index_t rows, index_t t0,
                   index_t t1, tensor_view<float, 2> y) {
  __m256 part[q8_gemm_row_block][q8_gemm_group];
  const index_t blocks = m.cols() / q8_block, tokens = t1 - t0;
  for (index_t c0 = 0; c0 < blocks; c0 += q8_gemm_chunk) {
    const index_t c1 = std::min(blocks, c0 + q8_gemm_chunk);
    index_t r = 0;
    for (; r + q8_gemm_rows <= rows; r += q8_gemm_rows) {
      index_t t = 0;
      for (; t + q8_gemm_tokens <= tokens; t += q8_gemm_tokens)
        q8_gemm_tile<q8_gemm_rows, q8_gemm_tokens>(m, token, row0, r, t0, t, c0, c1, part, y);
      for (; t < tokens; ++t) q8_gemm_tile<q8_gemm_rows, 1>(m, token, row0, r, t0, t, c0, c1, part, y);
    }
    for (; r < rows; ++r)
      for (index_t t = 0; t < tokens; ++t) q8_gemm_tile<1, 1>(m, token, row0, r, t0, t, c0, c1, part, y);
  }
}
#endif

// Rows [row0, row0 + R) against tokens [t0, t0 + T) (token(t): its blocks), into y.
template <int R, int T, class Token>
void q8_tile_into(const fp4_matrix& m, index_t row0, const Token& token, index_t t0,
                  tensor_view<float, 2> y) {
  q8_row x[T];
  for (int t = 0; t < T; ++t) x[t] = token(t0 + t);
  float o[R][T];
  q8_dot_tile<R, T>(m, row0, x, o);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y(t0 + t, row0 + r) = o[r][t];
}

// y rows [row0, row0 + rows) of every token from the tokens' blocks (x: n tokens, token t's blocks
// at x + t * q8_floats(in)). One token: four rows at a time (the GEMV). More: the GEMM's blocks of
// rows and groups of tokens with AVX2, each row against each token otherwise. Every output is the
// one q8_dot_tile gives for its row and token, whatever the tile: the batch and thread invariance
// of the contract.
inline void q8_row_block(const fp4_matrix& m, const float* x, tensor_view<float, 2> y, index_t row0,
                         index_t rows) {
  const index_t n = y.extent(0), per_token = q8_floats(m.cols());
  const auto token = [&](index_t t) { return q8_row_at(x + t * per_token, m.cols()); };
  if (n == 1) {
    index_t r = 0;
    for (; r + 4 <= rows; r += 4) q8_tile_into<4, 1>(m, row0 + r, token, 0, y);
    for (; r < rows; ++r) q8_tile_into<1, 1>(m, row0 + r, token, 0, y);
    return;
  }
#if defined(__AVX2__) && defined(__FMA__)
  for (index_t t0 = 0; t0 < n; t0 += q8_gemm_group)
    for (index_t r = 0; r < rows; r += q8_gemm_row_block)
      q8_gemm_block(m, token, row0 + r, std::min(q8_gemm_row_block, rows - r), t0,
                    std::min(n, t0 + q8_gemm_group), y);
#else
  for (index_t r = 0; r < rows; ++r)
    for (index_t t = 0; t < n; ++t) q8_tile_into<1, 1>(m, row0 + r, token, t, y);
#endif
}

}  // namespace detail

}  // namespace dsv4
