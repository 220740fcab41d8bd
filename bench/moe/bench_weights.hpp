// Random weight matrices in the storage formats of core/weight_matrix.hpp for the benchmarks: codes are
// random bytes (NaN codes of FP8 excluded), scales keep entries near unit size. bytes() is what
// one pass over the matrix reads, the figure the bandwidth fractions are computed from.
#pragma once

#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

#include "dsv4/core/linear.hpp"

namespace dsv4::bench {

template <class W>
struct stored_matrix {
  index_t out = 0, in = 0;
  std::vector<std::uint8_t> codes;  // the weight's bytes in the format of W
  std::vector<ue8m0> scale;

  stored_matrix(index_t rows, index_t cols, unsigned seed) : out(rows), in(cols) {
    std::mt19937_64 rng(seed);
    auto fill = [&](std::size_t n) {
      codes.resize(n);
      for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t r = rng();
        for (std::size_t j = 0; j < 8 && i + j < n; ++j)
          codes[i + j] = static_cast<std::uint8_t>(r >> (8 * j));
      }
    };
    const auto n = static_cast<std::size_t>(rows * cols);
    if constexpr (std::is_same_v<W, f32_matrix>) {
      fill(n * 4);
      for (std::size_t i = 0; i < n; ++i) {  // exponent byte near 1.0, random mantissa and sign
        codes[4 * i + 3] = static_cast<std::uint8_t>((codes[4 * i + 3] & 0x80) | 0x3f);
      }
    } else if constexpr (std::is_same_v<W, bf16_matrix>) {
      fill(n * 2);
      for (std::size_t i = 0; i < n; ++i)
        codes[2 * i + 1] = static_cast<std::uint8_t>((codes[2 * i + 1] & 0x80) | 0x3f);
    } else if constexpr (std::is_same_v<W, fp8_matrix>) {
      fill(n);
      for (auto& c : codes) c = static_cast<std::uint8_t>(c & 0xbf);  // exponent <= 7: no NaN
      scale.assign(static_cast<std::size_t>(ceil_div(rows, fp8_block) * ceil_div(cols, fp8_block)),
                   ue8m0::from_exponent(-3));
    } else {
      fill(n / 2);
      scale.assign(n / fp4_block, ue8m0::from_exponent(-2));
    }
  }

  W view() const {
    if constexpr (std::is_same_v<W, f32_matrix>) {
      return {{reinterpret_cast<const float*>(codes.data()), {out, in}}};
    } else if constexpr (std::is_same_v<W, bf16_matrix>) {
      return {{reinterpret_cast<const bf16*>(codes.data()), {out, in}}};
    } else if constexpr (std::is_same_v<W, fp8_matrix>) {
      return {{reinterpret_cast<const fp8_e4m3*>(codes.data()), {out, in}},
              {scale.data(), {ceil_div(out, fp8_block), ceil_div(in, fp8_block)}}};
    } else {
      return {{reinterpret_cast<const fp4x2*>(codes.data()), {out, in / 2}},
              {scale.data(), {out, in / fp4_block}}};
    }
  }

  double bytes() const { return static_cast<double>(codes.size() + scale.size()); }
};

}  // namespace dsv4::bench
