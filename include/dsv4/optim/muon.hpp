// muon<Schedule>: the Muon update DeepSeek-V4 trains its matrices with (spec §12.1).
//
// Per logically independent matrix W (n, m) with gradient G, per step:
//   M = mu M + G                                  momentum (mu = 0.95)
//   O = NewtonSchulz<Schedule>(mu M + G)          Nesterov input, orthogonalized
//   W = W (1 - lr wd) - lr sqrt(max(n, m)) gamma O    RMS rescale (gamma = 0.18), decoupled decay
// An orthogonal (n, m) matrix has RMS 1 / sqrt(max(n, m)), so the rescale gives the update an RMS
// of gamma whatever the gradient's scale: AdamW's learning rate and schedule carry over (Moonlight).
// A parameter is a batch of same-shape matrices (the experts of a layer, the groups of wo_a), each
// orthogonalized on its own; the orthogonalization runs the matrices one after another, each
// product spread over every thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/optim/concepts.hpp"
#include "dsv4/optim/newton_schulz.hpp"
#include "dsv4/optim/state.hpp"

namespace dsv4::optim {

struct muon_hparams {
  float momentum = 0.95f;     // mu
  float update_rms = 0.18f;   // gamma: the RMS of the update before the learning rate
  float weight_decay = 0.1f;  // lambda, decoupled: W *= 1 - lr * lambda
  bool nesterov = true;       // orthogonalize mu M + G (true) or M (false)
  ns_precision precision = ns_precision::fp32;
};

template <auto Schedule = v4_hybrid_schedule>
class muon {
 public:
  using hyper_params = muon_hparams;
  using orthogonalizer = newton_schulz<Schedule>;

  explicit muon(hyper_params hp = {}) : hp_(hp) {}

  // One momentum float per weight element.
  static index_t state_size(const extents_t<3>& shape) { return shape[0] * shape[1] * shape[2]; }

  // Registers a (batch, rows, cols) parameter: zeroed momentum, and scratch space grown to fit
  // its matrices (the Nesterov input plus the orthogonalization's workspace).
  result<index_t> add(const extents_t<3>& shape) {
    auto slot = state_.add(shape);
    if (slot.ok()) {
      const index_t need = shape[1] * shape[2] + orthogonalizer::workspace_size(shape[1], shape[2]);
      workspace_.resize(std::max(workspace_.size(), static_cast<std::size_t>(need)));
    }
    return slot;
  }

  index_t state_floats() const { return state_.floats(); }
  // Floats of scratch space held (sized by the largest registered matrix).
  index_t workspace_floats() const { return static_cast<index_t>(workspace_.size()); }
  const hyper_params& hparams() const { return hp_; }
  // (batch, rows, cols) the momentum of a registered parameter.
  tensor_view<const float, 3> momentum(index_t slot) const { return {state_.data(slot), state_.shape(slot)}; }

  status step(index_t slot, const tensor_view<float, 3>& weights, const tensor_view<const float, 3>& grads,
              float lr) {
    DSV4_TRY(state_.begin_step(slot, weights, grads, lr));
    const index_t n = weights.extent(1), m = weights.extent(2);
    const extents_t<3> one{1, n, m};
    float* update = workspace_.data();  // (n, m)
    const std::span<float> ns_workspace =
        std::span<float>(workspace_).subspan(static_cast<std::size_t>(n * m));
    const float mu = hp_.momentum;
    const float scale = lr * std::sqrt(static_cast<float>(std::max(n, m))) * hp_.update_rms;
    const float decay = 1.0f - lr * hp_.weight_decay;
    for (index_t b = 0; b < weights.extent(0); ++b) {
      float* mom = state_.data(slot) + b * n * m;  // (n, m)
      const auto g = grads[b];                     // (n, m)
      for_each_row(one, [&](index_t, index_t i) {
        for (index_t j = 0; j < m; ++j) {
          const float mj = mu * mom[i * m + j] + g(i, j);
          mom[i * m + j] = mj;
          update[i * m + j] = hp_.nesterov ? mu * mj + g(i, j) : mj;
        }
      });
      const tensor_view<float, 2> u(update, {n, m});
      DSV4_TRY(dsv4::run<cpu>(typename orthogonalizer::params{u, u, ns_workspace, hp_.precision}));
      const auto w = weights[b];  // (n, m)
      for_each_row(one, [&](index_t, index_t i) {
        for (index_t j = 0; j < m; ++j) w(i, j) = w(i, j) * decay - scale * update[i * m + j];
      });
    }
    return {};
  }

 private:
  hyper_params hp_;
  optimizer_state state_{1, "muon"};
  std::vector<float> workspace_;
};

static_assert(optimizer<muon<>>);
static_assert(optimizer<muon<keller_jordan_schedule>>);

}  // namespace dsv4::optim
