// GEMV and GEMM whose weight is stored in a checkpoint format: f32, bf16, FP8 e4m3 with 128x128
// ue8m0 block scales, or packed FP4 e2m1 with 1x32 ue8m0 scales (spec §11.1).
//
// Why here and why this way: every linear of the MoE (router gate, routed and shared experts)
// reads weights that are mostly bytes of FP8 or nibbles of FP4. Expanding them to float would
// multiply the memory traffic by 4 to 8, so rows are decoded 32 columns at a time (a "chunk": one
// FP4 scale block, a quarter of an FP8 one) into buffers that stay in L1. A GEMM decodes 4 rows x
// 256 columns into a tile that feeds a 4-row x 3-token register-blocked micro-kernel; a one-token
// GEMV consumes each chunk of 4 rows as soon as it is decoded. Decoding is exact: every format
// decodes to the float dequantize_fp8_at / dequantize_fp4_at give, NaN codes included.
//
// Accumulation order (the contract that makes results reproducible): each output y[t][o] has
// eight fp32 lane accumulators; lane l sums w[o][k] * x[t][k] over k = l (mod 8) in increasing k,
// then the lanes are added as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)), the tree of
// dsv4::dot. Every output is computed by one thread and does not depend on the other rows or
// tokens, so results are bit-identical for any thread count, and gemv(x) equals the row of
// gemm(X) that holds x (a batch equals its tokens one by one). Products use fused multiply-add
// where the target has it.
//
// Vectorization: GCC vector extensions for the products; with AVX2 and F16C, FP8 and FP4 codes
// are rewritten as IEEE half bits (a few integer operations, a 16-entry byte table for FP4) and
// widened by the hardware; without them the scalar decoders of quant.hpp are used. A chunk whose
// scale is too large for the half trick (above 2^119 for FP8, 2^113 for FP4; no real checkpoint
// comes near) takes the scalar decoders as well, so decoding stays exact everywhere.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

#if defined(__FMA__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4 {

// Columns a weight row is decoded in at a time: one FP4 scale block, a quarter of an FP8 one.
inline constexpr index_t weight_chunk = 32;

namespace detail {

using v8f = float __attribute__((vector_size(32)));
using v8u32 = std::uint32_t __attribute__((vector_size(32)));
using v8u16 = std::uint16_t __attribute__((vector_size(16)));

// Unaligned, aliasing views of 8 floats: plain loads and stores the compiler keeps in registers.
using v8f_unaligned = float __attribute__((vector_size(32), aligned(4), may_alias));

// 32-byte vectors cross function boundaries by reference only: passed by value they would change
// the calling convention between AVX and non-AVX builds (GCC's -Wpsabi).
DSV4_FORCEINLINE void load8(v8f& v, const float* p) { v = *reinterpret_cast<const v8f_unaligned*>(p); }

// c += a * b, fused where the target can.
DSV4_FORCEINLINE void fma8(v8f& c, const v8f& a, const v8f& b) {
#if defined(__FMA__)
  // Value casts between same-size vectors: punning through references would pin c to memory.
  c = reinterpret_cast<v8f>(
      _mm256_fmadd_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b), reinterpret_cast<__m256>(c)));
#else
  c += a * b;
#endif
}

// The scalar twin of fma8, for the column tail.
DSV4_FORCEINLINE float fma1(float a, float b, float c) {
#if defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  return c + a * b;
#endif
}

