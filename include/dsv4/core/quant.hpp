// Block-scaled dequantization of the released checkpoint layouts, and the FP8/FP4 quantization
// simulations of the reference model (spec §11.1, §18.3). CPU implementations.
//
// Checkpoint layouts (spec §11.1):
//   FP8 linears   weight (out, in) fp8_e4m3, scale (ceil(out/128), ceil(in/128)) ue8m0;
//                 real weight[o][i] = fp8(weight[o][i]) * 2^(scale[o/128][i/128] - 127).
//   FP4 experts   weight (out, in/2) fp4x2 (low nibble = even element), scale (out, in/32) ue8m0;
//                 real weight[o][i] = e2m1(nibble i of row o) * 2^(scale[o][i/32] - 127).
// Both products are exact in FP32 (a few significant bits times a power of two), so every backend
// produces bit-identical results. GEMV/GEMM kernels are meant to decode rows on the fly with the
// DSV4_HOST_DEVICE element and row helpers below instead of expanding whole matrices; the
// full-matrix operations exist for loading, testing and reference paths, and are written in terms
// of the same helpers.
//
// Simulations (spec §18.3): fp8_simulate / fp4_simulate round a vector tile by tile to what the
// reference's quantize-dequantize produces; see their comments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4 {

inline constexpr index_t fp8_block = 128;  // FP8 weight scale blocks are fp8_block x fp8_block
inline constexpr index_t fp4_block = 32;   // FP4 weight scale blocks are 1 x fp4_block

// ---- element and row decoders, shared by the CPU and CUDA paths ------------------------------

// One FP8 weight element: weight_row points at column 0 of row o, scale_row at column 0 of scale
// row o / 128.
DSV4_HOST_DEVICE inline float dequantize_fp8_at(const fp8_e4m3* weight_row, const ue8m0* scale_row,
                                                index_t col) {
  return weight_row[col].to_float() * scale_row[index_math::block_of(col, fp8_block)].to_float();
}

// One FP4 weight element: weight_row points at byte 0 of row o (two elements per byte), scale_row
// at column 0 of scale row o.
DSV4_HOST_DEVICE inline float dequantize_fp4_at(const fp4x2* weight_row, const ue8m0* scale_row,
                                                index_t col) {
  return weight_row[index_math::fp4_byte(col)][static_cast<int>(index_math::fp4_nibble(col))].to_float() *
         scale_row[index_math::block_of(col, fp4_block)].to_float();
}

// Decodes columns [begin, end) of one FP8 weight row into out[0 .. end - begin).
DSV4_HOST_DEVICE inline void dequantize_fp8_row(const fp8_e4m3* weight_row, const ue8m0* scale_row,
                                                index_t begin, index_t end, float* out) {
  for (index_t c = begin; c < end; ++c) out[c - begin] = dequantize_fp8_at(weight_row, scale_row, c);
}

// Decodes columns [begin, end) of one FP4 weight row into out[0 .. end - begin).
DSV4_HOST_DEVICE inline void dequantize_fp4_row(const fp4x2* weight_row, const ue8m0* scale_row,
                                                index_t begin, index_t end, float* out) {
  for (index_t c = begin; c < end; ++c) out[c - begin] = dequantize_fp4_at(weight_row, scale_row, c);
}

namespace detail {
// The row helpers walk a row by pointer, so the last dimension must be dense; rows may be strided.
template <class T, std::size_t Rank>
status check_unit_inner_stride(const tensor_view<T, Rank>& v, std::string_view name) {
  if (v.stride(Rank - 1) == 1 || v.extent(Rank - 1) <= 1) return {};
  return {errc::shape_mismatch, std::string(name) + ": expected unit stride along the last dimension, got " +
                                    std::to_string(v.stride(Rank - 1))};
}

// The rules both dequantize ops share once the weight's extents are known, in the order they are
// reported: scale of `scale_extents`, out of (rows, cols), every view dense along its last dimension.
template <class Params>
status check_dequantize_views(const Params& p, const extents_t<2>& scale_extents, index_t rows,
                              index_t cols) {
  DSV4_TRY(check_unit_inner_stride(p.weight, "weight"));
  DSV4_TRY(check_shape(p.scale, scale_extents, "scale"));
  DSV4_TRY(check_unit_inner_stride(p.scale, "scale"));
  DSV4_TRY(check_shape(p.out, {rows, cols}, "out"));
  return check_unit_inner_stride(p.out, "out");
}
}  // namespace detail

// ---- dequantize_fp8_op: FP8 e4m3 weight with 128x128 ue8m0 block scales -> float ---------------
struct dequantize_fp8_op {
  struct params {
    using op = dequantize_fp8_op;
    tensor_view<const fp8_e4m3, 2> weight;  // (out, in)
    tensor_view<const ue8m0, 2> scale;      // (ceil(out/128), ceil(in/128))
    tensor_view<float, 2> out;              // (out, in)
  };

  // Shapes follow from weight; every view needs a unit stride along its last dimension.
  static status check(const params& p) {
    const index_t rows = p.weight.extent(0), cols = p.weight.extent(1);
    return detail::check_dequantize_views(p, {ceil_div(rows, fp8_block), ceil_div(cols, fp8_block)}, rows,
                                          cols);
  }
};

template <>
struct kernel<dequantize_fp8_op, cpu> {
  static status run(const dequantize_fp8_op::params& p) {
    DSV4_TRY(dequantize_fp8_op::check(p));
    const index_t cols = p.weight.extent(1);
    parallel_for(0, p.weight.extent(0), [&](index_t r) {
      dequantize_fp8_row(p.weight.data() + r * p.weight.stride(0),
                         p.scale.data() + index_math::block_of(r, fp8_block) * p.scale.stride(0), 0, cols,
                         p.out.data() + r * p.out.stride(0));
    });
    return {};
  }
};

