// Weight matrices: views of an (out, in) matrix in one checkpoint storage format (weight_format:
// f32, bf16, FP8 e4m3 with 128x128 ue8m0 block scales, packed FP4 e2m1 with 1x32 ue8m0 scales,
// spec §11.1). A view decodes a chunk of a row into floats, exactly; the linear kernels
// (linear.hpp) read the fast formats through their own lane-order loaders (weight_lanes.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "dsv4/core/chunk_decode.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/storage_format.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4 {

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
    DSV4_TRY(check_shape(scale, {ceil_div(rows(), fp8_block), ceil_div(cols(), fp8_block)}, n + ".scale"));
    return detail::check_unit_inner_stride(scale, n + ".scale");
  }
  // Rows [begin, end) as a matrix of their own; begin is a multiple of 128 (the slice starts a
  // scale block), end one too or the last row.
  fp8_matrix slice_rows(index_t begin, index_t end) const {
    DSV4_ASSERT(begin % fp8_block == 0 && (end % fp8_block == 0 || end == rows()),
                "fp8_matrix::slice_rows: the rows must start and end on 128-row scale blocks");
    return {weight.slice(begin, end), scale.slice(begin / fp8_block, ceil_div(end, fp8_block))};
  }
  // The scale of the 128 x 128 block that holds (row, col); unsigned offsets, so that the block
  // divisions are shifts.
  ue8m0 block_scale(index_t row, index_t col) const {
    const auto r = static_cast<std::size_t>(row), k = static_cast<std::size_t>(col);
    return scale.data()[index_math::block_scale_index<std::size_t>(r, k, scale.stride(0), fp8_block)];
  }
  void decode(index_t row, index_t k0, index_t n, float* out) const {
    const fp8_e4m3* w = weight.data() + row * weight.stride(0);
    const ue8m0* s = scale.data() + index_math::block_of(row, fp8_block) * scale.stride(0);
    if (n == weight_chunk) {
      decode_fp8_32(w + k0, s[index_math::block_of(k0, fp8_block)], out);
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
      decode_fp4_32(w + index_math::fp4_byte(k0), s[index_math::block_of(k0, fp4_block)], out);
      return;
    }
    dequantize_fp4_row(w, s, k0, k0 + n, out);
  }
};

static_assert(weight_matrix<f32_matrix> && weight_matrix<bf16_matrix> && weight_matrix<fp8_matrix> &&
              weight_matrix<fp4_matrix>);

// The largest sum of |w| over a row of m: |(m . x)[o]| <= max_row_abs_sum(m) * max|x| for every
// o, so a caller can tell which inputs a product can take without overflowing. NaN or infinity
// when m holds a value that is not finite. Reads the whole matrix once.
template <weight_matrix W>
double max_row_abs_sum(const W& m) {
  alignas(32) float chunk[weight_chunk];
  double most = 0.0;
  for (index_t r = 0; r < m.rows(); ++r) {
    double sum = 0.0;
    for (index_t k = 0; k < m.cols(); k += weight_chunk) {
      const index_t n = std::min(weight_chunk, m.cols() - k);
      m.decode(r, k, n, chunk);
      for (index_t i = 0; i < n; ++i) sum += std::fabs(static_cast<double>(chunk[i]));
    }
    if (std::isnan(sum)) return sum;
    most = std::max(most, sum);
  }
  return most;
}

// The matrix type of a checkpoint weight_format: how a model described at compile time names the
// types of its weights (config::model_config's linear_format, expert_format, other_format).
template <weight_format F>
using weight_matrix_for = std::conditional_t<
    F == weight_format::f32, f32_matrix,
    std::conditional_t<F == weight_format::bf16, bf16_matrix,
                       std::conditional_t<F == weight_format::fp8_e4m3_block128, fp8_matrix, fp4_matrix>>>;

// Whether the released model quantizes the input of a linear with weights W to FP8 (1x128 tiles):
// its `linear()` does so for FP8 and FP4 weights, whose GEMM kernels take FP8 activations.
template <weight_matrix W>
inline constexpr bool takes_fp8_input = std::same_as<W, fp8_matrix> || std::same_as<W, fp4_matrix>;

}  // namespace dsv4
