// How far one model's next-token distributions lie from another's over the same positions: the
// mean and largest KL divergence and the top-1 agreement (the measure llama.cpp reports for its
// quantized types). The library uses it to place numerics::fast and numerics::released against
// numerics::exact (tests/model/released_test.cpp, model_bench's fidelity case); an engine can use it
// the same way for a policy or a checkpoint of its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/model/sampling.hpp"

namespace dsv4::model {

// KL(softmax(p) || softmax(q)) of two logit rows, in double: >= 0, 0 for equal rows (up to
// rounding). NaN when the rows differ in length or are empty, a logit is NaN or +inf, or a row is
// all -inf; a -inf logit in p is a token p never draws (it adds nothing), one in q where p can draw
// gives +inf.
inline double kl_divergence(std::span<const float> p, std::span<const float> q) {
  if (p.size() != q.size() || p.empty()) return std::numeric_limits<double>::quiet_NaN();
  // log_softmax(l)[i] = l[i] - top - log(sum exp(l - top)).
  const auto log_norm = [](std::span<const float> l) {
    const double top = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (const float v : l) sum += std::exp(v - top);
    return top + std::log(sum);
  };
  for (std::size_t i = 0; i < p.size(); ++i)
    if (std::isnan(p[i]) || std::isnan(q[i]) || p[i] == std::numeric_limits<float>::infinity() ||
        q[i] == std::numeric_limits<float>::infinity())
      return std::numeric_limits<double>::quiet_NaN();
  const double np = log_norm(p), nq = log_norm(q);
  double kl = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double lp = p[i] - np;
    if (std::isinf(lp)) continue;  // p[i] = -inf: probability 0
    kl += std::exp(lp) * (lp - (q[i] - nq));
  }
  return kl;
}

// Mean and largest KL(p || q) over the rows, and the fraction of rows whose argmax agrees (ties to
// the lower id, as greedy sampling takes them).
struct logit_agreement {
  double mean_kl = 0, max_kl = 0, top1 = 0;
};

// p and q: (rows, vocab) logits of the same positions. Checked before any write: equal shapes, at
// least one row, finite logits or -inf (a row may not be all -inf).
inline status compare_logits(tensor_view<const float, 2> p, tensor_view<const float, 2> q,
                             logit_agreement& out) {
  if (p.extent(0) != q.extent(0) || p.extent(1) != q.extent(1))
    return {errc::shape_mismatch, "compare_logits: p is " + std::to_string(p.extent(0)) + " x " +
                                      std::to_string(p.extent(1)) + ", q " + std::to_string(q.extent(0)) +
                                      " x " + std::to_string(q.extent(1))};
  const index_t rows = p.extent(0), vocab = p.extent(1);
  if (rows < 1 || vocab < 1) return {errc::invalid_argument, "compare_logits: no logits"};
  const auto row = [vocab](tensor_view<const float, 2> l, index_t r) {
    return std::span<const float>(l.data() + r * l.stride(0), static_cast<std::size_t>(vocab));
  };
  for (index_t r = 0; r < rows; ++r)
    for (const auto* l : {&p, &q})
      if (const status s = detail::check_logits(row(*l, r)); !s.ok())
        return {s.code(), std::string("compare_logits: ") + (l == &p ? "p" : "q") + " row " +
                              std::to_string(r) + ": " + s.message()};
  logit_agreement a;
  for (index_t r = 0; r < rows; ++r) {
    const double kl = kl_divergence(row(p, r), row(q, r));
    a.mean_kl += kl / static_cast<double>(rows);
    a.max_kl = std::max(a.max_kl, kl);
    a.top1 += (detail::argmax(row(p, r)) == detail::argmax(row(q, r))) / static_cast<double>(rows);
  }
  out = a;
  return {};
}

}  // namespace dsv4::model
