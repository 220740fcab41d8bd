// muon<Schedule>: momentum, Nesterov input and decoupled weight decay against values computed by
// hand on a one-row matrix (whose orthogonalization is the row's direction times the schedule's
// polynomials applied to 1); the update RMS against gamma; batches against single matrices;
// validation before any state changes.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "batch_views.hpp"
#include "dsv4/optim/muon.hpp"
#include "random.hpp"

namespace {
using dsv4::index_t;
using namespace dsv4::optim;

using dsv4::test::cview;
using dsv4::test::random_normal;
using dsv4::test::view;

// A (1, m) matrix X / ||X|| has its one singular value at 1, so the schedule maps it to
// sigma_final * X / ||X|| with sigma_final the steps' polynomials composed at 1.
template <auto Schedule>
double sigma_final() {
  double s = 1.0;
  for (const ns_step& st : Schedule.steps) s = st(s);
  return s;
}

}  // namespace

TEST_CASE("muon: two steps of momentum with Nesterov and weight decay by hand", "[optim][muon]") {
  for (const bool nesterov : {true, false}) {
    INFO("nesterov " << nesterov);
    muon_hparams hp;
    hp.nesterov = nesterov;
    muon<> opt(hp);
    const index_t m = 3;
    const auto slot = opt.add({1, 1, m});
    REQUIRE(slot.ok());
    std::vector<float> w = {0.5f, -1.0f, 2.0f};
    const std::vector<float> g1 = {0.3f, 0.4f, -1.2f}, g2 = {-0.6f, 0.1f, 0.2f};
    const double lr = 0.02, mu = 0.95, gamma = 0.18, wd = 0.1, sf = sigma_final<v4_hybrid_schedule>();
    std::vector<double> w_ref(w.begin(), w.end()), mom(3, 0.0);
    for (const auto* g : {&g1, &g2}) {
      std::vector<double> input(3);
      double norm = 0;
      for (int j = 0; j < 3; ++j) {
        mom[j] = mu * mom[j] + (*g)[j];
        input[j] = nesterov ? mu * mom[j] + (*g)[j] : mom[j];
        norm += input[j] * input[j];
      }
      for (int j = 0; j < 3; ++j)
        w_ref[j] = w_ref[j] * (1 - lr * wd) - lr * std::sqrt(3.0) * gamma * sf * input[j] / std::sqrt(norm);
      REQUIRE(opt.step(*slot, view(w, 1, 1, m), cview(*g, 1, 1, m), static_cast<float>(lr)).ok());
      for (int j = 0; j < 3; ++j) {
        CHECK(opt.momentum(*slot)(0, 0, j) == Approx(mom[j]).epsilon(1e-6));
        CHECK(w[j] == Approx(w_ref[j]).epsilon(1e-5));
      }
    }
  }
}

TEST_CASE("muon: the update's RMS is gamma within 5% for random gradients", "[optim][muon]") {
  muon_hparams hp;
  hp.weight_decay = 0.0f;
  unsigned seed = 20;
  for (const auto& [n, m] : {std::pair<index_t, index_t>{64, 160}, {160, 64}, {96, 96}, {300, 20}}) {
    INFO("shape (" << n << ", " << m << ")");
    muon<> opt(hp);
    const auto slot = opt.add({1, n, m});
    REQUIRE(slot.ok());
    std::vector<float> w(static_cast<std::size_t>(n * m), 0.0f);
    const auto g = random_normal(w.size(), ++seed, 0.01f);
    const float lr = 0.5f;
    REQUIRE(opt.step(*slot, view(w, 1, n, m), cview(g, 1, n, m), lr).ok());
    double ss = 0;
    for (float x : w) ss += double(x) * x;
    CHECK(std::sqrt(ss / double(w.size())) / lr == Approx(0.18).epsilon(0.05));
  }
}

TEST_CASE("muon: a batch of matrices steps like each matrix alone", "[optim][muon]") {
  const index_t b = 3, n = 24, m = 40;
  const auto g = random_normal(static_cast<std::size_t>(b * n * m), 5);
  auto w_batch = random_normal(g.size(), 6);
  auto w_single = w_batch;
  muon<keller_jordan_schedule> batched, single;
  const auto sb = batched.add({b, n, m});
  REQUIRE(sb.ok());
  for (int step = 0; step < 2; ++step)
    REQUIRE(batched.step(*sb, view(w_batch, b, n, m), cview(g, b, n, m), 0.01f).ok());
  for (index_t e = 0; e < b; ++e) {
    const auto s = single.add({1, n, m});
    REQUIRE(s.ok());
    const dsv4::tensor_view<float, 3> we(w_single.data() + e * n * m, {1, n, m});
    const dsv4::tensor_view<const float, 3> ge(g.data() + e * n * m, {1, n, m});
    for (int step = 0; step < 2; ++step) REQUIRE(single.step(*s, we, ge, 0.01f).ok());
  }
  CHECK(w_batch == w_single);
  CHECK(batched.state_floats() == b * n * m);
  CHECK(*muon<>::state_size({b, n, m}) == b * n * m);
  CHECK(single.state_floats() == b * n * m);
}

TEST_CASE("muon: bad arguments are rejected before anything changes", "[optim][muon]") {
  muon<> opt;
  CHECK(opt.add({1, 0, 4}).error().code() == dsv4::errc::invalid_argument);
  const auto slot = opt.add({1, 4, 6});
  REQUIRE(slot.ok());
  auto w = random_normal(24, 7);
  const auto g = random_normal(24, 8);
  REQUIRE(opt.step(*slot, view(w, 1, 4, 6), cview(g, 1, 4, 6), 0.1f).ok());
  const auto w_before = w;
  const std::vector<float> mom_before(opt.momentum(*slot).data(), opt.momentum(*slot).data() + 24);

  const auto wrong_shape = opt.step(*slot, view(w, 1, 6, 4), cview(g, 1, 4, 6), 0.1f);
  CHECK(wrong_shape.code() == dsv4::errc::shape_mismatch);
  CHECK(wrong_shape.message().find("muon weights (slot 0)") != std::string::npos);
  CHECK(opt.step(*slot, view(w, 1, 4, 6), cview(g, 1, 6, 4), 0.1f).message().find("muon grads") !=
        std::string::npos);
  CHECK(opt.step(3, view(w, 1, 4, 6), cview(g, 1, 4, 6), 0.1f).code() == dsv4::errc::out_of_range);
  CHECK(opt.step(*slot, view(w, 1, 4, 6), cview(g, 1, 4, 6), NAN).code() == dsv4::errc::invalid_argument);
  CHECK(w == w_before);
  CHECK(std::vector<float>(opt.momentum(*slot).data(), opt.momentum(*slot).data() + 24) == mom_before);
}
