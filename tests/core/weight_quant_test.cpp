// The quantizers into the checkpoint formats: error bounds of FP8 block-128 and FP4 block-32
// quantization, the choice of scale, the nibble order and the refused inputs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "dsv4/core/quant.hpp"
#include "dsv4/core/weight_quant.hpp"
#include "random.hpp"

using namespace dsv4;
using Catch::Matchers::Contains;

TEST_CASE("weight_quant: FP8 block-128 stays within half an E4M3 step and picks the smallest scale") {
  const index_t rows = 200, cols = 300;  // partial blocks on both edges
  auto w = test::random_normal(static_cast<std::size_t>(rows * cols), 11);
  for (index_t c = 0; c < cols; ++c)
    w[static_cast<std::size_t>(5 * cols + c)] *= 1000.0f;  // a loud row in block 0
  for (index_t r = 128; r < rows; ++r)
    for (index_t c = 128; c < 256; ++c) w[static_cast<std::size_t>(r * cols + c)] = 0.0f;  // a block of zeros
  std::vector<fp8_e4m3> q(w.size());
  std::vector<ue8m0> s(2 * 3);
  const tensor_view<const float, 2> wv(w.data(), {rows, cols});
  REQUIRE(quantize_fp8_block128(wv, {q.data(), {rows, cols}}, {s.data(), {2, 3}}).ok());
  std::vector<float> back(w.size());
  REQUIRE(kernel<dequantize_fp8_op, cpu>::run(
              {{q.data(), {rows, cols}}, {s.data(), {2, 3}}, {back.data(), {rows, cols}}})
              .ok());
  for (index_t br = 0; br < 2; ++br)
    for (index_t bc = 0; bc < 3; ++bc) {
      float amax = 0;
      for (index_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
        for (index_t c = bc * 128; c < std::min(cols, bc * 128 + 128); ++c)
          amax = std::max(amax, std::fabs(w[static_cast<std::size_t>(r * cols + c)]));
      const float scale = s[static_cast<std::size_t>(br * 3 + bc)].to_float();
      if (amax == 0) {
        CHECK(s[static_cast<std::size_t>(br * 3 + bc)].bits == 0);
        continue;
      }
      CHECK(amax / scale <= 448.0f);
      CHECK(amax / scale > 224.0f);  // one power of two smaller would saturate
    }
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      const float scale = s[static_cast<std::size_t>((r / 128) * 3 + c / 128)].to_float();
      // E4M3: 3 mantissa bits (relative half-step 2^-4), subnormal step 2^-9 at the block's scale.
      CHECK(std::fabs(back[i] - w[i]) <= std::max(std::fabs(w[i]) * 0x1p-4f, 0x1p-10f * scale));
    }
  // Values E4M3 holds at the block's scale come back exactly.
  std::vector<float> exact{448.0f, -1.5f, 0.0f, 0x1p-9f, 6.0f, -448.0f};
  std::vector<fp8_e4m3> eq(exact.size());
  std::vector<ue8m0> es(1);
  REQUIRE(quantize_fp8_block128({exact.data(), {1, 6}}, {eq.data(), {1, 6}}, {es.data(), {1, 1}}).ok());
  CHECK(es[0].bits == 127);
  for (std::size_t i = 0; i < exact.size(); ++i) CHECK(eq[i].to_float() == exact[i]);
  exact[2] = NAN;
  CHECK_THAT(
      quantize_fp8_block128({exact.data(), {1, 6}}, {eq.data(), {1, 6}}, {es.data(), {1, 1}}, "wq").message(),
      Contains("wq: element (0, 2) is not finite"));
  CHECK_FALSE(quantize_fp8_block128({exact.data(), {1, 6}}, {eq.data(), {1, 6}}, {es.data(), {1, 2}}).ok());
}

TEST_CASE("weight_quant: FP4 block-32 error bound, scale choice and nibble order") {
  const index_t rows = 7, cols = 96;
  const auto w = test::random_normal(static_cast<std::size_t>(rows * cols), 12, 3.0f);
  std::vector<fp4x2> q(static_cast<std::size_t>(rows * cols / 2));
  std::vector<ue8m0> s(static_cast<std::size_t>(rows * 3));
  REQUIRE(quantize_fp4_block32({w.data(), {rows, cols}}, {q.data(), {rows, cols / 2}}, {s.data(), {rows, 3}})
              .ok());
  std::vector<float> back(w.size());
  REQUIRE(kernel<dequantize_fp4_op, cpu>::run(
              {{q.data(), {rows, cols / 2}}, {s.data(), {rows, 3}}, {back.data(), {rows, cols}}})
              .ok());
  for (index_t r = 0; r < rows; ++r)
    for (index_t b = 0; b < 3; ++b) {
      float amax = 0;
      for (index_t c = b * 32; c < b * 32 + 32; ++c)
        amax = std::max(amax, std::fabs(w[static_cast<std::size_t>(r * cols + c)]));
      const float scale = s[static_cast<std::size_t>(r * 3 + b)].to_float();
      CHECK(amax / scale <= 6.0f);
      CHECK(amax / scale > 3.0f);
      for (index_t c = b * 32; c < b * 32 + 32; ++c) {
        const auto i = static_cast<std::size_t>(r * cols + c);
        // E2M1: one mantissa bit (relative half-step 2^-2), subnormal step 0.5 at the scale.
        CHECK(std::fabs(back[i] - w[i]) <= std::max(std::fabs(w[i]) * 0.25f, 0.25f * scale));
      }
    }
  // The first element of a pair is the low nibble (spec §11.1).
  std::vector<float> pair(32, 0.0f);
  pair[0] = 1.0f;   // code 2
  pair[1] = -6.0f;  // code 0xF
  std::vector<fp4x2> pq(16);
  std::vector<ue8m0> ps(1);
  REQUIRE(quantize_fp4_block32({pair.data(), {1, 32}}, {pq.data(), {1, 16}}, {ps.data(), {1, 1}}).ok());
  CHECK(ps[0].bits == 127);
  CHECK(pq[0].bits == 0xF2);
  CHECK_THAT(quantize_fp4_block32({pair.data(), {2, 16}}, {pq.data(), {2, 8}}, {ps.data(), {2, 0}}).message(),
             Contains("multiple of 32"));
}
