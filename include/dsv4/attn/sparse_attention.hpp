// The core of every V4 attention layer (spec §4.2): one softmax over a candidate set of shared
// K=V latent rows, with a per-head attention sink in the denominator.
//
//   z_j = <q_h, kv_j> / sqrt(c)        o_h = sum_j exp(z_j) kv_j / (sum_j exp(z_j) + exp(sink_h))
//
// The candidates are row indices into one region of cache rows in any codec (kv_codec.hpp; the
// reference's cache layout: window ring rows, then compressed entries), decoded as they are read,
// so the window and the selected compressed entries meet in a single softmax with no
// de-duplication. Index -1 means "no candidate" and contributes nothing; a query with no candidate
// gets a zero output (the sink takes all the mass).
//
// CPU implementation (split over candidates, as in flash decoding): the candidate list is cut
// into chunks whose number depends only on its length, never on the thread count. Each chunk
// gathers its rows `block` at a time into a tile (decoding them once for all heads), computes the
// (heads, block) scores and the weighted sum of the tile as two products with sgemm's
// micro-kernel (core/sgemm.hpp's sgemm_direct: the query heads are packed once per call, the tile
// and the probabilities are read in place), and keeps a per-head online softmax (max, sum,
// weighted sum) in the caller's workspace; the chunks are then merged in order. When all the
// candidates make one chunk (a window of 128 rows), its heads are split into two groups of whole
// 16-head slivers, each a task of its own that gathers the rows itself, so that two threads share
// the step. (Splitting into more groups would repeat the decoding per group and narrow the
// products.) A head's operations do not depend on the group it is in, so neither the
// split nor the thread count changes a bit. Every kv row is read once per chunk and group.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "dsv4/attn/kv_codec.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/sgemm.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

template <class Codec>
struct sparse_attention_op {
  struct params {
    using op = sparse_attention_op;
    tensor_view<const float, 2> q;             // (n_h, c) one token's query heads
    row_region<Codec, const std::byte> kv;     // (n_rows, c) shared key = value rows, any codec
    std::span<const std::int32_t> candidates;  // rows of kv to attend to; -1 = none
    tensor_view<const float, 1> sink;          // (n_h) logit of the zero-valued sink
    float scale = 0.0f;                        // 1/sqrt(c)
    tensor_view<float, 2> out;                 // (n_h, c)
    std::span<float> workspace;                // workspace_floats(n_h, c, candidates.size())
    // released: the probabilities are rounded to BF16 before they weight the rows (the sums of
    // the denominator keep them in fp32) and the output is rounded to BF16 (spec §18.3).
    numerics num = numerics::exact;
  };

  static status check(const params& p) {
    DSV4_TRY(check_shape(p.q, {any_extent, any_extent}, "q"));
    const index_t h = p.q.extent(0), c = p.q.extent(1);
    if (p.kv.width != c)
      return {errc::shape_mismatch,
              "kv: rows of " + std::to_string(p.kv.width) + " values, q heads of " + std::to_string(c)};
    DSV4_TRY(check_shape(p.sink, {h}, "attn_sink"));
    DSV4_TRY(check_shape(p.out, {h, c}, "out"));
    DSV4_TRY(check_contiguous(p.q, "q"));
    DSV4_TRY(check_contiguous(p.out, "out"));
    const tensor_view<const float, 1> ws(p.workspace.data(), {static_cast<index_t>(p.workspace.size())});
    if (overlaps(p.out, p.q) || overlaps(p.out, p.sink) || overlaps(ws, p.out) || overlaps(ws, p.q) ||
        overlaps(ws, p.sink))
      return {errc::invalid_argument, "out, q, attn_sink and the workspace must not overlap"};
    for (std::int32_t j : p.candidates) {
      if (j < -1 || j >= p.kv.rows)
        return {errc::out_of_range,
                "candidates: row " + std::to_string(j) + " outside [-1, " + std::to_string(p.kv.rows) + ")"};
      if (j >= 0 && p.kv.pages != nullptr && p.kv.pages[j >> p.kv.page_shift] < 0)
        return {errc::out_of_range,
                "candidates: row " + std::to_string(j) + " lies in a page the region does not hold"};
    }
    const index_t need = workspace_floats(h, c, static_cast<index_t>(p.candidates.size()));
    if (static_cast<index_t>(p.workspace.size()) < need)
      return {errc::shape_mismatch, "workspace: expected at least " + std::to_string(need) + " floats, got " +
                                        std::to_string(p.workspace.size())};
    return {};
  }

