// Lightning Indexer of CSA layers (spec §7): scores every visible compressed block for a query and
// keeps the top k.
//
//   q^I = wq_b(qr)                  (n_I, c_I), RoPE on the last rope_dim dims at the query position
//   w   = weights_proj(x) / (sqrt(c_I) * sqrt(n_I))                                     (n_I)
//   I_s = sum_h w_h * ReLU(q^I_h . K_s)         over the visible index keys s < floor((t+1)/4)
//
// The index keys come from the indexer's own overlapping ratio-4 compressor at c_I dims (same
// windows as the main CSA compressor; compressor.hpp) and are stored by the cache's key codec:
// fp32/bf16 on the exact paths, Hadamard-rotated FP4 in the released layout (kv_codec.hpp). The
// rotation is orthonormal and changes no score in exact arithmetic (§7.2); the query is rotated
// to match. Under numerics::released the query is FP4-simulated too and the scores are BF16, as
// the released model computes them (§18.3; indexer_query, indexer_scores).
//
// Top-k is deterministic: blocks are ordered by score, ties by lower index, and the selected
// indices are returned in ascending order, so the attention that consumes them sums in a fixed
// order whatever the selection algorithm.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/kv_codec.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/sgemm.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/top_k.hpp"

namespace dsv4::attn {

struct indexer_shape {
  int n_heads = 0;   // n_I
  int head_dim = 0;  // c_I
  int top_k = 0;     // k
  compressor_shape keys{};

