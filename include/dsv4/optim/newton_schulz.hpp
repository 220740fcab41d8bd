// newton_schulz<Schedule>: approximate orthogonalization of a matrix, the heart of Muon (spec
// §12.2, DeepSeek-V4 report eq. 28).
//
// X_0 = G / (||G||_F + eps), then per step (a, b, c):  X <- a X + b (X X^T) X + c (X X^T)^2 X.
// Each step applies the odd polynomial p(s) = a s + b s^3 + c s^5 to every singular value of X
// and keeps the singular vectors, so the result approaches the polar factor U V^T of G = U S V^T.
// V4's hybrid schedule runs 8 steps of (3.4445, -4.7750, 2.0315), which push every singular value
// quickly into a band around 1 (but p(1) != 1, so they oscillate there), then 2 steps of
// (2, -1.5, 0.5), for which p(1) = 1 and p'(1) = 0: they pull that band onto 1 quadratically.
// No public optimizer can express such a schedule; here it is a compile-time list of steps, a
// structural ns_schedule used as a template argument, so each step's coefficients are constants.
//
// Work happens on the small Gram side: for a wide X (n <= m) the Gram matrix A = X X^T is (n, n)
// and X <- a X + (b A + c A^2) X; for a tall X, A = X^T X is (m, m) and X <- a X + X (b A + c A^2),
// the same polynomial. A and A^2 are symmetric, so their products compute only the tiles on and
// above the diagonal and mirror the rest (sgemm_op's `symmetric`): one step executes
// s (s + 1) (l + s) + 2 s^2 l FLOPs for s = min(n, m), l = max(n, m), against 4 s^2 l + 2 s^3
// for plain products (2/3 of that for a square X, 13/18 for a 4:1 one).
// Products run through sgemm_op in fp32; ns_precision::bf16 rounds every matrix that feeds a product
// (X, A and b A + c A^2) to bf16 first, emulating bf16 matmuls with fp32 accumulation.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/sgemm.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/optim/state.hpp"

namespace dsv4::optim {

// One step's polynomial p(s) = a s + b s^3 + c s^5.
struct ns_step {
  float a, b, c;
  constexpr double operator()(double s) const { return s * (a + s * s * (b + s * s * c)); }
};

// A fixed list of steps; structural, so it can be a template argument.
template <std::size_t N>
struct ns_schedule {
  static_assert(N >= 1, "dsv4 ns_schedule: a schedule needs at least one step");
  std::array<ns_step, N> steps;

  static constexpr std::size_t size() { return N; }
  // The same step n times.
  static constexpr ns_schedule repeat(ns_step s) {
    ns_schedule r{};
    for (auto& x : r.steps) x = s;
    return r;
  }
  // This schedule followed by another.
  template <std::size_t M>
  constexpr ns_schedule<N + M> then(const ns_schedule<M>& next) const {
    ns_schedule<N + M> r{};
    for (std::size_t i = 0; i < N; ++i) r.steps[i] = steps[i];
    for (std::size_t i = 0; i < M; ++i) r.steps[N + i] = next.steps[i];
    return r;
  }
};

template <class T>
inline constexpr bool is_ns_schedule_v = false;
template <std::size_t N>
inline constexpr bool is_ns_schedule_v<ns_schedule<N>> = true;

// Keller Jordan's quintic: a steep slope at 0 (3.4445) so small singular values grow fast, at the
// price of never settling exactly on 1.
inline constexpr ns_step quintic_step{3.4445f, -4.7750f, 2.0315f};
// p(1) = 1, p'(1) = 0: converges quadratically once singular values are near 1.
inline constexpr ns_step stabilizing_step{2.0f, -1.5f, 0.5f};

// DeepSeek-V4 (spec §12.2): 8 quintic steps, then 2 stabilizing ones.
inline constexpr auto v4_hybrid_schedule =
    ns_schedule<8>::repeat(quintic_step).then(ns_schedule<2>::repeat(stabilizing_step));
// The 5-step schedule of the original Muon.
inline constexpr auto keller_jordan_schedule = ns_schedule<5>::repeat(quintic_step);

enum class ns_precision : unsigned char {
  fp32,  // fp32 products, fp32 storage
  bf16,  // operands of every product rounded to bf16, fp32 accumulation
};

template <auto Schedule = v4_hybrid_schedule>
struct newton_schulz {
  static_assert(is_ns_schedule_v<std::remove_cv_t<decltype(Schedule)>>,
                "dsv4 newton_schulz<Schedule>: Schedule must be an ns_schedule<N> value, e.g. "
                "dsv4::optim::v4_hybrid_schedule or ns_schedule<5>::repeat(quintic_step)");