// The lane tree of the accumulation-order contract above (the same as dsv4::dot).
DSV4_FORCEINLINE float reduce_lanes(const v8f& a) {
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

#if defined(__F16C__) && defined(__AVX2__)

// scale * 2^e built from bits (no branches), for scale bits + e in [1, 254] (a normal float).
DSV4_FORCEINLINE float scale_times_pow2(ue8m0 scale, int e) {
  return bits_to_float(static_cast<std::uint32_t>(scale.bits + e) << 23);
}

// An FP8 e4m3 code re-biased into a half (s eeee mmm -> s 0eeee mmm0000000) is its value times
// 2^-8, subnormals included, so the block scale is folded with 2^8; the NaN codes (S.1111.111)
// get the half exponent 31 and stay NaN. Exact while scale * 2^8 is a finite float.
inline constexpr std::uint8_t fp8_half_scale_max_bits = 127 + 119;
// out[0 .. 32) = fp8 codes w[0 .. 32) times f = scale * 2^8.
DSV4_FORCEINLINE void decode_fp8_chunk(const fp8_e4m3* w, float f, float* out) {
  const __m256 factor = _mm256_set1_ps(f);
  for (int i = 0; i < 32; i += 16) {
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    const __m256i mag = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(0x3f80));
    const __m256i sign = _mm256_and_si256(_mm256_slli_epi16(b, 8), _mm256_set1_epi16(-0x8000));
    const __m256i nan =
        _mm256_and_si256(_mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x3f80)), _mm256_set1_epi16(0x7e00));
    const __m256i h = _mm256_or_si256(_mm256_or_si256(mag, sign), nan);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), factor));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), factor));
  }
}

// An FP4 e2m1 nibble re-biased into a half (s ee m -> s 000ee m000000000) is its value times
// 2^-14; the half's low byte is always zero, so a 16-entry byte table gives the high byte.
inline constexpr std::uint8_t fp4_half_scale_max_bits = 127 + 113;
// out[0 .. 32) = the 32 nibbles of w[0 .. 16) (low nibble first) times f = scale * 2^14.
DSV4_FORCEINLINE void decode_fp4_chunk(const fp4x2* w, float f, float* out) {
  const __m128i table = _mm_setr_epi8(0x00, 0x02, 0x04, 0x06, 0x08, 0x0a, 0x0c, 0x0e, -0x80, -0x7e, -0x7c,
                                      -0x7a, -0x78, -0x76, -0x74, -0x72);
  const __m128i nibble = _mm_set1_epi8(0x0f), zero = _mm_setzero_si128();
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  const __m128i even = _mm_shuffle_epi8(table, _mm_and_si128(v, nibble));
  const __m128i odd = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(v, 4), nibble));
  const __m128i first = _mm_unpacklo_epi8(even, odd), second = _mm_unpackhi_epi8(even, odd);  // column order
  const __m128i halves[4] = {_mm_unpacklo_epi8(zero, first), _mm_unpackhi_epi8(zero, first),
                             _mm_unpacklo_epi8(zero, second), _mm_unpackhi_epi8(zero, second)};
  const __m256 factor = _mm256_set1_ps(f);
  for (int i = 0; i < 4; ++i)
    _mm256_storeu_ps(out + 8 * i, _mm256_mul_ps(_mm256_cvtph_ps(halves[i]), factor));
}
#endif

}  // namespace detail

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
        detail::v8u16 h;
        std::memcpy(&h, w + i, sizeof h);
        const detail::v8u32 bits = __builtin_convertvector(h, detail::v8u32) << 16;
        std::memcpy(out + i, &bits, sizeof bits);
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
  void decode(index_t row, index_t k0, index_t n, float* out) const {
    const fp8_e4m3* w = weight.data() + row * weight.stride(0);
    const ue8m0* s = scale.data() + (row / fp8_block) * scale.stride(0);
#if defined(__F16C__) && defined(__AVX2__)
    const ue8m0 block_scale = s[k0 / fp8_block];  // one scale covers the chunk: 32 divides 128
    if (n == weight_chunk && block_scale.bits <= detail::fp8_half_scale_max_bits) {
      detail::decode_fp8_chunk(w + k0, detail::scale_times_pow2(block_scale, 8), out);
      return;
    }
#endif
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
  void decode(index_t row, index_t k0, index_t n, float* out) const {
    const fp4x2* w = weight.data() + row * weight.stride(0);
    const ue8m0* s = scale.data() + row * scale.stride(0);

#if defined(__F16C__) && defined(__AVX2__)
    const ue8m0 block_scale = s[k0 / fp4_block];
    if (n == weight_chunk && block_scale.bits <= detail::fp4_half_scale_max_bits) {
      detail::decode_fp4_chunk(w + k0 / 2, detail::scale_times_pow2(block_scale, 14), out);
      return;
    }
#endif
    dequantize_fp4_row(w, s, k0, k0 + n, out);
  }
};

static_assert(weight_matrix<f32_matrix> && weight_matrix<bf16_matrix> && weight_matrix<fp8_matrix> &&
              weight_matrix<fp4_matrix>);

