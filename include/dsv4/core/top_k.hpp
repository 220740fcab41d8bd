// Top-k selection with one ranking rule for the whole library: the Lightning Indexer's choice of
// compressed blocks (attn/indexer.hpp) and the MoE router's choice of experts (moe/router.hpp).
//
// The rule, a total order on (score, index):
//   - a larger score ranks first; -0 and +0 are equal scores;
//   - NaN ranks below every number (-inf included), and all NaNs are equal;
//   - equal scores go to the lower index.
// Why NaN last: a NaN score says nothing in favour of its entry, so it is chosen only when fewer
// than k numbers are left, whatever its sign bit (a float's order would put +NaN above +inf, and
// a single NaN row of a corrupted input would then win every selection it takes part in).
//
// Two selections, both by that rule:
//   select_top_k         the min(k, n) best of a long list, as a set in ascending index order;
//                        `selected` (n) doubles as the workspace. A sampled bound cuts the list
//                        first, so 512 of 262,144 scores cost about one pass over them.
//   select_top_k_ranked  the k best of a short list (score + optional additive bias), written in
//                        rank order into k slots, with no other memory: the router's case (6 of
//                        256 experts per token, on the caller's output row).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/tensor_view.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4 {

// The score as an unsigned key in the rule's order: keys compare as the rule ranks scores. Floats
// map to their order-preserving integers (the sign bit flipped for positive values, every bit for
// negative ones; -0 + 0 = +0 first), so -inf is 0x007fffff and +inf 0xff800000; every NaN maps to
// 0, below them all.
inline std::uint32_t top_k_key(float score) {
  const auto u = std::bit_cast<std::uint32_t>(score + 0.0f);
  // Without a branch on the sign (a score's sign is a coin toss): all ones or the sign bit alone.
  const std::uint32_t key =
      u ^ (static_cast<std::uint32_t>(static_cast<std::int32_t>(u) >> 31) | 0x80000000u);
  return std::isnan(score) ? 0u : key;
}

// Whether (key a, index ia) ranks before (key b, index ib).
inline bool top_k_ranks_before(std::uint32_t a, index_t ia, std::uint32_t b, index_t ib) {
  return a > b || (a == b && ia < ib);
}

// The min(k, n) best of scores (n) by the rule, written in ascending index order to the front of
// `selected` (at least n long, also the workspace); returns how many (0 for k <= 0).
//
// A strided sample of up to 4096 keys gives a bound that about twice k keys reach, one pass in
// index order keeps the indices of those keys, and the best k of these few are the best k of all,
// whatever the bound, as long as at least k reach it (otherwise every index is kept): every key
// above the k-th best reaches any bound that k keys reach. At 1M tokens a CSA step selects 512 of
// 262,144: a pass over the scores instead of an nth_element over indices that reach the scores
// at random (1.7 ms on two threads, measured when the indexer used one).
inline index_t select_top_k(std::span<const float> scores, index_t k, std::span<std::int32_t> selected) {
  const auto n = static_cast<index_t>(scores.size());
  DSV4_ASSERT(static_cast<index_t>(selected.size()) >= n, "select_top_k: selected shorter than scores");
  const index_t count = std::max<index_t>(0, std::min(k, n));
  const auto key = [&](index_t i) { return top_k_key(scores[static_cast<std::size_t>(i)]); };
  // The bound: the sample key whose rank in the sample matches about 2 count + 64 of n.
  std::uint32_t bound = 0;
  constexpr index_t max_samples = 4096;
  if (n >= 8 * count + 1024) {  // else most scores would pass any bound
    std::array<std::uint32_t, max_samples> sample;
    const index_t samples = std::min(max_samples, n / 4);
    for (index_t j = 0; j < samples; ++j) sample[static_cast<std::size_t>(j)] = key(j * n / samples);
    const index_t rank = std::min(samples - 1, (2 * count + 64) * samples / n);
    std::nth_element(sample.begin(), sample.begin() + rank, sample.begin() + samples, std::greater<>());
    bound = sample[static_cast<std::size_t>(rank)];
  }
  const auto keep = [&](std::uint32_t at_least) {
    index_t m = 0, i = 0;
#if defined(__AVX2__)
    // Eight keys at a time, compared as signed numbers with their sign bits flipped; few pass.
    // NaN lanes get key 0 as in top_k_key.
    const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i limit = _mm256_set1_epi32(static_cast<int>(at_least ^ 0x80000000u));
    for (; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_loadu_ps(&scores[static_cast<std::size_t>(i)]);
      const __m256i u = _mm256_castps_si256(_mm256_add_ps(x, _mm256_setzero_ps()));
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
      const __m256i keys =
          _mm256_andnot_si256(nan, _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), flip)));
      const __m256i below = _mm256_cmpgt_epi32(limit, _mm256_xor_si256(keys, flip));
      for (auto pass = ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(below))) & 0xffu;
           pass != 0; pass &= pass - 1)
        selected[static_cast<std::size_t>(m++)] = static_cast<std::int32_t>(i + std::countr_zero(pass));
    }
#endif
    for (; i < n; ++i)
      if (key(i) >= at_least) selected[static_cast<std::size_t>(m++)] = static_cast<std::int32_t>(i);
    return m;
  };
  index_t m = keep(bound);
  if (m < count) m = keep(0);
  const auto better = [&](std::int32_t a, std::int32_t b) {
    return top_k_ranks_before(key(a), a, key(b), b);
  };
  const auto first = selected.begin();
  std::nth_element(first, first + count, first + m, better);
  std::sort(first, first + count);
  return count;
}

// ids[0 .. min(k, n)) = the best of scores[e] + bias[e] (n), in rank order, k = ids.size(); bias
// may be empty (no bias). Returns how many were written. Each score is kept in a sorted run of at
// most k entries (an insertion, O(n k) at worst): meant for short lists such as the experts of a
// router, where it needs no memory but ids.
inline index_t select_top_k_ranked(std::span<const float> scores, std::span<const float> bias,
                                   std::span<std::int32_t> ids) {
  const auto n = static_cast<index_t>(scores.size());
  DSV4_ASSERT(bias.empty() || bias.size() == scores.size(), "select_top_k_ranked: bias and scores differ");
  const index_t count = std::min(static_cast<index_t>(ids.size()), n);
  const auto key = [&](index_t e) {
    const auto i = static_cast<std::size_t>(e);
    return top_k_key(bias.empty() ? scores[i] : scores[i] + bias[i]);
  };
  index_t m = 0;  // ids[0 .. m) hold the best so far, in rank order
  for (index_t e = 0; e < n; ++e) {
    const std::uint32_t ke = key(e);
    // Candidates come in increasing index, so an equal key already held ranks first.
    if (m == count && (count == 0 || !top_k_ranks_before(ke, e, key(ids[static_cast<std::size_t>(m - 1)]),
                                                         ids[static_cast<std::size_t>(m - 1)])))
      continue;
    index_t j = m < count ? m++ : m - 1;
    for (; j > 0 && top_k_ranks_before(ke, e, key(ids[static_cast<std::size_t>(j - 1)]),
                                       ids[static_cast<std::size_t>(j - 1)]);
         --j)
      ids[static_cast<std::size_t>(j)] = ids[static_cast<std::size_t>(j - 1)];
    ids[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(e);
  }
  return count;
}

}  // namespace dsv4
