// adamw: two steps on one element worked out by hand, random tensors against the formula in
// double, a gradient that has always been zero, and validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "dsv4/optim/adamw.hpp"

namespace {
using dsv4::index_t;
using namespace dsv4::optim;
}  // namespace

TEST_CASE("adamw: two steps by hand", "[optim][adamw]") {
  adamw opt;  // beta 0.9 / 0.95, eps 1e-20, weight decay 0.1
  const auto slot = opt.add({1, 1, 1});
  REQUIRE(slot.ok());
  float w = 1.0f;
  const dsv4::tensor_view<float, 3> wv(&w, {1, 1, 1});
  // Step 1, g = 0.5: m = 0.05, v = 0.0125; bias-corrected m / sqrt(v) = 0.5 / 0.5 = 1 (Adam's first
  // step is the gradient's sign), so w = 1 * (1 - 0.1 * 0.1) - 0.1 = 0.89.
  float g = 0.5f;
  REQUIRE(opt.step(*slot, wv, {&g, {1, 1, 1}}, 0.1f).ok());
  CHECK(w == Approx(0.89).epsilon(1e-6));
  CHECK(opt.first_moment(*slot)(0, 0, 0) == Approx(0.05).epsilon(1e-6));
  CHECK(opt.second_moment(*slot)(0, 0, 0) == Approx(0.0125).epsilon(1e-6));
  // Step 2, g = -0.25: m = 0.045 - 0.025 = 0.02, v = 0.011875 + 0.003125 = 0.015;
  // m / (1 - 0.81) = 0.1052632, v / (1 - 0.9025) = 0.1538462, sqrt = 0.3922323, ratio = 0.2683694;
  // w = 0.89 * 0.99 - 0.1 * 0.2683694 = 0.8542631.
  g = -0.25f;
  REQUIRE(opt.step(*slot, wv, {&g, {1, 1, 1}}, 0.1f).ok());
  CHECK(w == Approx(0.8542631).epsilon(1e-6));
  CHECK(opt.first_moment(*slot)(0, 0, 0) == Approx(0.02).epsilon(1e-5));
  CHECK(opt.second_moment(*slot)(0, 0, 0) == Approx(0.015).epsilon(1e-5));
}

TEST_CASE("adamw: random batched tensors against the formula in double", "[optim][adamw]") {
  const index_t b = 2, n = 3, m = 5, count = b * n * m;
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> w(static_cast<std::size_t>(count));
  for (float& x : w) x = d(rng);
  std::vector<double> w_ref(w.begin(), w.end()), m1(w.size(), 0.0), m2(w.size(), 0.0);
  adamw_hparams hp;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.05f;
  adamw opt(hp);
  const auto slot = opt.add({b, n, m});
  REQUIRE(slot.ok());
  CHECK(opt.state_floats() == 2 * count);
  CHECK(*adamw::state_size({b, n, m}) == 2 * count);
  const double lr = 0.01;
  for (int t = 1; t <= 4; ++t) {
    std::vector<float> g(w.size());
    for (float& x : g) x = d(rng);
    REQUIRE(opt.step(*slot, {w.data(), {b, n, m}}, {g.data(), {b, n, m}}, static_cast<float>(lr)).ok());
    for (std::size_t i = 0; i < w.size(); ++i) {
      m1[i] = 0.9 * m1[i] + 0.1 * g[i];
      m2[i] = 0.95 * m2[i] + 0.05 * double(g[i]) * g[i];
      const double mhat = m1[i] / (1 - std::pow(0.9, t)), vhat = m2[i] / (1 - std::pow(0.95, t));
      w_ref[i] = w_ref[i] * (1 - lr * 0.05) - lr * mhat / (std::sqrt(vhat) + 1e-8);
      CHECK(w[i] == Approx(w_ref[i]).epsilon(1e-5));
    }
  }
}

TEST_CASE("adamw: an always-zero gradient only decays the weight", "[optim][adamw]") {
  adamw opt;
  const auto slot = opt.add({1, 1, 4});
  REQUIRE(slot.ok());
  std::vector<float> w = {1.0f, -2.0f, 0.5f, 3.0f}, g(4, 0.0f);
  const auto before = w;
  for (int t = 0; t < 3; ++t)
    REQUIRE(opt.step(*slot, {w.data(), {1, 1, 4}}, {g.data(), {1, 1, 4}}, 0.1f).ok());
  for (std::size_t i = 0; i < w.size(); ++i)
    CHECK(w[i] == Approx(before[i] * std::pow(0.99, 3)).epsilon(1e-6));
}

TEST_CASE("adamw: bad arguments change nothing", "[optim][adamw]") {
  adamw opt;
  const auto slot = opt.add({1, 2, 2});
  REQUIRE(slot.ok());
  std::vector<float> w = {1.0f, 2.0f, 3.0f, 4.0f}, g = {0.1f, -0.2f, 0.3f, -0.4f};
  const auto r = opt.step(*slot, {w.data(), {1, 2, 2}}, {g.data(), {1, 4, 1}}, 0.1f);
  CHECK(r.code() == dsv4::errc::shape_mismatch);
  CHECK(r.message().find("adamw grads (slot 0)") != std::string::npos);
  CHECK(opt.step(*slot, {w.data(), {1, 2, 2}}, {g.data(), {1, 2, 2}}, -1.0f).code() ==
        dsv4::errc::invalid_argument);
  CHECK(w == std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f});
  CHECK(opt.first_moment(*slot)(0, 1, 1) == 0.0f);
  // The step count did not advance: the next valid step is step 1 (update = lr * sign(g)).
  REQUIRE(opt.step(*slot, {w.data(), {1, 2, 2}}, {g.data(), {1, 2, 2}}, 0.1f).ok());
  CHECK(w[0] == Approx(1.0 * 0.99 - 0.1).epsilon(1e-6));
}
