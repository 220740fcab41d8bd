// Lightning Indexer of CSA layers (spec §7): scores every visible compressed block for a query and
// keeps the top k.
//
//   q^I = wq_b(qr)                  (n_I, c_I), RoPE on the last rope_dim dims at the query position
//   w   = weights_proj(x) / (sqrt(c_I) * sqrt(n_I))                                     (n_I)
//   I_s = sum_h w_h * ReLU(q^I_h . K_s)         over the visible index keys s < floor((t+1)/4)
//
// The index keys come from the indexer's own overlapping ratio-4 compressor at c_I dims (same
// windows as the main CSA compressor; compressor.hpp). The exact path runs in fp32 without the
// Hadamard rotation and FP4 simulation of the released model: the rotation is orthonormal and
// changes nothing in exact arithmetic (§7.2), the FP4 rounding belongs to the released storage.
//
// Top-k is deterministic: blocks are ordered by score, ties by lower index, and the selected
// indices are returned in ascending order, so the attention that consumes them sums in a fixed
// order whatever the selection algorithm.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// Index heads one score may combine (the released models use 64); bounds a stack buffer.
inline constexpr index_t max_index_heads = 256;

struct indexer_shape {
  int n_heads = 0;   // n_I
  int head_dim = 0;  // c_I
  int top_k = 0;     // k
  compressor_shape keys{};

  constexpr index_t q_width() const { return index_t{n_heads} * head_dim; }
};

// Views of one indexer's parameters (checkpoint names indexer.{wq_b,weights_proj,compressor.*}).
struct indexer_weights {
  tensor_view<const float, 2> wq_b;          // (n_I * c_I, d_c)
  tensor_view<const float, 2> weights_proj;  // (n_I, d)
  compressor_weights compressor;             // overlapping, at c_I
};

inline status check_indexer(const indexer_shape& s, const indexer_weights& w, index_t d_model,
                            index_t q_lora_rank) {
  if (s.n_heads <= 0 || s.head_dim <= 0 || s.top_k <= 0)
    return {errc::invalid_argument, "indexer: n_heads, head_dim and top_k must be positive"};
  if (s.n_heads > max_index_heads)
    return {errc::unsupported, "indexer: n_heads " + std::to_string(s.n_heads) + " exceeds max_index_heads " +
                                   std::to_string(max_index_heads)};
  DSV4_TRY(check_shape(w.wq_b, {s.q_width(), q_lora_rank}, "indexer.wq_b.weight"));
  DSV4_TRY(check_shape(w.weights_proj, {s.n_heads, d_model}, "indexer.weights_proj.weight"));
  DSV4_TRY(check_contiguous(w.wq_b, "indexer.wq_b.weight"));
  DSV4_TRY(check_contiguous(w.weights_proj, "indexer.weights_proj.weight"));
  return check_compressor(s.keys, w.compressor, d_model, "indexer.compressor");
}

// The query side of the indexer for one token at position pos: q (n_I, c_I) and head weights
// (n_I), both written by the call.
inline void indexer_query(const indexer_shape& s, const indexer_weights& w, const rope_table& rope,
                          std::span<const float> qr, std::span<const float> x, index_t pos,
                          tensor_view<float, 2> q, std::span<float> head_weights) {
  DSV4_ASSERT(q.is_contiguous() && q.size() == s.q_width(),
              "indexer_query: q must be a contiguous (n_I, c_I)");
  matvec(w.wq_b, qr, {q.data(), static_cast<std::size_t>(s.q_width())});
  rope.apply_rows(q, pos);
  matvec(w.weights_proj, x, head_weights);
  const float scale =
      1.0f / (std::sqrt(static_cast<float>(s.head_dim)) * std::sqrt(static_cast<float>(s.n_heads)));
  for (float& v : head_weights) v *= scale;
}

// scores[s] = sum_h w_h * ReLU(q_h . keys[s]) for every row s of keys (n, c_I); scores (n).
// q (n_I, c_I) contiguous, n_I <= max_index_heads.
inline void indexer_scores(tensor_view<const float, 2> q, std::span<const float> head_weights,
                           tensor_view<const float, 2> keys, std::span<float> scores) {
  DSV4_ASSERT(q.is_contiguous() && q.extent(0) <= max_index_heads, "indexer_scores: q shape");
  const index_t c = q.extent(1);
  parallel_for_work(keys.extent(0) * q.size(), 0, keys.extent(0), [&](index_t s) {
    float qk[max_index_heads];
    dot_rows(q.data(), &keys(s, 0), c, q.extent(0), qk);
    float acc = 0.0f;
    for (index_t h = 0; h < q.extent(0); ++h) acc += head_weights[h] * std::max(0.0f, qk[h]);
    scores[s] = acc;
  });
}

// The min(k, n) best of scores (n) by (score descending, index ascending), written in ascending
// index order to the front of `selected` (at least n long); returns how many.
inline index_t select_top_k(std::span<const float> scores, index_t k, std::span<std::int32_t> selected) {
  const auto n = static_cast<index_t>(scores.size());
  DSV4_ASSERT(static_cast<index_t>(selected.size()) >= n, "select_top_k: selected shorter than scores");
  for (index_t i = 0; i < n; ++i) selected[i] = static_cast<std::int32_t>(i);
  const index_t count = std::min(k, n);
  if (count < n) {
    const auto better = [&](std::int32_t a, std::int32_t b) {
      return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    };
    std::nth_element(selected.begin(), selected.begin() + count, selected.begin() + n, better);
    std::sort(selected.begin(), selected.begin() + count);
  }
  return count;
}

}  // namespace dsv4::attn
