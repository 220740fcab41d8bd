// Why mHC constrains the residual matrix: the residual path of a deep stack multiplies one mixing
// matrix per sublayer, and only a (nearly) doubly stochastic matrix keeps that product bounded.
//
// Part 1 runs the HC_pre coefficients of 61 random mHC sites (the depth of V4-Pro) at Flash width
// (n_hc = 4, d = 4096) with the Hugging Face initialization (fn ~ N(0, 0.02), base 0, scale 1) and
// prints the gain of the residual product B_61 ... B_1 (B_l = comb_l^T) after 1, 15, 30 and 61
// sites, for mHC and for the unconstrained hyper-connection (same weights, no Sinkhorn).
// Part 2 prints how far the Sinkhorn rows are from summing to 1 against iterations and logit scale
// (the table of docs/mhc.md; the columns sum to 1 by construction).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/mhc/hyper_connection.hpp"
#include "dsv4/mhc/sinkhorn.hpp"

namespace {
using dsv4::index_t;
constexpr int n = 4;
using matrix = std::array<double, n * n>;

matrix multiply(const matrix& a, const matrix& b) {
  matrix c{};
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < n; ++k) c[i * n + j] += a[i * n + k] * b[k * n + j];
  return c;
}

// Largest singular value, by power iteration on M^T M.
double spectral_norm(const matrix& m) {
  std::array<double, n> v{1.0, 0.7, -0.4, 0.2};
  double norm = 0.0;
  for (int it = 0; it < 500; ++it) {
    std::array<double, n> w{}, u{};
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < n; ++k) w[i] += m[i * n + k] * v[k];
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < n; ++k) u[i] += m[k * n + i] * w[k];
    double s = 0.0;
    for (double x : u) s += x * x;
    s = std::sqrt(s);
    if (s == 0.0 || !std::isfinite(s)) return s;
    for (int i = 0; i < n; ++i) v[i] = u[i] / s;
    norm = std::sqrt(s);
  }
  return norm;
}

// The residual matrices B = comb^T of `sites` random sites applied to random streams.
std::vector<matrix> residual_matrices(dsv4::mhc::residual_map map, int sites, index_t d) {
  const index_t width = n * d, rows = dsv4::mhc::mix_width(n);
  std::mt19937 rng(42);
  std::normal_distribution<float> init(0.0f, 0.02f), unit(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(width)), fn(static_cast<std::size_t>(rows * width));
  std::vector<float> base(static_cast<std::size_t>(rows), 0.0f), scale(3, 1.0f),
      x_in(static_cast<std::size_t>(d));
  std::vector<float> pre(n), post(n), comb(n * n), mix(static_cast<std::size_t>(rows));
  std::vector<matrix> out;
  for (int s = 0; s < sites; ++s) {
    for (float& v : x) v = unit(rng);
    for (float& v : fn) v = init(rng);
    const dsv4::mhc::hc_pre_op::params p{
        {x.data(), {1, n, d}},
        {{fn.data(), {rows, width}}, {scale.data(), {3}}, {base.data(), {rows}}},
        {},
        map,
        {x_in.data(), {1, d}},
        {{pre.data(), {1, n}}, {post.data(), {1, n}}, {comb.data(), {1, n, n}}, {mix.data(), {1, rows}}}};
    if (!dsv4::run<dsv4::cpu>(p).ok()) std::abort();
    matrix b{};
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) b[j * n + i] = comb[static_cast<std::size_t>(i * n + j)];
    out.push_back(b);
  }
  return out;
}

void print_gains() {
  const index_t d = 4096;
  const auto mhc = residual_matrices(dsv4::mhc::residual_map::sinkhorn, 61, d);
  const auto hc = residual_matrices(dsv4::mhc::residual_map::unconstrained, 61, d);
  std::printf("Gain (spectral norm) of the residual product B_L ... B_1, n_hc = 4, d = %lld, HF init\n",
              static_cast<long long>(d));
  std::printf("%8s %16s %16s\n", "sites", "mHC", "unconstrained");
  matrix pm{}, ph{};
  for (int i = 0; i < n; ++i) pm[i * n + i] = ph[i * n + i] = 1.0;
  for (int l = 0; l < 61; ++l) {
    pm = multiply(mhc[static_cast<std::size_t>(l)], pm);
    ph = multiply(hc[static_cast<std::size_t>(l)], ph);
    if (l == 0 || l == 14 || l == 29 || l == 60)
      std::printf("%8d %16.6f %16.6g\n", l + 1, spectral_norm(pm), spectral_norm(ph));
  }
}

void print_row_sum_error() {
  const int iters[] = {1, 2, 3, 5, 10, 20, 50};
  const float scales[] = {0.25f, 1.0f, 2.0f, 4.0f, 8.0f};
  std::printf("\nMax |row sum - 1| of the Sinkhorn projection over 20000 random 4x4 logit matrices\n");
  std::printf("%10s", "std(L)");
  for (int t : iters) std::printf(" %9s%-3d", "iters=", t);
  std::printf("\n");
  for (float sd : scales) {
    std::printf("%10.2f", static_cast<double>(sd));
    for (int t : iters) {
      std::mt19937 rng(7);
      std::normal_distribution<float> logit(0.0f, sd);
      double worst = 0.0;
      for (int m = 0; m < 20000; ++m) {
        float p[n * n];
        for (float& v : p) v = logit(rng);
        dsv4::mhc::sinkhorn_project(p, n, t, 1e-6f);
        for (int i = 0; i < n; ++i) {
          double s = 0.0;
          for (int j = 0; j < n; ++j) s += p[i * n + j];
          worst = std::max(worst, std::fabs(s - 1.0));
        }
      }
      std::printf(" %12.2e", worst);
    }
    std::printf("\n");
  }
}
}  // namespace

int main() {
  print_gains();
  print_row_sum_error();
  return 0;
}
