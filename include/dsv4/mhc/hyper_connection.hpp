// Manifold-constrained hyper-connections (mHC, spec §3.2-§3.4, §16.5, §18.3): the operations of one
// mHC site (HC_pre, HC_post), the stream expansion at the embedding and the HC head, for a batch of
// tokens, plus the residual policies built from them (constrained_hc<N> and the unconstrained variant).
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
// GEMM of the tokens by fn through core/linear.hpp (f32_matrix): its rows are split over the threads,
// a batch reads fn once per pass of 64 tokens, and its accumulation-order contract (dsv4::dot's
// lanes and tree, fused products where the target has FMA) makes a batch equal its tokens one at a
// time bit for bit.
//
// Memory: nothing here allocates. The GEMM's (tokens, 24) products land in hc_state::mix, scratch
// the caller owns with the rest of the site state (hyper_connection::state_floats sizes it,
// make_state carves it, both from one layout function). Every check runs before the first write:
// no output or state view may share a byte with an input or with another output (in place only
// where an operation says so, as the very same view), and a view with a negative extent is refused
// whatever the other views say.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/workspace.hpp"
#include "dsv4/mhc/concepts.hpp"
#include "dsv4/mhc/sinkhorn.hpp"

namespace dsv4::mhc::detail {
// cpu_kernel<Op>::run(p) is the CPU kernel of an operation of this module, for params its op's check
// accepted: each op specializes it next to its definition (here and in residual.hpp).
template <class Op>
struct cpu_kernel {};
}  // namespace dsv4::mhc::detail

namespace dsv4 {
// kernel<Op, cpu> of every operation of mhc: its check, then its cpu_kernel.
template <class Op>
requires requires(const typename Op::params& p) {
  { mhc::detail::cpu_kernel<Op>::run(p) } -> std::same_as<status>;
}
struct kernel<Op, cpu> {
  static status run(const typename Op::params& p) {
    DSV4_TRY(Op::check(p));
    return mhc::detail::cpu_kernel<Op>::run(p);
  }
};
}  // namespace dsv4

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

// One site's coefficients for a batch of tokens, and HC_pre's scratch: HC_pre writes all four
// views, HC_post reads post and comb. The four must not overlap one another.
struct hc_state {
  tensor_view<float, 2> pre;   // (tokens, n_hc)
  tensor_view<float, 2> post;  // (tokens, n_hc)
  tensor_view<float, 3> comb;  // (tokens, n_hc, n_hc)
  tensor_view<float, 2> mix;   // (tokens, mix_width(n_hc)) the raw mixing products; unit inner stride
};

// The one layout of a site state over caller memory: with a null base it only counts (the size
// query), over the caller's floats it carves the same views. Each view starts on a 64-byte line of
// the offsets (l.used); l.used saturates at SIZE_MAX when tokens < 0 or a size does not fit.
inline hc_state hc_state_layout(workspace_layout& l, index_t tokens, index_t n_hc) {
  // tokens * per_token, or a count no memory holds (take() saturates) when tokens < 0 or the
  // product does not fit.
  const auto floats = [&](index_t per_token) {
    index_t c = 0;
    return tokens >= 0 && checked_mul(tokens, per_token, c) ? c : INT64_MAX;
  };
  hc_state s;
  s.pre = {l.take<float>(floats(n_hc)), {tokens, n_hc}};
  s.post = {l.take<float>(floats(n_hc)), {tokens, n_hc}};
  s.comb = {l.take<float>(floats(n_hc * n_hc)), {tokens, n_hc, n_hc}};
  s.mix = {l.take<float>(floats(mix_width(n_hc))), {tokens, mix_width(n_hc)}};
  return s;
}