  // Chunks of at least min_chunk candidates, at most max_chunks of them, their number a power of
  // two so that 2, 4, 8 or 16 threads share them evenly (an odd count leaves one thread running
  // the last chunk alone); within a chunk, rows are
  // gathered in blocks of equal length, at most `block`, for a pair of products. A block of 160
  // takes a chunk of 160 (a CSA step's, or an HCA step's at 64K) whole: every later block of a
  // chunk rescales its accumulators (heads x c floats) when a head's maximum rises, so fewer,
  // longer blocks save rescaling until the tile outgrows the L1 and L2 share of one core.
  static constexpr index_t min_chunk = 128, max_chunks = 16, block = 160;
  static constexpr index_t chunks(index_t n_candidates) {
    const auto k =
        static_cast<std::uint64_t>(std::min(max_chunks, (n_candidates + min_chunk - 1) / min_chunk));
    return static_cast<index_t>(std::bit_floor(k));
  }
  // Floats of the query heads packed for the score products (shared by the chunks).
  static constexpr index_t packed_q_floats(index_t heads, index_t c) {
    return round_up(sliver_floats(c, heads), sgemm_op::line_floats);
  }
  // Rows of the gathered tile lie NR floats further apart than their width: a power-of-two
  // stride would map the rows' lines the value product reads (one sliver of every row) to two
  // sets of L1, where they would evict one another. The padding is also what the slivers read
  // past the last row.
  static constexpr index_t tile_stride(index_t c) { return c + sgemm_op::nr; }
  // Head groups per chunk (see the top of the file): two when the candidates make one chunk and
  // there are at least two slivers of heads; heads_per_group is a whole number of slivers.
  static constexpr index_t head_groups(index_t heads, index_t n_candidates) {
    return chunks(n_candidates) == 1 && heads >= 2 * sgemm_op::nr ? 2 : 1;
  }
  static constexpr index_t heads_per_group(index_t heads, index_t groups) {
    return round_up((heads + groups - 1) / groups, sgemm_op::nr);
  }
  // Floats of one chunk's partial state: acc (heads, c), max and sum (heads).
  static constexpr index_t state_floats(index_t heads, index_t c) {
    return round_up(heads * (c + 2), sgemm_op::line_floats);
  }
  // Floats of one task's buffers: the gathered rows (block, tile_stride) and the scores
  // (heads, block), indexed by head whatever the group.
  static constexpr index_t task_floats(index_t heads, index_t c) {
    return round_up(block * tile_stride(c) + block * heads, sgemm_op::line_floats);
  }
  static constexpr index_t workspace_floats(index_t heads, index_t c, index_t n_candidates) {
    const index_t k = chunks(n_candidates);
    return sgemm_op::line_floats + packed_q_floats(heads, c) + k * state_floats(heads, c) +
           k * head_groups(heads, n_candidates) * task_floats(heads, c);
  }
};

}  // namespace dsv4::attn

