// adamw: AdamW with decoupled weight decay, for the parameters Muon does not take (spec §12.3:
// embedding, head, RMSNorm weights, mHC static biases and gates). DeepSeek-V4 uses beta1 = 0.9,
// beta2 = 0.95, eps = 1e-20, weight decay 0.1.
//
// Per element, at step t of the parameter (PyTorch's formulation, so the numbers compare):
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   w = w (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// eps = 1e-20 is a normal float, so it only guards 0 / 0 (a gradient that has always been zero
// gives no update) without damping small second moments as 1e-8 would.
#pragma once

#include <cmath>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/optim/concepts.hpp"
#include "dsv4/optim/state.hpp"

namespace dsv4::optim {

// Defaults: DeepSeek-V4's values (spec §12.3).
struct adamw_hparams {
  float beta1 = 0.9f;         // in [0, 1)
  float beta2 = 0.95f;        // in [0, 1)
  float eps = 1e-20f;         // finite, > 0
  float weight_decay = 0.1f;  // finite, >= 0
};

// The domain of each field; the message names the field.
inline status check_hparams(const adamw_hparams& hp) {
  DSV4_TRY(detail::check_unit_interval(hp.beta1, "adamw_hparams.beta1"));
  DSV4_TRY(detail::check_unit_interval(hp.beta2, "adamw_hparams.beta2"));
  DSV4_TRY(detail::check_positive(hp.eps, "adamw_hparams.eps"));
  return detail::check_non_negative(hp.weight_decay, "adamw_hparams.weight_decay");
}

class adamw {
 public:
  using hyper_params = adamw_hparams;

  // Hyper-parameters outside their domain make hparams_status() fail, and with it every add() and
  // step() of this optimizer (no exception leaves a constructor of dsv4).
  explicit adamw(hyper_params hp = {}) : hp_(hp), hp_status_(check_hparams(hp)) {}

  // Two floats per weight element: the first moment, then the second (each (batch, rows, cols)).
  static result<index_t> state_size(const extents_t<3>& shape) {
    return detail::state_size_of(shape, 2, "adamw state_size");
  }

  result<index_t> add(const extents_t<3>& shape) {
    DSV4_TRY(hp_status_);
    return state_.add(shape);
  }
  index_t state_floats() const { return state_.floats(); }
  const hyper_params& hparams() const { return hp_; }
  const status& hparams_status() const { return hp_status_; }
  // (batch, rows, cols) the first and second moments of a registered parameter.
  tensor_view<const float, 3> first_moment(index_t slot) const {
    return {state_.data(slot), state_.shape(slot)};
  }
  tensor_view<const float, 3> second_moment(index_t slot) const {
    const auto& s = state_.shape(slot);
    return {state_.data(slot) + s[0] * s[1] * s[2], s};
  }

  // Validates the arguments, then proves in one pass over grads and both moments that the new
  // moments are finite (a NaN, an infinity, or a gradient whose square overflows is reported
  // with the slot and the element, nothing changed), then updates.
  status step(index_t slot, const tensor_view<float, 3>& weights, const tensor_view<const float, 3>& grads,
              float lr) {
    DSV4_TRY(hp_status_);
    DSV4_TRY(state_.check_step(slot, weights, grads, lr));
    const auto& shape = state_.shape(slot);
    const index_t rows = shape[1], cols = shape[2], count = shape[0] * rows * cols;
    const float b1 = hp_.beta1, b2 = hp_.beta2;
    float* m1 = state_.data(slot);  // (batch, rows, cols)
    float* m2 = m1 + count;         // (batch, rows, cols)
    DSV4_TRY(state_.check_finite(slot, "the moments from grads", [&](index_t b, index_t i, index_t j) {
      const index_t e = (b * rows + i) * cols + j;
      const float g = grads(b, i, j);
      return std::isfinite(b1 * m1[e] + (1.0f - b1) * g) && std::isfinite(b2 * m2[e] + (1.0f - b2) * g * g);
    }));
    state_.count_step(slot);
    const auto t = static_cast<double>(state_.steps(slot));
    const auto step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(b1), t)));
    const auto inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(static_cast<double>(b2), t)));
    const float decay = 1.0f - lr * hp_.weight_decay;
    for_each_row(shape, [&](index_t b, index_t i) {
      const index_t base = (b * rows + i) * cols;
      for (index_t j = 0; j < cols; ++j) {
        const float g = grads(b, i, j);
        const float m = b1 * m1[base + j] + (1.0f - b1) * g;
        const float v = b2 * m2[base + j] + (1.0f - b2) * g * g;
        m1[base + j] = m;
        m2[base + j] = v;
        weights(b, i, j) = weights(b, i, j) * decay - step_size * m / (std::sqrt(v) * inv_sqrt_bc2 + hp_.eps);
      }
    });
    return {};
  }

 private:
  hyper_params hp_;
  status hp_status_;
  optimizer_state state_{2, "adamw"};
};

static_assert(optimizer<adamw>);

}  // namespace dsv4::optim
