// sgemm_op: C = alpha * op(A) * op(B) + beta * C in fp32 on the host (BLAS sgemm semantics), the
// matrix product the Newton-Schulz orthogonalization of Muon spends nearly all of its time in.
// (gemv.hpp's gemm_op is a different product: activations times a checkpoint-format weight.)
//
// The classic blocked scheme (Goto and van de Geijn): op(A) in (MC, KC) blocks and op(B) in
// (KC, NC) panels are packed into the caller's workspace in the order a register-blocked MR x NR
// micro-kernel reads them, so the micro-kernel streams both from cache with unit stride whatever
// the views' strides or transpositions. The micro-kernel is written with GCC vector
// extensions (8-float vectors: AVX2/FMA with -march=native, two SSE halves or scalars otherwise).
//
// Determinism: every element of C sums its K products in the same fixed order (KC blocks in
// order, p in order within a block), and parallel_for only distributes independent output tiles,
// so the result is bit-identical for any thread count. It differs from a plain triple loop by
// rounding only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace dsv4 {

struct sgemm_op {
  // op(X): X itself or its transpose (read through swapped strides, never copied).
  enum class transpose : unsigned char { no, yes };

  // Register tile (MR rows of A by NR columns of B) and cache blocks: a (KC, NR) sliver of B
  // (16 KiB) stays in L1 while the (MC, KC) block of A (~144 KiB) stays in L2; 12 accumulators
  // of 8 floats, two B vectors and one broadcast fill the 16 AVX registers.
  static constexpr index_t mr = 6;
  static constexpr index_t nr = 16;
  static constexpr index_t kc = 256;
  static constexpr index_t mc = 144;
  static constexpr index_t nc = 3072;
  // Columns of C one parallel task covers inside an NC panel: small enough that a 1024-wide
  // product gives every thread several tasks.
  static constexpr index_t task_cols = 256;
  // Below this many multiply-adds a product runs on the calling thread: waking threads costs more
  // than it saves (the tiles, and so the bits, are the same either way).
  static constexpr double parallel_min_macs = 1 << 20;

  struct params {
    using op = sgemm_op;
    tensor_view<const float, 2> a;  // (m, k), or (k, m) when trans_a is yes
    tensor_view<const float, 2> b;  // (k, n), or (n, k) when trans_b is yes
    tensor_view<float, 2> c;        // (m, n); must not overlap a or b
    std::span<float> workspace;     // workspace_size(m, n, k) floats
    float alpha = 1.0f;
    float beta = 0.0f;  // 0 overwrites C without reading it (NaN in C does not leak)
    transpose trans_a = transpose::no;
    transpose trans_b = transpose::no;
  };

  // Floats of workspace a product of op(A) (m, k) by op(B) (k, n) needs: all of op(A) packed,
  // plus one (k, NC) panel of op(B) packed, each starting on a 64-byte cache line (the vector
  // loads of B then never straddle two lines), plus the slack to align the first. About the size
  // of the operands: packing everything up front lets a product start its threads twice per NC
  // panel instead of three times per KC block.
  static constexpr index_t workspace_size(index_t m, index_t n, index_t k) {
    return line_floats - 1 + packed_a_size(m, k) + k * round_up(std::min(n, nc), nr);
  }

  static status check(const params& p) {
    const index_t m = p.c.extent(0), n = p.c.extent(1);
    const index_t k = p.trans_a == transpose::no ? p.a.extent(1) : p.a.extent(0);
    const index_t am = p.trans_a == transpose::no ? p.a.extent(0) : p.a.extent(1);
    if (am != m)
      return {errc::shape_mismatch,
              "sgemm a: op(a) has " + std::to_string(am) + " rows, c has " + std::to_string(m)};
    const index_t bk = p.trans_b == transpose::no ? p.b.extent(0) : p.b.extent(1);
    const index_t bn = p.trans_b == transpose::no ? p.b.extent(1) : p.b.extent(0);
    if (bk != k || bn != n) {
      return {errc::shape_mismatch, "sgemm b: op(b) is (" + std::to_string(bk) + ", " + std::to_string(bn) +
                                        "), expected (" + std::to_string(k) + ", " + std::to_string(n) + ")"};
    }
    if (static_cast<index_t>(p.workspace.size()) < workspace_size(m, n, k)) {
      return {errc::invalid_argument,
              "sgemm workspace: " + std::to_string(p.workspace.size()) +
                  " floats, needs workspace_size(m, n, k) = " + std::to_string(workspace_size(m, n, k))};
    }
    if (overlaps(p.c, p.a) || overlaps(p.c, p.b)) return {errc::invalid_argument, "sgemm c: overlaps a or b"};
    return {};
  }

