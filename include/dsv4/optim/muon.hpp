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
#include <exception>
#include <span>
#include <string>
#include <vector>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/backend.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/optim/concepts.hpp"
#include "dsv4/optim/newton_schulz.hpp"
#include "dsv4/optim/state.hpp"

namespace dsv4::optim {

// Defaults: DeepSeek-V4's values (spec §12.1).
struct muon_hparams {
  float momentum = 0.95f;     // mu, in [0, 1)
  float update_rms = 0.18f;   // gamma: the RMS of the update before the learning rate; finite, >= 0
  float weight_decay = 0.1f;  // lambda, decoupled: W *= 1 - lr * lambda; finite, >= 0
  bool nesterov = true;       // orthogonalize mu M + G (true) or M (false)
  ns_precision precision = ns_precision::fp32;
};

// The domain of each field; the message names the field.
inline status check_hparams(const muon_hparams& hp) {
  DSV4_TRY(detail::check_unit_interval(hp.momentum, "muon_hparams.momentum"));
  DSV4_TRY(detail::check_non_negative(hp.update_rms, "muon_hparams.update_rms"));
  DSV4_TRY(detail::check_non_negative(hp.weight_decay, "muon_hparams.weight_decay"));
  if (hp.precision != ns_precision::fp32 && hp.precision != ns_precision::bf16)
    return {errc::invalid_argument, "muon_hparams.precision: not an ns_precision value"};
  return {};
}

template <auto Schedule = v4_hybrid_schedule>
class muon {
 public:
  using hyper_params = muon_hparams;
  using orthogonalizer = newton_schulz<Schedule>;

  // Hyper-parameters outside their domain make hparams_status() fail, and with it every add() and
  // step() of this optimizer (no exception leaves a constructor of dsv4).
  explicit muon(hyper_params hp = {}) : hp_(hp), hp_status_(check_hparams(hp)) {}

  // One momentum float per weight element.
  static result<index_t> state_size(const extents_t<3>& shape) {
    return detail::state_size_of(shape, 1, "muon state_size");
  }

  // Registers a (batch, rows, cols) parameter: zeroed momentum, and scratch space grown to fit
  // its matrices (the Nesterov input plus the orthogonalization's workspace). A shape whose sizes
  // overflow or cannot be allocated is refused with the optimizer unchanged.
  result<index_t> add(const extents_t<3>& shape) {
    DSV4_TRY(hp_status_);
    const auto size = detail::state_size_of(shape, 1, "muon add");
    if (!size.ok()) return size.error();
    const index_t ns_need = orthogonalizer::workspace_size(shape[1], shape[2]);
    index_t need = 0;
    if (ns_need < 0 || !checked_add(shape[1] * shape[2], ns_need, need))  // n m fits: *size does
      return status{errc::out_of_range, "muon add: the workspace of shape " + shape_string<3>(shape) +
                                            " does not fit in 64 bits"};
    const std::size_t old_workspace = workspace_.size();
    if (static_cast<std::size_t>(need) > old_workspace) {
      try {
        workspace_.resize(static_cast<std::size_t>(need));
      } catch (const std::exception&) {  // bad_alloc, or length_error past max_size()
        return status{errc::out_of_range, "muon add: cannot allocate " + std::to_string(need) +
                                              " floats of workspace for shape " + shape_string<3>(shape)};
      }
    }
    auto slot = state_.add(shape);
    if (!slot.ok()) workspace_.resize(old_workspace);  // shrinking neither allocates nor throws
    return slot;
  }

  index_t state_floats() const { return state_.floats(); }
  // Floats of scratch space held (sized by the largest registered matrix).
  index_t workspace_floats() const { return static_cast<index_t>(workspace_.size()); }
  const hyper_params& hparams() const { return hp_; }
  const status& hparams_status() const { return hp_status_; }
  // (batch, rows, cols) the momentum of a registered parameter.
  tensor_view<const float, 3> momentum(index_t slot) const { return {state_.data(slot), state_.shape(slot)}; }

  // Validates the arguments, then proves in one pass over grads and the momentum that the new
  // momentum is finite (a NaN or an infinity is reported with the slot and the element, nothing
  // changed), then updates every matrix of the batch.
  status step(index_t slot, const tensor_view<float, 3>& weights, const tensor_view<const float, 3>& grads,
              float lr) {
    DSV4_TRY(hp_status_);
    DSV4_TRY(state_.check_step(slot, weights, grads, lr, workspace_));
    const index_t n = weights.extent(1), m = weights.extent(2);
    const float mu = hp_.momentum;
    DSV4_TRY(state_.check_finite(slot, "the momentum from grads", [&](index_t b, index_t i, index_t j) {
      return std::isfinite(mu * state_.data(slot)[(b * n + i) * m + j] + grads(b, i, j));
    }));
    state_.count_step(slot);
    const extents_t<3> one{1, n, m};
    float* update = workspace_.data();  // (n, m)
    const std::span<float> ns_workspace =
        std::span<float>(workspace_).subspan(static_cast<std::size_t>(n * m));
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
  status hp_status_;
  optimizer_state state_{1, "muon"};
  std::vector<float> workspace_;
};

static_assert(optimizer<muon<>>);
static_assert(optimizer<muon<keller_jordan_schedule>>);

}  // namespace dsv4::optim