namespace dsv4 {

template <class Codec>
struct kernel<attn::sparse_attention_op<Codec>, cpu> {
  static status run(const typename attn::sparse_attention_op<Codec>::params& p) {
    using op = attn::sparse_attention_op<Codec>;
    DSV4_TRY(op::check(p));
    constexpr index_t block = op::block, nr = sgemm_op::nr;
    const index_t heads = p.q.extent(0), c = p.q.extent(1), n = static_cast<index_t>(p.candidates.size());
    const index_t n_chunks = op::chunks(n), len = n_chunks > 0 ? (n + n_chunks - 1) / n_chunks : 0;
    const index_t groups = op::head_groups(heads, n), group_heads = op::heads_per_group(heads, groups);
    const index_t state_floats = op::state_floats(heads, c), ldt = op::tile_stride(c);
    // Everything on 64-byte lines: the tiles' rows are then read in whole lines.
    float* const q_packed = sgemm_op::first_line(p.workspace);
    // q^T (c, heads) as NR-head slivers, heads [h0, h0 + gh) of them: packed once for every chunk
    // by tasks of their own (below), or, when the heads are split into groups (one chunk), by
    // each group's task for its own slivers.
    const auto pack_q = [&](index_t h0, index_t gh) {
      pack_slivers(tensor_view<const float, 2>(p.q.data() + h0 * c, {c, gh}, {1, c}),
                   q_packed + (h0 / nr) * c * nr);
    };
    const auto partial = [&](index_t k) {
      return q_packed + op::packed_q_floats(heads, c) + k * state_floats;
    };
    float* const tasks = partial(n_chunks);
    // Merge the chunks in order for heads [h_begin, h_end); the sink joins the denominator as a
    // zero-valued logit. One pass over each head's outputs: every element is its chunks' weighted
    // sum in chunk order, then normalized.
    const auto merge = [&](index_t h_begin, index_t h_end) {
      for (index_t h = h_begin; h < h_end; ++h) {
        float top = p.sink(h);
        for (index_t k = 0; k < n_chunks; ++k) top = std::max(top, partial(k)[heads * c + h]);
        float f[op::max_chunks];
        float denom = std::exp(p.sink(h) - top);
        for (index_t k = 0; k < n_chunks; ++k) {
          f[k] = std::exp(partial(k)[heads * c + h] - top);
          denom += partial(k)[heads * c + heads + h] * f[k];
        }
        const float inv = 1.0f / denom;
        float* out = &p.out(h, 0);
        index_t e = 0;
        for (; e + 16 <= c; e += 16) {  // 16 outputs in two registers while the chunks add up
          detail::v8f o0 = {}, o1 = {};
          for (index_t k = 0; k < n_chunks; ++k) {
            detail::v8f a0, a1;
            detail::load8(a0, partial(k) + h * c + e);
            detail::load8(a1, partial(k) + h * c + e + 8);
            o0 += f[k] * a0;
            o1 += f[k] * a1;
          }
          detail::store8(out + e, o0 * inv);
          detail::store8(out + e + 8, o1 * inv);
        }
        for (; e < c; ++e) {
          float o = 0.0f;
          for (index_t k = 0; k < n_chunks; ++k) o += f[k] * partial(k)[h * c + e];
          out[e] = o * inv;
        }
        to_activation(p.num, std::span<float>(out, static_cast<std::size_t>(c)));
      }
    };
    // The step is one parallel loop of up to three kinds of task: with one head group, a task per
    // sliver of heads that packs the query for every chunk; a task per chunk and head group; with
    // several chunks, a merge task per sliver of heads. A task of a later kind needs all of the
    // kind before it. The threads pack and merge side by side, and a step starts one team instead
    // of three. With one chunk every task merges its own heads (a window step's two head groups
    // finish their halves side by side).
    //
    // No executor promises to run the tasks at once or in order (one may run them one after
    // another, last first). So a loop index does not name its task: it claims the next task of
    // its kind from that kind's counter, and a task that needs the kind before it first claims
    // and runs whatever of that kind is still unclaimed, then waits only for tasks other threads
    // have claimed, which are running. Claims only go to earlier kinds, so every wait ends. Which
    // thread runs a task changes no bit of it.
    const index_t slivers = ceil_div(heads, nr), n_tasks = n_chunks * groups;
    const index_t pack_tasks = groups == 1 && n_tasks > 0 ? slivers : 0,
                  merge_tasks = n_chunks > 1 ? slivers : 0;
    std::atomic<index_t> next_pack{0}, next_chunk{0}, packed{0}, finished{0};
    // Claims and runs tasks of one kind until none is left unclaimed.
    const auto run_claimed = [](std::atomic<index_t>& next, index_t all, const auto& body) {
      for (index_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < all;) body(t);
    };
    // The counter's acquire-release order makes the finished tasks' writes visible.
    const auto wait_for = [](const std::atomic<index_t>& done, index_t all) {
      spin_until([&] { return done.load(std::memory_order_acquire) >= all; });
    };
    const auto pack_task = [&](index_t sliver) {
      pack_q(sliver * nr, std::min(nr, heads - sliver * nr));
      packed.fetch_add(1, std::memory_order_release);
    };
    const auto chunk_task = [&](index_t task) {
      run_claimed(next_pack, pack_tasks, pack_task);
      wait_for(packed, pack_tasks);
      const index_t k = task / groups, h0 = (task % groups) * group_heads;
      const index_t gh = std::min(group_heads, heads - h0);    // this group's heads [h0, h0 + gh)
      float* acc = partial(k) + h0 * c;                        // (gh, c) of the chunk's (heads, c)
      float* mx = partial(k) + heads * c + h0;                 // (gh) running maximum of the scaled scores
      float* sum = mx + heads;                                 // (gh)
      float* tile = tasks + task * op::task_floats(heads, c);  // (block, ldt) gathered rows
      float* s = tile + block * ldt + h0 * block;              // (gh, block) scores, then probabilities
      if (groups > 1) pack_q(h0, gh);
      // acc is written by the first block's value product (or zeroed below if no block runs).
      std::fill(mx, mx + gh, -std::numeric_limits<float>::infinity());
      std::fill(sum, sum + gh, 0.0f);
      for (index_t r = 0; r < block; ++r) std::fill(tile + r * ldt + c, tile + (r + 1) * ldt, 0.0f);
      bool first = true;
      for (index_t i = k * len, end = std::min(n, (k + 1) * len); i < end;) {
        // The chunk's candidates in blocks of equal length up to `block` (520 as 4 x 130, not
        // 3 x 160 + 40: a short block runs the products on a few rows).
        const index_t left = end - i,
                      take = (left + (left + block - 1) / block - 1) / ((left + block - 1) / block);
        const index_t stop = i + take;
        index_t rows = 0;
        for (; i < stop; ++i) {
          const std::int32_t j = p.candidates[static_cast<std::size_t>(i)];
          if (j < 0) continue;
          p.kv.read_into(j, tile + rows * ldt);
          ++rows;
        }
        if (rows == 0) continue;
        // Scores s (heads, rows) = q . rows^T, computed as its transpose in one pass over k (the
        // transposed result is stored element by element, so a second pass over k would reload
        // and store it again); the scale joins in the softmax below.
        sgemm_direct_params scores =
            packed_b_product(tile, ldt, q_packed + (h0 / nr) * c * nr, s, 1, rows, gh, c);
        scores.c_col_stride = block;
        scores.k_block = c;
        sgemm_direct(scores);
        softmax_block(s, rows, gh, p.scale, mx, sum, first ? nullptr : acc, c, p.num);
        // acc (gh, c) (+)= probabilities (gh, rows) . rows (rows, c), both read in place.
        const sgemm_direct_params values{.a = s,
                                         .lda = block,
                                         .b = tile,
                                         .ldb = ldt,
                                         .sliver_stride = nr,
                                         .c = acc,
                                         .ldc = c,
                                         .m = gh,
                                         .n = c,
                                         .k = rows,
                                         .accumulate = !first};
        sgemm_direct(values);
        first = false;
      }
      if (first) std::fill(acc, acc + gh * c, 0.0f);  // no candidate in the chunk
      if (n_chunks == 1) {
        merge(h0, h0 + gh);
      } else {
        finished.fetch_add(1, std::memory_order_release);
      }
    };
    const auto merge_task = [&](index_t sliver) {
      run_claimed(next_chunk, n_tasks, chunk_task);
      wait_for(finished, n_tasks);
      merge(sliver * nr, std::min(heads, (sliver + 1) * nr));
    };
    // Nothing waits for a merge task: its index names it.
    parallel_for_work(n * heads * c, 0, pack_tasks + n_tasks + merge_tasks, [&](index_t index) {
      if (index >= pack_tasks + n_tasks) {
        merge_task(index - pack_tasks - n_tasks);
        return;
      }
      std::atomic<index_t>& next = index < pack_tasks ? next_pack : next_chunk;
      const index_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (index < pack_tasks) {
        if (t < pack_tasks) pack_task(t);
      } else if (t < n_tasks) {
        chunk_task(t);
      }
    });
    if (n_tasks == 0) merge(0, heads);
    return {};
  }

