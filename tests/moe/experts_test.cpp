// Clamped SwiGLU experts: the clamp boundaries, a double-precision reference with the clamp
// active, the routing weight before w2, and the dense SwiGLU FFN policy.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dsv4/moe/experts.hpp"
#include "fixture.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;
using dsv4::test::format;
using dsv4::test::random_matrix;

double silu_d(double v) { return v / (1.0 + std::exp(-v)); }

// y (n, d) of one expert in double from dequantized weights; counts clamped values in `clamped`.
std::vector<float> reference_expert(const std::vector<float>& w1, const std::vector<float>& w3,
                                    const std::vector<float>& w2, const std::vector<float>& x,
                                    const std::vector<float>& row_weight, double limit, index_t n, index_t d,
                                    index_t inter, int& clamped) {
  std::vector<float> y(static_cast<std::size_t>(n * d));
  std::vector<double> a(static_cast<std::size_t>(inter));
  for (index_t t = 0; t < n; ++t) {
    for (index_t i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (index_t c = 0; c < d; ++c) {
        g += double(w1[i * d + c]) * x[t * d + c];
        u += double(w3[i * d + c]) * x[t * d + c];
      }
      if (limit > 0) {
        clamped += (g > limit) + (std::abs(u) > limit);
        g = std::min(g, limit);
        u = std::clamp(u, -limit, limit);
      }
      a[i] = silu_d(g) * u * (row_weight.empty() ? 1.0 : row_weight[t]);
    }
    for (index_t c = 0; c < d; ++c) {
      double s = 0;
      for (index_t i = 0; i < inter; ++i) s += double(w2[c * inter + i]) * a[i];
      y[t * d + c] = static_cast<float>(s);
    }
  }
  return y;
}

}  // namespace

TEST_CASE("experts: the clamp bounds up to plus or minus the limit and the gate from above only") {
  using dsv4::moe::clamped_swiglu;
  const float silu10 = dsv4::silu(10.0f);
  CHECK(clamped_swiglu(2.0f, 10.5f, 10.0f) == dsv4::silu(2.0f) * 10.0f);
  CHECK(clamped_swiglu(2.0f, -11.0f, 10.0f) == dsv4::silu(2.0f) * -10.0f);
  CHECK(clamped_swiglu(2.0f, 10.0f, 10.0f) == dsv4::silu(2.0f) * 10.0f);  // at the bound: unchanged
  CHECK(clamped_swiglu(12.0f, 3.0f, 10.0f) == silu10 * 3.0f);
  CHECK(clamped_swiglu(10.0f, 3.0f, 10.0f) == silu10 * 3.0f);
  CHECK(clamped_swiglu(-30.0f, 3.0f, 10.0f) == dsv4::silu(-30.0f) * 3.0f);  // no lower clamp on the gate
  CHECK(clamped_swiglu(12.0f, 11.0f, 0.0f) == dsv4::silu(12.0f) * 11.0f);   // limit 0: no clamp
  CHECK(clamped_swiglu(9.99f, -9.99f, 10.0f) == dsv4::silu(9.99f) * -9.99f);
}

TEST_CASE("experts: a routed expert matches a double reference with the clamp active, in every format") {
  const index_t n = 5, d = 64, inter = 32;
  const float limit = 10.0f;
  auto x = dsv4::test::random_normal(n * d, 3, 4.0f);  // large inputs: many |g|, |u| beyond 10
  const std::vector<float> row_weight = {0.7f, 1.3f, 0.2f, 0.9f, 1.1f};
  auto run = [&]<format F>() {
    const random_matrix<F> w1(inter, d, 4, 0.5f), w3(inter, d, 5, 0.5f), w2(d, inter, 6, 0.2f);
    const dsv4::moe::swiglu_weights<decltype(w1.view())> e{w1.view(), w3.view(), w2.view()};
    std::vector<float> y(static_cast<std::size_t>(n * d)),
        scratch(static_cast<std::size_t>(dsv4::moe::swiglu_scratch_floats(e, n)));
    REQUIRE(dsv4::moe::swiglu_forward(e, {x.data(), {n, d}}, row_weight, limit, {y.data(), {n, d}}, scratch)
                .ok());
    int clamped = 0;
    const auto ref = reference_expert(w1.dequantized(), w3.dequantized(), w2.dequantized(), x, row_weight,
                                      limit, n, d, inter, clamped);
    CHECK(clamped > 20);
    CHECK(dsv4::test::rel_l2(y, ref) < 2e-6);
    // Without the clamp the result is a different one (the clamp is really exercised).
    int unused = 0;
    const auto unclamped = reference_expert(w1.dequantized(), w3.dequantized(), w2.dequantized(), x,
                                            row_weight, 0.0, n, d, inter, unused);
    CHECK(dsv4::test::rel_l2(y, unclamped) > 1e-2);
  };
  run.operator()<format::f32>();
  run.operator()<format::bf16>();
  run.operator()<format::fp8>();
  run.operator()<format::fp4>();
}

TEST_CASE("experts: the dense SwiGLU FFN with limit 0 is the unweighted, unclamped expert") {
  const index_t n = 3, d = 32, inter = 64;
  const random_matrix<format::bf16> w1(inter, d, 7, 0.6f), w3(inter, d, 8, 0.6f), w2(d, inter, 9, 0.2f);
  const dsv4::moe::dense_swiglu_ffn<dsv4::bf16_matrix> ffn{{w1.view(), w3.view(), w2.view()}, 0.0f};
  const auto x = dsv4::test::random_normal(n * d, 10, 3.0f);
  std::vector<float> y(static_cast<std::size_t>(n * d));
  alignas(64) std::byte ws[1 << 12];
  REQUIRE(ffn.workspace_bytes(n) <= sizeof ws);
  REQUIRE(ffn.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws).ok());
  int clamped = 0;
  const auto ref = reference_expert(w1.dequantized(), w3.dequantized(), w2.dequantized(), x, {}, 0.0, n, d,
                                    inter, clamped);
  CHECK(dsv4::test::rel_l2(y, ref) < 2e-6);
  CHECK(ffn.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, std::span<std::byte>(ws, 16)).code() ==
        dsv4::errc::out_of_range);
}
