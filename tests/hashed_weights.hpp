// Weights from an integer hash, the generator the fixture scripts of tests/reference use
// (released_ops.py): a fixture of the released numerics stores the seeds, not megabytes of weights,
// and both sides rebuild the same values.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "dsv4/core/dtype.hpp"
#include "moe/random_weights.hpp"

namespace dsv4::test {

// lowbias32 (C. Wellons).
inline std::uint32_t hash32(std::uint32_t v) {
  v ^= v >> 16;
  v *= 0x7feb352du;
  v ^= v >> 15;
  v *= 0x846ca68bu;
  v ^= v >> 16;
  return v;
}
inline std::uint32_t hashed(std::uint32_t seed, std::uint32_t i) { return hash32(seed * 0x9e3779b1u + i); }
// 2^(typical - 1 .. typical + 1): neighbouring blocks carry different scales.
inline ue8m0 hashed_scale(std::uint32_t seed, std::uint32_t block, int typical) {
  return ue8m0::from_exponent(typical - 1 + static_cast<int>(hashed(seed + 0x10000u, block) % 3));
}

// FP8 codes (h & 1) << 7 | (h >> 1) % 0x59 (|v| <= 16), 128x128 scales.
inline random_matrix<format::fp8> hashed_fp8(index_t rows, index_t cols, std::uint32_t seed, int typical) {
  random_matrix<format::fp8> m(rows, cols, 0);
  for (std::size_t i = 0; i < m.e4m3.size(); ++i) {
    const std::uint32_t h = hashed(seed, static_cast<std::uint32_t>(i));
    m.e4m3[i] = fp8_e4m3::from_bits(static_cast<std::uint8_t>(((h & 1u) << 7) | ((h >> 1) % 0x59u)));
  }
  for (std::size_t b = 0; b < m.scale.size(); ++b)
    m.scale[b] = hashed_scale(seed, static_cast<std::uint32_t>(b), typical);
  return m;
}

// FP4: element i is the low nibble of hash i; 1x32 scales.
inline random_matrix<format::fp4> hashed_fp4(index_t rows, index_t cols, std::uint32_t seed, int typical) {
  random_matrix<format::fp4> m(rows, cols, 0);
  for (std::size_t i = 0; i < m.e2m1.size(); ++i) {
    const auto lo = static_cast<std::uint8_t>(hashed(seed, static_cast<std::uint32_t>(2 * i)) & 0xfu);
    const auto hi = static_cast<std::uint8_t>(hashed(seed, static_cast<std::uint32_t>(2 * i + 1)) & 0xfu);
    m.e2m1[i] = fp4x2::from_bits(static_cast<std::uint8_t>(lo | (hi << 4)));
  }
  for (std::size_t b = 0; b < m.scale.size(); ++b)
    m.scale[b] = hashed_scale(seed, static_cast<std::uint32_t>(b), typical);
  return m;
}

// n values center + (h % 255 - 127) * 2^exponent, exact in BF16 for center 0 or 1 and exponent <= -7.
inline std::vector<float> hashed_grid(std::size_t n, std::uint32_t seed, float center, int exponent) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto k = static_cast<int>(hashed(seed, static_cast<std::uint32_t>(i)) % 255u) - 127;
    v[i] = center + std::ldexp(static_cast<float>(k), exponent);
  }
  return v;
}

}  // namespace dsv4::test