  static constexpr index_t round_up(index_t x, index_t q) { return (x + q - 1) / q * q; }
  static constexpr index_t line_floats = 16;
  static constexpr index_t packed_a_size(index_t m, index_t k) {
    return round_up(round_up(m, mr) * k, line_floats);
  }

 private:
  // Conservative: compares the address ranges the views span (either stride may be negative).
  template <class T, class U>
  static bool overlaps(const tensor_view<T, 2>& x, const tensor_view<U, 2>& y) {
    if (x.empty() || y.empty()) return false;
    const auto range = [](const auto& v) {
      const void* first = v.data();
      const void* last = v.data() + (v.extent(0) - 1) * v.stride(0) + (v.extent(1) - 1) * v.stride(1);
      return std::less<>{}(last, first) ? std::pair{last, first} : std::pair{first, last};
    };
    const auto [x0, x1] = range(x);
    const auto [y0, y1] = range(y);
    return !(std::less<>{}(x1, y0) || std::less<>{}(y1, x0));
  }
};

namespace detail::sgemm {

using vf8 = float __attribute__((vector_size(32)));
// The same vector with element alignment, for loads and stores at any float address.
using vf8u = float __attribute__((vector_size(32), aligned(4)));

// c += a * b, fused when the target has FMA (by reference: no vector crosses a call boundary, so
// builds without AVX see no ABI change).
DSV4_FORCEINLINE void fma_into(vf8& c, const vf8& a, const vf8& b) {
#if defined(__FMA__) && defined(__AVX__)
  c = _mm256_fmadd_ps(a, b, c);
#else
  c += a * b;
#endif
}

// A matrix as a base pointer and element strides along its two logical dimensions.
struct strided {
  const float* data;
  index_t s0, s1;
  float at(index_t i, index_t j) const { return data[i * s0 + j * s1]; }
};

// Packs rows [i0, i0 + rows) x columns [p0, p0 + depth) of op(A), times alpha, into slivers of
// MR rows: sliver r holds (depth, MR) values, row index fastest; missing rows are zeros.
inline void pack_a(const strided& a, index_t i0, index_t rows, index_t p0, index_t depth, float alpha,
                   float* out) {
  constexpr index_t mr = sgemm_op::mr;
  for (index_t r0 = 0; r0 < rows; r0 += mr, out += mr * depth) {
    const index_t h = std::min(mr, rows - r0);
    if (h < mr) std::fill(out, out + mr * depth, 0.0f);
    if (a.s1 == 1) {  // rows contiguous in memory: read along p
      for (index_t r = 0; r < h; ++r)
        for (index_t p = 0; p < depth; ++p) out[p * mr + r] = alpha * a.at(i0 + r0 + r, p0 + p);
    } else {
      for (index_t p = 0; p < depth; ++p)
        for (index_t r = 0; r < h; ++r) out[p * mr + r] = alpha * a.at(i0 + r0 + r, p0 + p);
    }
  }
}

// Packs NR-column sliver `s` of op(B) rows [p0, p0 + depth), columns from j0: (depth, NR) values,
// column index fastest; missing columns are zeros.
inline void pack_b_sliver(const strided& b, index_t p0, index_t depth, index_t j0, index_t cols, float* out) {
  constexpr index_t nr = sgemm_op::nr;
  const index_t w = std::min(nr, cols);
  if (w < nr) std::fill(out, out + nr * depth, 0.0f);
  if (b.s0 == 1) {  // columns contiguous in memory (a transposed row-major B): read along p
    for (index_t j = 0; j < w; ++j)
      for (index_t p = 0; p < depth; ++p) out[p * nr + j] = b.at(p0 + p, j0 + j);
  } else {
    for (index_t p = 0; p < depth; ++p)
      for (index_t j = 0; j < w; ++j) out[p * nr + j] = b.at(p0 + p, j0 + j);
  }
}

// One MR x NR tile of C from packed slivers of A and B over `depth` products. `first` marks the
// first KC block: C = beta * C + AB there (beta == 0: C = AB, C unread), C += AB afterwards.
// Rows past h and columns past w of the tile are computed on padding and not stored.
DSV4_FORCEINLINE void micro_kernel(index_t depth, const float* pa, const float* pb, float* c, index_t rs,
                                   index_t cs, index_t h, index_t w, bool first, float beta) {
  constexpr int mr = static_cast<int>(sgemm_op::mr);
  // The tile of C was last touched a whole KC pass ago and is usually out of cache: ask for it
  // now so that the misses overlap the products instead of stalling the stores at the end.
  for (index_t r = 0; r < h; ++r) {
    __builtin_prefetch(c + r * rs, 1);
    __builtin_prefetch(c + r * rs + (w - 1) * cs, 1);
  }
  vf8 acc[mr][2] = {};
  for (index_t p = 0; p < depth; ++p, pa += mr, pb += sgemm_op::nr) {
    const vf8 b0 = *reinterpret_cast<const vf8u*>(pb);
    const vf8 b1 = *reinterpret_cast<const vf8u*>(pb + 8);
    for (int r = 0; r < mr; ++r) {
      const float x = pa[r];
      const vf8 ar = {x, x, x, x, x, x, x, x};  // a broadcast load (adding to a zero vector is not)
      fma_into(acc[r][0], ar, b0);
      fma_into(acc[r][1], ar, b1);
    }
  }
  if (h == mr && w == sgemm_op::nr && cs == 1) {
    for (int r = 0; r < mr; ++r) {
      auto* c0 = reinterpret_cast<vf8u*>(c + r * rs);
      auto* c1 = reinterpret_cast<vf8u*>(c + r * rs + 8);
      if (!first) {
        *c0 = *c0 + acc[r][0];
        *c1 = *c1 + acc[r][1];
      } else if (beta == 0.0f) {
        *c0 = acc[r][0];
        *c1 = acc[r][1];
      } else {
        *c0 = beta * *c0 + acc[r][0];
        *c1 = beta * *c1 + acc[r][1];
      }
    }
    return;
  }
  for (index_t r = 0; r < h; ++r)
    for (index_t j = 0; j < w; ++j) {
      float& x = c[r * rs + j * cs];
      const float v = acc[r][j / 8][j % 8];
      x = !first ? x + v : (beta == 0.0f ? v : beta * x + v);
    }
}

}  // namespace detail::sgemm