  static constexpr auto schedule = Schedule;
  // Added to ||G||_F before dividing: keeps a zero gradient at zero (no 0/0) and is far below the
  // norm of any gradient worth a step (a norm of 1e-7 over a matrix is already float noise).
  static constexpr float eps = 1e-7f;

  struct params {
    using op = newton_schulz;
    tensor_view<const float, 2> in;  // (n, m) the matrix G to orthogonalize
    tensor_view<float, 2> out;       // (n, m) contiguous; the same view as `in`, or disjoint from it
    std::span<float> workspace;      // workspace_size(n, m) floats, disjoint from in and out
    ns_precision precision = ns_precision::fp32;
  };

  // Floats of workspace for an (n, m) input: one more copy of X, the Gram matrix A, the
  // polynomial B = b A + c A^2, one partial sum per row for the norm, and the largest product's
  // packing buffers. -1 for a negative extent, or an n m or max(n, m) past 2^50 (where the packing
  // buffers could overflow).
  static constexpr index_t workspace_size(index_t n, index_t m) {
    index_t nm = 0;
    if (n < 0 || m < 0 || !checked_mul(n, m, nm) || nm > (index_t{1} << 50) ||
        std::max(n, m) > (index_t{1} << 50))
      return -1;
    // Every term below is at most a few times n m (s^2 <= n m): no overflow from here.
    const index_t s = std::min(n, m);
    return nm + 2 * s * s + n + gemm_workspace(n, m);
  }

  // FLOPs of one call's products as executed: the Gram matrix and A^2 count their upper
  // triangle with the diagonal, s (s + 1) / 2 dot products each (the tiles that straddle the
  // diagonal also compute a few elements below it: not counted, so the rate is a lower bound).
  static constexpr double flops(index_t n, index_t m) {
    const double s = static_cast<double>(std::min(n, m)), l = static_cast<double>(std::max(n, m));
    return static_cast<double>(schedule.size()) * (s * (s + 1) * (l + s) + 2.0 * s * s * l);
  }
  // The same products without the symmetry (what a plain sgemm iteration executes).
  static constexpr double dense_flops(index_t n, index_t m) {
    const double s = static_cast<double>(std::min(n, m)), l = static_cast<double>(std::max(n, m));
    return static_cast<double>(schedule.size()) * (4.0 * s * s * l + 2.0 * s * s * s);
  }

  static status check(const params& p) {
    DSV4_TRY(check_shape(p.in, {any_extent, any_extent}, "newton_schulz in"));
    DSV4_TRY(check_shape(p.out, p.in.extents(), "newton_schulz out"));
    DSV4_TRY(check_contiguous(p.out, "newton_schulz out"));
    if (p.precision != ns_precision::fp32 && p.precision != ns_precision::bf16)
      return {errc::invalid_argument, "newton_schulz precision: not an ns_precision value"};
    const index_t need = workspace_size(p.in.extent(0), p.in.extent(1));
    if (need < 0)
      return {errc::out_of_range, "newton_schulz in: " + shape_string<2>(p.in.extents()) +
                                      " is too large for a workspace size in 64 bits"};
    if (static_cast<index_t>(p.workspace.size()) < need) {
      return {errc::invalid_argument, "newton_schulz workspace: " + std::to_string(p.workspace.size()) +
                                          " floats, needs workspace_size(n, m) = " + std::to_string(need)};
    }
    const bool same = p.out.data() == p.in.data() && p.out.strides() == p.in.strides();
    if (!same && overlaps(p.out, p.in))
      return {errc::invalid_argument, "newton_schulz out: overlaps in without being the same view"};
    const tensor_view<const float, 1> ws(p.workspace.data(), {need});  // the part a call uses
    if (overlaps(ws, p.in) || overlaps(ws, p.out))
      return {errc::invalid_argument, "newton_schulz workspace: overlaps in or out"};
    return {};
  }

  static constexpr index_t gemm_workspace(index_t n, index_t m) {
    const index_t s = std::min(n, m), l = std::max(n, m);
    return std::max({sgemm_op::workspace_size(s, s, l), sgemm_op::workspace_size(s, s, s),
                     sgemm_op::workspace_size(n, m, s)});
  }
};

}  // namespace dsv4::optim

