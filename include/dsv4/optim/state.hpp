// optimizer_state: the per-parameter state an optimizer owns (Muon's momentum, AdamW's two
// moments), one contiguous block per registered parameter, and the boundary checks every step()
// runs before it changes anything.
//
// Muon and AdamW differ only in how many floats they keep per weight element and in the update;
// the bookkeeping (slots, shapes, offsets, step counts, validation messages) lives here once.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::optim {

class optimizer_state {
 public:
  // `per_element`: floats of state per weight element; `owner` prefixes error messages.
  optimizer_state(index_t per_element, std::string_view owner) : per_element_(per_element), owner_(owner) {}

  index_t state_size(const extents_t<3>& shape) const {
    return per_element_ * shape[0] * shape[1] * shape[2];
  }

  // Registers a (batch, rows, cols) parameter with zeroed state; returns its slot.
  result<index_t> add(const extents_t<3>& shape) {
    for (index_t e : shape)
      if (e < 1)
        return status{errc::invalid_argument, owner_ + " add: empty shape " + shape_string<3>(shape)};
    slots_.push_back({shape, static_cast<index_t>(data_.size()), 0});
    data_.resize(data_.size() + static_cast<std::size_t>(state_size(shape)), 0.0f);
    return static_cast<index_t>(slots_.size()) - 1;
  }

  index_t floats() const { return static_cast<index_t>(data_.size()); }
  index_t slots() const { return static_cast<index_t>(slots_.size()); }
  const extents_t<3>& shape(index_t slot) const { return slots_[static_cast<std::size_t>(slot)].shape; }
  // Steps taken so far by the parameter in `slot`.
  index_t steps(index_t slot) const { return slots_[static_cast<std::size_t>(slot)].steps; }
  // The slot's state, count = state_size(shape) floats.
  float* data(index_t slot) { return data_.data() + slots_[static_cast<std::size_t>(slot)].offset; }
  const float* data(index_t slot) const {
    return data_.data() + slots_[static_cast<std::size_t>(slot)].offset;
  }

  // Validates a step's arguments; on success counts the step.
  status begin_step(index_t slot, const tensor_view<float, 3>& w, const tensor_view<const float, 3>& g,
                    float lr) {
    if (slot < 0 || slot >= slots())
      return {errc::out_of_range, owner_ + " step: slot " + std::to_string(slot) + " was never added"};
    const auto& s = shape(slot);
    DSV4_TRY(check_shape(w, s, owner_ + " weights (slot " + std::to_string(slot) + ")"));
    DSV4_TRY(check_shape(g, s, owner_ + " grads (slot " + std::to_string(slot) + ")"));
    if (!(lr >= 0.0f)) return {errc::invalid_argument, owner_ + " step: learning rate " + std::to_string(lr)};
    ++slots_[static_cast<std::size_t>(slot)].steps;
    return {};
  }

 private:
  struct slot_info {
    extents_t<3> shape;  // (batch, rows, cols)
    index_t offset;      // into data_
    index_t steps;
  };
  index_t per_element_;
  std::string owner_;
  std::vector<slot_info> slots_;
  std::vector<float> data_;
};

// Calls f(b, i) for every row i of every matrix b of a (batch, rows, cols) shape, over threads
// when there are enough elements to pay for waking them; rows are independent, so the result
// does not depend on the thread count.
template <class F>
void for_each_row(const extents_t<3>& shape, F&& f) {
  constexpr index_t parallel_min_elements = index_t{1} << 16;
  const auto row = [&](index_t r) { f(r / shape[1], r % shape[1]); };
  if (shape[0] * shape[1] * shape[2] >= parallel_min_elements) {
    parallel_for(0, shape[0] * shape[1], row);
  } else {
    for (index_t r = 0; r < shape[0] * shape[1]; ++r) row(r);
  }
}

}  // namespace dsv4::optim
