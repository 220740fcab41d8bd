// sgemm_op: C = alpha * op(A) * op(B) + beta * C in fp32 on the host (BLAS sgemm semantics), the
// matrix product the Newton-Schulz orthogonalization of Muon spends nearly all of its time in.
// (gemv.hpp's linear_op is a different product: activations times a checkpoint-format weight.)
//
// The classic blocked scheme (Goto and van de Geijn): op(A) in (MC, KC) blocks and op(B) in
// (KC, NC) panels are packed into the caller's workspace in the order a register-blocked MR x NR
// micro-kernel reads them, so the micro-kernel streams both from cache with unit stride whatever
// the views' strides or transpositions. The micro-kernel is written with GCC vector
// extensions (8-float vectors: AVX2/FMA with -march=native, two SSE halves or scalars otherwise).
// A product known to give a symmetric C (the Gram matrices of Newton-Schulz) computes only the
// tiles that reach the diagonal or above and mirrors the rest: about half the work.
//
// Determinism: every element of C sums its K products in the same fixed order (KC blocks in
// order, p in order within a block), and parallel_for only distributes independent output tiles
// (how rows are blocked depends on the thread count; the order of no sum does), so the result
// is bit-identical for any thread count. It differs from a plain triple loop by rounding only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace dsv4 {

struct sgemm_op {
  // op(X): X itself or its transpose (read through swapped strides, never copied).
  enum class transpose : unsigned char { no, yes };

  // Register tile (MR rows of A by NR columns of B) and cache blocks: a (KC, NR) sliver of B
  // (24 KiB) stays in L1 while the (MC, KC) block of A (~216 KiB) stays in L2; 12 accumulators
  // of 8 floats, two B vectors and one broadcast fill the 16 AVX registers. Row blocks have at
  // most MC rows, evened out so that every thread gets as many of equal height.
  static constexpr index_t mr = 6;
  static constexpr index_t nr = 16;
  static constexpr index_t kc = 384;
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
    // The caller knows C comes out symmetric (a Gram matrix X X^T, or A A for a symmetric A, with a
    // symmetric C when beta != 0): only the tiles that reach the diagonal or above are computed,
    // and the elements below the diagonal are then copied from above it. Needs m == n.
    bool symmetric = false;
    // When given, the beta term reads it in C's place: C = alpha op(A) op(B) + beta D, D of C's
    // shape and strides (an operand, say, as Newton-Schulz's b A + c A A; anything but a part of
    // C). Saves copying D into C first.
    tensor_view<const float, 2> addend = {};
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
    if (p.symmetric && m != n)
      return {errc::shape_mismatch,
              "sgemm symmetric: c is (" + std::to_string(m) + ", " + std::to_string(n) + "), must be square"};
    if (p.addend.data() != nullptr) {
      if (p.addend.extents() != p.c.extents() || p.addend.strides() != p.c.strides())
        return {errc::shape_mismatch, "sgemm addend: must have c's shape and strides"};
      if (p.addend.data() != p.c.data() && overlaps(p.c, p.addend))
        return {errc::invalid_argument, "sgemm addend: overlaps c"};
    }
    return {};
  }

  static constexpr index_t line_floats = 16;
  // The first float of a workspace that starts a 64-byte cache line (at most line_floats - 1
  // floats in: workspace sizes here include that slack).
  static float* first_line(std::span<float> workspace) {
    const auto misalign = static_cast<index_t>(reinterpret_cast<std::uintptr_t>(workspace.data()) % 64) / 4;
    return workspace.data() + (line_floats - misalign) % line_floats;
  }
  static constexpr index_t packed_a_size(index_t m, index_t k) {
    return round_up(round_up(m, mr) * k, line_floats);
  }
};