namespace detail {
// Channels one parallel_for index handles in the stream collapse and in HC_post.
inline constexpr index_t channel_block = 256;

// x (tokens, n_hc, d): each token's n_hc * d values must be dense and stream-major (spec §18.3).
inline status check_streams(const tensor_view<const float, 3>& x, std::string_view name) {
  DSV4_TRY(check_shape(x, {any_extent, any_extent, any_extent}, name));
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

// An output with memory behind it whose elements are all distinct (core's has_distinct_elements).
template <std::size_t Rank>
status check_output_view(const tensor_view<float, Rank>& v, std::string_view name) {
  if (v.empty()) return {};
  if (v.data() == nullptr) return {errc::invalid_argument, std::string(name) + ": null data"};
  if (!has_distinct_elements(v))
    return {errc::invalid_argument, std::string(name) + ": strides " + shape_string<Rank>(v.strides()) +
                                        " make two elements share memory"};
  return {};
}

// A view's name and the bytes it spans (core's byte_span), for the overlap checks.
struct named_span {
  std::pair<const std::byte*, const std::byte*> bytes;
  std::string_view name;
};
template <class T, std::size_t Rank>
named_span span_of(const tensor_view<T, Rank>& v, std::string_view name) {
  return {byte_span(v), name};
}
inline bool intersect(const named_span& a, const named_span& b) { return spans_intersect(a.bytes, b.bytes); }

// Every output disjoint from every input and from every other output: "comb: overlaps fn".
inline status check_disjoint(std::initializer_list<named_span> outputs,
                             std::initializer_list<named_span> inputs) {
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    for (const named_span& i : inputs)
      if (intersect(*o, i))
        return {errc::invalid_argument, std::string(o->name) + ": overlaps " + std::string(i.name)};
    for (auto earlier = outputs.begin(); earlier != o; ++earlier)
      if (intersect(*o, *earlier))
        return {errc::invalid_argument, std::string(o->name) + ": overlaps " + std::string(earlier->name)};
  }
  return {};
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

inline status check_positive_finite(float v, std::string_view name) {
  if (v > 0.0f && std::isfinite(v)) return {};
  return {errc::invalid_argument,
          std::string(name) + ": expected a finite value > 0, got " + std::to_string(v)};
}

inline status check_settings(const hc_settings& s) {
  if (s.sinkhorn_iters < 1)
    return {errc::invalid_argument,
            "hc_settings.sinkhorn_iters: expected >= 1, got " + std::to_string(s.sinkhorn_iters)};
  DSV4_TRY(check_positive_finite(s.rms_norm_eps, "hc_settings.rms_norm_eps"));
  return check_positive_finite(s.hc_eps, "hc_settings.hc_eps");
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
    tensor_view<float, 2> x_in;      // (tokens, d) sublayer input
    hc_state s;                      // (tokens, n_hc), (tokens, n_hc), (tokens, n_hc, n_hc), mix
    numerics num = numerics::exact;  // released: x_in rounded to BF16
  };

  static status check(const params& p) {
    DSV4_TRY(detail::check_streams(p.x, "x"));
    DSV4_TRY(detail::check_settings(p.settings));
    DSV4_TRY(check_numerics(p.num));
    if (p.map != residual_map::sinkhorn && p.map != residual_map::unconstrained)
      return {errc::invalid_argument, "map: not a residual_map value"};
    const index_t t = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    DSV4_TRY(check_shape(p.w.fn, {mix_width(n), n * d}, "fn"));
    DSV4_TRY(detail::check_unit_inner(p.w.fn, "fn"));
    DSV4_TRY(check_shape(p.w.scale, {3}, "scale"));
    DSV4_TRY(check_shape(p.w.base, {mix_width(n)}, "base"));
    DSV4_TRY(check_shape(p.x_in, {t, d}, "x_in"));
    DSV4_TRY(detail::check_unit_inner(p.x_in, "x_in"));
    DSV4_TRY(detail::check_output_view(p.x_in, "x_in"));
    DSV4_TRY(check_shape(p.s.pre, {t, n}, "pre"));
    DSV4_TRY(detail::check_output_view(p.s.pre, "pre"));
    DSV4_TRY(check_shape(p.s.post, {t, n}, "post"));
    DSV4_TRY(detail::check_output_view(p.s.post, "post"));
    DSV4_TRY(check_shape(p.s.comb, {t, n, n}, "comb"));
    DSV4_TRY(detail::check_output_view(p.s.comb, "comb"));
    DSV4_TRY(check_shape(p.s.mix, {t, mix_width(n)}, "mix"));
    DSV4_TRY(detail::check_unit_inner(p.s.mix, "mix"));
    DSV4_TRY(detail::check_output_view(p.s.mix, "mix"));
    using detail::span_of;
    return detail::check_disjoint(
        {span_of(p.x_in, "x_in"), span_of(p.s.pre, "pre"), span_of(p.s.post, "post"),
         span_of(p.s.comb, "comb"), span_of(p.s.mix, "mix")},
        {span_of(p.x, "x"), span_of(p.w.fn, "fn"), span_of(p.w.scale, "scale"), span_of(p.w.base, "base")});
  }
};

namespace detail {
// The CPU kernel of hc_pre_op.
template <>
struct cpu_kernel<hc_pre_op> {
  static status run(const hc_pre_op::params& p) {
    const index_t tokens = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    const index_t width = n * d;
    if (tokens == 0) return {};
    const auto token = [&](index_t t) { return p.x.data() + t * p.x.stride(0); };

    // Stage 1: the raw mixing rows of every token, fn . x_t, into the scratch mix (tokens, rows),
    // and each token's sum of squares (for the RMS) into x_in(t, 0), until stage 3 overwrites it.
    DSV4_TRY(linear(f32_matrix{p.w.fn},
                    tensor_view<const float, 2>(p.x.data(), {tokens, width}, {p.x.stride(0), 1}), p.s.mix));
    parallel_for(0, tokens, [&](index_t t) { p.x_in(t, 0) = sum_squares(token(t), width); });

    // Stage 2: per token, the activations and the residual matrix.
    const float s_pre = p.w.scale(0), s_post = p.w.scale(1), s_res = p.w.scale(2);
    parallel_for(0, tokens, [&](index_t t) {
      const float rho = detail::rms_factor(p.x_in(t, 0), width, p.settings.rms_norm_eps);
      for (index_t j = 0; j < n; ++j) {
        p.s.pre(t, j) = sigmoid(p.s.mix(t, j) * rho * s_pre + p.w.base(j)) + p.settings.hc_eps;
        p.s.post(t, j) = 2.0f * sigmoid(p.s.mix(t, n + j) * rho * s_post + p.w.base(n + j));
      }
      float m[max_hc_mult * max_hc_mult];  // (n, n) logits, then the residual matrix
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < n; ++j)
          m[i * n + j] = p.s.mix(t, 2 * n + i * n + j) * rho * s_res + p.w.base(2 * n + i * n + j);
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
};
}  // namespace detail

// ---- hc_post_op: X'_j = post_j * y + sum_i comb[i][j] X_i -------------------------------------
struct hc_post_op {
  struct params {
    using op = hc_post_op;
    tensor_view<const float, 2> y;     // (tokens, d) sublayer output
    tensor_view<const float, 3> x;     // (tokens, n_hc, d) residual streams before the sublayer
    tensor_view<const float, 2> post;  // (tokens, n_hc)
    tensor_view<const float, 3> comb;  // (tokens, n_hc, n_hc)
    tensor_view<float, 3> out;         // (tokens, n_hc, d); the very view x (in place) or disjoint from x,
                                       // and disjoint from y, post and comb
    numerics num = numerics::exact;    // released: out rounded to BF16 once
  };