// ---- dequantize_fp4_op: packed FP4 e2m1 weight with 1x32 ue8m0 block scales -> float -----------
struct dequantize_fp4_op {
  struct params {
    using op = dequantize_fp4_op;
    tensor_view<const fp4x2, 2> weight;  // (out, in/2), low nibble = even column
    tensor_view<const ue8m0, 2> scale;   // (out, in/32)
    tensor_view<float, 2> out;           // (out, in)
  };

  // Shapes follow from weight (in = 2 * weight.extent(1), a multiple of 32).
  static status check(const params& p) {
    const index_t rows = p.weight.extent(0), cols = 2 * p.weight.extent(1);
    if (cols % fp4_block != 0) {
      return {errc::shape_mismatch, "weight: expected (out, in/2) with in a multiple of 32, got " +
                                        shape_string<2>(p.weight.extents())};
    }
    return detail::check_dequantize_views(p, {rows, cols / fp4_block}, rows, cols);
  }
};

template <>
struct kernel<dequantize_fp4_op, cpu> {
  static status run(const dequantize_fp4_op::params& p) {
    DSV4_TRY(dequantize_fp4_op::check(p));
    const index_t cols = 2 * p.weight.extent(1);
    parallel_for(0, p.weight.extent(0), [&](index_t r) {
      dequantize_fp4_row(p.weight.data() + r * p.weight.stride(0), p.scale.data() + r * p.scale.stride(0), 0,
                         cols, p.out.data() + r * p.out.stride(0));
    });
    return {};
  }
};

// ---- quantization simulations (spec §18.3) ----------------------------------------------------
//
// FP8 (activations: tile 128; KV NoPE dims: tile 64). Per tile of x:
//   amax = max(max |x_i|, 1e-4)
//   s    = 2^ceil(log2(amax / 448))          (amax / 448 rounded in FP32, then ue8m0::ceil_pow2)
//   x_i <- e4m3_rne(clamp(x_i / s, -448, 448)) * s
// The reference stores bf16(q * s); q has at most 4 significant bits and s >= 2^-22, so q * s is
// always exactly representable in bf16 and the cast changes nothing: the float result here already
// equals the reference's bf16 value.
//
// FP4 (indexer q and keys: tile 32). Per tile:
//   amax = max(max |x_i|, 6 * 2^-126),  s = 2^ceil(log2(amax / 6)),
//   x_i <- e2m1_rne(clamp(x_i / s, -6, 6)) * s          (also exact in bf16).
//
// A trailing partial tile (n not a multiple of the tile) is simulated as a tile of its own. NaN
// elements do not raise amax; an FP8 NaN stays NaN, an FP4 NaN becomes zero (see fp4_e2m1).

namespace detail {
DSV4_HOST_DEVICE constexpr float f32_abs(float v) { return bits_to_float(float_to_bits(v) & f32_abs_mask); }
DSV4_HOST_DEVICE inline float tile_absmax(const float* x, index_t n) {
  float m = 0.0f;
  for (index_t i = 0; i < n; ++i) {
    const float a = f32_abs(x[i]);
    m = a > m ? a : m;  // a NaN compares false and is skipped
  }
  return m;
}
}  // namespace detail

// One FP8 tile in place: x (n), all n elements share one scale.
DSV4_HOST_DEVICE inline void fp8_simulate_tile(float* x, index_t n) {
  const float amax_raw = detail::tile_absmax(x, n);
  const float amax = amax_raw > 1e-4f ? amax_raw : 1e-4f;
  const float s = ue8m0::ceil_pow2(amax / fp8_e4m3::max_finite).to_float();
  for (index_t i = 0; i < n; ++i) {
    float v = x[i] / s;  // exact: s is a power of two
    v = v < -fp8_e4m3::max_finite ? -fp8_e4m3::max_finite
                                  : (v > fp8_e4m3::max_finite ? fp8_e4m3::max_finite : v);
    x[i] = fp8_e4m3(v).to_float() * s;
  }
}

// One FP4 tile in place: x (n), all n elements share one scale.
DSV4_HOST_DEVICE inline void fp4_simulate_tile(float* x, index_t n) {
  constexpr float amax_floor = fp4_e2m1::max_finite * 0x1p-126f;
  const float amax_raw = detail::tile_absmax(x, n);
  const float amax = amax_raw > amax_floor ? amax_raw : amax_floor;
  const float s = ue8m0::ceil_pow2(amax / fp4_e2m1::max_finite).to_float();
  for (index_t i = 0; i < n; ++i) {
    float v = x[i] / s;
    v = v < -fp4_e2m1::max_finite ? -fp4_e2m1::max_finite
                                  : (v > fp4_e2m1::max_finite ? fp4_e2m1::max_finite : v);
    x[i] = fp4_e2m1(v).to_float() * s;
  }
}

// x (n) in place, in tiles of `tile` consecutive elements (128 for activations, 64 for KV NoPE).
inline void fp8_simulate(std::span<float> x, int tile) {
  DSV4_ASSERT(tile > 0, "fp8_simulate: tile must be positive");
  const auto n = static_cast<index_t>(x.size());
  for (index_t b = 0; b < n; b += tile) fp8_simulate_tile(x.data() + b, n - b < tile ? n - b : tile);
}

// x (n) in place, in 1x32 tiles.
inline void fp4_simulate(std::span<float> x) {
  const auto n = static_cast<index_t>(x.size());
  for (index_t b = 0; b < n; b += fp4_block)
    fp4_simulate_tile(x.data() + b, n - b < fp4_block ? n - b : fp4_block);
}

}  // namespace dsv4