template <>
struct kernel<sgemm_op, cpu> {
  static status run(const sgemm_op::params& p) {
    DSV4_TRY(sgemm_op::check(p));
    using namespace detail::sgemm;
    const index_t m = p.c.extent(0), n = p.c.extent(1);
    const index_t k = p.trans_a == sgemm_op::transpose::no ? p.a.extent(1) : p.a.extent(0);
    if (m == 0 || n == 0) return {};
    const strided a = p.trans_a == sgemm_op::transpose::no
                          ? strided{p.a.data(), p.a.stride(0), p.a.stride(1)}
                          : strided{p.a.data(), p.a.stride(1), p.a.stride(0)};
    const strided b = p.trans_b == sgemm_op::transpose::no
                          ? strided{p.b.data(), p.b.stride(0), p.b.stride(1)}
                          : strided{p.b.data(), p.b.stride(1), p.b.stride(0)};
    float* c = p.c.data();
    const index_t rs = p.c.stride(0), cs = p.c.stride(1);
    if (k == 0) {  // an empty sum: C = beta * C
      parallel_for(0, m, [&](index_t i) {
        for (index_t j = 0; j < n; ++j)
          c[i * rs + j * cs] = p.beta == 0.0f ? 0.0f : p.beta * c[i * rs + j * cs];
      });
      return {};
    }
    constexpr index_t mr = sgemm_op::mr, nr = sgemm_op::nr, kc = sgemm_op::kc, mc = sgemm_op::mc;
    const index_t k_blocks = (k + kc - 1) / kc, m_blocks = (m + mc - 1) / mc;
    const index_t m_pad = sgemm_op::round_up(m, mr),
                  n_pad = sgemm_op::round_up(std::min(n, sgemm_op::nc), nr);
    const auto misalign = static_cast<index_t>(reinterpret_cast<std::uintptr_t>(p.workspace.data()) % 64) / 4;
    // KC block q of op(A) at packed_a + m_pad * q * KC, as MR-row slivers; of the current NC panel
    // of op(B) at packed_b + n_pad * q * KC, as NR-column slivers.
    float* packed_a = p.workspace.data() + (sgemm_op::line_floats - misalign) % sgemm_op::line_floats;
    float* packed_b = packed_a + sgemm_op::packed_a_size(m, k);
    const bool threads = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >=
                         sgemm_op::parallel_min_macs;
    const auto spread = [threads](index_t count, const auto& f) {
      if (threads) {
        parallel_for(0, count, f);
      } else {
        for (index_t i = 0; i < count; ++i) f(i);
      }
    };
    // Two thread team starts per NC panel (pack, then compute), whatever K is: on a busy machine
    // every start waits for the slowest thread to be scheduled.
    for (index_t j0 = 0; j0 < n; j0 += sgemm_op::nc) {
      const index_t nb = std::min(sgemm_op::nc, n - j0);
      const index_t slivers = (nb + nr - 1) / nr;
      const index_t tasks_n = (nb + sgemm_op::task_cols - 1) / sgemm_op::task_cols;
      const index_t a_tasks = j0 == 0 ? m_blocks * k_blocks : 0;  // op(A) is packed once
      spread(a_tasks + slivers * k_blocks, [&](index_t t) {
        if (t < a_tasks) {
          const index_t i0 = (t % m_blocks) * mc, p0 = (t / m_blocks) * kc, kb = std::min(kc, k - p0);
          pack_a(a, i0, std::min(mc, m - i0), p0, kb, p.alpha, packed_a + m_pad * p0 + i0 * kb);
        } else {
          const index_t s = (t - a_tasks) % slivers, p0 = ((t - a_tasks) / slivers) * kc;
          const index_t kb = std::min(kc, k - p0);
          pack_b_sliver(b, p0, kb, j0 + s * nr, nb - s * nr, packed_b + n_pad * p0 + s * nr * kb);
        }
      });
      // Independent output tiles: (MC rows) x (task_cols columns) of this panel, over all of K.
      spread(m_blocks * tasks_n, [&](index_t t) {
        const index_t i0 = (t / tasks_n) * mc, jt = (t % tasks_n) * sgemm_op::task_cols;
        const index_t mb = std::min(mc, m - i0), jt_end = std::min(nb, jt + sgemm_op::task_cols);
        for (index_t p0 = 0; p0 < k; p0 += kc) {
          const index_t kb = std::min(kc, k - p0);
          for (index_t jr = jt; jr < jt_end; jr += nr) {
            const float* pb = packed_b + n_pad * p0 + (jr / nr) * nr * kb;
            for (index_t ir = 0; ir < mb; ir += mr) {
              micro_kernel(kb, packed_a + m_pad * p0 + (i0 + ir) * kb, pb,
                           c + (i0 + ir) * rs + (j0 + jr) * cs, rs, cs, std::min(mr, mb - ir),
                           std::min(nr, jt_end - jr), p0 == 0, p.beta);
            }
          }
        }
      });
    }
    return {};
  }
};

}  // namespace dsv4