// ---- gemm_op: y (n, out) = x (n, in) . W^T ---------------------------------------------------------
template <weight_matrix W>
struct gemm_op {
  struct params {
    using op = gemm_op;
    W weight;                       // (out, in)
    tensor_view<const float, 2> x;  // (n, in), rows may be strided
    tensor_view<float, 2> y;        // (n, out), rows may be strided
  };

  static status check(const params& p) {
    DSV4_TRY(p.weight.check("weight"));
    DSV4_TRY(check_shape(p.x, {-1, p.weight.cols()}, "x"));
    DSV4_TRY(detail::check_unit_inner_stride(p.x, "x"));
    DSV4_TRY(check_shape(p.y, {p.x.extent(0), p.weight.rows()}, "y"));
    return detail::check_unit_inner_stride(p.y, "y");
  }
};

namespace detail {

inline constexpr int gemm_rows = 4;       // weight rows per register block (and per parallel task)
inline constexpr int gemm_tokens = 3;     // tokens per register block: 4 x 3 accumulators + 7 loads
inline constexpr index_t gemm_kc = 256;   // columns decoded per tile: 4 rows x 256 floats = 4 KiB
inline constexpr index_t gemm_pass = 64;  // tokens whose accumulators live on the stack at once

// acc[t][r] += tile[r][0 .. kc) . x[t][k0 .. k0 + kc) lane by lane (the order contract), for R
// rows of the tile and T tokens; kc need not be a multiple of 8 (the tail keeps lane = k mod 8).
template <int R, int T>
DSV4_FORCEINLINE void gemm_micro(const float* tile, const float* const* x, index_t k0, index_t kc, v8f* acc) {
  v8f a[R][T];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) a[r][t] = acc[t * gemm_rows + r];
  const index_t kv = kc & ~index_t{7};
  for (index_t k = 0; k < kv; k += 8) {
    v8f w[R];
    for (int r = 0; r < R; ++r) load8(w[r], tile + r * gemm_kc + k);
    for (int t = 0; t < T; ++t) {
      v8f xv;
      load8(xv, x[t] + k0 + k);
      for (int r = 0; r < R; ++r) fma8(a[r][t], w[r], xv);
    }
  }
  for (index_t k = kv; k < kc; ++k)
    for (int t = 0; t < T; ++t)
      for (int r = 0; r < R; ++r) a[r][t][k & 7] = fma1(tile[r * gemm_kc + k], x[t][k0 + k], a[r][t][k & 7]);
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc[t * gemm_rows + r] = a[r][t];
}

template <int R>
void gemm_micro_tokens(const float* tile, const float* const* x, index_t k0, index_t kc, v8f* acc,
                       int tokens) {
  switch (tokens) {
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
    case 4:
      return gemm_micro_tokens<4>(tile, x, k0, kc, acc, tokens);
    case 3:
      return gemm_micro_tokens<3>(tile, x, k0, kc, acc, tokens);
    case 2:
      return gemm_micro_tokens<2>(tile, x, k0, kc, acc, tokens);
    default:
      return gemm_micro_tokens<1>(tile, x, k0, kc, acc, tokens);
  }
}

// Rows [row0, row0 + rows) of y for all tokens: tokens in passes of gemm_pass, and for each pass
// the weight rows decoded gemm_kc columns at a time into an L1 tile.
template <weight_matrix W>
void gemm_row_block(const typename gemm_op<W>::params& p, index_t row0, int rows) {
  alignas(32) float tile[gemm_rows * gemm_kc];  // (gemm_rows, gemm_kc)
  v8f acc[gemm_pass * gemm_rows];               // (gemm_pass, gemm_rows) lane accumulators
  const index_t n = p.x.extent(0), in = p.weight.cols();
  for (index_t t0 = 0; t0 < n; t0 += gemm_pass) {
    const index_t nt = std::min(gemm_pass, n - t0);
    std::fill(acc, acc + nt * gemm_rows, v8f{});
    for (index_t k0 = 0; k0 < in; k0 += gemm_kc) {
      const index_t kc = std::min(gemm_kc, in - k0);
      for (int r = 0; r < rows; ++r)
        for (index_t c = 0; c < kc; c += weight_chunk)
          p.weight.decode(row0 + r, k0 + c, std::min(weight_chunk, kc - c), tile + r * gemm_kc + c);
      for (index_t t = 0; t < nt; t += gemm_tokens) {
        const int tokens = static_cast<int>(std::min<index_t>(gemm_tokens, nt - t));
        const float* x[gemm_tokens];
        for (int j = 0; j < tokens; ++j) x[j] = p.x.data() + (t0 + t + j) * p.x.stride(0);
        gemm_micro_any(tile, x, k0, kc, acc + t * gemm_rows, rows, tokens);
      }
    }
    for (index_t t = 0; t < nt; ++t)
      for (int r = 0; r < rows; ++r) p.y(t0 + t, row0 + r) = reduce_lanes(acc[t * gemm_rows + r]);
  }
}

