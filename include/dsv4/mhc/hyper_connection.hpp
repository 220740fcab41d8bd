// Manifold-constrained hyper-connections (mHC, spec §3.2-§3.4, §16.5, §18.3): the operations of one
// mHC site (HC_pre, HC_post), the stream expansion at the embedding and the HC head, for a batch of
// tokens, plus the residual policies built from them (mhc<N> and the unconstrained variant).
//
// Per token the residual is X (n_hc, d), flattened stream-major (element j*d + k is stream j,
// channel k: the column order of hc_*_fn). One site computes, all in fp32 (spec §3.2):
//   rho  = 1 / sqrt(mean(x^2) + rms_norm_eps)          unweighted RMS over all n_hc*d values
//   mix  = (x . fn^T) * rho                            (2 + n_hc) * n_hc values (24 for n_hc = 4)
//   pre  = sigmoid(mix[0:n] * scale0 + base[0:n]) + hc_eps
//   post = 2 * sigmoid(mix[n:2n] * scale1 + base[n:2n])
//   comb = Sinkhorn(mix[2n:] * scale2 + base[2n:])     (n, n), comb[i][j]: source i -> destination j
//   HC_pre:  x_in = sum_j pre_j X_j
//   HC_post: X'_j = post_j * y + sum_i comb[i][j] X_i   (comb^T X: the transpose matters, §16.5)
// The reference multiplies by rho after the matmul, as here; Hugging Face normalizes first (same
// value up to rounding). With residual_map::unconstrained the logits are used as the residual
// matrix directly: the hyper-connections mHC constrains, kept for the stability comparison.
//
// Numerics (core/numerics.hpp; a params field of every op, a template argument of
// hyper_connection): numerics::exact is fp32 throughout. numerics::released is the official code's
// layout (spec §18.3 "mHC layout and precision"): the streams are BF16 tensors, so the expansion,
// the collapsed sublayer input, HC_post's new streams and the head's output are rounded to BF16
// once, after fp32 arithmetic on BF16 inputs (pre, post and comb stay fp32; HC_post multiplies
// fp32 coefficients with the BF16 y and streams and casts the fp32 sum). Storage stays fp32 views
// holding BF16 values. Hugging Face instead casts post and comb to BF16 and computes HC_post in
// BF16 arithmetic (docs/mhc.md measures the difference).
//
// Parallel structure (deterministic for any thread count): every parallel_for index owns its
// outputs and computes them in a fixed order. HC_pre's 24 mixing dot products per token are one
// GEMM of the tokens by fn through core/gemv.hpp (f32_matrix): its rows are split over the threads,
// a batch reads fn once per pass of 64 tokens, and its accumulation-order contract (dsv4::dot's
// lanes and tree, fused products where the target has FMA) makes a batch equal its tokens one at a
// time bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/gemv.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/mhc/concepts.hpp"
#include "dsv4/mhc/sinkhorn.hpp"

