// Test-only linear algebra in double precision: a one-sided Jacobi SVD (Hestenes), giving the
// singular values and the exact polar factor U V^T that Newton-Schulz approximates, and random
// matrices with a prescribed spectrum.
//
// One-sided Jacobi rotates pairs of columns of the tall orientation M (r, c), r >= c, until all
// are orthogonal: M J = W with J orthogonal. Then sigma_k = ||W_k||, U = W diag(1 / sigma), V = J
// and polar(M) = W diag(1 / sigma) J^T. It is slow (cubic per sweep, ~10 sweeps) but accurate to
// a few ulps of double, and short enough to check by eye.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace dsv4::test {

struct svd_result {
  std::vector<double> sigma;  // (min(n, m)) descending
  std::vector<double> polar;  // (n, m) row-major U V^T, when asked for
};

// a: (n, m) row-major.
inline svd_result jacobi_svd(const std::vector<double>& a, std::int64_t n, std::int64_t m, bool want_polar) {
  const bool tall = n >= m;
  const std::int64_t r = tall ? n : m, c = tall ? m : n;
  // w[k]: column k of the tall orientation M (a itself when tall, a^T when wide).
  std::vector<std::vector<double>> w(static_cast<std::size_t>(c),
                                     std::vector<double>(static_cast<std::size_t>(r)));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j)
      (tall ? w[static_cast<std::size_t>(j)][static_cast<std::size_t>(i)]
            : w[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)]) =
          a[static_cast<std::size_t>(i * m + j)];
  std::vector<std::vector<double>> v(static_cast<std::size_t>(c),
                                     std::vector<double>(static_cast<std::size_t>(c), 0.0));
  for (std::int64_t k = 0; k < c; ++k) v[static_cast<std::size_t>(k)][static_cast<std::size_t>(k)] = 1.0;
  const auto rotate = [](std::vector<double>& x, std::vector<double>& y, double cs, double sn) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double xi = x[i], yi = y[i];
      x[i] = cs * xi - sn * yi;
      y[i] = sn * xi + cs * yi;
    }
  };
  for (int sweep = 0; sweep < 60; ++sweep) {
    bool rotated = false;
    for (std::size_t p = 0; p < w.size(); ++p)
      for (std::size_t q = p + 1; q < w.size(); ++q) {
        double alpha = 0, beta = 0, gamma = 0;
        for (std::size_t i = 0; i < w[p].size(); ++i) {
          alpha += w[p][i] * w[p][i];
          beta += w[q][i] * w[q][i];
          gamma += w[p][i] * w[q][i];
        }
        if (std::fabs(gamma) <= 1e-15 * std::sqrt(alpha * beta) || gamma == 0.0) continue;
        rotated = true;
        // The rotation that zeroes the off-diagonal entry of the 2x2 Gram matrix.
        const double zeta = (beta - alpha) / (2.0 * gamma);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
        const double cs = 1.0 / std::sqrt(1.0 + t * t), sn = cs * t;
        rotate(w[p], w[q], cs, sn);
        if (want_polar) rotate(v[p], v[q], cs, sn);
      }
    if (!rotated) break;
  }
  svd_result out;
  for (const auto& col : w) {
    double s = 0;
    for (double x : col) s += x * x;
    out.sigma.push_back(std::sqrt(s));
  }
  if (want_polar) {
    out.polar.assign(static_cast<std::size_t>(n * m), 0.0);
    // polar(M)[i][j] = sum_k w_k[i] / sigma_k * v_k[j]; polar(a) is its transpose when a is wide.
    for (std::size_t k = 0; k < w.size(); ++k) {
      if (out.sigma[k] == 0.0) continue;
      for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = 0; j < c; ++j) {
          const double x =
              w[k][static_cast<std::size_t>(i)] / out.sigma[k] * v[k][static_cast<std::size_t>(j)];
          out.polar[static_cast<std::size_t>(tall ? i * m + j : j * m + i)] += x;
        }
    }
  }
  std::sort(out.sigma.begin(), out.sigma.end(), std::greater<>());
  return out;
}

// k orthonormal columns of length len, as k vectors (modified Gram-Schmidt, twice, of Gaussians).
inline std::vector<std::vector<double>> random_orthonormal(std::int64_t len, std::int64_t k,
                                                           std::mt19937& rng) {
  std::normal_distribution<double> d;
  std::vector<std::vector<double>> q(static_cast<std::size_t>(k),
                                     std::vector<double>(static_cast<std::size_t>(len)));
  for (std::size_t j = 0; j < q.size(); ++j) {
    for (double& x : q[j]) x = d(rng);
    for (int pass = 0; pass < 2; ++pass)
      for (std::size_t p = 0; p < j; ++p) {
        double dot = 0;
        for (std::size_t i = 0; i < q[j].size(); ++i) dot += q[p][i] * q[j][i];
        for (std::size_t i = 0; i < q[j].size(); ++i) q[j][i] -= dot * q[p][i];
      }
    double norm = 0;
    for (double x : q[j]) norm += x * x;
    for (double& x : q[j]) x /= std::sqrt(norm);
  }
  return q;
}

// An (n, m) row-major matrix U diag(sigma) V^T with random singular vectors and singular values
// spaced geometrically from 1 down to 1 / condition.
inline std::vector<double> matrix_with_condition(std::int64_t n, std::int64_t m, double condition,
                                                 unsigned seed) {
  std::mt19937 rng(seed);
  const std::int64_t s = std::min(n, m);
  const auto u = random_orthonormal(n, s, rng), v = random_orthonormal(m, s, rng);
  std::vector<double> a(static_cast<std::size_t>(n * m), 0.0);
  for (std::int64_t k = 0; k < s; ++k) {
    const double sigma =
        s == 1 ? 1.0 : std::pow(condition, -static_cast<double>(k) / static_cast<double>(s - 1));
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < m; ++j)
        a[static_cast<std::size_t>(i * m + j)] +=
            sigma * u[static_cast<std::size_t>(k)][static_cast<std::size_t>(i)] *
            v[static_cast<std::size_t>(k)][static_cast<std::size_t>(j)];
  }
  return a;
}

}  // namespace dsv4::test