 private:
  // One block of the online softmax: s (heads, block) holds q . row for `rows` rows; afterwards
  // exp(scale * s - max) under the new running maximum, and what was accumulated under the older
  // one (sum, acc (heads, c)) is rescaled. The first block has nothing to rescale (acc null):
  // its value product writes acc instead of adding to it (the rescale by exp(-inf) = 0 of a
  // zeroed acc that an add then reads gave the same outputs: a -0 there becomes +0 in the merge,
  // which adds every chunk to +0).
  static void softmax_block(float* s, index_t rows, index_t heads, float scale, float* mx, float* sum,
                            float* acc, index_t c, numerics num) {
    constexpr index_t block = attn::sparse_attention_op<Codec>::block;
    for (index_t h = 0; h < heads; ++h) {
      float* sh = s + h * block;
      // scale > 0: the maximum of the scaled scores is the scaled maximum.
      const float top = std::max(mx[h], max_of(sh, rows) * scale);
      const float r = std::exp(mx[h] - top);
      if (acc != nullptr && r != 1.0f) {
        sum[h] *= r;
        for (index_t e = 0; e < c; ++e) acc[h * c + e] *= r;
      }
      for (index_t j = 0; j < rows; ++j) sh[j] = sh[j] * scale - top;
      exp_inplace(sh, rows);
      sum[h] += sum_of(sh, rows);
      mx[h] = top;
      to_activation(num, std::span<float>(sh, static_cast<std::size_t>(rows)));
    }
  }
};

}  // namespace dsv4