namespace dsv4::mhc {

// Streams a CPU kernel holds in its per-index buffers (the released models use 4).
inline constexpr int max_hc_mult = 16;

// How the residual logits become the residual matrix.
enum class residual_map : std::uint8_t {
  sinkhorn,       // mHC: projected towards the doubly stochastic matrices (spec §3.2 step 7)
  unconstrained,  // hyper-connections without the manifold: the logits themselves
};

// Rows of hc_{attn,ffn}_fn: pre (n), post (n), residual logits (n * n).
constexpr index_t mix_width(index_t n_hc) { return (2 + n_hc) * n_hc; }

// One site's parameters (checkpoint hc_{attn,ffn}_{fn,scale,base}, all fp32).
struct hc_site_weights {
  tensor_view<const float, 2> fn;     // ((2 + n_hc) * n_hc, n_hc * d)
  tensor_view<const float, 1> scale;  // (3): alpha_pre, alpha_post, alpha_res
  tensor_view<const float, 1> base;   // ((2 + n_hc) * n_hc)
};

// The HC head's parameters (checkpoint hc_head_{fn,scale,base}, fp32).
struct hc_head_weights {
  tensor_view<const float, 2> fn;     // (n_hc, n_hc * d)
  tensor_view<const float, 1> scale;  // (1)
  tensor_view<const float, 1> base;   // (n_hc)
};

// One site's coefficients for a batch of tokens: HC_pre writes them, HC_post reads post and comb.
struct hc_state {
  tensor_view<float, 2> pre;   // (tokens, n_hc)
  tensor_view<float, 2> post;  // (tokens, n_hc)
  tensor_view<float, 3> comb;  // (tokens, n_hc, n_hc)
};

namespace detail {
// Channels one parallel_for index handles in the stream collapse and in HC_post.
inline constexpr index_t channel_block = 256;

// x (tokens, n_hc, d): each token's n_hc * d values must be dense and stream-major (spec §18.3).
inline status check_streams(const tensor_view<const float, 3>& x, std::string_view name) {
  const index_t n = x.extent(1), d = x.extent(2);
  if (n < 1 || n > max_hc_mult || d < 1) {
    return {errc::shape_mismatch, std::string(name) + ": expected (tokens, n_hc, d) with 1 <= n_hc <= " +
                                      std::to_string(max_hc_mult) + " and d >= 1, got " +
                                      shape_string<3>(x.extents())};
  }
  if (x.stride(2) != 1 || (n > 1 && x.stride(1) != d)) {
    return {errc::shape_mismatch, std::string(name) +
                                      ": expected each token's (n_hc, d) block dense, got strides " +
                                      shape_string<3>(x.strides())};
  }
  return {};
}

template <class T, std::size_t Rank>
status check_unit_inner(const tensor_view<T, Rank>& v, std::string_view name) {
  if (v.stride(Rank - 1) == 1 || v.extent(Rank - 1) <= 1) return {};
  return {errc::shape_mismatch, std::string(name) + ": expected unit stride along the last dimension, got " +
                                    std::to_string(v.stride(Rank - 1))};
}

// The elements a view can touch, as [first, last] addresses (strides are non-negative here).
template <class T, std::size_t Rank>
std::pair<std::uintptr_t, std::uintptr_t> address_range(const tensor_view<T, Rank>& v) {
  index_t last = 0;
  for (std::size_t k = 0; k < Rank; ++k) last += (v.extent(k) - 1) * v.stride(k);
  const auto first = reinterpret_cast<std::uintptr_t>(v.data());
  return {first, first + static_cast<std::uintptr_t>(last) * sizeof(T)};
}

// Whether two views can touch a common element.
template <class T, std::size_t R, class U, std::size_t S>
bool overlaps(const tensor_view<T, R>& a, const tensor_view<U, S>& b) {
  if (a.empty() || b.empty()) return false;
  const auto [a0, a1] = address_range(a);
  const auto [b0, b1] = address_range(b);
  return !(a1 < b0 || b1 < a0);
}

// An output that must not share memory with an input.
template <class T, std::size_t R, class U, std::size_t S>
status check_disjoint(const tensor_view<T, R>& out, const tensor_view<U, S>& in, std::string_view out_name,
                      std::string_view in_name) {
  if (!overlaps(out, in)) return {};
  return {errc::invalid_argument, std::string(out_name) + ": overlaps " + std::string(in_name)};
}

// An output that is either exactly the input view (in place) or disjoint from it.
template <std::size_t Rank>
status check_in_place_or_disjoint(const tensor_view<float, Rank>& out,
                                  const tensor_view<const float, Rank>& in, std::string_view out_name,
                                  std::string_view in_name) {
  if (out.data() == in.data() && out.extents() == in.extents() && out.strides() == in.strides()) return {};
  if (!overlaps(out, in)) return {};
  return {errc::invalid_argument,
          std::string(out_name) + ": overlaps " + std::string(in_name) + " without being the same view"};
}

inline status check_settings(const hc_settings& s) {
  if (s.sinkhorn_iters < 1)
    return {errc::invalid_argument,
            "hc_settings.sinkhorn_iters: expected >= 1, got " + std::to_string(s.sinkhorn_iters)};
  if (!(s.rms_norm_eps >= 0.0f) || !(s.hc_eps >= 0.0f))
    return {errc::invalid_argument, "hc_settings: rms_norm_eps and hc_eps must be non-negative"};
  return {};
}

// out[k] = sum_j a[j] * x[j*d + k] for k in [k0, k1), stored as `num` stores activations; x is one
// token's dense (n, d) block.
inline void collapse_streams(const float* x, index_t n, index_t d, const float* a, index_t k0, index_t k1,
                             float* out, numerics num) {
  for (index_t k = k0; k < k1; ++k) out[k] = 0.0f;
  for (index_t j = 0; j < n; ++j) {
    const float aj = a[j];
    const float* xj = x + j * d;
    for (index_t k = k0; k < k1; ++k) out[k] += aj * xj[k];
  }
  to_activation(num, std::span<float>(out + k0, static_cast<std::size_t>(k1 - k0)));
}

// 1 / sqrt(mean + eps) from a sum of squares over `width` values.
inline float rms_factor(float sum_sq, index_t width, float eps) {
  return 1.0f / std::sqrt(sum_sq / static_cast<float>(width) + eps);
}
}  // namespace detail

// ---- hc_pre_op: coefficients of one site and the collapsed sublayer input ---------------------
struct hc_pre_op {
  struct params {
    using op = hc_pre_op;
    tensor_view<const float, 3> x;  // (tokens, n_hc, d) residual streams
    hc_site_weights w;
    hc_settings settings;
    residual_map map = residual_map::sinkhorn;
    tensor_view<float, 2> x_in;      // (tokens, d) sublayer input; must not overlap x (checked)
    hc_state s;                      // (tokens, n_hc), (tokens, n_hc), (tokens, n_hc, n_hc)
    numerics num = numerics::exact;  // released: x_in rounded to BF16
  };

