// The plain residual policy (x + f(x)) and a block written once against residual_policy, run with
// every policy: the plain one must reproduce a hand-written pre-norm residual stack exactly.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "dsv4/mhc/residual.hpp"
#include "mhc_test_util.hpp"

using namespace dsv4;
using mhc_test::random_normal;
using mhc_test::site_buffers;

namespace {
// A stand-in sublayer: y = tanh(x) * 0.5, row by row.
void sublayer(const std::vector<float>& x, std::vector<float>& y) {
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = 0.5f * std::tanh(x[i]);
}

// Embedding -> two sites (same stand-in sublayer) -> head, against any residual policy.
template <mhc::residual_policy R>
std::vector<float> run_block(const std::vector<float>& e, index_t tokens, index_t d,
                             const typename R::site_weights& w, const typename R::head_weights& hw) {
  constexpr index_t n = R::streams;
  std::vector<float> x(static_cast<std::size_t>(tokens * n * d)), x_in(static_cast<std::size_t>(tokens * d)),
      y(x_in.size()), h(x_in.size()), scratch(static_cast<std::size_t>(R::state_floats(tokens)));
  const tensor_view<float, 3> xs(x.data(), {tokens, n, d});
  const tensor_view<float, 2> rows(x_in.data(), {tokens, d});
  const auto state = R::make_state(scratch.data(), tokens);
  REQUIRE(R::expand({e.data(), {tokens, d}}, xs).ok());
  for (int site = 0; site < 2; ++site) {
    REQUIRE(R::pre(w, {}, xs, rows, state).ok());
    sublayer(x_in, y);
    REQUIRE(R::post({y.data(), {tokens, d}}, xs, state, xs).ok());
  }
  REQUIRE(R::head(hw, {}, xs, {h.data(), {tokens, d}}).ok());
  return h;
}
}  // namespace

TEST_CASE("plain_residual reproduces x + f(x) exactly", "[mhc][residual]") {
  constexpr index_t tokens = 3, d = 37;
  const auto e = random_normal(tokens * d, 71);
  const auto h = run_block<mhc::plain_residual>(e, tokens, d, {}, {});
  std::vector<float> x = e, y(e.size());
  for (int site = 0; site < 2; ++site) {
    sublayer(x, y);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  }
  CHECK(h == x);
}

TEST_CASE("residual_add_op rejects mismatched shapes and partial overlaps", "[mhc][residual]") {
  std::vector<float> a(40, 1.0f), b(40, 2.0f);
  CHECK(run<cpu>(mhc::residual_add_op::params{{a.data(), {4, 10}}, {b.data(), {4, 9}}, {a.data(), {4, 10}}})
            .message()
            .find("y") == 0);
  CHECK(run<cpu>(
            mhc::residual_add_op::params{{a.data(), {3, 10}}, {b.data(), {3, 10}}, {a.data() + 5, {3, 10}}})
            .code() == errc::invalid_argument);
  REQUIRE(
      run<cpu>(mhc::residual_add_op::params{{a.data(), {4, 10}}, {b.data(), {4, 10}}, {a.data(), {4, 10}}})
          .ok());
  for (float v : a) CHECK(v == 3.0f);
}

TEST_CASE("one block source runs with mHC, unconstrained HC and the plain residual", "[mhc][residual]") {
  constexpr index_t tokens = 2, d = 16;
  const auto e = random_normal(tokens * d, 81);
  site_buffers site(tokens, 4, d, 82);
  const auto head_fn = random_normal(4 * 4 * d, 83, 0.1f);
  const float head_scale[] = {1.0f}, head_base[] = {0.0f, 0.1f, 0.2f, 0.3f};
  const mhc::hc_head_weights head{{head_fn.data(), {4, 4 * d}}, {head_scale, {1}}, {head_base, {4}}};
  const auto constrained = run_block<mhc::constrained_hc<4>>(e, tokens, d, site.weights(), head);
  const auto unconstrained = run_block<mhc::unconstrained_hc<4>>(e, tokens, d, site.weights(), head);
  const auto plain = run_block<mhc::plain_residual>(e, tokens, d, {}, {});
  for (const auto* h : {&constrained, &unconstrained, &plain})
    for (float v : *h) CHECK(std::isfinite(v));
  CHECK(constrained != unconstrained);
  CHECK(constrained != plain);
}