// The one-token case of gemm_row_block, with the same per-lane operations in the same order (so
// bit-identical to it): each 32-column chunk of the R rows is decoded into a buffer that stays in
// L1 and consumed at once, instead of going through the 256-column tile.
template <int R, weight_matrix W>
void gemv_row_block(const typename gemm_op<W>::params& p, index_t row0) {
  alignas(32) float chunk[R][weight_chunk];  // (R, weight_chunk)
  v8f acc[R] = {};
  const float* x = p.x.data();
  const index_t in = p.weight.cols();
  for (index_t k0 = 0; k0 < in; k0 += weight_chunk) {
    const index_t kc = std::min(weight_chunk, in - k0), kv = kc & ~index_t{7};
    for (int r = 0; r < R; ++r) p.weight.decode(row0 + r, k0, kc, chunk[r]);
    for (index_t k = 0; k < kv; k += 8) {
      v8f xv;
      load8(xv, x + k0 + k);
      for (int r = 0; r < R; ++r) {
        v8f w;
        load8(w, chunk[r] + k);
        fma8(acc[r], w, xv);
      }
    }
    for (index_t k = kv; k < kc; ++k)
      for (int r = 0; r < R; ++r) acc[r][k & 7] = fma1(chunk[r][k], x[k0 + k], acc[r][k & 7]);
  }
  for (int r = 0; r < R; ++r) p.y(0, row0 + r) = reduce_lanes(acc[r]);
}

template <weight_matrix W>
void row_block(const typename gemm_op<W>::params& p, index_t row0, int rows) {
  if (p.x.extent(0) != 1) return gemm_row_block<W>(p, row0, rows);
  switch (rows) {
    case 4:
      return gemv_row_block<4, W>(p, row0);
    case 3:
      return gemv_row_block<3, W>(p, row0);
    case 2:
      return gemv_row_block<2, W>(p, row0);
    default:
      return gemv_row_block<1, W>(p, row0);
  }
}

}  // namespace detail

// Parallel over blocks of gemm_rows output rows.
template <weight_matrix W>
struct kernel<gemm_op<W>, cpu> {
  static status run(const typename gemm_op<W>::params& p) {
    DSV4_TRY(gemm_op<W>::check(p));
    const index_t out = p.weight.rows();
    const index_t blocks = detail::blocks_of(out, detail::gemm_rows);
    parallel_for(0, blocks, [&](index_t b) {
      const index_t row0 = b * detail::gemm_rows;
      detail::row_block<W>(p, row0, static_cast<int>(std::min<index_t>(detail::gemm_rows, out - row0)));
    });
    return {};
  }
};

// y (n, out) = x (n, in) . W^T.
template <weight_matrix W>
status gemm(const W& weight, tensor_view<const float, 2> x, tensor_view<float, 2> y) {
  return run<cpu>(typename gemm_op<W>::params{weight, x, y});
}

// y (out) = W . x (in): the one-token gemm, bit-identical to the matching row of any batch.
template <weight_matrix W>
status gemv(const W& weight, std::span<const float> x, std::span<float> y) {
  const auto in = static_cast<index_t>(x.size()), out = static_cast<index_t>(y.size());
  return gemm(weight, tensor_view<const float, 2>(x.data(), {1, in}),
              tensor_view<float, 2>(y.data(), {1, out}));
}

}  // namespace dsv4