  static status check(const params& p) {
    DSV4_TRY(detail::check_streams(p.x, "x"));
    DSV4_TRY(detail::check_settings(p.settings));
    const index_t t = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    DSV4_TRY(check_shape(p.w.fn, {mix_width(n), n * d}, "fn"));
    DSV4_TRY(detail::check_unit_inner(p.w.fn, "fn"));
    DSV4_TRY(check_shape(p.w.scale, {3}, "scale"));
    DSV4_TRY(check_shape(p.w.base, {mix_width(n)}, "base"));
    DSV4_TRY(check_shape(p.x_in, {t, d}, "x_in"));
    DSV4_TRY(detail::check_unit_inner(p.x_in, "x_in"));
    DSV4_TRY(check_shape(p.s.pre, {t, n}, "pre"));
    DSV4_TRY(check_shape(p.s.post, {t, n}, "post"));
    DSV4_TRY(check_shape(p.s.comb, {t, n, n}, "comb"));
    return detail::check_disjoint(p.x_in, p.x, "x_in", "x");
  }
};

namespace detail {

// emit(t, r, fn_r . x_t) for every mixing row r and token t, then emit(t, rows, x_t . x_t).
template <class Emit>
void mix_rows(const tensor_view<const float, 3>& x, const tensor_view<const float, 2>& fn, Emit&& emit) {
  const index_t tokens = x.extent(0), width = x.extent(1) * x.extent(2), rows = fn.extent(0);
  std::vector<float> mix(static_cast<std::size_t>(tokens * rows));  // (tokens, rows)
  [[maybe_unused]] const status st =
      gemm(f32_matrix{fn}, tensor_view<const float, 2>(x.data(), {tokens, width}, {x.stride(0), 1}),
           tensor_view<float, 2>(mix.data(), {tokens, rows}));
  DSV4_ASSERT(st.ok(), "hc_pre: mixing GEMM shapes");
  for (index_t t = 0; t < tokens; ++t)
    for (index_t r = 0; r < rows; ++r) emit(t, r, mix[static_cast<std::size_t>(t * rows + r)]);
  parallel_for(0, tokens, [&](index_t t) { emit(t, rows, sum_squares(x.data() + t * x.stride(0), width)); });
}

// The CPU kernel of hc_pre_op.
inline status hc_pre_cpu(const hc_pre_op::params& p) {
  DSV4_TRY(hc_pre_op::check(p));
  const index_t tokens = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
  const index_t width = n * d, rows = mix_width(n);
  const auto token = [&](index_t t) { return p.x.data() + t * p.x.stride(0); };
  // The slot raw mixing row r of token t is parked in until stage 2 turns it into a coefficient.
  const auto slot = [&](index_t t, index_t r) -> float& {
    if (r < n) return p.s.pre(t, r);
    if (r < 2 * n) return p.s.post(t, r - n);
    return p.s.comb(t, (r - 2 * n) / n, (r - 2 * n) % n);
  };

  // Stage 1: the raw mixing rows into their slots and each token's sum of squares (for the RMS)
  // into x_in(t, 0), until stage 3 overwrites it.
  mix_rows(p.x, p.w.fn, [&](index_t t, index_t r, float v) {
    if (r == rows)
      p.x_in(t, 0) = v;
    else
      slot(t, r) = v;
  });

  // Stage 2: per token, the activations and the residual matrix.
  const float s_pre = p.w.scale(0), s_post = p.w.scale(1), s_res = p.w.scale(2);
  parallel_for(0, tokens, [&](index_t t) {
    const float rho = detail::rms_factor(p.x_in(t, 0), width, p.settings.rms_norm_eps);
    for (index_t j = 0; j < n; ++j) {
      p.s.pre(t, j) = sigmoid(p.s.pre(t, j) * rho * s_pre + p.w.base(j)) + p.settings.hc_eps;
      p.s.post(t, j) = 2.0f * sigmoid(p.s.post(t, j) * rho * s_post + p.w.base(n + j));
    }
    float m[max_hc_mult * max_hc_mult];  // (n, n) logits, then the residual matrix
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < n; ++j)
        m[i * n + j] = p.s.comb(t, i, j) * rho * s_res + p.w.base(2 * n + i * n + j);
    if (p.map == residual_map::sinkhorn)
      sinkhorn_project(m, static_cast<int>(n), p.settings.sinkhorn_iters, p.settings.hc_eps);
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < n; ++j) p.s.comb(t, i, j) = m[i * n + j];
  });

