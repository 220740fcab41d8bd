// Load-balancing utilities for training the MoE (spec §9.1; DeepSeek-V3 §2.1.2 and §2.1.3, which
// V4 keeps "as in V3" with the V4 speeds and weights).
//
// Auxiliary-loss-free balancing: after each step, every expert's selection-only bias moves by a
// fixed speed gamma against its load: b_e += gamma * sign(mean_load - load_e), so an overloaded
// expert becomes less likely to be selected and an underloaded one more (gamma = 0.001 for V4).
// The bias never enters the mixing weights (router.hpp).
//
// Sequence-wise balance loss (weight alpha = 0.0001 for V4), over the T tokens of one sequence:
//   f_e = E / (k T) * #{t : e selected for token t}
//   P_e = 1/T * sum_t s_{e,t} / sum_e' s_{e',t}      (affinities normalized over all experts)
//   L   = alpha * sum_e f_e P_e
// It is 1 * alpha for a perfectly uniform router and grows as the load concentrates. Sums run in
// double in a fixed order; the exact V4 formulas are UNVERIFIED beyond "as in V3" (spec §16). A
// token whose affinities all underflowed to 0 counts as uniform (P = 1/E from it), the same
// convention as the router's equal shares.
//
// Every function checks its views (no negative extents, shapes that agree) and its scalars (finite
// speed and alpha) before it writes, and reports the argument at fault.
#pragma once

#include <cmath>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/moe/checks.hpp"

namespace dsv4::moe {

inline constexpr float bias_update_speed = 0.001f;      // gamma, DeepSeek-V3 and V4
inline constexpr float sequence_balance_alpha = 1e-4f;  // V4's balance-loss weight

// counts[e] = the number of (token, slot) selections of expert e in experts (n, k); counts
// (n_experts) has at least one entry.
inline status count_expert_load(tensor_view<const std::int32_t, 2> experts,
                                tensor_view<std::int64_t, 1> counts) {
  DSV4_TRY(detail::check_extents(experts, "experts"));
  const index_t n_experts = counts.extent(0);
  if (n_experts < 1) {
    return {errc::shape_mismatch,
            "counts: expected one entry per expert, got " + shape_string<1>(counts.extents())};
  }
  for (index_t t = 0; t < experts.extent(0); ++t)
    for (index_t j = 0; j < experts.extent(1); ++j)
      if (experts(t, j) < 0 || experts(t, j) >= n_experts) {
        return {errc::invalid_argument, "experts[" + std::to_string(t) + "][" + std::to_string(j) +
                                            "] = " + std::to_string(experts(t, j)) + " is not in [0, " +
                                            std::to_string(n_experts) + ")"};
      }
  for (index_t e = 0; e < n_experts; ++e) counts(e) = 0;
  for (index_t t = 0; t < experts.extent(0); ++t)
    for (index_t j = 0; j < experts.extent(1); ++j) ++counts(experts(t, j));
  return {};
}

// Summary statistics of a load vector; max_violation is (max - mean) / mean ("MaxVio").
struct load_summary {
  double mean = 0;
  std::int64_t min = 0, max = 0;
  double max_violation = 0;
};

// The summary of counts (n_experts); all zeros for an empty vector.
inline result<load_summary> summarize_load(tensor_view<const std::int64_t, 1> counts) {
  DSV4_TRY(detail::check_extents(counts, "counts"));
  load_summary s;
  if (counts.extent(0) == 0) return s;
  s.min = s.max = counts(0);
  double total = 0;
  for (index_t e = 0; e < counts.extent(0); ++e) {
    total += static_cast<double>(counts(e));
    s.min = counts(e) < s.min ? counts(e) : s.min;
    s.max = counts(e) > s.max ? counts(e) : s.max;
  }
  s.mean = total / static_cast<double>(counts.extent(0));
  s.max_violation = s.mean > 0 ? (static_cast<double>(s.max) - s.mean) / s.mean : 0.0;
  return s;
}

// bias[e] += speed * sign(mean - counts[e]); an expert exactly at the mean keeps its bias. speed:
// finite and >= 0.
inline status update_bias(tensor_view<float, 1> bias, tensor_view<const std::int64_t, 1> counts,
                          float speed = bias_update_speed) {
  DSV4_TRY(detail::check_extents(bias, "bias"));
  DSV4_TRY(detail::check_view(counts, {bias.extent(0)}, "counts"));
  if (!std::isfinite(speed) || speed < 0.0f) {
    return {errc::invalid_argument, "speed = " + std::to_string(speed) + " must be finite and >= 0"};
  }
  const result<load_summary> summary = summarize_load(counts);
  if (!summary) return summary.error();
  const double mean = summary->mean;
  for (index_t e = 0; e < bias.extent(0); ++e) {
    const auto c = static_cast<double>(counts(e));
    bias(e) += c > mean ? -speed : (c < mean ? speed : 0.0f);
  }
  return {};
}

// The sequence-wise balance loss of one sequence: scores (T, E) unbiased affinities, experts (T, k),
// T >= 1 and k >= 1; alpha finite. Computed as alpha / T * sum_t sum_e f_e s_{e,t} / sum_e' s_{e',t},
// which is the formula above. Not a hot path: it allocates E counters (an allocation failure is
// reported, not thrown).
inline result<float> sequence_balance_loss(tensor_view<const float, 2> scores,
                                           tensor_view<const std::int32_t, 2> experts,
                                           float alpha = sequence_balance_alpha) {
  DSV4_TRY(detail::check_extents(scores, "scores"));
  const index_t tokens = scores.extent(0), n_experts = scores.extent(1);
  DSV4_TRY(detail::check_view(experts, {tokens, -1}, "experts"));
  const index_t k = experts.extent(1);
  if (tokens == 0 || k == 0) return status{errc::invalid_argument, "sequence_balance_loss: empty sequence"};
  if (!std::isfinite(alpha)) {
    return status{errc::invalid_argument, "alpha = " + std::to_string(alpha) + " must be finite"};
  }
  std::vector<std::int64_t> selected;  // (E)
  try {
    selected.resize(static_cast<std::size_t>(n_experts));
  } catch (const std::exception&) {
    return status{errc::out_of_range,
                  "scores: no memory for " + std::to_string(n_experts) + " expert counters"};
  }
  DSV4_TRY(count_expert_load(experts, {selected.data(), {n_experts}}));
  const double f_unit = static_cast<double>(n_experts) / static_cast<double>(k * tokens);
  double loss = 0;
  for (index_t t = 0; t < tokens; ++t) {
    double row = 0, weighted = 0, uniform = 0;
    for (index_t e = 0; e < n_experts; ++e) row += scores(t, e);
    for (index_t e = 0; e < n_experts; ++e) {
      const double f = f_unit * static_cast<double>(selected[static_cast<std::size_t>(e)]);
      weighted += f * scores(t, e);
      uniform += f;
    }
    loss += row == 0.0 ? uniform / static_cast<double>(n_experts) : weighted / row;
  }
  return static_cast<float>(alpha * loss / static_cast<double>(tokens));
}

}  // namespace dsv4::moe