namespace detail::sgemm {

// A matrix as a base pointer and element strides along its two logical dimensions.
struct strided {
  const float* data;
  index_t s0, s1;
  float at(index_t i, index_t j) const { return data[i * s0 + j * s1]; }
};

#if defined(__AVX__)
// v[r] = row r of an 8 x 8 block; afterwards v[c] = column c (unpack, shuffle, lane swap).
DSV4_FORCEINLINE void transpose8(v8f (&v)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}
#endif

// Packs rows [i0, i0 + rows) x columns [p0, p0 + depth) of op(A), times alpha, into slivers of
// MR rows: sliver r holds (depth, MR) values, row index fastest; missing rows are zeros.
inline void pack_a(const strided& a, index_t i0, index_t rows, index_t p0, index_t depth, float alpha,
                   float* out) {
  constexpr index_t mr = sgemm_op::mr;
  const index_t full = rows / mr;
  const float* base = a.data + i0 * a.s0 + p0 * a.s1;
  if (a.s0 == 1) {
    // Columns contiguous (a transposed row-major matrix): one pass down each column across all the
    // slivers. Sliver by sliver, the column's lines (a row stride apart, so all in one cache set)
    // would be fetched again for every sliver.
    // Whole vectors where the two extra floats stay inside the column (not the last sliver) and
    // land where a later write goes (the next column of the sliver, not its last column).
    for (index_t p = 0; p < depth; ++p) {
      const float* col = base + p * a.s1;
      const index_t wide = p + 1 < depth && full > 0 ? full - 1 : 0;
      for (index_t s = 0; s < wide; ++s)
        *reinterpret_cast<v8f_unaligned*>(out + s * mr * depth + p * mr) =
            alpha * *reinterpret_cast<const v8f_unaligned*>(col + s * mr);
      for (index_t s = wide; s < full; ++s)
        for (index_t r = 0; r < mr; ++r) out[s * mr * depth + p * mr + r] = alpha * col[s * mr + r];
    }
  } else {
    index_t done = 0;  // columns of the full slivers packed by the fast path
#if defined(__AVX__)
    if (a.s1 == 1) {
      // Rows contiguous: 8 x 8 register transposes of the MR rows and two zero rows, of whose
      // columns the first MR floats are kept, instead of one scalar load and store per float.
      // Each column is stored as a whole vector: its two extra floats land where the next column
      // (or the next group of 8, or the next sliver, all written later) goes. Only the block's very
      // last column is stored narrow, so that nothing past the block is written.
      done = depth / 8 * 8;
      for (index_t s = 0; s < full; ++s)
        for (index_t p = 0; p < done; p += 8) {
          v8f x[8] = {};
          for (index_t r = 0; r < mr; ++r)
            x[r] = alpha * *reinterpret_cast<const v8f_unaligned*>(base + (s * mr + r) * a.s0 + p);
          transpose8(x);
          float* o = out + s * mr * depth + p * mr;
          for (index_t q = 0; q < 7; ++q) *reinterpret_cast<v8f_unaligned*>(o + q * mr) = x[q];
          if (s + 1 < full || p + 8 < depth) {
            *reinterpret_cast<v8f_unaligned*>(o + 7 * mr) = x[7];
          } else {
            std::memcpy(o + 7 * mr, &x[7], mr * sizeof(float));
          }
        }
    }
#endif
    for (index_t s = 0; s < full; ++s)
      for (index_t p = done; p < depth; ++p)
        for (index_t r = 0; r < mr; ++r)
          out[s * mr * depth + p * mr + r] = alpha * base[(s * mr + r) * a.s0 + p * a.s1];
  }
  if (const index_t h = rows - full * mr; h > 0) {
    float* o = out + full * mr * depth;
    std::fill(o, o + mr * depth, 0.0f);
    for (index_t p = 0; p < depth; ++p)
      for (index_t r = 0; r < h; ++r) o[p * mr + r] = alpha * a.at(i0 + full * mr + r, p0 + p);
  }
}

// Packs rows [p0, p0 + depth) x columns [j0, j0 + cols) of op(B) as consecutive NR-column
// slivers, each (depth, NR) values, column index fastest; missing columns are zeros.
inline void pack_b(const strided& b, index_t p0, index_t depth, index_t j0, index_t cols, float* out) {
  constexpr index_t nr = sgemm_op::nr;
  const index_t full = cols / nr;
  const float* base = b.data + p0 * b.s0 + j0 * b.s1;
  index_t done = 0;  // rows of the full slivers packed by a fast path
  if (b.s1 == 1) {
    // Rows contiguous: vector copies of NR floats, four slivers at a time, row after row: four
    // lines read per row and four streams written. All 16 slivers of a 256-column group at once
    // would write 16 streams, more than the caches follow well, and one sliver at a time would
    // read a single line per row.
    constexpr index_t group = 4;
    for (index_t s0 = 0; s0 < full; s0 += group)
      for (index_t p = 0; p < depth; ++p)
        for (index_t s = s0; s < std::min(full, s0 + group); ++s)
          for (index_t v = 0; v < nr; v += 8)
            *reinterpret_cast<v8f_unaligned*>(out + s * nr * depth + p * nr + v) =
                *reinterpret_cast<const v8f_unaligned*>(base + p * b.s0 + s * nr + v);
    done = depth;
  }
#if defined(__AVX__)
  else if (b.s0 == 1) {
    // Columns contiguous (a transposed row-major matrix): 8 x 8 register transposes, so every load
    // and store is a whole vector.
    done = depth / 8 * 8;
    for (index_t s = 0; s < full; ++s)
      for (index_t v = 0; v < nr; v += 8)
        for (index_t p = 0; p < done; p += 8) {
          v8f x[8];
          for (index_t c = 0; c < 8; ++c)
            x[c] = *reinterpret_cast<const v8f_unaligned*>(base + (s * nr + v + c) * b.s1 + p);
          transpose8(x);
          for (index_t q = 0; q < 8; ++q)
            *reinterpret_cast<v8f_unaligned*>(out + s * nr * depth + (p + q) * nr + v) = x[q];
        }
  }
#endif
  for (index_t s = 0; s < full; ++s)
    for (index_t p = done; p < depth; ++p)
      for (index_t j = 0; j < nr; ++j) out[s * nr * depth + p * nr + j] = b.at(p0 + p, j0 + s * nr + j);
  if (const index_t w = cols - full * nr; w > 0) {
    float* o = out + full * nr * depth;
    std::fill(o, o + nr * depth, 0.0f);
    for (index_t p = 0; p < depth; ++p)
      for (index_t j = 0; j < w; ++j) o[p * nr + j] = b.at(p0 + p, j0 + full * nr + j);
  }
}

// The MR values of op(A) one product step of a micro-kernel multiplies: from a packed sliver
// (pack_a: MR floats per step, row index fastest), or from a matrix whose rows are contiguous,
// read in place (rows past the tile's height read its last row again, so nothing past the matrix
// is touched; their products are never stored).
struct packed_sliver {
  const float* data;
  DSV4_FORCEINLINE float at(index_t p, int r) const { return data[p * sgemm_op::mr + r]; }
};
struct rows_sliver {
  const float* row[sgemm_op::mr];  // the tile's rows, each contiguous along the product dimension
  rows_sliver(const float* data, index_t row_stride, index_t h) {
    for (index_t r = 0; r < sgemm_op::mr; ++r) row[r] = data + std::min(r, h - 1) * row_stride;
  }
  DSV4_FORCEINLINE float at(index_t p, int r) const { return row[r][p]; }
};

// One Rows x NR tile of C (Rows <= MR) from the first Rows of A's MR rows (either sliver above)
// and NR columns of B (NR floats per product step, `ldb` floats apart: a packed sliver has ldb =
// NR) over `depth` products. `first` marks the first KC block: C = beta * D + AB there, D the
// addend's tile (C's strides; C itself without one; beta == 0: C = AB, neither read), C += AB
// afterwards. Rows past h and columns past w of the tile are computed on padding and not stored.
// A non-null `next_b` (the B sliver the next tile reads, out in L2 or L3; packed slivers only) is
// fetched into L1 meanwhile, one line per product step.
template <int Rows, class ASliver>
DSV4_FORCEINLINE void micro_tile(index_t depth, const ASliver& a, const float* pb, index_t ldb, float* c,
                                 const float* d, index_t rs, index_t cs, index_t h, index_t w, bool first,
                                 float beta, const float* next_b) {
  // The tile of C was last touched a whole KC pass ago and is usually out of cache: ask for it
  // now so that the misses overlap the products instead of stalling the stores at the end.
  const bool reads_d = first && beta != 0.0f && d != c;
  for (index_t r = 0; r < h; ++r) {
    __builtin_prefetch(c + r * rs, 1);
    __builtin_prefetch(c + r * rs + (w - 1) * cs, 1);
    if (reads_d) {
      __builtin_prefetch(d + r * rs);
      __builtin_prefetch(d + r * rs + (w - 1) * cs);
    }
  }
  v8f acc[Rows][2] = {};
  // The product steps, B's step a compile-time constant for a packed sliver and the fetch of the
  // next sliver only in the loop that makes it: decided in every step, both would stay in the
  // loop body and take issue slots from the multiply-adds. The three loops run the same
  // operations in the same order (docs/sgemm.md). Unrolled by 4, so that the loop's own
  // instructions are spread over four steps.
  const auto products = [&](auto b_step, auto fetch) {
#pragma GCC unroll 4
    for (index_t p = 0; p < depth; ++p) {
      if constexpr (decltype(fetch)::value) __builtin_prefetch(next_b + p * sgemm_op::nr);
      v8f b0, b1;
      load8(b0, pb + p * b_step);
      load8(b1, pb + p * b_step + 8);
      pin_register(b0);
      pin_register(b1);
      for (int r = 0; r < Rows; ++r) {
        const float x = a.at(p, r);
        const v8f ar = {x, x, x, x, x, x, x, x};  // a broadcast load (adding to a zero vector is not)
        fma8(acc[r][0], ar, b0);
        fma8(acc[r][1], ar, b1);
      }
    }
  };
  constexpr std::integral_constant<index_t, sgemm_op::nr> packed_step;
  if (next_b != nullptr) {
    DSV4_ASSERT(ldb == sgemm_op::nr, "micro_kernel: the next sliver is fetched for packed slivers only");
    products(packed_step, std::true_type{});
  } else if (ldb == sgemm_op::nr) {
    products(packed_step, std::false_type{});
  } else {
    products(ldb, std::false_type{});
  }
  if (h == Rows && w == sgemm_op::nr && cs == 1) {
    for (int r = 0; r < Rows; ++r) {
      auto* c0 = reinterpret_cast<v8f_unaligned*>(c + r * rs);
      auto* c1 = reinterpret_cast<v8f_unaligned*>(c + r * rs + 8);
      if (!first) {
        *c0 = *c0 + acc[r][0];
        *c1 = *c1 + acc[r][1];
      } else if (beta == 0.0f) {
        *c0 = acc[r][0];
        *c1 = acc[r][1];
      } else {
        *c0 = beta * *reinterpret_cast<const v8f_unaligned*>(d + r * rs) + acc[r][0];
        *c1 = beta * *reinterpret_cast<const v8f_unaligned*>(d + r * rs + 8) + acc[r][1];
      }
    }
    return;
  }
  // Partial or strided tile: through a buffer, so that no element of acc is indexed at run time
  // (that would keep acc in memory for the whole product loop above).
  float tile[Rows][sgemm_op::nr];
  for (int r = 0; r < Rows; ++r) {
    *reinterpret_cast<v8f_unaligned*>(&tile[r][0]) = acc[r][0];
    *reinterpret_cast<v8f_unaligned*>(&tile[r][8]) = acc[r][1];
  }
  for (index_t r = 0; r < h; ++r)
    for (index_t j = 0; j < w; ++j) {
      float& x = c[r * rs + j * cs];
      const float v = tile[r][j];
      x = !first ? x + v : (beta == 0.0f ? v : beta * d[r * rs + j * cs] + v);
    }
}

// One tile of h <= MR rows of C: MR rows computed for a tile of 5 or 6, 4 for a shorter one.
// The cost of a product step is the longer of its FMAs (2 a cycle) and the latency of one
// accumulator's chain (4 cycles): 6 cycles for 6 rows, 4 for 4 rows and for 2 (whose 4
// accumulators wait on their latency), so a 2-row tail computed as 6 rows cost 6 cycles a step,
// as 4 rows 4. Each row of C is the same sum in the same order whichever tile computes it.
template <class ASliver>
DSV4_FORCEINLINE void micro_kernel(index_t depth, const ASliver& a, const float* pb, index_t ldb, float* c,
                                   const float* d, index_t rs, index_t cs, index_t h, index_t w, bool first,
                                   float beta, const float* next_b) {
  static_assert(sgemm_op::mr == 6, "micro_kernel: a short tile computes 4 rows of MR = 6");
  if (h > 4) {
    micro_tile<6>(depth, a, pb, ldb, c, d, rs, cs, h, w, first, beta, next_b);
  } else {
    micro_tile<4>(depth, a, pb, ldb, c, d, rs, cs, h, w, first, beta, next_b);
  }
}

// f(i) for i in [0, count): on the calling thread for a product too small to pay for waking the
// others, else dynamically over all threads (parallel_for_dynamic). Each index is computed whole
// by one thread, so the bits do not depend on which.
template <class F>
void spread(bool threads, index_t count, const F& f) {
  if (!threads) {
    for (index_t i = 0; i < count; ++i) f(i);
    return;
  }
  parallel_for_dynamic(0, count, f);
}

// C below the diagonal = C above it, for a square (m, m) C: 8 x 8 blocks, through register
// transposes where C's rows are contiguous and the block lies wholly below the diagonal (an
// element-wise copy would walk columns, one cache line per element); the longest rows first.
inline void mirror_upper(float* c, index_t rs, index_t cs, index_t m, bool threads) {
  constexpr index_t bs = 8;
  const index_t blocks = ceil_div(m, bs);
  const auto body = [&](index_t q) {
    const index_t i0 = (blocks - 1 - q) * bs, i1 = std::min(m, i0 + bs);
    for (index_t j0 = 0; j0 <= i0; j0 += bs) {
#if defined(__AVX__)
      if (cs == 1 && j0 < i0 && i1 == i0 + bs) {
        v8f x[8];  // rows j0.. of columns i0..: become rows i0.. of columns j0..
        for (index_t r = 0; r < bs; ++r)
          x[r] = *reinterpret_cast<const v8f_unaligned*>(c + (j0 + r) * rs + i0);
        transpose8(x);
        for (index_t r = 0; r < bs; ++r) *reinterpret_cast<v8f_unaligned*>(c + (i0 + r) * rs + j0) = x[r];
        continue;
      }
#endif
      for (index_t i = i0; i < i1; ++i)
        for (index_t j = j0; j < std::min(i, j0 + bs); ++j) c[i * rs + j * cs] = c[j * rs + i * cs];
    }
  };
  spread(threads, blocks, body);
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
    const float* d = p.addend.data() != nullptr ? p.addend.data() : c;  // what beta multiplies
    const index_t rs = p.c.stride(0), cs = p.c.stride(1);
    if (k == 0) {  // an empty sum: C = beta * C
      parallel_for(0, m, [&](index_t i) {
        for (index_t j = 0; j < n; ++j)
          c[i * rs + j * cs] = p.beta == 0.0f ? 0.0f : p.beta * d[i * rs + j * cs];
      });
      return {};
    }
    constexpr index_t mr = sgemm_op::mr, nr = sgemm_op::nr, kc = sgemm_op::kc;
    const index_t k_blocks = ceil_div(k, kc);
    const index_t m_pad = round_up(m, mr), n_pad = round_up(std::min(n, sgemm_op::nc), nr);
    // KC block q of op(A) at packed_a + m_pad * q * KC, as MR-row slivers; of the current NC panel
    // of op(B) at packed_b + n_pad * q * KC, as NR-column slivers.
    float* packed_a = sgemm_op::first_line(p.workspace);
    float* packed_b = packed_a + sgemm_op::packed_a_size(m, k);
    const bool threads = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >=
                         sgemm_op::parallel_min_macs;
    // Row blocks of at most MC rows, their count a multiple of the thread count, all of one height
    // but the last, so that the threads' tasks are of one size and end together (MC-row blocks
    // would leave 1024 rows as 7 x 144 + 16). The blocking of rows changes which thread computes
    // a tile, never the order of a sum.
    const index_t teams = threads ? std::max(1, max_threads()) : 1;
    const index_t mb_rows = round_up(ceil_div(m, round_up(ceil_div(m, sgemm_op::mc), teams)), mr);
    const index_t m_blocks = ceil_div(m, mb_rows);
    // Two thread team starts per NC panel (pack, then compute), whatever K is: on a busy machine
    // every start waits for the slowest thread to be scheduled.
    for (index_t j0 = 0; j0 < n; j0 += sgemm_op::nc) {
      const index_t nb = std::min(sgemm_op::nc, n - j0);
      const index_t tasks_n = ceil_div(nb, sgemm_op::task_cols);
      const index_t a_tasks = j0 == 0 ? m_blocks * k_blocks : 0;  // op(A) is packed once
      spread(threads, a_tasks + tasks_n * k_blocks, [&](index_t t) {
        if (t < a_tasks) {
          const index_t i0 = (t % m_blocks) * mb_rows, p0 = (t / m_blocks) * kc, kb = std::min(kc, k - p0);
          pack_a(a, i0, std::min(mb_rows, m - i0), p0, kb, p.alpha, packed_a + m_pad * p0 + i0 * kb);
        } else {
          const index_t jt = ((t - a_tasks) % tasks_n) * sgemm_op::task_cols,
                        p0 = ((t - a_tasks) / tasks_n) * kc, kb = std::min(kc, k - p0);
          pack_b(b, p0, kb, j0 + jt, std::min(sgemm_op::task_cols, nb - jt), packed_b + n_pad * p0 + jt * kb);
        }
      });
      // Independent output tiles: (row block) x (task_cols columns) of this panel, over all of K.
      spread(threads, m_blocks * tasks_n, [&](index_t t) {
        // Tasks are taken in index order: with a symmetric C, the row blocks with most tiles first.
        const index_t i0 = (t / tasks_n) * mb_rows;
        const index_t jt = (t % tasks_n) * sgemm_op::task_cols;
        const index_t mb = std::min(mb_rows, m - i0), jt_end = std::min(nb, jt + sgemm_op::task_cols);
        for (index_t p0 = 0; p0 < k; p0 += kc) {
          const index_t kb = std::min(kc, k - p0);
          for (index_t jr = jt; jr < jt_end; jr += nr) {
            const float* pb = packed_b + n_pad * p0 + jr * kb;
            // With a symmetric C, the tiles whose first row lies past this column's last are
            // skipped: that part is mirrored afterwards.
            const index_t rows = p.symmetric ? std::clamp(j0 + jr + nr - i0, index_t{0}, mb) : mb;
            for (index_t ir = 0; ir < rows; ir += mr) {
              // The last tile of a column fetches the next column's B sliver.
              const bool prefetch = ir + mr >= rows && jr + nr < jt_end;
              const index_t at = (i0 + ir) * rs + (j0 + jr) * cs;
              micro_kernel(kb, packed_sliver{packed_a + m_pad * p0 + (i0 + ir) * kb}, pb, nr, c + at, d + at,
                           rs, cs, std::min(mr, mb - ir), std::min(nr, jt_end - jr), p0 == 0, p.beta,
                           prefetch ? pb + nr * kb : nullptr);
            }
          }
        }
      });
    }
    if (p.symmetric) mirror_upper(c, rs, cs, m, threads);
    return {};
  }
};

