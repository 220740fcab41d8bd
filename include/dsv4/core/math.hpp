// Small numeric building blocks shared by every module: dot products, RMS normalization, softmax
// and the scalar activations of DeepSeek-V4 (sigmoid, SiLU, softplus).
//
// These are the readable specification: fp32 in, fp32 out, fp32 accumulation in a fixed order.
// dot() keeps eight partial sums (lane i takes elements i, i+8, ...) and adds them in a fixed tree,
// so the compiler can vectorize it and the result still does not depend on threads or on where a
// buffer starts.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4 {

// sum_i a[i] * b[i], n elements.
inline float dot(const float* a, const float* b, index_t n) {
  constexpr int lanes = 8;
  float acc[lanes] = {};
  index_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (int l = 0; l < lanes; ++l) acc[l] += a[i + l] * b[i + l];
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
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

DSV4_HOST_DEVICE inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

DSV4_HOST_DEVICE inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// log(1 + e^x) without overflow for large x or loss of precision for very negative x.
DSV4_HOST_DEVICE inline float softplus(float x) {
  return std::max(x, 0.0f) + std::log1p(std::exp(-std::fabs(x)));
}

}  // namespace dsv4
