// Quantization of float weights into the released checkpoint formats (spec §11.1): the inverse
// of dequantize_fp8_op / dequantize_fp4_op (core/quant.hpp), for writers, training exports and
// conversions.
//
//   FP8 block-128   w (out, in) -> q (out, in) fp8_e4m3, s (ceil(out/128), ceil(in/128)) ue8m0
//   FP4 block-32    w (out, in) -> q (out, in/2) fp4x2 (low nibble = even column),
//                   s (out, in/32) ue8m0; in must be a multiple of 32
// Each block's scale is the smallest power of two with amax / scale <= the format's largest
// value (448 for E4M3, 6 for E2M1), so nothing saturates; elements round to nearest even. A block
// of zeros gets the smallest scale (2^-127). dequantize(quantize(w)) is then within half an ulp
// of the format at the block's scale of every element, and exact for values the format holds at
// that scale. Non-finite weights are rejected (a NaN would take its whole block with it).
#pragma once

#include <cmath>
#include <string>
#include <string_view>

#include "dsv4/core/dtype.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4 {

namespace detail {
inline status check_finite_weights(const tensor_view<const float, 2>& w, std::string_view name) {
  for (index_t r = 0; r < w.extent(0); ++r)
    for (index_t c = 0; c < w.extent(1); ++c)
      if (!std::isfinite(w(r, c)))
        return {errc::invalid_argument, std::string(name) + ": element (" + std::to_string(r) + ", " +
                                            std::to_string(c) + ") is not finite"};
  return {};
}
}  // namespace detail

inline status quantize_fp8_block128(tensor_view<const float, 2> w, tensor_view<fp8_e4m3, 2> q,
                                    tensor_view<ue8m0, 2> s, std::string_view name = "weight") {
  const index_t rows = w.extent(0), cols = w.extent(1);
  DSV4_TRY(check_shape(q, {rows, cols}, std::string(name) + " fp8 values"));
  DSV4_TRY(
      check_shape(s, {ceil_div(rows, fp8_block), ceil_div(cols, fp8_block)}, std::string(name) + " scales"));
  DSV4_TRY(detail::check_finite_weights(w, name));
  for (index_t br = 0; br < s.extent(0); ++br) {
    for (index_t bc = 0; bc < s.extent(1); ++bc) {
      const index_t r0 = br * fp8_block, r1 = std::min(rows, r0 + fp8_block);
      const index_t c0 = bc * fp8_block, c1 = std::min(cols, c0 + fp8_block);
      float amax = 0.0f;
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w(r, c)));
      const ue8m0 scale = ue8m0::ceil_pow2(amax / fp8_e4m3::max_finite);
      s(br, bc) = scale;
      const float inv = 1.0f / scale.to_float();  // exact: a power of two (2^127 for 2^-127)
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = c0; c < c1; ++c) q(r, c) = fp8_e4m3(w(r, c) * inv);
    }
  }
  return {};
}

inline status quantize_fp4_block32(tensor_view<const float, 2> w, tensor_view<fp4x2, 2> q,
                                   tensor_view<ue8m0, 2> s, std::string_view name = "weight") {
  const index_t rows = w.extent(0), cols = w.extent(1);
  if (cols % fp4_block != 0)
    return {errc::shape_mismatch, std::string(name) +
                                      ": FP4 needs the input dimension to be a multiple of 32, got " +
                                      std::to_string(cols)};
  DSV4_TRY(check_shape(q, {rows, cols / 2}, std::string(name) + " fp4 values"));
  DSV4_TRY(check_shape(s, {rows, cols / fp4_block}, std::string(name) + " scales"));
  DSV4_TRY(detail::check_finite_weights(w, name));
  for (index_t r = 0; r < rows; ++r) {
    for (index_t b = 0; b < cols / fp4_block; ++b) {
      float amax = 0.0f;
      for (index_t c = b * fp4_block; c < (b + 1) * fp4_block; ++c) amax = std::max(amax, std::fabs(w(r, c)));
      const ue8m0 scale = ue8m0::ceil_pow2(amax / fp4_e2m1::max_finite);
      s(r, b) = scale;
      const float inv = 1.0f / scale.to_float();
      for (index_t c = b * fp4_block; c < (b + 1) * fp4_block; c += 2)
        q(r, c / 2) = fp4x2::pack(fp4_e2m1(w(r, c) * inv), fp4_e2m1(w(r, c + 1) * inv));
    }
  }
  return {};
}

}  // namespace dsv4
