// Sinkhorn-Knopp projection of the mHC residual logits onto (nearly) doubly stochastic matrices,
// in the exact order of the released kernel (spec §3.2 step 7, §16.4).
//
// Why this order: the report describes exp followed by alternating column/row normalizations,
// but the released checkpoints were trained and served with `hc_split_sinkhorn`, which does
//   P = softmax_row(L) + eps;  P /= colsum(P) + eps;  then (iters - 1) x { P /= rowsum + eps;  P /= colsum +
//   eps }.
// The last step normalizes columns, so columns sum to 1 - O(eps) exactly while rows only converge
// (docs/mhc.md measures how fast). A different order gives a different matrix for the same weights.
//
// One small matrix per token and site (n_hc = 4): the function is plain scalar code shared by the
// CPU path and CUDA kernels (DSV4_HOST_DEVICE), fp32 throughout as in the reference.
#pragma once

#include <cmath>
#include <string>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::mhc {

namespace detail {
// p (n, n) row-major: divides each of the n lines (line l starts at p[l * line_stride], its
// elements are elem_stride apart) by its sum + eps. Rows: (n, 1); columns: (1, n).
DSV4_HOST_DEVICE inline void normalize_lines(float* p, int n, float eps, int line_stride, int elem_stride) {
  for (int l = 0; l < n; ++l) {
    float* line = p + l * line_stride;
    float s = 0.0f;
    for (int e = 0; e < n; ++e) s += line[e * elem_stride];
    const float denom = s + eps;  // divided, not multiplied by the inverse, as the reference does
    for (int e = 0; e < n; ++e) line[e * elem_stride] /= denom;
  }
}
DSV4_HOST_DEVICE inline void normalize_rows(float* p, int n, float eps) { normalize_lines(p, n, eps, n, 1); }
DSV4_HOST_DEVICE inline void normalize_columns(float* p, int n, float eps) {
  normalize_lines(p, n, eps, 1, n);
}
}  // namespace detail

// p (n, n) row-major, in place: the logits L[i][j] (i = source stream, j = destination stream) in,
// the residual matrix P out. iters >= 1 is the number of column normalizations (config
// hc_sinkhorn_iters, 20 in both released models); eps is hc_eps. The building block of kernels,
// unchecked beyond debug assertions: host code with arguments of unknown origin calls sinkhorn().
DSV4_HOST_DEVICE inline void sinkhorn_project(float* p, int n, int iters, float eps) {
  DSV4_ASSERT(p != nullptr && n >= 1 && iters >= 1, "sinkhorn_project: p non-null, n >= 1, iters >= 1");
  // Row softmax, shifted by the row maximum so large logits cannot overflow exp.
  for (int i = 0; i < n; ++i) {
    float* row = p + i * n;
    float m = row[0];
    for (int j = 1; j < n; ++j) m = row[j] > m ? row[j] : m;
    float s = 0.0f;
    for (int j = 0; j < n; ++j) s += (row[j] = std::exp(row[j] - m));
    for (int j = 0; j < n; ++j) row[j] = row[j] / s + eps;
  }
  detail::normalize_columns(p, n, eps);
  for (int t = 1; t < iters; ++t) {
    detail::normalize_rows(p, n, eps);
    detail::normalize_columns(p, n, eps);
  }
}

// The checked host entry point: p (n, n) contiguous, 1 <= n <= 46340 (n * n fits an int),
// iters >= 1, eps finite and > 0. Refuses anything else with a status naming the argument, before
// touching p.
inline status sinkhorn(tensor_view<float, 2> p, int iters, float eps) {
  DSV4_TRY(check_shape(p, {any_extent, p.extent(0) < 0 ? any_extent : p.extent(0)}, "p"));
  DSV4_TRY(check_contiguous(p, "p"));
  if (p.extent(0) < 1 || p.extent(0) > 46340)
    return {errc::shape_mismatch,
            "p: expected (n, n) with 1 <= n <= 46340, got " + shape_string<2>(p.extents())};
  if (iters < 1) return {errc::invalid_argument, "iters: expected >= 1, got " + std::to_string(iters)};
  if (!(eps > 0.0f) || !std::isfinite(eps))
    return {errc::invalid_argument, "eps: expected a finite value > 0, got " + std::to_string(eps)};
  sinkhorn_project(p.data(), static_cast<int>(p.extent(0)), iters, eps);
  return {};
}

}  // namespace dsv4::mhc