namespace dsv4 {

template <auto Schedule>
struct kernel<optim::newton_schulz<Schedule>, cpu> {
  using ns = optim::newton_schulz<Schedule>;

  static status run(const typename ns::params& p) {
    DSV4_TRY(ns::check(p));
    const index_t n = p.in.extent(0), m = p.in.extent(1), s = std::min(n, m);
    if (n == 0 || m == 0) return {};
    const bool wide = n <= m;
    const bool bf16 = p.precision == optim::ns_precision::bf16;
    float* spare = p.workspace.data();  // (n, m) the other X buffer
    float* gram = spare + n * m;        // (s, s) A
    float* poly = gram + s * s;         // (s, s) B = b A + c A^2
    float* row_sums = poly + s * s;     // (n)
    const std::span<float> gemm_ws = p.workspace.subspan(static_cast<std::size_t>(n * m + 2 * s * s + n));

    // Step i reads one X buffer and writes the other; start in the buffer that makes the last
    // step land in `out`.
    float* x = ns::schedule.size() % 2 == 0 ? p.out.data() : spare;
    float* y = x == spare ? p.out.data() : spare;
    const float inv_norm = 1.0f / (frobenius_norm(p.in, row_sums) + ns::eps);
    // Row by row, so that `out` may be `in`: each element is read before it is written.
    optim::for_each_row({1, n, m}, [&](index_t, index_t i) {
      for (index_t j = 0; j < m; ++j) x[i * m + j] = round_if(bf16, p.in(i, j) * inv_norm);
    });

    for (const optim::ns_step& st : ns::schedule.steps) {
      const tensor_view<const float, 2> xv(x, {n, m});
      const tensor_view<float, 2> a_v(gram, {s, s}), b_v(poly, {s, s});
      // A = X X^T (wide) or X^T X (tall), symmetric.
      DSV4_TRY(dsv4::run<cpu>(sgemm_op::params{
          xv, xv, a_v, gemm_ws, 1.0f, 0.0f, wide ? sgemm_op::transpose::no : sgemm_op::transpose::yes,
          wide ? sgemm_op::transpose::yes : sgemm_op::transpose::no, true}));
      if (bf16) round_rows(gram, s, s);
      // B = c A A + b A, symmetric as A is (exactly: A's mirrored halves are equal bits); A is
      // the product's addend, read where the beta term needs it (no copy into B first).
      constexpr auto no = sgemm_op::transpose::no;
      DSV4_TRY(dsv4::run<cpu>(sgemm_op::params{a_v, a_v, b_v, gemm_ws, st.c, st.b, no, no, true, a_v}));
      if (bf16) round_rows(poly, s, s);
      // Y = a X + B X (wide) or a X + X B (tall), X the addend.
      const tensor_view<float, 2> yv(y, {n, m});
      DSV4_TRY(wide ? dsv4::run<cpu>(sgemm_op::params{b_v, xv, yv, gemm_ws, 1.0f, st.a, no, no, false, xv})
                    : dsv4::run<cpu>(sgemm_op::params{xv, b_v, yv, gemm_ws, 1.0f, st.a, no, no, false, xv}));
      if (bf16) round_rows(y, n, m);
      std::swap(x, y);
    }
    return {};
  }

 private:
  static float round_if(bool bf16, float v) { return bf16 ? round_to_bf16(v) : v; }

  // x (rows, cols) contiguous rounded to bf16 in place.
  static void round_rows(float* x, index_t rows, index_t cols) {
    optim::for_each_row({1, rows, cols}, [&](index_t, index_t i) {
      for (index_t j = i * cols; j < (i + 1) * cols; ++j) x[j] = round_to_bf16(x[j]);
    });
  }

  // ||G||_F from per-row partial sums (double inside a row, stored as float) added in row order
  // in double: independent of the thread count.
  static float frobenius_norm(const tensor_view<const float, 2>& g, float* row_sums) {
    optim::for_each_row({1, g.extent(0), g.extent(1)}, [&](index_t, index_t i) {
      double acc = 0;
      for (index_t j = 0; j < g.extent(1); ++j) acc += static_cast<double>(g(i, j)) * g(i, j);
      row_sums[i] = static_cast<float>(acc);
    });
    double total = 0;
    for (index_t i = 0; i < g.extent(0); ++i) total += row_sums[i];
    return static_cast<float>(std::sqrt(total));
  }
};

}  // namespace dsv4
