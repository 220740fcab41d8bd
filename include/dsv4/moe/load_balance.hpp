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
// double in a fixed order; the exact V4 formulas are UNVERIFIED beyond "as in V3" (spec §16).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::moe {

inline constexpr float bias_update_speed = 0.001f;      // gamma, DeepSeek-V3 and V4
inline constexpr float sequence_balance_alpha = 1e-4f;  // V4's balance-loss weight

// counts[e] = the number of (token, slot) selections of expert e in experts (n, k).
inline status count_expert_load(tensor_view<const std::int32_t, 2> experts,
                                tensor_view<std::int64_t, 1> counts) {
  const index_t n_experts = counts.extent(0);
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

inline load_summary summarize_load(tensor_view<const std::int64_t, 1> counts) {
  load_summary s;
  if (counts.empty()) return s;
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

// bias[e] += speed * sign(mean - counts[e]); an expert exactly at the mean keeps its bias.
inline status update_bias(tensor_view<float, 1> bias, tensor_view<const std::int64_t, 1> counts,
                          float speed = bias_update_speed) {
  DSV4_TRY(check_shape(counts, {bias.extent(0)}, "counts"));
  const double mean = summarize_load(counts).mean;
  for (index_t e = 0; e < bias.extent(0); ++e) {
    const auto c = static_cast<double>(counts(e));
    bias(e) += c > mean ? -speed : (c < mean ? speed : 0.0f);
  }
  return {};
}

// The sequence-wise balance loss of one sequence: scores (T, E) unbiased affinities, experts (T, k).
// Computed as alpha / T * sum_t sum_e f_e s_{e,t} / sum_e' s_{e',t}, which is the formula above.
inline result<float> sequence_balance_loss(tensor_view<const float, 2> scores,
                                           tensor_view<const std::int32_t, 2> experts,
                                           float alpha = sequence_balance_alpha) {
  const index_t tokens = scores.extent(0), n_experts = scores.extent(1), k = experts.extent(1);
  DSV4_TRY(check_shape(experts, {tokens, -1}, "experts"));
  if (tokens == 0 || k == 0) return status{errc::invalid_argument, "sequence_balance_loss: empty sequence"};
  std::vector<std::int64_t> selected(static_cast<std::size_t>(n_experts));  // (E), not a hot path
  DSV4_TRY(count_expert_load(experts, {selected.data(), {n_experts}}));
  const double f_unit = static_cast<double>(n_experts) / static_cast<double>(k * tokens);
  double loss = 0;
  for (index_t t = 0; t < tokens; ++t) {
    double row = 0, weighted = 0;
    for (index_t e = 0; e < n_experts; ++e) row += scores(t, e);
    for (index_t e = 0; e < n_experts; ++e)
      weighted += f_unit * static_cast<double>(selected[static_cast<std::size_t>(e)]) * scores(t, e);
    loss += weighted / row;
  }
  return static_cast<float>(alpha * loss / static_cast<double>(tokens));
}

}  // namespace dsv4::moe