  // Stage 3: x_in = sum_j pre_j X_j, one index per (token, channel block).
  const index_t blocks = (d + detail::channel_block - 1) / detail::channel_block;
  parallel_for(0, tokens * blocks, [&](index_t i) {
    const index_t t = i / blocks, k0 = (i % blocks) * detail::channel_block;
    float pre[max_hc_mult];
    for (index_t j = 0; j < n; ++j) pre[j] = p.s.pre(t, j);
    detail::collapse_streams(token(t), n, d, pre, k0, std::min(d, k0 + detail::channel_block),
                             p.x_in.data() + t * p.x_in.stride(0), p.num);
  });
  return {};
}
}  // namespace detail

// ---- hc_post_op: X'_j = post_j * y + sum_i comb[i][j] X_i -------------------------------------
struct hc_post_op {
  struct params {
    using op = hc_post_op;
    tensor_view<const float, 2> y;     // (tokens, d) sublayer output
    tensor_view<const float, 3> x;     // (tokens, n_hc, d) residual streams before the sublayer
    tensor_view<const float, 2> post;  // (tokens, n_hc)
    tensor_view<const float, 3> comb;  // (tokens, n_hc, n_hc)
    tensor_view<float, 3> out;       // (tokens, n_hc, d); the very view x (in place) or disjoint from x and y
    numerics num = numerics::exact;  // released: out rounded to BF16 once
  };

  static status check(const params& p) {
    DSV4_TRY(detail::check_streams(p.x, "x"));
    const index_t t = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    DSV4_TRY(check_shape(p.y, {t, d}, "y"));
    DSV4_TRY(detail::check_unit_inner(p.y, "y"));
    DSV4_TRY(check_shape(p.post, {t, n}, "post"));
    DSV4_TRY(check_shape(p.comb, {t, n, n}, "comb"));
    DSV4_TRY(check_shape(p.out, {t, n, d}, "out"));
    DSV4_TRY(detail::check_streams(tensor_view<const float, 3>(p.out), "out"));
    DSV4_TRY(detail::check_in_place_or_disjoint(p.out, p.x, "out", "x"));
    return detail::check_disjoint(p.out, p.y, "out", "y");
  }
};

namespace detail {
// The CPU kernel of hc_post_op.
inline status hc_post_cpu(const hc_post_op::params& p) {
  DSV4_TRY(hc_post_op::check(p));
  const index_t tokens = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
  constexpr index_t cb = detail::channel_block;
  const index_t blocks = (d + cb - 1) / cb;
  parallel_for(0, tokens * blocks, [&](index_t i) {
    const index_t t = i / blocks, k0 = (i % blocks) * cb, len = std::min(d, k0 + cb) - k0;
    // The block of every source stream is read before any destination is written: in place is safe.
    float src[max_hc_mult * cb];  // (n, len)
    float acc[cb];                // (len)
    const float* x = p.x.data() + t * p.x.stride(0) + k0;
    for (index_t s = 0; s < n; ++s)
      for (index_t k = 0; k < len; ++k) src[s * cb + k] = x[s * d + k];
    const float* y = p.y.data() + t * p.y.stride(0) + k0;
    float* out = p.out.data() + t * p.out.stride(0) + k0;
    for (index_t j = 0; j < n; ++j) {
      for (index_t k = 0; k < len; ++k) acc[k] = 0.0f;
      for (index_t s = 0; s < n; ++s) {
        const float c = p.comb(t, s, j);  // source s -> destination j: the transpose of comb
        for (index_t k = 0; k < len; ++k) acc[k] += c * src[s * cb + k];
      }
      const float pj = p.post(t, j);
      for (index_t k = 0; k < len; ++k) out[j * d + k] = to_activation(p.num, pj * y[k] + acc[k]);
    }
  });
  return {};
}
}  // namespace detail