// ---- products without packing ---------------------------------------------------------------
// For a caller that multiplies many small blocks against an operand it keeps (attention over
// blocks of cache rows against one token's query heads), where repacking per block would cost as
// much as the products: the same micro-kernel as sgemm, on the calling thread, A read in place.
//
// B comes as NR-column slivers: NR floats per product step, `ldb` floats apart, sliver s starting
// at b + s * sliver_stride. A row-major B is its own slivers (ldb = its row stride, sliver_stride
// = NR); pack_slivers writes any other B so, once. Slivers are read whole: each of B's rows must
// be readable up to a multiple of NR columns (what is read past n reaches no element of C).
struct sgemm_direct_params {
  const float* a = nullptr;  // A (m, k), rows contiguous: element (i, p) at a[i * lda + p]
  index_t lda = 0;
  const float* b = nullptr;  // B (k, n) as slivers, as above
  index_t ldb = sgemm_op::nr, sliver_stride = 0;
  float* c = nullptr;  // C (m, n): element (i, j) at c[i * ldc + j * c_col_stride]
  index_t ldc = 0, c_col_stride = 1;
  index_t m = 0, n = 0, k = 0;
  bool accumulate = false;  // C += A B; otherwise C = A B (C unread)
  // Product steps per pass over C: KC keeps the B sliver (KC x NR, 24 KiB) in L1 across the row
  // tiles; every later pass reads and writes C again, which a C stored element by element
  // (c_col_stride > 1) pays more for than a B sliver streamed from L2 (k_block = k, one pass).
  index_t k_block = sgemm_op::kc;
};

