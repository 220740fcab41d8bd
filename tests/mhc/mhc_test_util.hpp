// Shared by the mhc tests: random data, fixture views, one site's buffers, and double-precision linear
// algebra on small matrices written independently of the library.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "dsv4/mhc/hyper_connection.hpp"
#include "fixture.hpp"
#include "random.hpp"

namespace mhc_test {
using namespace dsv4;
using namespace dsv4::mhc;

using test::random_normal;

// A fixture tensor as a view of its data (rank from the caller, extents from the file).
template <std::size_t Rank>
tensor_view<const float, Rank> view_of(const test::fixture_tensor& t) {
  extents_t<Rank> e{};
  for (std::size_t i = 0; i < Rank; ++i) e[i] = t.shape[i];
  return {t.data.data(), e};
}

// A fixture's hyper-connection settings (rms_norm_eps, hc_eps, hc_sinkhorn_iters in its meta).
inline hc_settings settings_of(const test::fixture& f) {
  return {f.meta().at("rms_norm_eps").get<float>(), f.meta().at("hc_eps").get<float>(),
          f.meta().at("hc_sinkhorn_iters").get<int>()};
}

// The hc_state over a site's pre and post (tokens, n), comb (tokens, n, n) and mix
// (tokens, mix_width(n)) buffers.
inline hc_state state_of(std::vector<float>& pre, std::vector<float>& post, std::vector<float>& comb,
                         std::vector<float>& mix, index_t tokens, index_t n) {
  return {{pre.data(), {tokens, n}},
          {post.data(), {tokens, n}},
          {comb.data(), {tokens, n, n}},
          {mix.data(), {tokens, mix_width(n)}}};
}

// HC_pre (Sinkhorn residual map) of a fixture's streams x (tokens, n, d) with the fixture's site
// weights, into x_in (tokens, d) and s.
inline status fixture_pre(const test::fixture_tensor& x, const test::fixture_tensor& fn,
                          const test::fixture_tensor& scale, const test::fixture_tensor& base,
                          const hc_settings& settings, float* x_in, const hc_state& s,
                          numerics num = numerics::exact) {
  const index_t tokens = x.shape[0], d = x.shape[2];
  return run<cpu>(hc_pre_op::params{view_of<3>(x),
                                    {view_of<2>(fn), view_of<1>(scale), view_of<1>(base)},
                                    settings,
                                    residual_map::sinkhorn,
                                    {x_in, {tokens, d}},
                                    s,
                                    num});
}

// Row-major (n, n) matrices in double.
using dmatrix = std::vector<double>;

inline dmatrix identity(int n) {
  dmatrix m(static_cast<std::size_t>(n * n), 0.0);
  for (int i = 0; i < n; ++i) m[static_cast<std::size_t>(i * n + i)] = 1.0;
  return m;
}

inline dmatrix multiply(const dmatrix& a, const dmatrix& b, int n) {
  dmatrix c(static_cast<std::size_t>(n * n), 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k)
      for (int j = 0; j < n; ++j)
        c[static_cast<std::size_t>(i * n + j)] +=
            a[static_cast<std::size_t>(i * n + k)] * b[static_cast<std::size_t>(k * n + j)];
  return c;
}

inline dmatrix transpose(const dmatrix& a, int n) {
  dmatrix t(a.size());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      t[static_cast<std::size_t>(j * n + i)] = a[static_cast<std::size_t>(i * n + j)];
  return t;
}

// Largest singular value: sqrt of the largest eigenvalue of M^T M, by power iteration.
inline double spectral_norm(const dmatrix& m, int n) {
  const dmatrix g = multiply(transpose(m, n), m, n);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = 1.0 + 0.1 * i;
  double lambda = 0.0;
  for (int it = 0; it < 2000; ++it) {
    std::vector<double> w(static_cast<std::size_t>(n), 0.0);
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < n; ++k)
        w[static_cast<std::size_t>(i)] +=
            g[static_cast<std::size_t>(i * n + k)] * v[static_cast<std::size_t>(k)];
    double norm = 0.0;
    for (double x : w) norm += x * x;
    norm = std::sqrt(norm);
    if (norm == 0.0 || !std::isfinite(norm)) return std::sqrt(norm);
    for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = w[static_cast<std::size_t>(i)] / norm;
    lambda = norm;
  }
  return std::sqrt(lambda);
}

// The buffers of one mHC site for `tokens` tokens of n_hc streams of width d, with random
// streams and weights; fn entries have standard deviation logit_std / sqrt(n_hc * d), which
// gives logits of standard deviation ~logit_std.
struct site_buffers {
  index_t tokens, n, d;
  std::vector<float> x, fn, scale, base, x_in, pre, post, comb, mix;

  site_buffers(index_t tokens_, index_t n_, index_t d_, unsigned seed, float logit_std = 1.0f)
      : tokens(tokens_),
        n(n_),
        d(d_),
        x(random_normal(static_cast<std::size_t>(tokens * n * d), seed)),
        fn(random_normal(static_cast<std::size_t>(mix_width(n) * n * d), seed + 1,
                         logit_std / std::sqrt(static_cast<float>(n * d)))),
        scale{0.8f, 1.1f, 1.3f},
        base(random_normal(static_cast<std::size_t>(mix_width(n)), seed + 2, 0.5f)),
        x_in(static_cast<std::size_t>(tokens * d)),
        pre(static_cast<std::size_t>(tokens * n)),
        post(static_cast<std::size_t>(tokens * n)),
        comb(static_cast<std::size_t>(tokens * n * n)),
        mix(static_cast<std::size_t>(tokens * mix_width(n))) {}

  tensor_view<float, 3> streams() { return {x.data(), {tokens, n, d}}; }
  hc_site_weights weights() const {
    return {{fn.data(), {mix_width(n), n * d}}, {scale.data(), {3}}, {base.data(), {mix_width(n)}}};
  }
  hc_state state() { return state_of(pre, post, comb, mix, tokens, n); }
  hc_pre_op::params pre_params(residual_map map = residual_map::sinkhorn, hc_settings s = {}) {
    return {streams(), weights(), s, map, {x_in.data(), {tokens, d}}, state()};
  }
  // Token t's residual matrix comb (n, n) in double.
  dmatrix comb_of(index_t t) const {
    return dmatrix(comb.begin() + t * n * n, comb.begin() + (t + 1) * n * n);
  }
};

}  // namespace mhc_test
