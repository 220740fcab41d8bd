// Token sampling: the next token from one row of logits, by greedy choice or by a seeded draw
// after temperature, top-k, top-p (nucleus) and min-p filtering, plus the stop rule of a request.
//
// A draw is a pure function of (logits, params, counter): the uniform number comes from
// Philox4x32-10, a counter-based generator (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011), keyed by the request's seed and counted by the position of the token being
// sampled in its sequence. There is no generator state to carry or advance, so a sequence gets the
// same tokens from the same seed whatever batch it runs in, in whatever order, after a restart.
//
// The order of a draw (sample): z = logits / temperature; the top_k largest (core/top_k.hpp's
// rule: ties to the lower id); softmax over them in double with the maximum subtracted; the
// survivors sorted by probability descending, ties to the lower id; top_p keeps the shortest
// prefix of that order whose cumulative probability reaches top_p; min_p drops the tokens below
// min_p times the largest probability; u = uniform_at(seed, counter) picks by inverse CDF over the
// rest, renormalized, in the same order. top_p and min_p each keep a prefix of one order, so
// their order does not matter. temperature = 0 is greedy: the argmax, ties to the lower id.
//
// A logit of -inf bans its token (probability 0); NaN or +inf, or a row with no finite logit, is
// an error. Every check runs before the first write; nothing allocates (the caller's workspace,
// sample_workspace_bytes(vocab), holds the candidates).
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/top_k.hpp"
#include "dsv4/core/workspace.hpp"

namespace dsv4::model {

struct sampling_params {
  float temperature = 0.0f;  // finite, >= 0; 0 = greedy
  int top_k = 0;             // in [0, vocab]; 0 = off
  float top_p = 1.0f;        // in (0, 1]; 1 = off
  float min_p = 0.0f;        // in [0, 1]; 0 = off
  std::uint64_t seed = 0;    // the key of uniform_at
};

namespace detail {
// The shortest decimal that reads back as v ("1.5", "-inf", "nan").
inline std::string float_string(float v) {
  std::array<char, 32> buf{};
  const auto end = std::to_chars(buf.data(), buf.data() + buf.size(), v).ptr;
  return std::string(buf.data(), end);
}

inline status bad_param(std::string_view field, const std::string& value, std::string_view domain) {
  return {errc::invalid_argument,
          "sampling_params." + std::string(field) + " = " + value + " is outside " + std::string(domain)};
}
}  // namespace detail

// p is valid for a vocabulary of `vocab` tokens.
inline status check_sampling(const sampling_params& p, index_t vocab) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f)
    return detail::bad_param("temperature", detail::float_string(p.temperature), "[0, inf)");
  if (p.top_k < 0 || p.top_k > vocab)
    return detail::bad_param("top_k", std::to_string(p.top_k),
                             "[0, " + std::to_string(vocab) + "] (the vocabulary)");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return detail::bad_param("top_p", detail::float_string(p.top_p), "(0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return detail::bad_param("min_p", detail::float_string(p.min_p), "[0, 1]");
  return {};
}

// Philox4x32-10 (Random123's philox4x32 with 10 rounds): the block of counter c under key k.
constexpr std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> c,
                                                     std::array<std::uint32_t, 2> k) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {  // the Weyl sequence of keys
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c[0];
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c[2];
    c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
         static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
  }
  return c;
}

// A uniform number in [0, 1), a multiple of 2^-53: the top 53 bits of the first two words of
// Philox4x32-10 with counter (counter low, counter high, 0, 0) and key (seed low, seed high).
constexpr double uniform_at(std::uint64_t seed, std::uint64_t counter) {
  const auto x =
      philox4x32_10({static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0u, 0u},
                    {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  const std::uint64_t bits = (std::uint64_t{x[0]} << 32 | x[1]) >> 11;
  return static_cast<double>(bits) * 0x1p-53;
}

// Stop after `token` once it is in stop_ids or `generated` (new tokens so far, this one included)
// reaches max_new_tokens.
struct stop_condition {
  std::span<const std::int32_t> stop_ids;
  index_t max_new_tokens;
};

inline bool should_stop(const stop_condition& c, std::int32_t token, index_t generated) {
  return generated >= c.max_new_tokens ||
         std::find(c.stop_ids.begin(), c.stop_ids.end(), token) != c.stop_ids.end();
}

namespace detail {

struct sample_candidate {
  double p;  // exp(z - max z), not normalized
  std::int32_t id;
};

// The workspace of sample for a vocabulary of `vocab` tokens. One layout for the size query and
// the carving (core/workspace.hpp).
struct sample_buffers {
  std::span<std::int32_t> selected;        // (vocab) select_top_k's ids and workspace
  std::span<sample_candidate> candidates;  // (vocab) the tokens with a nonzero probability

  static sample_buffers carve(workspace_layout& l, index_t vocab) {
    sample_buffers b;
    b.selected = l.take_span<std::int32_t>(vocab);
    b.candidates = l.take_span<sample_candidate>(vocab);
    return b;
  }
};

// A row of logits sample can draw from: not empty, ids that fit int32, no NaN or +inf, at least
// one logit above -inf.
inline status check_logits(std::span<const float> logits) {
  if (logits.empty()) return {errc::shape_mismatch, "logits: empty (no token to sample)"};
  if (logits.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    return {errc::shape_mismatch,
            "logits: " + std::to_string(logits.size()) + " entries, more than int32 token ids can name"};
  bool any_finite = false;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity())
      return {errc::invalid_argument, "logits[" + std::to_string(i) + "] = " + float_string(v) +
                                          " is not finite (only -inf may ban a token)"};
    any_finite = any_finite || v != -std::numeric_limits<float>::infinity();
  }
  if (any_finite) return {};
  return {errc::invalid_argument,
          "logits: all " + std::to_string(logits.size()) + " logits are -inf (no token can be drawn)"};
}

// The first index of the largest logit (the row is checked: no NaN).
inline std::int32_t argmax(std::span<const float> logits) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<std::int32_t>(best);
}

}  // namespace detail

