// GEMV/GEMM over f32, bf16, FP8 and FP4 weights: the vectorized decoders equal the scalar
// dequantization on every code, products match a double-precision reference on dequantized
// weights, a batch equals its tokens one by one bit for bit, and thread count changes nothing.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "dsv4/core/gemv.hpp"
#include "fixture.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;
using dsv4::test::format;
using dsv4::test::random_matrix;

// Decodes all of W chunk by chunk through W::decode.
template <class W>
std::vector<float> decode_all(const W& w) {
  std::vector<float> d(static_cast<std::size_t>(w.rows() * w.cols()));
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t k = 0; k < w.cols(); k += dsv4::weight_chunk)
      w.decode(r, k, std::min(dsv4::weight_chunk, w.cols() - k), d.data() + r * w.cols() + k);
  return d;
}

template <format F>
void check_gemm_against_reference(index_t n, index_t out, index_t in) {
  const random_matrix<F> w(out, in, 11, 0.05f);
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(n * in), 12);
  std::vector<float> y(static_cast<std::size_t>(n * out));
  REQUIRE(dsv4::gemm(w.view(), {x.data(), {n, in}}, {y.data(), {n, out}}).ok());
  const auto ref = dsv4::test::reference_gemm(w.dequantized(), x, n, out, in);
  const std::vector<float> ref_f(ref.begin(), ref.end());
  // fp32 accumulation over `in` terms: relative error ~ sqrt(in) * 2^-24, far below 1e-6.
  CHECK(dsv4::test::rel_l2(y, ref_f) < 1e-6);

  // Each token alone through gemv gives exactly its row of the batch.
  std::vector<float> yt(static_cast<std::size_t>(out));
  for (index_t t = 0; t < n; ++t) {
    REQUIRE(dsv4::gemv(w.view(), std::span<const float>(x.data() + t * in, static_cast<std::size_t>(in)),
                       std::span<float>(yt))
                .ok());
    for (index_t o = 0; o < out; ++o)
      REQUIRE(yt[static_cast<std::size_t>(o)] == y[static_cast<std::size_t>(t * out + o)]);
  }
}

}  // namespace

TEST_CASE("gemv: FP8 decode equals the scalar dequantization on all 256 codes and extreme scales") {
  // Row 0 holds every code twice; the scale blocks run from 2^-127 to 2^127 (the largest ones take
  // the scalar path, the rest the vectorized one).
  const index_t in = 512;
  std::vector<dsv4::fp8_e4m3> w(static_cast<std::size_t>(in));
  for (index_t i = 0; i < in; ++i)
    w[static_cast<std::size_t>(i)] = dsv4::fp8_e4m3::from_bits(static_cast<std::uint8_t>(i & 0xff));
  for (int e : {-127, -20, 0, 119, 120, 127}) {
    std::vector<dsv4::ue8m0> s(4, dsv4::ue8m0::from_exponent(e));
    const dsv4::fp8_matrix m{{w.data(), {1, in}}, {s.data(), {1, 4}}};
    const auto d = decode_all(m);
    for (index_t c = 0; c < in; ++c) {
      const float ref = dsv4::dequantize_fp8_at(w.data(), s.data(), c);
      const float got = d[static_cast<std::size_t>(c)];
      if (std::isnan(ref)) {
        REQUIRE(std::isnan(got));
      } else {
        INFO("code " << (c & 0xff) << " scale 2^" << e);
        REQUIRE(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(ref));
      }
    }
  }
}

TEST_CASE("gemv: FP4 decode equals the scalar dequantization on all byte pairs and extreme scales") {
  const index_t in = 512;  // 256 bytes: every (even, odd) nibble pair once
  std::vector<dsv4::fp4x2> w(static_cast<std::size_t>(in / 2));
  for (index_t i = 0; i < in / 2; ++i)
    w[static_cast<std::size_t>(i)] = dsv4::fp4x2::from_bits(static_cast<std::uint8_t>(i));
  for (int e : {-127, -30, 0, 113, 114, 127}) {
    std::vector<dsv4::ue8m0> s(static_cast<std::size_t>(in / 32), dsv4::ue8m0::from_exponent(e));
    const dsv4::fp4_matrix m{{w.data(), {1, in / 2}}, {s.data(), {1, in / 32}}};
    const auto d = decode_all(m);
    for (index_t c = 0; c < in; ++c) {
      INFO("column " << c << " scale 2^" << e);
      REQUIRE(std::bit_cast<std::uint32_t>(d[static_cast<std::size_t>(c)]) ==
              std::bit_cast<std::uint32_t>(dsv4::dequantize_fp4_at(w.data(), s.data(), c)));
    }
  }
}

TEST_CASE("gemv: bf16 decode widens exactly, including the column tail") {
  const random_matrix<format::bf16> w(3, 45, 5);
  const auto d = decode_all(w.view());
  REQUIRE(d == w.dequantized());
}

TEST_CASE("gemv: gemm matches a double reference and gemv matches gemm bit for bit, every format") {
  // 70 tokens cross a 64-token pass; 7 rows leave a partial row block; odd widths leave column tails.
  check_gemm_against_reference<format::f32>(70, 7, 301);
  check_gemm_against_reference<format::bf16>(5, 9, 77);
  check_gemm_against_reference<format::fp8>(67, 130, 300);
  check_gemm_against_reference<format::fp4>(4, 6, 544);
}

TEST_CASE("gemv: results do not depend on the thread count") {
  const random_matrix<format::fp4> w(64, 512, 21);
  const index_t n = 9;
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(n * 512), 22);
  std::vector<float> y1(static_cast<std::size_t>(n * 64)), y2(y1.size());
  const int threads = dsv4::max_threads();
  dsv4::set_num_threads(1);
  REQUIRE(dsv4::gemm(w.view(), {x.data(), {n, 512}}, {y1.data(), {n, 64}}).ok());
  dsv4::set_num_threads(2);
  REQUIRE(dsv4::gemm(w.view(), {x.data(), {n, 512}}, {y2.data(), {n, 64}}).ok());
  dsv4::set_num_threads(threads);
  REQUIRE(y1 == y2);
}

TEST_CASE("gemv: shape errors name the tensor and leave the output untouched") {
  const random_matrix<format::fp8> w(8, 256, 31);
  std::vector<float> x(255, 1.0f), y(8, 7.0f);
  const auto s = dsv4::gemv(w.view(), x, y);
  CHECK(s.code() == dsv4::errc::shape_mismatch);
  CHECK(s.message().find("x:") != std::string::npos);
  CHECK(y == std::vector<float>(8, 7.0f));

  std::vector<dsv4::ue8m0> bad_scale(3);
  const dsv4::fp8_matrix m{w.view().weight, {bad_scale.data(), {1, 3}}};
  std::vector<float> x2(256, 1.0f);
  const auto s2 = dsv4::gemv(m, x2, y);
  CHECK(s2.message().find("weight.scale") != std::string::npos);

  std::vector<dsv4::fp4x2> w4(8 * 20);
  std::vector<dsv4::ue8m0> s4(8);
  const dsv4::fp4_matrix m4{{w4.data(), {8, 20}}, {s4.data(), {8, 1}}};
  std::vector<float> x4(40, 1.0f);
  CHECK(dsv4::gemv(m4, x4, y).code() == dsv4::errc::shape_mismatch);
}
