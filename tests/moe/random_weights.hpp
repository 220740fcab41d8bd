// Random weight matrices in every storage format of core/weight_matrix.hpp, owning their bytes, for the
// GEMV/GEMM and MoE tests. dequantized() decodes with the scalar element helpers of quant.hpp, an
// implementation independent of the vectorized decoders under test.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "dsv4/core/linear.hpp"
#include "random.hpp"

namespace dsv4::test {

enum class format { f32, bf16, fp8, fp4 };

// An (out, in) matrix of roughly unit-variance entries times `stddev`, stored in format F.
template <format F>
struct random_matrix {
  index_t out = 0, in = 0;
  std::vector<float> f32;
  std::vector<bf16> b16;
  std::vector<fp8_e4m3> e4m3;
  std::vector<fp4x2> e2m1;
  std::vector<ue8m0> scale;

  random_matrix(index_t rows, index_t cols, unsigned seed, float stddev = 1.0f) : out(rows), in(cols) {
    const auto n = static_cast<std::size_t>(rows * cols);
    std::mt19937 rng(seed);
    // A code's typical magnitude is about 1 (FP4) or 2^3 (FP8); the scales bring it to `stddev`
    // give or take a factor two, so blocks carry different scales.
    auto random_scale = [&](int typical_log2) {
      const int e = static_cast<int>(std::ilogb(stddev)) - typical_log2 + static_cast<int>(rng() % 3) - 1;
      return ue8m0::from_exponent(e);
    };
    if constexpr (F == format::f32) {
      f32 = random_normal(n, seed, stddev);
    } else if constexpr (F == format::bf16) {
      for (float v : random_normal(n, seed, stddev)) b16.push_back(bf16(v));
    } else if constexpr (F == format::fp8) {
      e4m3.resize(n);
      for (auto& c : e4m3) {
        do c.bits = static_cast<std::uint8_t>(rng() & 0xff);
        while (c.is_nan() || (c.bits & 0x7f) > 0x58);  // codes up to 2^4 in magnitude
      }
      scale.resize(static_cast<std::size_t>(ceil_div(rows, fp8_block) * ceil_div(cols, fp8_block)));
      for (auto& s : scale) s = random_scale(2);
    } else {
      e2m1.resize(n / 2);
      for (auto& c : e2m1) c.bits = static_cast<std::uint8_t>(rng() & 0xff);
      scale.resize(n / fp4_block);
      for (auto& s : scale) s = random_scale(1);
    }
  }

  auto view() const {
    if constexpr (F == format::f32) {
      return f32_matrix{{f32.data(), {out, in}}};
    } else if constexpr (F == format::bf16) {
      return bf16_matrix{{b16.data(), {out, in}}};
    } else if constexpr (F == format::fp8) {
      return fp8_matrix{{e4m3.data(), {out, in}},
                        {scale.data(), {ceil_div(out, fp8_block), ceil_div(in, fp8_block)}}};
    } else {
      return fp4_matrix{{e2m1.data(), {out, in / 2}}, {scale.data(), {out, in / fp4_block}}};
    }
  }

  // Element (r, c) through the scalar helpers.
  float at(index_t r, index_t c) const {
    const auto i = static_cast<std::size_t>(r * in + c);
    if constexpr (F == format::f32) {
      return f32[i];
    } else if constexpr (F == format::bf16) {
      return b16[i].to_float();
    } else if constexpr (F == format::fp8) {
      return dequantize_fp8_at(e4m3.data() + r * in, scale.data() + (r / fp8_block) * ceil_div(in, fp8_block),
                               c);
    } else {
      return dequantize_fp4_at(e2m1.data() + r * in / 2, scale.data() + r * (in / fp4_block), c);
    }
  }

  std::vector<float> dequantized() const {
    std::vector<float> d(static_cast<std::size_t>(out * in));
    for (index_t r = 0; r < out; ++r)
      for (index_t c = 0; c < in; ++c) d[static_cast<std::size_t>(r * in + c)] = at(r, c);
    return d;
  }
};

// y (n, out) = x (n, in) . W^T in double, from dequantized W (out, in).
inline std::vector<double> reference_gemm(const std::vector<float>& w, const std::vector<float>& x, index_t n,
                                          index_t out, index_t in) {
  std::vector<double> y(static_cast<std::size_t>(n * out));
  for (index_t t = 0; t < n; ++t)
    for (index_t o = 0; o < out; ++o) {
      double s = 0;
      for (index_t k = 0; k < in; ++k)
        s +=
            double(w[static_cast<std::size_t>(o * in + k)]) * double(x[static_cast<std::size_t>(t * in + k)]);
      y[static_cast<std::size_t>(t * out + o)] = s;
    }
  return y;
}

}  // namespace dsv4::test