  constexpr index_t q_width() const { return index_t{n_heads} * head_dim; }
};

// Views of one indexer's parameters (checkpoint names indexer.{wq_b,weights_proj,compressor.*}):
// wq_b in the format Linear (FP8 in the released checkpoints), the others in Other (BF16).
template <weight_matrix Linear = f32_matrix, weight_matrix Other = f32_matrix>
struct indexer_weights {
  Linear wq_b;                           // (n_I * c_I, d_c)
  Other weights_proj;                    // (n_I, d)
  compressor_weights<Other> compressor;  // overlapping, at c_I
};

template <weight_matrix Linear, weight_matrix Other>
status check_indexer(const indexer_shape& s, const indexer_weights<Linear, Other>& w, index_t d_model,
                     index_t q_lora_rank) {
  if (s.n_heads <= 0 || s.head_dim <= 0 || s.top_k <= 0)
    return {errc::invalid_argument, "indexer: n_heads, head_dim and top_k must be positive"};
  DSV4_TRY(check_matrix(w.wq_b, s.q_width(), q_lora_rank, "indexer.wq_b"));
  DSV4_TRY(check_matrix(w.weights_proj, s.n_heads, d_model, "indexer.weights_proj"));
  return check_compressor(s.keys, w.compressor, d_model, "indexer.compressor");
}

// Finishes the indexer's query for the token at position pos from its projections q = wq_b qr
// (n_I, c_I) and head_weights = weights_proj x (n_I), in place: RoPE on q, the
// 1/(sqrt(c_I) sqrt(n_I)) weight scale, and, when the keys are stored Hadamard-rotated
// (kv_codec.hpp), the same rotation of every head so that q . key is unchanged.
//
// numerics::released (spec §7.2, §18.3) follows the reference's roundings: q and the weights are
// BF16 activations, RoPE's result and the rotation's are BF16, the query is then FP4-simulated in
// 1 x 32 tiles (the keys are FP4 in the cache), and the scaled weights are rounded to BF16.
inline void indexer_query(const indexer_shape& s, const rope_table& rope, index_t pos, bool rotated,
                          tensor_view<float, 2> q, std::span<float> head_weights,
                          numerics num = numerics::exact) {
  DSV4_ASSERT(q.is_contiguous() && q.size() == s.q_width(),
              "indexer_query: q must be a contiguous (n_I, c_I)");
  const std::span<float> all(q.data(), static_cast<std::size_t>(q.size()));
  to_activation(num, all);
  to_activation(num, head_weights);
  rope.apply_rows(q, pos);
  to_activation(num, all);
  if (rotated) {
    for (index_t h = 0; h < s.n_heads; ++h) hadamard_rotate(&q(h, 0), s.head_dim);
    to_activation(num, all);
  }
  if (rounds_activations(num))
    for (index_t h = 0; h < s.n_heads; ++h) fp4_simulate({&q(h, 0), static_cast<std::size_t>(s.head_dim)});
  const float scale =
      1.0f / (std::sqrt(static_cast<float>(s.head_dim)) * std::sqrt(static_cast<float>(s.n_heads)));
  for (float& v : head_weights) v = to_activation(num, v * scale);
}

// Scoring runs as products with sgemm's micro-kernel (core/sgemm.hpp's sgemm_direct): the query
// heads are packed once per call, keys are decoded (or copied) key_block at a time into a tile,
// (key_block, c_I) x (c_I, n_I); the blocks are spread over at most max_score_lanes lanes with a
// workspace each. A key's score depends only on its own row, so it is the same whatever the lane,
// the thread or the number of keys.
inline constexpr index_t key_block = 512;
inline constexpr index_t max_score_lanes = 16;

inline constexpr index_t score_lanes(index_t n) {
  return std::min(max_score_lanes, (n + key_block - 1) / key_block);
}
// Floats of one lane: the decoded tile (key_block, c) and the scores (key_block, heads), on whole
// cache lines.
inline constexpr index_t score_lane_floats(index_t heads, index_t c) {
  return round_up(key_block * (c + heads), sgemm_op::line_floats);
}
// Floats of workspace indexer_scores needs for n keys of width c scored by `heads` heads.
inline constexpr index_t indexer_workspace_floats(index_t heads, index_t c, index_t n) {
  return sgemm_op::line_floats + sliver_floats(c, heads) + score_lanes(n) * score_lane_floats(heads, c);
}

// sum_h w[h] * ReLU(qk[h]) over the heads: eight lanes (lane l takes heads l, l+8, ...) summed
// as dsv4::dot's tree, so that the heads' terms do not wait on one another.
inline float relu_weighted_sum(const float* qk, std::span<const float> w) {
  const auto heads = static_cast<index_t>(w.size());
  detail::v8f acc = {};
  const detail::v8f zero = {};
  index_t h = 0;
  for (; h + 8 <= heads; h += 8) {
    detail::v8f q, wv;
    detail::load8(q, qk + h);
    detail::load8(wv, w.data() + h);
    acc += wv * (q > zero ? q : zero);
  }
  float tail = 0.0f;
  for (; h < heads; ++h) tail += w[h] * std::max(0.0f, qk[h]);
  return detail::reduce_lanes(acc) + tail;
}

// The released model's head sum (spec §18.3: the whole score path is BF16): each head's product
// rounded to BF16, its ReLU times the weight rounded to BF16, the terms summed in fp32 and the
// sum rounded to BF16. BF16 scores tie far more often than fp32 ones; select_top_k's rule (lower
// index first) decides the ties.
inline float released_head_sum(const float* qk, std::span<const float> w) {
  float sum = 0.0f;
  for (std::size_t h = 0; h < w.size(); ++h)
    sum += round_to_bf16(w[h] * std::max(0.0f, round_to_bf16(qk[h])));
  return round_to_bf16(sum);
}

// out[0 .. 8) = released_head_sum of the 8 rows at qk (heads wide, `ld` floats apart), computed
// together: lane i is row i, the heads are taken in order with the same operations, so the bits
// are those of released_head_sum row by row (8 x 8 register transposes turn 8 heads of 8 rows
// into one vector per head). The ReLU comes before the first rounding (the same bits: rounding
// keeps the sign and zero, and a NaN gives 0 either way), so that rounding sees no NaN; with
// PlainWeights (every weight finite and nonzero, which the caller checks once) no product
// w * ReLU is NaN either, and both roundings take the short form.
template <bool PlainWeights = false>
void released_head_sums8(const float* qk, index_t ld, std::span<const float> w, float* out) {
  using detail::v8f;
  const auto heads = static_cast<index_t>(w.size());
  const v8f zero = {};
  v8f sum = {};
  auto add = [&](const v8f& x, float wh) {
    const v8f term = wh * detail::round_to_bf16_8_not_nan(x > zero ? x : zero);
    sum += PlainWeights ? detail::round_to_bf16_8_not_nan(term) : detail::round_to_bf16_8(term);
  };
  index_t h = 0;
#if defined(__AVX__)
  for (; h + 8 <= heads; h += 8) {
    v8f x[8];
    for (index_t i = 0; i < 8; ++i) detail::load8(x[i], qk + i * ld + h);
    detail::sgemm::transpose8(x);  // x[j]: head h + j of the 8 rows
    for (index_t j = 0; j < 8; ++j) add(x[j], w[static_cast<std::size_t>(h + j)]);
  }
#endif
  for (; h < heads; ++h) {
    const v8f x = {qk[h],          qk[ld + h],     qk[2 * ld + h], qk[3 * ld + h],
                   qk[4 * ld + h], qk[5 * ld + h], qk[6 * ld + h], qk[7 * ld + h]};
    add(x, w[static_cast<std::size_t>(h)]);
  }
  detail::store8(out, detail::round_to_bf16_8(sum));
}

// scores[i] = sum_h w_h * ReLU(q_h . key_i) for the first scores.size() rows of keys (c_I wide,
// stored in any codec); q (n_I, c_I) contiguous; workspace of indexer_workspace_floats floats.
// Under numerics::released the head sum is released_head_sum (q and w as indexer_query leaves
// them); the products q_h . key_i are the same fp32 sums either way (exact for FP4 q and keys).
template <class Codec>
void indexer_scores(tensor_view<const float, 2> q, std::span<const float> head_weights,
                    row_region<Codec, const std::byte> keys, std::span<float> scores,
                    std::span<float> workspace, numerics num = numerics::exact) {
  const index_t heads = q.extent(0), c = q.extent(1), n = static_cast<index_t>(scores.size());
  DSV4_ASSERT(q.is_contiguous() && c == keys.width && n <= keys.rows &&
                  static_cast<index_t>(workspace.size()) >= indexer_workspace_floats(heads, c, n),
              "indexer_scores: shapes");
  const index_t lanes = score_lanes(n), blocks = (n + key_block - 1) / key_block;
  const bool plain_weights = std::all_of(head_weights.begin(), head_weights.end(),
                                         [](float v) { return std::isfinite(v) && v != 0.0f; });
  float* const q_packed = sgemm_op::first_line(workspace);
  pack_slivers(tensor_view<const float, 2>(q.data(), {c, heads}, {1, c}), q_packed);  // q^T (c, heads)
  float* const lane0 = q_packed + sliver_floats(c, heads);
  parallel_for_work(n * q.size(), 0, lanes, [&](index_t lane) {
    float* tile = lane0 + lane * score_lane_floats(heads, c);  // (key_block, c)
    float* qk = tile + key_block * c;                          // (key_block, heads)
    for (index_t b = lane * blocks / lanes; b < (lane + 1) * blocks / lanes; ++b) {
      const index_t k0 = b * key_block, rows = std::min(key_block, n - k0);
      // Every codec's rows go through the tile, fp32 ones copied: the products read each row once
      // per 16 heads, so rows read in place would come from memory four times over.
      for (index_t r = 0; r < rows;) {
        const auto [page, first] = keys.page_at(k0 + r);
        const index_t run = std::min(rows - r, page.rows - first);
        for (index_t j = 0; j < run; ++j) page.read_into(first + j, tile + (r + j) * c);
        r += run;
      }
      sgemm_direct(packed_b_product(tile, c, q_packed, qk, heads, rows, heads, c));  // qk = tile . q^T
      if (rounds_activations(num)) {
        index_t r = 0;
        for (; r + 8 <= rows; r += 8) {
          if (plain_weights) {
            released_head_sums8<true>(qk + r * heads, heads, head_weights, &scores[k0 + r]);
          } else {
            released_head_sums8<false>(qk + r * heads, heads, head_weights, &scores[k0 + r]);
          }
        }
        for (; r < rows; ++r) scores[k0 + r] = released_head_sum(qk + r * heads, head_weights);
      } else {
        for (index_t r = 0; r < rows; ++r) scores[k0 + r] = relu_weighted_sum(qk + r * heads, head_weights);
      }
    }
  });
}

// The same over fp32 keys (n, c_I).
inline void indexer_scores(tensor_view<const float, 2> q, std::span<const float> head_weights,
                           tensor_view<const float, 2> keys, std::span<float> scores,
                           std::span<float> workspace, numerics num = numerics::exact) {
  indexer_scores(q, head_weights, f32_rows(keys), scores, workspace, num);
}

// The min(k, n) best of scores (n) by (score descending, NaN below every number, index
// ascending), written in ascending index order to the front of `selected` (at least n long, also
// the workspace); returns how many. The library's one top-k (core/top_k.hpp), whose rule the MoE
// router shares.
using dsv4::select_top_k;

}  // namespace dsv4::attn