inline void sgemm_direct(const sgemm_direct_params& p) {
  using namespace detail::sgemm;
  constexpr index_t mr = sgemm_op::mr, nr = sgemm_op::nr;
  const index_t kc = p.k_block;
  DSV4_ASSERT(kc > 0, "sgemm_direct: k_block must be positive");
  for (index_t p0 = 0; p0 < p.k; p0 += kc) {
    const index_t kb = std::min(kc, p.k - p0);
    for (index_t j = 0; j < p.n; j += nr) {
      const float* pb = p.b + (j / nr) * p.sliver_stride + p0 * p.ldb;
      for (index_t i = 0, h = 0; i < p.m; i += h) {
        // The last 7 or 8 rows as two tiles of 4 (8 cycles a step) instead of 6 + 1 or 2 (10).
        h = p.m - i == mr + 1 || p.m - i == mr + 2 ? 4 : std::min(mr, p.m - i);
        float* const c = p.c + i * p.ldc + j * p.c_col_stride;
        micro_kernel(kb, rows_sliver(p.a + i * p.lda + p0, p.lda, h), pb, p.ldb, c, c, p.ldc, p.c_col_stride,
                     h, std::min(nr, p.n - j), p0 == 0 && !p.accumulate, 0.0f, nullptr);
      }
    }
  }
}

// Floats pack_slivers writes for a (k, n) B.
constexpr index_t sliver_floats(index_t k, index_t n) { return round_up(n, sgemm_op::nr) * k; }

// B (k, n), any strides, as sgemm_direct's slivers at out: ldb = NR, sliver_stride = k * NR;
// columns past n are zeros.
inline void pack_slivers(tensor_view<const float, 2> b, float* out) {
  detail::sgemm::pack_b({b.data(), b.stride(0), b.stride(1)}, 0, b.extent(0), 0, b.extent(1), out);
}

// sgemm_direct_params of C (m, n) = A (m, k) B, B written by pack_slivers from a (k, n) matrix at
// packed_b; C's column stride, k_block and accumulate keep their defaults (set them after).
constexpr sgemm_direct_params packed_b_product(const float* a, index_t lda, const float* packed_b, float* c,
                                               index_t ldc, index_t m, index_t n, index_t k) {
  return {.a = a,
          .lda = lda,
          .b = packed_b,
          .sliver_stride = k * sgemm_op::nr,
          .c = c,
          .ldc = ldc,
          .m = m,
          .n = n,
          .k = k};
}

}  // namespace dsv4