// Bytes of workspace sample needs for a vocabulary of `vocab` tokens (SIZE_MAX when that does not
// fit in memory).
inline std::size_t sample_workspace_bytes(index_t vocab) {
  workspace_layout size_only;
  detail::sample_buffers::carve(size_only, vocab);
  return size_only.used;
}

// The token drawn from logits (vocab) under p, with u = uniform_at(p.seed, counter); counter is the
// position of the token in its sequence. ws: sample_workspace_bytes(vocab) bytes, 64-byte aligned,
// asked for greedy calls too. Fails, writing nothing, when p is invalid for the vocabulary (
// check_sampling), logits is empty, holds NaN or +inf, or is -inf throughout, or ws is too small or
// misaligned. Cost: O(vocab) with top_k > 0, else a sort of the tokens of nonzero probability.
inline result<std::int32_t> sample(std::span<const float> logits, const sampling_params& p,
                                   std::uint64_t counter, std::span<std::byte> ws) {
  const auto vocab = static_cast<index_t>(logits.size());
  DSV4_TRY(detail::check_logits(logits));
  DSV4_TRY(check_sampling(p, vocab));
  DSV4_TRY(check_workspace(ws, sample_workspace_bytes(vocab)));
  if (p.temperature == 0.0f) return detail::argmax(logits);

  workspace_layout l{ws.data()};
  const auto b = detail::sample_buffers::carve(l, vocab);
  // The top-k ids (ascending), or every id.
  const bool cut = p.top_k > 0 && p.top_k < vocab;
  const index_t m = cut ? select_top_k(logits, p.top_k, b.selected) : vocab;
  const auto id_at = [&](index_t j) {
    return cut ? b.selected[static_cast<std::size_t>(j)] : static_cast<std::int32_t>(j);
  };
  float top = -std::numeric_limits<float>::infinity();
  for (index_t j = 0; j < m; ++j) top = std::max(top, logits[static_cast<std::size_t>(id_at(j))]);
  // Softmax numerators in double: z = logit / temperature stays finite for any finite logit and
  // temperature > 0 (|z| < 2^128 / 2^-149), and the largest numerator is exactly 1.
  const double t = p.temperature, z_max = double{top} / t;
  index_t n = 0;
  for (index_t j = 0; j < m; ++j) {
    const std::int32_t id = id_at(j);
    const double e = std::exp(double{logits[static_cast<std::size_t>(id)]} / t - z_max);
    if (e > 0.0) b.candidates[static_cast<std::size_t>(n++)] = {e, id};
  }
  const auto c = b.candidates.first(static_cast<std::size_t>(n));
  std::sort(c.begin(), c.end(), [](const detail::sample_candidate& a, const detail::sample_candidate& o) {
    return a.p > o.p || (a.p == o.p && a.id < o.id);
  });
  const auto sum = [&](std::size_t count) {  // in the sorted order, as the walks below add
    double s = 0.0;
    for (std::size_t i = 0; i < count; ++i) s += c[i].p;
    return s;
  };

  std::size_t keep = c.size();
  if (p.top_p < 1.0f) {
    // The walk ends by the last candidate: its running sum is the total, >= top_p * total.
    const double threshold = double{p.top_p} * sum(keep);
    double cum = 0.0;
    keep = 0;
    while (cum < threshold) cum += c[keep++].p;
  }
  // c[0].p = 1 >= min_p * c[0].p: the first candidate always stays.
  const double min_prob = double{p.min_p} * c[0].p;
  while (c[keep - 1].p < min_prob) --keep;

  // Inverse CDF: the first candidate whose running sum passes u * total (< total, as u < 1).
  const double target = uniform_at(p.seed, counter) * sum(keep);
  double cum = 0.0;
  std::size_t i = 0;
  for (; i + 1 < keep; ++i) {
    cum += c[i].p;
    if (target < cum) break;
  }
  return c[i].id;
}

}  // namespace dsv4::model
