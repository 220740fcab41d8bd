// 03_muon_step: how a training engine drives dsv4's optimizers, and Muon against AdamW.
//
// Part 1 maps a few DeepSeek-V4-Flash checkpoint tensors to their optimizer (spec §12.3).
// Part 2 trains four independent least-squares "experts" W_e (32, 64), min ||W_e X - Y_e||^2, as
// one (4, 32, 64) parameter: Muon orthogonalizes each expert's update on its own. The inputs X are
// mixed by a random matrix (condition number ~130 along directions no coordinate axis matches),
// the situation where Muon's orthogonalized update beats AdamW's per-coordinate scaling. Both run
// 100 steps with the same linearly decaying learning rate (0.1, the best of {0.01, 0.03, 0.1, 0.3}
// for both) and V4's hyper-parameters, weight decay 0 since the problem has no regularizer.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/optim/adamw.hpp"
#include "dsv4/optim/muon.hpp"
#include "dsv4/optim/param_groups.hpp"

namespace {
using dsv4::index_t;
using namespace dsv4::optim;

constexpr index_t experts = 4, rows = 32, cols = 64, samples = 256, steps = 100;

void print_assignment() {
  std::printf("V4-Flash tensors and their optimizer (spec 12.3; docs/muon.md for the open cases)\n");
  for (const char* name :
       {"embed.weight", "layers.3.attn_norm.weight", "layers.3.hc_attn_fn", "layers.3.hc_attn_base",
        "layers.3.attn.wq_a.weight", "layers.3.attn.wo_a.weight", "layers.3.attn.attn_sink",
        "layers.3.attn.compressor.ape", "layers.3.ffn.gate.weight", "layers.3.ffn.gate.bias",
        "layers.3.ffn.experts.7.w1.weight", "layers.3.ffn.experts.7.w1.scale"}) {
    const auto g = v4_param_group(name, dsv4::config::v4_flash);
    const char* rule = g->rule == param_rule::muon ? "Muon" : g->rule == param_rule::adamw ? "AdamW" : "-";
    std::printf("  %-36s %-6s", name, rule);
    if (g->matrices > 1) std::printf(" as %lld independent matrices", static_cast<long long>(g->matrices));
    std::printf("\n");
  }
}

struct problem {
  std::vector<float> x;       // (cols, samples)
  std::vector<float> x_t;     // (samples, cols)
  std::vector<float> target;  // (experts, rows, samples)

  problem() : x(cols * samples), x_t(cols * samples), target(experts * rows * samples) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> mix(cols * cols), z(cols * samples), w_true(experts * rows * cols);
    for (float& v : mix) v = normal(rng) / std::sqrt(float(cols));
    for (float& v : z) v = normal(rng);
    for (float& v : w_true) v = normal(rng) / std::sqrt(float(cols));
    for (index_t i = 0; i < cols; ++i)
      for (index_t k = 0; k < cols; ++k)
        for (index_t s = 0; s < samples; ++s) x[i * samples + s] += mix[i * cols + k] * z[k * samples + s];
    for (index_t i = 0; i < cols; ++i)
      for (index_t s = 0; s < samples; ++s) x_t[s * cols + i] = x[i * samples + s];
    predict(w_true, target);
  }

  // out (experts, rows, samples) = W_e X for every expert.
  void predict(const std::vector<float>& w, std::vector<float>& out) const {
    std::fill(out.begin(), out.end(), 0.0f);
    for (index_t r = 0; r < experts * rows; ++r)
      for (index_t k = 0; k < cols; ++k)
        for (index_t s = 0; s < samples; ++s) out[r * samples + s] += w[r * cols + k] * x[k * samples + s];
  }

  // Mean squared error / 2 at W; grad = (W X - Y) X^T / (samples rows) per expert.
  double loss(const std::vector<float>& w, std::vector<float>& grad) const {
    std::vector<float> residual(target.size());
    predict(w, residual);
    double sum = 0;
    for (std::size_t i = 0; i < residual.size(); ++i) {
      residual[i] -= target[i];
      sum += double(residual[i]) * residual[i];
    }
    // Rows of W_e in turn: grad row r = sum_s residual[r][s] * (column s of X), a unit-stride sum.
    std::fill(grad.begin(), grad.end(), 0.0f);
    for (index_t r = 0; r < experts * rows; ++r)
      for (index_t s = 0; s < samples; ++s) {
        const float e = residual[r * samples + s] / float(samples * rows);
        for (index_t k = 0; k < cols; ++k) grad[r * cols + k] += e * x_t[s * cols + k];
      }
    return sum / (2.0 * double(experts * rows * samples));
  }
};

// Trains from W = 0 and prints the loss every 20 steps; returns the final loss.
template <class Optimizer>
double train(const char* name, const problem& p, Optimizer opt) {
  std::vector<float> w(experts * rows * cols, 0.0f), grad(w.size());
  const dsv4::extents_t<3> shape{experts, rows, cols};
  const index_t slot = *opt.add(shape);
  std::printf("  %-5s (state %lld floats):", name, static_cast<long long>(opt.state_floats()));
  for (index_t t = 0; t < steps; ++t) {
    const double l = p.loss(w, grad);
    if (t % 20 == 0) std::printf(" %9.2e", l);
    const float lr = 0.1f * (1.0f - float(t) / float(steps));
    const auto st = opt.step(slot, {w.data(), shape}, {grad.data(), shape}, lr);
    if (!st.ok()) std::printf("\n%s\n", st.to_string().c_str());
  }
  const double final_loss = p.loss(w, grad);
  std::printf(" %9.2e\n", final_loss);
  return final_loss;
}
}  // namespace

int main() {
  print_assignment();
  std::printf("\nLeast squares, %lld experts of (%lld, %lld), loss at steps 0, 20, 40, 60, 80 and %lld:\n",
              static_cast<long long>(experts), static_cast<long long>(rows), static_cast<long long>(cols),
              static_cast<long long>(steps));
  const problem p;
  muon_hparams mh;
  mh.weight_decay = 0.0f;
  adamw_hparams ah;
  ah.weight_decay = 0.0f;
  const double m = train("Muon", p, muon<>(mh));
  const double a = train("AdamW", p, adamw(ah));
  std::printf("\nAfter %lld steps Muon's loss is %.1fx lower than AdamW's.\n", static_cast<long long>(steps),
              a / m);
  return m < a ? 0 : 1;
}
