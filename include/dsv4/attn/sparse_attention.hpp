// The core of every V4 attention layer (spec §4.2): one softmax over a candidate set of shared
// K=V latent rows, with a per-head attention sink in the denominator.
//
//   z_j = <q_h, kv_j> / sqrt(c)        o_h = sum_j exp(z_j) kv_j / (sum_j exp(z_j) + exp(sink_h))
//
// The candidates are row indices into one region of cache rows in any codec (kv_codec.hpp; the
// reference's cache layout: window ring rows, then compressed entries), decoded as they are read, so the
// window and the selected compressed entries meet in a single softmax with no de-duplication. Index -1 means
// "no candidate" and contributes nothing; a query with no candidate gets a zero output (the sink takes all
// the mass).
//
// CPU implementation (split over candidates, as in flash decoding): the candidate list is cut
// into chunks whose number depends only on its length, never on the thread count; each chunk
// streams its kv rows once for all heads and keeps a per-head online softmax (max, sum, weighted
// sum) in the caller's workspace; the chunks are then merged in order. Every kv row is read once
// per call, and the result is bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "dsv4/attn/kv_codec.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/parallel.hpp"
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
  };

  static status check(const params& p) {
    const index_t h = p.q.extent(0), c = p.q.extent(1);
    if (p.kv.width != c)
      return {errc::shape_mismatch,
              "kv: rows of " + std::to_string(p.kv.width) + " values, q heads of " + std::to_string(c)};
    DSV4_TRY(check_shape(p.sink, {h}, "attn_sink"));
    DSV4_TRY(check_shape(p.out, {h, c}, "out"));
    DSV4_TRY(check_contiguous(p.q, "q"));
    DSV4_TRY(check_contiguous(p.out, "out"));
    for (std::int32_t j : p.candidates)
      if (j < -1 || j >= p.kv.rows)
        return {errc::out_of_range,
                "candidates: row " + std::to_string(j) + " outside [-1, " + std::to_string(p.kv.rows) + ")"};
    const index_t need = workspace_floats(h, c, static_cast<index_t>(p.candidates.size()));
    if (static_cast<index_t>(p.workspace.size()) < need)
      return {errc::shape_mismatch, "workspace: expected at least " + std::to_string(need) + " floats, got " +
                                        std::to_string(p.workspace.size())};
    return {};
  }

  // Chunks of at least min_chunk candidates, at most max_chunks of them.
  static constexpr index_t min_chunk = 128, max_chunks = 64;
  static constexpr index_t chunks(index_t n_candidates) {
    return std::min(max_chunks, (n_candidates + min_chunk - 1) / min_chunk);
  }
  // Floats of workspace a call with these sizes needs: per chunk, c + 2 per head and a decoded row.
  static constexpr index_t workspace_floats(index_t heads, index_t c, index_t n_candidates) {
    return chunks(n_candidates) * (heads * (c + 2) + c);
  }
};

}  // namespace dsv4::attn

namespace dsv4 {

template <class Codec>
struct kernel<attn::sparse_attention_op<Codec>, cpu> {
  // Query heads scored together against one kv row: independent accumulator chains keep the FMA
  // units busy where a single dot product waits on its own latency.
  static constexpr index_t head_block = 8;

  static status run(const typename attn::sparse_attention_op<Codec>::params& p) {
    using op = attn::sparse_attention_op<Codec>;
    const index_t heads = p.q.extent(0), c = p.q.extent(1), n = static_cast<index_t>(p.candidates.size());
    const index_t n_chunks = op::chunks(n), len = n_chunks > 0 ? (n + n_chunks - 1) / n_chunks : 0;
    // Chunk k's partial state: acc (heads, c), then max (heads), then sum (heads), then a row
    // buffer (c) for decoding.
    const auto partial = [&](index_t k) { return p.workspace.data() + k * (heads * (c + 2) + c); };
    attn::parallel_for_work(n * heads * c, 0, n_chunks, [&](index_t k) {
      float* acc = partial(k);
      float* mx = acc + heads * c;
      float* sum = mx + heads;
      float* row = sum + heads;
      std::fill(acc, acc + heads * c, 0.0f);
      std::fill(mx, mx + heads, -std::numeric_limits<float>::infinity());
      std::fill(sum, sum + heads, 0.0f);
      for (index_t i = k * len; i < std::min(n, (k + 1) * len); ++i) {
        const std::int32_t j = p.candidates[static_cast<std::size_t>(i)];
        if (j < 0) continue;
        const float* kv = p.kv.read(j, row);
        for (index_t h0 = 0; h0 < heads; h0 += head_block) {
          float z[head_block];
          const index_t hb = std::min(head_block, heads - h0);
          if (hb == head_block) {
            dot_rows<head_block>(&p.q(h0, 0), kv, c, z);
          } else {
            for (index_t b = 0; b < hb; ++b) dot_rows<1>(&p.q(h0 + b, 0), kv, c, z + b);
          }
          for (index_t b = 0; b < hb; ++b) {
            const index_t h = h0 + b;
            float* a = acc + h * c;
            const float zs = z[b] * p.scale;
            if (zs > mx[h]) {  // rescale what was accumulated under the old maximum
              const float r = std::exp(mx[h] - zs);
              sum[h] *= r;
              for (index_t e = 0; e < c; ++e) a[e] *= r;
              mx[h] = zs;
            }
            const float w = std::exp(zs - mx[h]);
            sum[h] += w;
            for (index_t e = 0; e < c; ++e) a[e] += w * kv[e];
          }
        }
      }
    });
    // Merge the chunks in order; the sink joins the denominator as a zero-valued logit.
    attn::parallel_for_work(n_chunks * heads * c, 0, heads, [&](index_t h) {
      float top = p.sink(h);
      for (index_t k = 0; k < n_chunks; ++k) top = std::max(top, partial(k)[heads * c + h]);
      float* out = &p.out(h, 0);
      std::fill(out, out + c, 0.0f);
      float denom = std::exp(p.sink(h) - top);
      for (index_t k = 0; k < n_chunks; ++k) {
        const float* a = partial(k) + h * c;
        const float f = std::exp(partial(k)[heads * c + h] - top);
        denom += partial(k)[heads * c + heads + h] * f;
        for (index_t e = 0; e < c; ++e) out[e] += f * a[e];
      }
      const float inv = 1.0f / denom;
      for (index_t e = 0; e < c; ++e) out[e] *= inv;
    });
    return {};
  }
};

}  // namespace dsv4