  static status check(const params& p) {
    DSV4_TRY(detail::check_streams(p.x, "x"));
    DSV4_TRY(check_numerics(p.num));
    const index_t t = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    DSV4_TRY(check_shape(p.y, {t, d}, "y"));
    DSV4_TRY(detail::check_unit_inner(p.y, "y"));
    DSV4_TRY(check_shape(p.post, {t, n}, "post"));
    DSV4_TRY(check_shape(p.comb, {t, n, n}, "comb"));
    DSV4_TRY(check_shape(p.out, {t, n, d}, "out"));
    DSV4_TRY(detail::check_streams(tensor_view<const float, 3>(p.out), "out"));
    DSV4_TRY(detail::check_output_view(p.out, "out"));
    DSV4_TRY(detail::check_in_place_or_disjoint(p.out, p.x, "out", "x"));
    using detail::span_of;
    return detail::check_disjoint({span_of(p.out, "out")},
                                  {span_of(p.y, "y"), span_of(p.post, "post"), span_of(p.comb, "comb")});
  }
};

namespace detail {
// The CPU kernel of hc_post_op.
template <>
struct cpu_kernel<hc_post_op> {
  static status run(const hc_post_op::params& p) {
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
};
}  // namespace detail

// ---- hc_expand_op: the embedding copied into every stream (spec §2.1 step 2) -----------------
struct hc_expand_op {
  struct params {
    using op = hc_expand_op;
    tensor_view<const float, 2> e;   // (tokens, d)
    tensor_view<float, 3> x;         // (tokens, n_hc, d); must not overlap e
    numerics num = numerics::exact;  // released: x rounded to BF16
  };

