// Grouping the tokens of a batch by expert, and combining the experts' outputs back per token.
//
// Why: with k experts per token, expert e sees only the tokens that chose it. Sorting the n*k
// (token, slot) pairs by expert lets each expert run one GEMM over a contiguous block of rows
// (decoding its quantized weights once per batch instead of once per token). The plan is a
// counting sort, stable in pair order (pair p = t*k + j is slot j of token t):
//   counts[e]            pairs routed to expert e
//   offsets[e]           first row of expert e's block; offsets[n_experts] = n*k
//   order[r]             the pair at sorted row r
//   inverse[p]           the sorted row of pair p (inverse[order[r]] = r)
// combine() adds, for each token, its k expert outputs in slot order and then the shared expert's,
// so the result does not depend on the batch, on the grouping or on the thread count.
//
// Validation: gather_tokens and combine read rows at the positions order and inverse name, so
// every entry must lie in [0, n*k) and is checked before the first write. Their formulas are
// defined for any such entries; the plans plan_dispatch builds are permutations (inverse[order[r]]
// = r), which the functions do not require and therefore do not check. Pairs are numbered in
// int32: n*k must not exceed 2^31 - 1.
#pragma once

#include <cstdint>
#include <string>

#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/moe/checks.hpp"

namespace dsv4::moe {

struct dispatch_plan {
  tensor_view<std::int32_t, 1> counts;   // (n_experts)
  tensor_view<std::int32_t, 1> offsets;  // (n_experts + 1)
  tensor_view<std::int32_t, 1> order;    // (n * k) pair index at each sorted row
  tensor_view<std::int32_t, 1> inverse;  // (n * k) sorted row of each pair
};

namespace detail {
// Every entry of rows (pairs) lies in [0, pairs).
inline status check_rows_in_range(tensor_view<const std::int32_t, 1> rows, index_t pairs, const char* name) {
  for (index_t p = 0; p < rows.extent(0); ++p)
    if (rows(p) < 0 || rows(p) >= pairs) {
      return {errc::invalid_argument, std::string(name) + "[" + std::to_string(p) +
                                          "] = " + std::to_string(rows(p)) + " is not a row in [0, " +
                                          std::to_string(pairs) + ")"};
    }
  return {};
}
}  // namespace detail

// Builds the plan for experts (n, k) out of n_experts (at least 1); ids outside [0, n_experts) are
// an error reported before anything is written.
inline status plan_dispatch(tensor_view<const std::int32_t, 2> experts, index_t n_experts,
                            const dispatch_plan& plan) {
  DSV4_TRY(detail::check_extents(experts, "experts"));
  const index_t n = experts.extent(0), k = experts.extent(1);
  if (n_experts < 1 || n_experts >= detail::max_pairs) {
    return {errc::invalid_argument, "n_experts = " + std::to_string(n_experts) + " is not in [1, 2^31 - 1)"};
  }
  DSV4_TRY(detail::check_pairs(n, k, "experts"));
  const index_t pairs = n * k;
  DSV4_TRY(detail::check_view(plan.counts, {n_experts}, "plan.counts"));
  DSV4_TRY(detail::check_view(plan.offsets, {n_experts + 1}, "plan.offsets"));
  DSV4_TRY(detail::check_view(plan.order, {pairs}, "plan.order"));
  DSV4_TRY(detail::check_view(plan.inverse, {pairs}, "plan.inverse"));
  for (index_t t = 0; t < n; ++t)
    for (index_t j = 0; j < k; ++j)
      if (experts(t, j) < 0 || experts(t, j) >= n_experts) {
        return {errc::invalid_argument, "experts[" + std::to_string(t) + "][" + std::to_string(j) +
                                            "] = " + std::to_string(experts(t, j)) + " is not in [0, " +
                                            std::to_string(n_experts) + ")"};
      }
  for (index_t e = 0; e < n_experts; ++e) plan.counts(e) = 0;
  for (index_t t = 0; t < n; ++t)
    for (index_t j = 0; j < k; ++j) ++plan.counts(experts(t, j));
  plan.offsets(0) = 0;
  for (index_t e = 0; e < n_experts; ++e) plan.offsets(e + 1) = plan.offsets(e) + plan.counts(e);
  // Fill each expert's block in pair order, using counts as the running cursor per expert.
  for (index_t e = 0; e < n_experts; ++e) plan.counts(e) = 0;
  for (index_t p = 0; p < pairs; ++p) {
    const std::int32_t e = experts(p / k, p % k);
    const std::int32_t row = plan.offsets(e) + plan.counts(e)++;
    plan.order(row) = static_cast<std::int32_t>(p);
    plan.inverse(p) = row;
  }
  return {};
}

// xs (n*k, d): row r = x[order[r] / k], the token of the pair at sorted row r; k >= 1, every
// order[r] in [0, n*k).
inline status gather_tokens(tensor_view<const float, 2> x, tensor_view<const std::int32_t, 1> order,
                            index_t k, tensor_view<float, 2> xs) {
  DSV4_TRY(detail::check_extents(x, "x"));
  const index_t n = x.extent(0), d = x.extent(1);
  if (k < 1)
    return {errc::invalid_argument, "gather_tokens: k = " + std::to_string(k) + " must be at least 1"};
  DSV4_TRY(detail::check_pairs(n, k, "x"));
  DSV4_TRY(detail::check_view(order, {n * k}, "order"));
  DSV4_TRY(detail::check_view(xs, {n * k, d}, "xs"));
  DSV4_TRY(detail::check_rows_in_range(order, n * k, "order"));
  parallel_for(0, n * k, [&](index_t r) {
    const index_t t = order(r) / k;
    for (index_t c = 0; c < d; ++c) xs(r, c) = x(t, c);
  });
  return {};
}

// y (n, d): y[t] = (ys[inverse[t*k]] + ... + ys[inverse[t*k + k-1]]) + shared[t], left to right;
// k >= 1, every inverse[p] in [0, n*k); shared may be an empty view (no shared expert).
inline status combine(tensor_view<const float, 2> ys, tensor_view<const std::int32_t, 1> inverse, index_t k,
                      tensor_view<const float, 2> shared, tensor_view<float, 2> y) {
  DSV4_TRY(detail::check_extents(y, "y"));
  const index_t n = y.extent(0), d = y.extent(1);
  if (k < 1) return {errc::invalid_argument, "combine: k = " + std::to_string(k) + " must be at least 1"};
  DSV4_TRY(detail::check_pairs(n, k, "y"));
  DSV4_TRY(detail::check_view(inverse, {n * k}, "inverse"));
  DSV4_TRY(detail::check_view(ys, {n * k, d}, "ys"));
  DSV4_TRY(detail::check_extents(shared, "shared"));
  if (!shared.empty()) DSV4_TRY(check_shape(shared, {n, d}, "shared"));
  DSV4_TRY(detail::check_rows_in_range(inverse, n * k, "inverse"));
  parallel_for(0, n, [&](index_t t) {
    for (index_t c = 0; c < d; ++c) {
      float acc = ys(inverse(t * k), c);
      for (index_t j = 1; j < k; ++j) acc += ys(inverse(t * k + j), c);
      y(t, c) = shared.empty() ? acc : acc + shared(t, c);
    }
  });
  return {};
}

}  // namespace dsv4::moe