// ---- hc_expand_op: the embedding copied into every stream (spec §2.1 step 2) -----------------
struct hc_expand_op {
  struct params {
    using op = hc_expand_op;
    tensor_view<const float, 2> e;   // (tokens, d)
    tensor_view<float, 3> x;         // (tokens, n_hc, d)
    numerics num = numerics::exact;  // released: x rounded to BF16
  };

  static status check(const params& p) {
    DSV4_TRY(check_shape(p.x, {p.e.extent(0), -1, p.e.extent(1)}, "x"));
    if (p.x.extent(1) < 1)
      return {errc::shape_mismatch, "x: expected at least one stream, got " + shape_string<3>(p.x.extents())};
    return {};
  }
};

namespace detail {
// The CPU kernel of hc_expand_op.
inline status hc_expand_cpu(const hc_expand_op::params& p) {
  DSV4_TRY(hc_expand_op::check(p));
  const index_t n = p.x.extent(1), d = p.x.extent(2);
  parallel_for(0, p.e.extent(0), [&](index_t t) {
    for (index_t j = 0; j < n; ++j)
      for (index_t k = 0; k < d; ++k) p.x(t, j, k) = to_activation(p.num, p.e(t, k));
  });
  return {};
}
}  // namespace detail

// ---- hc_head_op: h = sum_j a_j X_j before the final norm (spec §3.4) --------------------------
//   a_j = sigmoid((x . head_fn^T)_j * rho * scale + base_j) + hc_eps; no post, no residual matrix.
struct hc_head_op {
  struct params {
    using op = hc_head_op;
    tensor_view<const float, 3> x;  // (tokens, n_hc, d)
    hc_head_weights w;
    hc_settings settings;
    tensor_view<float, 2> h;         // (tokens, d); must not overlap x
    numerics num = numerics::exact;  // released: h rounded to BF16
  };

  static status check(const params& p) {
    DSV4_TRY(detail::check_streams(p.x, "x"));
    DSV4_TRY(detail::check_settings(p.settings));
    const index_t t = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    DSV4_TRY(check_shape(p.w.fn, {n, n * d}, "head fn"));
    DSV4_TRY(detail::check_unit_inner(p.w.fn, "head fn"));
    DSV4_TRY(check_shape(p.w.scale, {1}, "head scale"));
    DSV4_TRY(check_shape(p.w.base, {n}, "head base"));
    DSV4_TRY(check_shape(p.h, {t, d}, "h"));
    DSV4_TRY(detail::check_unit_inner(p.h, "h"));
    return detail::check_disjoint(p.h, p.x, "h", "x");
  }
};

namespace detail {
// The CPU kernel of hc_head_op.
inline status hc_head_cpu(const hc_head_op::params& p) {
  DSV4_TRY(hc_head_op::check(p));
  const index_t n = p.x.extent(1), d = p.x.extent(2), width = n * d;
  parallel_for(0, p.x.extent(0), [&](index_t t) {
    const float* x = p.x.data() + t * p.x.stride(0);
    const float rho = detail::rms_factor(sum_squares(x, width), width, p.settings.rms_norm_eps);
    float a[max_hc_mult];
    for (index_t j = 0; j < n; ++j) {
      const float mix = dot(x, p.w.fn.data() + j * p.w.fn.stride(0), width) * rho;
      a[j] = sigmoid(mix * p.w.scale(0) + p.w.base(j)) + p.settings.hc_eps;
    }
    detail::collapse_streams(x, n, d, a, 0, d, p.h.data() + t * p.h.stride(0), p.num);
  });
  return {};
}
}  // namespace detail

}  // namespace dsv4::mhc