  static status check(const params& p) {
    DSV4_TRY(check_shape(p.e, {any_extent, any_extent}, "e"));
    if (p.e.extent(1) < 1)
      return {errc::shape_mismatch,
              "e: expected (tokens, d) with d >= 1, got " + shape_string<2>(p.e.extents())};
    DSV4_TRY(check_numerics(p.num));
    DSV4_TRY(check_shape(p.x, {p.e.extent(0), any_extent, p.e.extent(1)}, "x"));
    if (p.x.extent(1) < 1)
      return {errc::shape_mismatch, "x: expected at least one stream, got " + shape_string<3>(p.x.extents())};
    DSV4_TRY(detail::check_output_view(p.x, "x"));
    return detail::check_disjoint({detail::span_of(p.x, "x")}, {detail::span_of(p.e, "e")});
  }
};

namespace detail {
// The CPU kernel of hc_expand_op.
template <>
struct cpu_kernel<hc_expand_op> {
  static status run(const hc_expand_op::params& p) {
    const index_t n = p.x.extent(1), d = p.x.extent(2);
    parallel_for(0, p.e.extent(0), [&](index_t t) {
      for (index_t j = 0; j < n; ++j)
        for (index_t k = 0; k < d; ++k) p.x(t, j, k) = to_activation(p.num, p.e(t, k));
    });
    return {};
  }
};
}  // namespace detail

// ---- hc_head_op: h = sum_j a_j X_j before the final norm (spec §3.4) --------------------------
//   a_j = sigmoid((x . head_fn^T)_j * rho * scale + base_j) + hc_eps; no post, no residual matrix.
struct hc_head_op {
  struct params {
    using op = hc_head_op;
    tensor_view<const float, 3> x;  // (tokens, n_hc, d)
    hc_head_weights w;
    hc_settings settings;
    tensor_view<float, 2> h;         // (tokens, d); must not overlap x or the weights
    numerics num = numerics::exact;  // released: h rounded to BF16
  };

  static status check(const params& p) {
    DSV4_TRY(detail::check_streams(p.x, "x"));
    DSV4_TRY(detail::check_settings(p.settings));
    DSV4_TRY(check_numerics(p.num));
    const index_t t = p.x.extent(0), n = p.x.extent(1), d = p.x.extent(2);
    DSV4_TRY(check_shape(p.w.fn, {n, n * d}, "head fn"));
    DSV4_TRY(detail::check_unit_inner(p.w.fn, "head fn"));
    DSV4_TRY(check_shape(p.w.scale, {1}, "head scale"));
    DSV4_TRY(check_shape(p.w.base, {n}, "head base"));
    DSV4_TRY(check_shape(p.h, {t, d}, "h"));
    DSV4_TRY(detail::check_unit_inner(p.h, "h"));
    DSV4_TRY(detail::check_output_view(p.h, "h"));
    using detail::span_of;
    return detail::check_disjoint(
        {span_of(p.h, "h")}, {span_of(p.x, "x"), span_of(p.w.fn, "head fn"), span_of(p.w.scale, "head scale"),
                              span_of(p.w.base, "head base")});
  }
};

namespace detail {
// The CPU kernel of hc_head_op.
template <>
struct cpu_kernel<hc_head_op> {
  static status run(const hc_head_op::params& p) {
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
};
}  // namespace detail

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

  // Floats of scratch one site's state needs for `tokens` tokens (hc_state_layout); -1 when
  // tokens < 0 or the size does not fit in 64 bits.
  static index_t state_floats(index_t tokens) {
    workspace_layout size_only;
    hc_state_layout(size_only, tokens, N);
    return size_only.used == SIZE_MAX ? -1 : static_cast<index_t>(size_only.used / sizeof(float));
  }

  // The site state carved from state_floats(tokens) floats of scratch (the same layout).
  static site_state make_state(float* scratch, index_t tokens) {
    workspace_layout layout{reinterpret_cast<std::byte*>(scratch)};
    return hc_state_layout(layout, tokens, N);
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
// by default; constrained_hc<4, numerics::released> keeps the released model's BF16 streams.
template <int N, numerics Num = numerics::exact>
using constrained_hc = hyper_connection<N, residual_map::sinkhorn, Num>;

// Hyper-connections whose residual matrix is unconstrained (for stability comparisons only).
template <int N>
using unconstrained_hc = hyper_connection<N, residual_map::unconstrained>;

static_assert(residual_policy<constrained_hc<4>>);
static_assert(residual_policy<constrained_hc<4, numerics::released>>);
static_assert(residual_policy<unconstrained_hc<4>>);

}  // namespace dsv4::mhc
