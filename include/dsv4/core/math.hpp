// Small numeric building blocks shared by every module: dot products, sums, maxima, RMS
// normalization, softmax and the scalar activations of DeepSeek-V4 (sigmoid, SiLU, softplus).
//
// These are the readable specification: fp32 in, fp32 out, fp32 accumulation in a fixed order.
// Dot products keep eight partial sums (lane l takes elements l, l+8, ...) and add them in a fixed
// tree, so they vectorize and the result still does not depend on threads, blocking or alignment.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4 {

// out[b] = sum_i rows[b][i] * x[i] for B consecutive rows of length n (row stride n). Each row keeps
// its eight lanes in one vector register (GCC vector extension: AVX with -march=native, plain code
// elsewhere); the B accumulators are independent FMA chains, so a block of rows hides the latency
// a single dot product waits on. Every result sums in the same lane order whatever B is.
template <index_t B>
inline void dot_rows(const float* rows, const float* x, index_t n, float* out) {
  using lanes8 = float __attribute__((vector_size(32)));
  constexpr index_t lanes = 8;
  lanes8 acc[B] = {};
  index_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    lanes8 v;
    std::memcpy(&v, x + i, sizeof v);
    for (index_t b = 0; b < B; ++b) {
      lanes8 r;
      std::memcpy(&r, rows + b * n + i, sizeof r);
      acc[b] += r * v;
    }
  }
  for (index_t b = 0; b < B; ++b) {
    for (index_t l = 0; l < lanes && i + l < n; ++l) acc[b][l] += rows[b * n + i + l] * x[i + l];
    out[b] = detail::reduce_lanes(acc[b]);
  }
}

// dot_rows over any number of rows: blocks of 8, then one at a time.
inline void dot_rows(const float* rows, const float* x, index_t n, index_t count, float* out) {
  for (; count >= 8; count -= 8, rows += 8 * n, out += 8) dot_rows<8>(rows, x, n, out);
  for (; count > 0; --count, rows += n, ++out) dot_rows<1>(rows, x, n, out);
}

// sum_i a[i] * b[i], n elements.
inline float dot(const float* a, const float* b, index_t n) {
  float r;
  dot_rows<1>(a, b, n, &r);
  return r;
}

// sum_i x[i] over n elements, in dot's order: lane l adds x[l], x[l + 8], ... in turn, and the
// eight lanes are added as dot adds them. Eight independent chains instead of one: a 128-element
// sum takes 16 vector additions, not 128 dependent scalar ones.
inline float sum_of(const float* x, index_t n) {
  detail::v8f acc = {};
  index_t i = 0;
  for (; i + 8 <= n; i += 8) {
    detail::v8f v;
    std::memcpy(&v, x + i, sizeof v);
    acc += v;
  }
  for (index_t l = 0; i + l < n; ++l) acc[l] += x[i + l];
  return detail::reduce_lanes(acc);
}

// max_i x[i] over n >= 1 elements, eight lanes at a time (the maximum is exact, so the order does
// not change it; a NaN element may or may not be the result).
inline float max_of(const float* x, index_t n) {
  using lanes8 = float __attribute__((vector_size(32)));
  float m = x[0];
  index_t i = 0;
  if (n >= 8) {
    lanes8 acc;
    std::memcpy(&acc, x, sizeof acc);
    for (i = 8; i + 8 <= n; i += 8) {
      lanes8 v;
      std::memcpy(&v, x + i, sizeof v);
      acc = v > acc ? v : acc;
    }
    for (int l = 0; l < 8; ++l) m = std::max(m, acc[l]);
  }
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// sum_i x[i]^2 over n elements, in the same order as dot(x, x, n).
inline float sum_squares(const float* x, index_t n) { return dot(x, x, n); }

// 1 / sqrt(mean(x^2) + eps): the factor RMSNorm multiplies by.
inline float rms_scale(std::span<const float> x, float eps) {
  const auto n = static_cast<index_t>(x.size());
  return 1.0f / std::sqrt(sum_squares(x.data(), n) / static_cast<float>(n) + eps);
}

// y = weight * (x * rms_scale(x)); an empty weight means the unweighted norm. y may alias x.
// (n) -> (n)
inline void rms_norm(std::span<const float> x, std::span<const float> weight, float eps, std::span<float> y) {
  DSV4_ASSERT(y.size() == x.size() && (weight.empty() || weight.size() == x.size()),
              "rms_norm: sizes differ");
  const float r = rms_scale(x, eps);
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = (weight.empty() ? 1.0f : weight[i]) * (x[i] * r);
}

// In-place softmax over x, shifted by its maximum; an all -inf input gives all zeros.
inline void softmax(std::span<float> x) {
  if (x.empty()) return;
  const float m = *std::max_element(x.begin(), x.end());
  if (m == -std::numeric_limits<float>::infinity()) {
    std::fill(x.begin(), x.end(), 0.0f);
    return;
  }
  float sum = 0.0f;
  for (float& v : x) sum += (v = std::exp(v - m));
  const float inv = 1.0f / sum;
  for (float& v : x) v *= inv;
}

// x[i] <- e^x[i] for n values in place, eight at a time: 2^k times a degree-6 polynomial on
// [-ln2/2, ln2/2] (the Cephes expf coefficients), the exponent built from bits. Relative error
// below 2.5e-7 against the exact value for x in [-87, 88] (tested); inputs are clamped to
// [-87.3, 88.3], so very negative ones give about 1e-38 instead of 0 and NaN stays NaN. Every
// element goes through the same lanes whatever n (a short tail is padded), so a value never
// depends on its neighbours or position: what the attention softmax needs to stay bit-identical
// across chunkings.
inline void exp_inplace(float* x, index_t n) {
  using lanes8 = float __attribute__((vector_size(32)));
  using ints8 = std::int32_t __attribute__((vector_size(32)));
  const auto exp8 = [](lanes8 v) {
    const lanes8 lo = v < -87.3f ? lanes8{} - 87.3f : v;
    v = lo > 88.3f ? lanes8{} + 88.3f : lo;
    lanes8 k = v * 1.44269504088896341f + 0.5f;  // round(v / ln2) as floor(v / ln2 + 0.5)
    const ints8 ki = __builtin_convertvector(k, ints8);
    k = __builtin_convertvector(ki, lanes8);
    k = k > v * 1.44269504088896341f + 0.5f ? k - 1.0f : k;  // truncation rounded negatives up
    const lanes8 r = (v - k * 0.693359375f) - k * -2.12194440e-4f;
    lanes8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const ints8 bits = (__builtin_convertvector(k, ints8) + 127) << 23;
    lanes8 scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  };
  index_t i = 0;
  for (; i + 8 <= n; i += 8) {
    lanes8 v;
    std::memcpy(&v, x + i, sizeof v);
    v = exp8(v);
    std::memcpy(x + i, &v, sizeof v);
  }
  if (i < n) {
    lanes8 v = {};
    std::memcpy(&v, x + i, static_cast<std::size_t>(n - i) * sizeof(float));
    v = exp8(v);
    std::memcpy(x + i, &v, static_cast<std::size_t>(n - i) * sizeof(float));
  }
}

DSV4_HOST_DEVICE inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

DSV4_HOST_DEVICE inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// log(1 + e^x) without overflow for large x or loss of precision for very negative x.
DSV4_HOST_DEVICE inline float softplus(float x) {
  return std::max(x, 0.0f) + std::log1p(std::exp(-std::fabs(x)));
}

}  // namespace dsv4
