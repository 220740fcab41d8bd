// dot, sum_of, max_of, rms_norm, softmax and the activations against double-precision formulas.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "dsv4/core/math.hpp"
#include "random.hpp"

using dsv4::test::random_normal;

TEST_CASE("dot matches a double-precision sum for every tail length", "[core][math]") {
  for (std::size_t n : {1u, 7u, 8u, 9u, 63u, 512u, 1001u}) {
    const auto a = random_normal(n, 1), b = random_normal(n, 2);
    double ref = 0;
    for (std::size_t i = 0; i < n; ++i) ref += double(a[i]) * double(b[i]);
    CHECK(dsv4::dot(a.data(), b.data(), static_cast<dsv4::index_t>(n)) ==
          Approx(ref).margin(1e-5 * std::sqrt(double(n))).epsilon(1e-5));
  }
}

TEST_CASE("sum_of adds in dot's order; max_of finds the maximum wherever it lies", "[core][math]") {
  for (std::size_t n : {1u, 7u, 8u, 9u, 63u, 128u, 131u}) {
    const auto x = random_normal(n, 5);
    const std::vector<float> ones(n, 1.0f);
    const auto len = static_cast<dsv4::index_t>(n);
    INFO("n = " << n);
    CHECK(dsv4::sum_of(x.data(), len) == dsv4::dot(x.data(), ones.data(), len));  // the same bits
    for (std::size_t at = 0; at < n; at += 3) {  // the maximum in every lane and in the tail
      auto y = x;
      y[at] = 10.0f + float(at);
      CHECK(dsv4::max_of(y.data(), len) == y[at]);
    }
  }
}

TEST_CASE("rms_norm, weighted and unweighted", "[core][math]") {
  const auto x = random_normal(300, 3), w = random_normal(300, 4);
  double ms = 0;
  for (float v : x) ms += double(v) * v;
  const double r = 1.0 / std::sqrt(ms / 300 + 1e-6);
  std::vector<float> y(300), u(300);
  dsv4::rms_norm(x, w, 1e-6f, y);
  dsv4::rms_norm(x, {}, 1e-6f, u);
  for (std::size_t i = 0; i < 300; ++i) {
    CHECK(y[i] == Approx(double(w[i]) * x[i] * r).epsilon(1e-5));
    CHECK(u[i] == Approx(double(x[i]) * r).epsilon(1e-5));
  }
}

TEST_CASE("softmax sums to one, is shift invariant and handles -inf", "[core][math]") {
  auto x = random_normal(17, 5);
  x[3] = -INFINITY;
  auto shifted = x;
  for (float& v : shifted) v += 100.0f;
  dsv4::softmax(x);
  dsv4::softmax(shifted);
  double sum = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sum += x[i];
    CHECK(x[i] == Approx(shifted[i]).epsilon(1e-5));
  }
  CHECK(sum == Approx(1.0).epsilon(1e-6));
  CHECK(x[3] == 0.0f);
  std::vector<float> all_masked(4, -INFINITY);
  dsv4::softmax(all_masked);
  for (float v : all_masked) CHECK(v == 0.0f);
}

TEST_CASE("exp_inplace is within 2.5e-7 of the exact exponential and position-independent", "[core][math]") {
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-8f, -1e-8f, 0.34657359f, -0.34657359f, 1.0f, -1.0f}) x.push_back(v);
  auto y = x;
  dsv4::exp_inplace(y.data(), static_cast<dsv4::index_t>(y.size()));
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = std::exp(double(x[i]));
    worst = std::max(worst, std::fabs(double(y[i]) - e) / e);
  }
  INFO("worst relative error " << worst);
  CHECK(worst < 2.5e-7);
  // The same value in every position and tail length.
  float one = -3.25f;
  dsv4::exp_inplace(&one, 1);
  for (dsv4::index_t n = 1; n <= 17; ++n) {
    std::vector<float> z(static_cast<std::size_t>(n), -3.25f);
    dsv4::exp_inplace(z.data(), n);
    for (float v : z) CHECK(v == one);
  }
  std::vector<float> far = {-1000.0f, -std::numeric_limits<float>::infinity()};
  dsv4::exp_inplace(far.data(), 2);
  CHECK(far[0] < 1e-37f);
  CHECK(far[1] < 1e-37f);
}

TEST_CASE("activations", "[core][math]") {
  for (float x : {-90.0f, -20.0f, -1.5f, 0.0f, 0.3f, 4.0f, 30.0f, 90.0f}) {
    const double xd = x;
    CHECK(dsv4::sigmoid(x) == Approx(1.0 / (1.0 + std::exp(-xd))).margin(1e-30));
    CHECK(dsv4::silu(x) == Approx(xd / (1.0 + std::exp(-xd))).margin(1e-30));
    CHECK(dsv4::softplus(x) == Approx(std::log1p(std::exp(xd))).epsilon(1e-6).margin(1e-30));
  }
}
