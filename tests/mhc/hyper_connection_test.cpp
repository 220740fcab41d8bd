// HC_pre, HC_post, the expansion and the HC head (spec §3.2-§3.4, §16.5, §18.3) against golden
// fixtures from the Hugging Face transformers modules (tests/reference/make_mhc_fixtures.py), an
// independent double-precision evaluation of the formulas, and hand-made cases for the comb
// transpose, in-place updates, thread counts and shape errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../fixture.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/mhc/hyper_connection.hpp"
#include "mhc_test_util.hpp"

using namespace dsv4;
using namespace dsv4::mhc;
using mhc_test::random_normal;
using mhc_test::site_buffers;
using mhc_test::view_of;
using mhc4 = dsv4::mhc::constrained_hc<4>;
using dsv4::test::fixture;
using dsv4::test::rel_l2;

namespace {
double sigmoid_d(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// pre, post and the raw residual logits of token t, in double from the formulas of spec §3.2.
struct reference_coefficients {
  std::vector<double> pre, post, logits;
};
reference_coefficients reference(const site_buffers& b, index_t t) {
  const index_t n = b.n, width = n * b.d;
  const float* x = b.x.data() + t * width;
  double ss = 0;
  for (index_t k = 0; k < width; ++k) ss += double(x[k]) * x[k];
  const double rho = 1.0 / std::sqrt(ss / static_cast<double>(width) + 1e-6);
  std::vector<double> mix(static_cast<std::size_t>(mix_width(n)));
  for (index_t r = 0; r < mix_width(n); ++r) {
    double s = 0;
    for (index_t k = 0; k < width; ++k) s += double(b.fn[static_cast<std::size_t>(r * width + k)]) * x[k];
    mix[static_cast<std::size_t>(r)] = s * rho;
  }
  reference_coefficients c;
  const auto at = [&](const std::vector<float>& v, index_t i) {
    return double(v[static_cast<std::size_t>(i)]);
  };
  for (index_t j = 0; j < n; ++j) {
    c.pre.push_back(sigmoid_d(mix[static_cast<std::size_t>(j)] * at(b.scale, 0) + at(b.base, j)) + 1e-6);
    c.post.push_back(2.0 *
                     sigmoid_d(mix[static_cast<std::size_t>(n + j)] * at(b.scale, 1) + at(b.base, n + j)));
  }
  for (index_t r = 2 * n; r < mix_width(n); ++r)
    c.logits.push_back(mix[static_cast<std::size_t>(r)] * at(b.scale, 2) + at(b.base, r));
  return c;
}
}  // namespace

TEST_CASE("HC_pre and HC_post match the Hugging Face modules (golden fixtures)", "[mhc][fixture]") {
  for (const char* name : {"mhc_site_iters20.json", "mhc_site_iters3.json"}) {
    INFO(name);
    const auto f = fixture::load(name);
    const auto x = f.tensor("x"), fn = f.tensor("fn"), base = f.tensor("base"), scale = f.tensor("scale");
    const index_t tokens = x.shape[0], n = x.shape[1], d = x.shape[2];
    const hc_settings settings = mhc_test::settings_of(f);
    std::vector<float> x_in(static_cast<std::size_t>(tokens * d)), pre(static_cast<std::size_t>(tokens * n)),
        post(pre.size()), comb(static_cast<std::size_t>(tokens * n * n)), out(x.data.size()),
        mix(static_cast<std::size_t>(tokens * mix_width(n)));
    const hc_state s = mhc_test::state_of(pre, post, comb, mix, tokens, n);
    REQUIRE(mhc_test::fixture_pre(x, fn, scale, base, settings, x_in.data(), s).ok());
    // Relative L2 <= 1e-5: both sides are fp32 with different summation orders (and HF normalizes
    // before the matmul where the reference scales after), a few ulps apart.
    CHECK(rel_l2(post, f.tensor("post").data) <= 1e-5);
    CHECK(rel_l2(comb, f.tensor("comb").data) <= 1e-5);
    CHECK(rel_l2(x_in, f.tensor("collapsed").data) <= 1e-5);
    const auto y = f.tensor("y");
    REQUIRE(run<cpu>(hc_post_op::params{
                         view_of<2>(y), view_of<3>(x), s.post, s.comb, {out.data(), {tokens, n, d}}})
                .ok());
    CHECK(rel_l2(out, f.tensor("x_next").data) <= 1e-5);
  }
}

TEST_CASE("HC head matches the Hugging Face module (golden fixture)", "[mhc][fixture]") {
  const auto f = fixture::load("mhc_head.json");
  const auto x = f.tensor("x");
  const index_t tokens = x.shape[0], d = x.shape[2];
  std::vector<float> h(static_cast<std::size_t>(tokens * d));
  const hc_settings settings{f.meta().at("rms_norm_eps").get<float>(), f.meta().at("hc_eps").get<float>(),
                             20};
  REQUIRE(run<cpu>(hc_head_op::params{view_of<3>(x),
                                      {view_of<2>(f.tensor("fn")), view_of<1>(f.tensor("scale")),
                                       view_of<1>(f.tensor("base"))},
                                      settings,
                                      {h.data(), {tokens, d}}})
              .ok());
  CHECK(rel_l2(h, f.tensor("h").data) <= 1e-5);
}

TEST_CASE("HC_pre coefficients and collapse match a double-precision evaluation", "[mhc]") {
  for (const auto map : {residual_map::sinkhorn, residual_map::unconstrained}) {
    site_buffers b(3, 4, 40, 7, 2.0f);
    REQUIRE(run<cpu>(b.pre_params(map)).ok());
    for (index_t t = 0; t < b.tokens; ++t) {
      const auto c = reference(b, t);
      for (index_t j = 0; j < b.n; ++j) {
        CHECK(b.pre[static_cast<std::size_t>(t * b.n + j)] ==
              Approx(c.pre[static_cast<std::size_t>(j)]).epsilon(1e-5));
        CHECK(b.post[static_cast<std::size_t>(t * b.n + j)] ==
              Approx(c.post[static_cast<std::size_t>(j)]).epsilon(1e-5));
      }
      // Unconstrained: the residual matrix is the logits themselves.
      if (map == residual_map::unconstrained)
        for (index_t i = 0; i < b.n * b.n; ++i)
          CHECK(b.comb[static_cast<std::size_t>(t * b.n * b.n + i)] ==
                Approx(c.logits[static_cast<std::size_t>(i)]).margin(1e-5).epsilon(1e-5));
      // x_in = sum_j pre_j X_j, with the coefficients just checked.
      for (index_t k = 0; k < b.d; ++k) {
        double s = 0;
        for (index_t j = 0; j < b.n; ++j)
          s += double(b.pre[static_cast<std::size_t>(t * b.n + j)]) *
               b.x[static_cast<std::size_t>((t * b.n + j) * b.d + k)];
        CHECK(b.x_in[static_cast<std::size_t>(t * b.d + k)] == Approx(s).margin(1e-5).epsilon(1e-5));
      }
    }
  }
}

TEST_CASE("HC_post mixes with comb^T, which differs from comb on a non-symmetric case", "[mhc]") {
  // Two streams, one channel, by hand: comb[i][j] weighs source i into destination j.
  const float x[] = {1.0f, 10.0f};                // (1, 2, 1): X_0 = 1, X_1 = 10
  const float y[] = {3.0f};                       // (1, 1)
  const float post[] = {0.5f, 2.0f};              // (1, 2)
  const float comb[] = {0.9f, 0.1f, 0.3f, 0.7f};  // (1, 2, 2), not symmetric
  float out[2];
  REQUIRE(run<cpu>(hc_post_op::params{
                       {y, {1, 1}}, {x, {1, 2, 1}}, {post, {1, 2}}, {comb, {1, 2, 2}}, {out, {1, 2, 1}}})
              .ok());
  // X'_0 = 0.5*3 + 0.9*1 + 0.3*10 = 5.4;  X'_1 = 2*3 + 0.1*1 + 0.7*10 = 13.1.
  CHECK(out[0] == Approx(5.4f));
  CHECK(out[1] == Approx(13.1f));
  // With comb instead of comb^T the result would be 0.5*3 + 0.9 + 1 = 3.4 and 6 + 0.3 + 7 = 13.3.
  CHECK(std::fabs(out[0] - 3.4f) > 1.0f);

  // The same on a Sinkhorn-projected (doubly stochastic, non-symmetric) matrix at test width.
  site_buffers b(2, 4, 48, 21, 3.0f);
  REQUIRE(run<cpu>(b.pre_params()).ok());
  const auto yv = random_normal(static_cast<std::size_t>(b.tokens * b.d), 22);
  std::vector<float> o(b.x.size());
  REQUIRE(run<cpu>(hc_post_op::params{{yv.data(), {b.tokens, b.d}},
                                      b.streams(),
                                      b.state().post,
                                      b.state().comb,
                                      {o.data(), {b.tokens, b.n, b.d}}})
              .ok());
  double transposed = 0, plain = 0;
  for (index_t t = 0; t < b.tokens; ++t)
    for (index_t j = 0; j < b.n; ++j)
      for (index_t k = 0; k < b.d; ++k) {
        double st = 0, sp = 0;
        for (index_t i = 0; i < b.n; ++i) {
          const double xi = b.x[static_cast<std::size_t>((t * b.n + i) * b.d + k)];
          st += b.comb[static_cast<std::size_t>((t * b.n + i) * b.n + j)] * xi;
          sp += b.comb[static_cast<std::size_t>((t * b.n + j) * b.n + i)] * xi;
        }
        const double base =
            double(b.post[static_cast<std::size_t>(t * b.n + j)]) * yv[static_cast<std::size_t>(t * b.d + k)];
        const double got = o[static_cast<std::size_t>((t * b.n + j) * b.d + k)];
        transposed = std::max(transposed, std::fabs(got - (base + st)));
        plain = std::max(plain, std::fabs(got - (base + sp)));
      }
  CHECK(transposed < 1e-5);
  CHECK(plain > 1e-2);
}

TEST_CASE("HC_post in place equals out of place, and a partial overlap is rejected", "[mhc]") {
  site_buffers b(2, 4, 300, 31);  // d = 300: a full and a partial channel block
  REQUIRE(run<cpu>(b.pre_params()).ok());
  const auto y = random_normal(static_cast<std::size_t>(b.tokens * b.d), 32);
  std::vector<float> separate(b.x.size());
  const hc_post_op::params out_of_place{{y.data(), {b.tokens, b.d}},
                                        b.streams(),
                                        b.state().post,
                                        b.state().comb,
                                        {separate.data(), {b.tokens, b.n, b.d}}};
  REQUIRE(run<cpu>(out_of_place).ok());
  const hc_post_op::params in_place{
      {y.data(), {b.tokens, b.d}}, b.streams(), b.state().post, b.state().comb, b.streams()};
  REQUIRE(run<cpu>(in_place).ok());
  CHECK(b.x == separate);

  std::vector<float> big(b.x.size() + 8);
  const hc_post_op::params shifted{{y.data(), {b.tokens, b.d}},
                                   {big.data(), {b.tokens, b.n, b.d}},
                                   b.state().post,
                                   b.state().comb,
                                   {big.data() + 4, {b.tokens, b.n, b.d}}};
  const status st = run<cpu>(shifted);
  CHECK(st.code() == errc::invalid_argument);
  CHECK(st.message().find("out") != std::string::npos);
}

TEST_CASE("HC_pre, HC_post and the head give bit-identical results for 1 and 2 threads", "[mhc]") {
  const int saved = max_threads();
  const auto y = random_normal(3 * 300, 42);
  const auto head_fn = random_normal(4 * 4 * 300, 43, 0.05f);
  const float head_scale[] = {0.9f}, head_base[] = {0.1f, -0.2f, 0.3f, 0.0f};
  const auto once = [&](int threads) {
    set_num_threads(threads);
    site_buffers b(3, 4, 300, 41);
    std::vector<float> h(3 * 300);
    REQUIRE(run<cpu>(b.pre_params()).ok());
    REQUIRE(run<cpu>(hc_post_op::params{
                         {y.data(), {3, 300}}, b.streams(), b.state().post, b.state().comb, b.streams()})
                .ok());
    REQUIRE(run<cpu>(hc_head_op::params{b.streams(),
                                        {{head_fn.data(), {4, 1200}}, {head_scale, {1}}, {head_base, {4}}},
                                        {},
                                        {h.data(), {3, 300}}})
                .ok());
    std::vector<float> all = b.x_in;
    all.insert(all.end(), b.comb.begin(), b.comb.end());
    all.insert(all.end(), b.x.begin(), b.x.end());
    all.insert(all.end(), h.begin(), h.end());
    return all;
  };
  const auto one = once(1), two = once(2);
  set_num_threads(saved);
  CHECK(one == two);
}

TEST_CASE("Shape and setting errors name the offending tensor and leave the outputs untouched", "[mhc]") {
  site_buffers b(2, 4, 16, 51);
  std::fill(b.x_in.begin(), b.x_in.end(), 7.0f);
  auto p = b.pre_params();
  p.w.fn = {b.fn.data(), {mix_width(4), 63}};
  status s = run<cpu>(p);
  CHECK(s.code() == errc::shape_mismatch);
  CHECK(s.message().find("fn") == 0);
  p = b.pre_params();
  p.s.comb = {b.comb.data(), {2, 4, 3}};
  s = run<cpu>(p);
  CHECK(s.message().find("comb") == 0);
  p = b.pre_params(residual_map::sinkhorn, {1e-6f, 1e-6f, 0});
  s = run<cpu>(p);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(s.message().find("sinkhorn_iters") != std::string::npos);
  p = b.pre_params();
  p.x = {b.x.data(), {2, 4, 8}, {64, 16, 1}};  // streams not dense within a token
  CHECK(run<cpu>(p).code() == errc::shape_mismatch);
  p = b.pre_params();
  p.x_in = {b.x.data() + 8, {2, 16}};  // the parking place of x.x must not be inside x
  s = run<cpu>(p);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(s.message().find("x_in") == 0);
  for (float v : b.x_in) CHECK(v == 7.0f);
  // The policy checks its stream count.
  site_buffers three(1, 3, 16, 52);
  std::vector<float> x_in(16);
  CHECK(mhc4::pre(three.weights(), {}, three.streams(), {x_in.data(), {1, 16}}, three.state()).code() ==
        errc::shape_mismatch);
}

TEST_CASE("constrained_hc<4> as a residual policy: expand, two sites, head", "[mhc]") {
  constexpr index_t tokens = 2, n = 4, d = 24;
  const auto e = random_normal(tokens * d, 61);
  std::vector<float> x(tokens * n * d);
  REQUIRE(mhc4::expand({e.data(), {tokens, d}}, {x.data(), {tokens, n, d}}).ok());
  for (index_t t = 0; t < tokens; ++t)
    for (index_t j = 0; j < n; ++j)
      for (index_t k = 0; k < d; ++k)
        CHECK(x[static_cast<std::size_t>((t * n + j) * d + k)] == e[static_cast<std::size_t>(t * d + k)]);

  // A site through the policy equals the operations run directly.
  site_buffers direct(tokens, n, d, 62);
  direct.x = x;
  std::vector<float> scratch(static_cast<std::size_t>(mhc4::state_floats(tokens))), x_in(tokens * d);
  const auto state = mhc4::make_state(scratch.data(), tokens);
  REQUIRE(
      mhc4::pre(direct.weights(), {}, {x.data(), {tokens, n, d}}, {x_in.data(), {tokens, d}}, state).ok());
  REQUIRE(run<cpu>(direct.pre_params()).ok());
  CHECK(x_in == direct.x_in);
  CHECK(std::vector<float>(state.comb.data(), state.comb.data() + tokens * n * n) == direct.comb);
  const auto y = random_normal(tokens * d, 63);
  const tensor_view<float, 3> xs(x.data(), {tokens, n, d});
  REQUIRE(mhc4::post({y.data(), {tokens, d}}, xs, state, xs).ok());
  REQUIRE(run<cpu>(hc_post_op::params{{y.data(), {tokens, d}},
                                      direct.streams(),
                                      direct.state().post,
                                      direct.state().comb,
                                      direct.streams()})
              .ok());
  CHECK(x == direct.x);
}

TEST_CASE("A batch gives bit-identical results to its tokens run one at a time", "[mhc]") {
  constexpr index_t tokens = 5, n = 4, d = 300;
  site_buffers batch(tokens, n, d, 91, 2.0f);
  const auto y = random_normal(tokens * d, 92);
  REQUIRE(run<cpu>(batch.pre_params()).ok());
  std::vector<float> out(batch.x.size());
  REQUIRE(run<cpu>(hc_post_op::params{{y.data(), {tokens, d}},
                                      batch.streams(),
                                      batch.state().post,
                                      batch.state().comb,
                                      {out.data(), {tokens, n, d}}})
              .ok());
  for (index_t t = 0; t < tokens; ++t) {
    site_buffers one = batch;  // same weights; keep only token t's streams
    one.tokens = 1;
    one.x.assign(batch.x.begin() + t * n * d, batch.x.begin() + (t + 1) * n * d);
    REQUIRE(run<cpu>(one.pre_params()).ok());
    std::vector<float> o(static_cast<std::size_t>(n * d));
    REQUIRE(run<cpu>(hc_post_op::params{{y.data() + t * d, {1, d}},
                                        one.streams(),
                                        one.state().post,
                                        one.state().comb,
                                        {o.data(), {1, n, d}}})
                .ok());
    CHECK(std::equal(one.x_in.begin(), one.x_in.begin() + d, batch.x_in.begin() + t * d));
    CHECK(std::equal(one.comb.begin(), one.comb.begin() + n * n, batch.comb.begin() + t * n * n));
    CHECK(std::equal(o.begin(), o.end(), out.begin() + t * n * d));
  }
}