namespace dsv4 {
template <>
struct kernel<mhc::hc_pre_op, cpu> {
  static status run(const mhc::hc_pre_op::params& p) { return mhc::detail::hc_pre_cpu(p); }
};
template <>
struct kernel<mhc::hc_post_op, cpu> {
  static status run(const mhc::hc_post_op::params& p) { return mhc::detail::hc_post_cpu(p); }
};
template <>
struct kernel<mhc::hc_expand_op, cpu> {
  static status run(const mhc::hc_expand_op::params& p) { return mhc::detail::hc_expand_cpu(p); }
};
template <>
struct kernel<mhc::hc_head_op, cpu> {
  static status run(const mhc::hc_head_op::params& p) { return mhc::detail::hc_head_cpu(p); }
};
}  // namespace dsv4

namespace dsv4::mhc {

// ---- residual policies --------------------------------------------------------------------------

namespace detail {
inline status check_stream_count(index_t got, int expected, std::string_view name) {
  if (got == expected) return {};
  return {errc::shape_mismatch, std::string(name) + ": expected " + std::to_string(expected) +
                                    " residual streams, got " + std::to_string(got)};
}
}  // namespace detail

// Hyper-connections with N streams; Map chooses mHC (Sinkhorn) or the unconstrained original, Num
// the exact fp32 path or the released BF16 streams. Backend selects the kernels (cpu by default;
// extra arguments, e.g. a CUDA stream, pass through).
template <int N, residual_map Map, numerics Num = numerics::exact>
struct hyper_connection {
  static_assert(N >= 1 && N <= max_hc_mult, "dsv4::mhc::hyper_connection: N must be in [1, max_hc_mult]");
  static constexpr int streams = N;
  static constexpr residual_map map = Map;
  static constexpr numerics activation_numerics = Num;
  using site_weights = hc_site_weights;
  using head_weights = hc_head_weights;
  using site_state = hc_state;

  static constexpr index_t state_floats(index_t tokens) { return tokens * mix_width(N); }

  // scratch: state_floats(tokens) floats, laid out as pre, post, comb.
  static site_state make_state(float* scratch, index_t tokens) {
    return {{scratch, {tokens, N}},
            {scratch + tokens * N, {tokens, N}},
            {scratch + 2 * tokens * N, {tokens, N, N}}};
  }

  template <class Backend = cpu, class... Extra>
  static status expand(tensor_view<const float, 2> e, tensor_view<float, 3> x, Extra&&... extra) {
    DSV4_TRY(detail::check_stream_count(x.extent(1), N, "x"));
    return run<Backend>(hc_expand_op::params{e, x, Num}, static_cast<Extra&&>(extra)...);
  }

  template <class Backend = cpu, class... Extra>
  static status pre(const site_weights& w, const hc_settings& cfg, tensor_view<const float, 3> x,
                    tensor_view<float, 2> x_in, const site_state& s, Extra&&... extra) {
    DSV4_TRY(detail::check_stream_count(x.extent(1), N, "x"));
    return run<Backend>(hc_pre_op::params{x, w, cfg, Map, x_in, s, Num}, static_cast<Extra&&>(extra)...);
  }

  template <class Backend = cpu, class... Extra>
  static status post(tensor_view<const float, 2> y, tensor_view<const float, 3> x, const site_state& s,
                     tensor_view<float, 3> out, Extra&&... extra) {
    DSV4_TRY(detail::check_stream_count(x.extent(1), N, "x"));
    return run<Backend>(hc_post_op::params{y, x, s.post, s.comb, out, Num}, static_cast<Extra&&>(extra)...);
  }

  template <class Backend = cpu, class... Extra>
  static status head(const head_weights& w, const hc_settings& cfg, tensor_view<const float, 3> x,
                     tensor_view<float, 2> h, Extra&&... extra) {
    DSV4_TRY(detail::check_stream_count(x.extent(1), N, "x"));
    return run<Backend>(hc_head_op::params{x, w, cfg, h, Num}, static_cast<Extra&&>(extra)...);
  }
};

// The released residual scheme: manifold-constrained hyper-connections (hc_mult = 4 in V4), fp32
// by default; mhc<4, numerics::released> keeps the released model's BF16 streams.
template <int N, numerics Num = numerics::exact>
using mhc = hyper_connection<N, residual_map::sinkhorn, Num>;

// Hyper-connections whose residual matrix is unconstrained (for stability comparisons only).
template <int N>
using unconstrained_hc = hyper_connection<N, residual_map::unconstrained>;

static_assert(residual_policy<mhc<4>>);
static_assert(residual_policy<mhc<4, numerics::released>>);
static_assert(residual_policy<unconstrained_hc<4>>);

}  // namespace dsv4::mhc
