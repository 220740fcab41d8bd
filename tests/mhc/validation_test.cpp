// Bad input at the boundary of every mHC operation and policy: views that overlap (an output or
// the site state on top of an input, two outputs on top of each other), negative extents, settings
// outside their domain. Each is refused with a status that names the argument, before the first
// write; and a steady-state site (expand, pre, post, head) allocates nothing.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "allocations.hpp"
#include "dsv4/mhc/residual.hpp"
#include "mhc_test_util.hpp"

using namespace dsv4;
using namespace dsv4::mhc;
using mhc_test::random_normal;
using mhc_test::site_buffers;
using mhc4 = dsv4::mhc::constrained_hc<4>;

namespace {
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

TEST_CASE("HC_pre refuses a state or output that overlaps its inputs or another output",
          "[mhc][validation]") {
  constexpr index_t tokens = 3, n = 4, d = 16;
  site_buffers b(tokens, n, d, 301);
  const auto x_before = b.x, fn_before = b.fn;
  b.x_in = random_normal(b.x_in.size(), 302);
  const auto x_in_before = b.x_in;

  // The state's pre on top of the const streams: HC_pre would write the caller's residual.
  auto p = b.pre_params();
  p.s.pre = {b.x.data() + 5, {tokens, n}};
  status s = run<cpu>(p);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(starts_with(s.message(), "pre"));
  // comb on top of the weights.
  p = b.pre_params();
  p.s.comb = {b.fn.data() + 3, {tokens, n, n}};
  s = run<cpu>(p);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(starts_with(s.message(), "comb"));
  // post overlapping x_in (two outputs on the same memory).
  p = b.pre_params();
  p.s.post = {b.x_in.data() + 2, {tokens, n}};
  s = run<cpu>(p);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(s.message().find("x_in") != std::string::npos);
  // x_in on top of the scale.
  p = b.pre_params();
  p.w.base = {b.x_in.data(), {mix_width(n)}};
  s = run<cpu>(p);
  CHECK(s.code() == errc::invalid_argument);

  CHECK(b.x == x_before);
  CHECK(b.fn == fn_before);
  CHECK(b.x_in == x_in_before);
}

TEST_CASE("HC_post refuses an output overlapping post or comb", "[mhc][validation]") {
  constexpr index_t tokens = 2, n = 4, d = 8;
  site_buffers b(tokens, n, d, 311);
  REQUIRE(run<cpu>(b.pre_params()).ok());
  const auto y = random_normal(static_cast<std::size_t>(tokens * d), 312);
  // One buffer holds comb, then the output: the output starts inside comb.
  std::vector<float> mem(static_cast<std::size_t>(tokens * n * n + tokens * n * d));
  std::copy(b.comb.begin(), b.comb.end(), mem.begin());
  const auto before = mem;
  const tensor_view<const float, 3> comb(mem.data(), {tokens, n, n});
  const status s = run<cpu>(hc_post_op::params{
      {y.data(), {tokens, d}}, b.streams(), b.state().post, comb, {mem.data() + 4, {tokens, n, d}}});
  CHECK(s.code() == errc::invalid_argument);
  CHECK(starts_with(s.message(), "out"));
  CHECK(mem == before);
}

TEST_CASE("HC expansion refuses streams that overlap the embedding", "[mhc][validation]") {
  constexpr index_t tokens = 2, n = 4, d = 8;
  auto mem = random_normal(static_cast<std::size_t>(tokens * n * d), 321);
  const auto before = mem;
  // e is the first rows of the very buffer the streams are written to.
  const status s = run<cpu>(hc_expand_op::params{{mem.data(), {tokens, d}}, {mem.data(), {tokens, n, d}}});
  CHECK(s.code() == errc::invalid_argument);
  CHECK(starts_with(s.message(), "x"));
  CHECK(mem == before);
}

TEST_CASE("residual_add_op refuses an output that partly overlaps y", "[mhc][validation]") {
  auto x = random_normal(40, 331), y = random_normal(45, 332);
  const auto y_before = y;
  const status s =
      run<cpu>(residual_add_op::params{{x.data(), {4, 10}}, {y.data(), {4, 10}}, {y.data() + 5, {4, 10}}});
  CHECK(s.code() == errc::invalid_argument);
  CHECK(starts_with(s.message(), "out"));
  CHECK(y == y_before);
  // The output may be y itself (elementwise, in place).
  REQUIRE(
      run<cpu>(residual_add_op::params{{x.data(), {4, 10}}, {y.data(), {4, 10}}, {y.data(), {4, 10}}}).ok());
  for (std::size_t i = 0; i < 40; ++i) CHECK(y[i] == x[i] + y_before[i]);
}

TEST_CASE("Negative extents are refused with a status naming the argument, outputs untouched",
          "[mhc][validation]") {
  constexpr index_t n = 4, d = 16;
  site_buffers b(2, n, d, 341);
  b.x_in = random_normal(b.x_in.size(), 342);
  const auto x_in_before = b.x_in;
  std::vector<float> scratch(static_cast<std::size_t>(mhc4::state_floats(2)));
  const auto state = mhc4::make_state(scratch.data(), 2);

  // HC_pre through the policy and directly, with tokens = -1.
  const tensor_view<const float, 3> bad_x(b.x.data(), {-1, n, d});
  status s = mhc4::pre(b.weights(), {}, bad_x, {b.x_in.data(), {-1, d}}, state);
  CHECK(s.code() == errc::shape_mismatch);
  CHECK(starts_with(s.message(), "x"));
  auto p = b.pre_params();
  p.x = bad_x;
  p.x_in = {b.x_in.data(), {-1, d}};
  CHECK(starts_with(run<cpu>(p).message(), "x"));
  // A negative extent in an output only.
  p = b.pre_params();
  p.s.comb = {b.comb.data(), {2, -n, n}};
  s = run<cpu>(p);
  CHECK(s.code() == errc::shape_mismatch);
  CHECK(starts_with(s.message(), "comb"));
  CHECK(b.x_in == x_in_before);

  // HC_post, the expansion, the head and the plain residual add.
  std::vector<float> out(b.x.size(), 3.0f);
  const auto y = random_normal(b.x_in.size(), 343);
  s = run<cpu>(hc_post_op::params{
      {y.data(), {-1, d}}, bad_x, b.state().post, b.state().comb, {out.data(), {-1, n, d}}});
  CHECK(starts_with(s.message(), "x"));
  s = run<cpu>(hc_expand_op::params{{y.data(), {-2, d}}, {out.data(), {-2, n, d}}});
  CHECK(s.code() == errc::shape_mismatch);
  CHECK(starts_with(s.message(), "e"));
  s = mhc4::expand({y.data(), {2, -d}}, {out.data(), {2, n, -d}});
  CHECK(starts_with(s.message(), "e"));
  const auto head_fn = random_normal(static_cast<std::size_t>(n * n * d), 344, 0.1f);
  const float head_scale[] = {1.0f}, head_base[] = {0.1f, 0.2f, 0.3f, 0.4f};
  const hc_head_weights head{{head_fn.data(), {n, n * d}}, {head_scale, {1}}, {head_base, {n}}};
  s = mhc4::head(head, {}, bad_x, {out.data(), {-1, d}});
  CHECK(starts_with(s.message(), "x"));
  s = run<cpu>(residual_add_op::params{{y.data(), {-2, 5}}, {y.data(), {-2, 5}}, {out.data(), {-2, 5}}});
  CHECK(s.code() == errc::shape_mismatch);
  CHECK(starts_with(s.message(), "x"));
  s = plain_residual::pre({}, {}, {b.x.data(), {-3, 1, d}}, {out.data(), {-3, d}}, {});
  CHECK(!s.ok());
  for (float v : out) CHECK(v == 3.0f);
}

TEST_CASE("hc_settings outside their domain are refused: eps > 0 and finite, iterations >= 1",
          "[mhc][validation]") {
  site_buffers b(2, 4, 16, 351);
  b.x_in = random_normal(b.x_in.size(), 352);
  const auto x_in_before = b.x_in;
  const float pos_inf = std::numeric_limits<float>::infinity(),
              qnan = std::numeric_limits<float>::quiet_NaN();
  struct bad_case {
    hc_settings settings;
    const char* names;  // the field the message must name
  };
  for (const bad_case& c :
       {bad_case{{0.0f, 1e-6f, 20}, "rms_norm_eps"}, bad_case{{1e-6f, 0.0f, 20}, "hc_eps"},
        bad_case{{pos_inf, 1e-6f, 20}, "rms_norm_eps"}, bad_case{{1e-6f, qnan, 20}, "hc_eps"},
        bad_case{{1e-6f, 1e-6f, 0}, "sinkhorn_iters"}, bad_case{{1e-6f, 1e-6f, -3}, "sinkhorn_iters"}}) {
    INFO(c.names);
    const status s = run<cpu>(b.pre_params(residual_map::sinkhorn, c.settings));
    CHECK(s.code() == errc::invalid_argument);
    CHECK(s.message().find(c.names) != std::string::npos);
  }
  CHECK(b.x_in == x_in_before);
  // The defaults are the released models' values (spec §1.1).
  CHECK(hc_settings{}.rms_norm_eps == 1e-6f);
  CHECK(hc_settings{}.hc_eps == 1e-6f);
  CHECK(hc_settings{}.sinkhorn_iters == 20);
}

TEST_CASE("A steady-state mHC site allocates nothing: expand, pre, post, head", "[mhc][validation]") {
  constexpr index_t tokens = 5, n = 4, d = 64;
  site_buffers b(tokens, n, d, 361);
  const auto e = random_normal(static_cast<std::size_t>(tokens * d), 362);
  const auto y = random_normal(static_cast<std::size_t>(tokens * d), 363);
  const auto head_fn = random_normal(static_cast<std::size_t>(n * n * d), 364, 0.1f);
  const float head_scale[] = {1.0f}, head_base[] = {0.1f, 0.2f, 0.3f, 0.4f};
  const hc_head_weights head{{head_fn.data(), {n, n * d}}, {head_scale, {1}}, {head_base, {n}}};
  std::vector<float> x(static_cast<std::size_t>(tokens * n * d)), x_in(static_cast<std::size_t>(tokens * d)),
      h(x_in.size()), scratch(static_cast<std::size_t>(mhc4::state_floats(tokens)));
  const auto state = mhc4::make_state(scratch.data(), tokens);
  const tensor_view<float, 3> xs(x.data(), {tokens, n, d});
  status se, spre, spost, shead;
  const auto site = [&] {
    se = mhc4::expand({e.data(), {tokens, d}}, xs);
    spre = mhc4::pre(b.weights(), {}, xs, {x_in.data(), {tokens, d}}, state);
    spost = mhc4::post({y.data(), {tokens, d}}, xs, state, xs);
    shead = mhc4::head(head, {}, xs, {h.data(), {tokens, d}});
  };
  site();  // the first call may start the thread pool
  REQUIRE(se.ok());
  REQUIRE(spre.ok());
  REQUIRE(spost.ok());
  REQUIRE(shead.ok());
  const auto count = dsv4::test::allocations_during(site);
  CHECK(se.ok());
  CHECK(spre.ok());
  CHECK(spost.ok());
  CHECK(shead.ok());
  CHECK(count == 0);
}

TEST_CASE("sinkhorn() refuses a bad matrix or settings before touching it", "[mhc][validation]") {
  auto p = random_normal(16, 371);
  const auto before = p;
  CHECK(starts_with(dsv4::mhc::sinkhorn({p.data(), {-4, 4}}, 20, 1e-6f).message(), "p"));
  CHECK(starts_with(dsv4::mhc::sinkhorn({p.data(), {4, 3}}, 20, 1e-6f).message(), "p"));
  CHECK(starts_with(dsv4::mhc::sinkhorn({p.data(), {4, 4}}, 0, 1e-6f).message(), "iters"));
  CHECK(starts_with(dsv4::mhc::sinkhorn({p.data(), {4, 4}}, 20, 0.0f).message(), "eps"));
  CHECK(starts_with(
      dsv4::mhc::sinkhorn({p.data(), {4, 4}}, 20, std::numeric_limits<float>::quiet_NaN()).message(), "eps"));
  CHECK(p == before);
  // A valid call equals the unchecked building block.
  auto q = p;
  REQUIRE(dsv4::mhc::sinkhorn({p.data(), {4, 4}}, 20, 1e-6f).ok());
  sinkhorn_project(q.data(), 4, 20, 1e-6f);
  CHECK(p == q);
}
