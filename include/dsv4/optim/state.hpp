// optimizer_state: the per-parameter state an optimizer owns (Muon's momentum, AdamW's two
// moments), one contiguous block per registered parameter, and the boundary checks every step()
// runs before it changes anything (arguments, then one pass that proves no non-finite value would
// enter the state). Sizes are overflow-checked and an allocation that fails becomes a status.
//
// Muon and AdamW differ only in how many floats they keep per weight element and in the update;
// the bookkeeping (slots, shapes, offsets, step counts, validation messages) lives here once.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::optim {

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

namespace detail {
// Floats of state for a (batch, rows, cols) parameter at `per_element` floats per element: every
// extent >= 1, and the count (in bytes, too) fits in 64 bits. `who` prefixes the message.
inline result<index_t> state_size_of(const extents_t<3>& shape, index_t per_element, std::string_view who) {
  for (index_t e : shape)
    if (e < 1)
      return status{errc::invalid_argument,
                    std::string(who) + ": shape " + shape_string<3>(shape) + " must have every extent >= 1"};
  index_t floats = per_element;
  for (index_t e : shape)
    if (!checked_mul(floats, e, floats) || floats > INT64_MAX / static_cast<index_t>(sizeof(float)))
      return status{errc::out_of_range, std::string(who) + ": the state of shape " + shape_string<3>(shape) +
                                            " does not fit in 64 bits"};
  return floats;
}

// The domains of hyper-parameters, named in the message ("adamw_hparams.beta1: ...").
inline status check_unit_interval(float v, std::string_view name) {  // [0, 1)
  if (v >= 0.0f && v < 1.0f) return {};
  return {errc::invalid_argument,
          std::string(name) + ": expected a value in [0, 1), got " + std::to_string(v)};
}
inline status check_non_negative(float v, std::string_view name) {  // finite, >= 0
  if (v >= 0.0f && std::isfinite(v)) return {};
  return {errc::invalid_argument,
          std::string(name) + ": expected a finite value >= 0, got " + std::to_string(v)};
}
inline status check_positive(float v, std::string_view name) {  // finite, > 0
  if (v > 0.0f && std::isfinite(v)) return {};
  return {errc::invalid_argument,
          std::string(name) + ": expected a finite value > 0, got " + std::to_string(v)};
}

}  // namespace detail

class optimizer_state {
 public:
  // `per_element`: floats of state per weight element; `owner` prefixes error messages.
  optimizer_state(index_t per_element, std::string_view owner) : per_element_(per_element), owner_(owner) {}

  result<index_t> state_size(const extents_t<3>& shape) const {
    return detail::state_size_of(shape, per_element_, owner_ + " state_size");
  }

  // Registers a (batch, rows, cols) parameter with zeroed state; returns its slot. A shape whose
  // size overflows, or whose state cannot be allocated, is refused with the state unchanged.
  result<index_t> add(const extents_t<3>& shape) {
    const std::string who = owner_ + " add";
    const auto size = detail::state_size_of(shape, per_element_, who);
    if (!size.ok()) return size.error();
    index_t total = 0;
    if (!checked_add(floats(), *size, total) || total > INT64_MAX / static_cast<index_t>(sizeof(float)))
      return status{errc::out_of_range, who + ": the state of all parameters would not fit in 64 bits"};
    const std::size_t old = data_.size();
    try {
      data_.resize(static_cast<std::size_t>(total), 0.0f);
      slots_.push_back({shape, static_cast<index_t>(old), 0});
    } catch (const std::exception&) {  // bad_alloc, or length_error past max_size()
      data_.resize(old);               // shrinking neither allocates nor throws
      return status{errc::out_of_range, who + ": cannot allocate " + std::to_string(*size) +
                                            " floats of state for shape " + shape_string<3>(shape)};
    }
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

  // Validates a step's arguments without changing anything: the slot, both shapes, the learning
  // rate (finite, >= 0), weights whose elements are distinct memory, and no overlap between
  // weights, grads, the state of every slot and `scratch` (the optimizer's workspace). Allocates
  // nothing unless it fails.
  status check_step(index_t slot, const tensor_view<float, 3>& w, const tensor_view<const float, 3>& g,
                    float lr, std::span<const float> scratch = {}) const {
    if (slot < 0 || slot >= slots())
      return {errc::out_of_range, owner_ + " step: slot " + std::to_string(slot) + " was never added"};
    const auto& s = shape(slot);
    if (w.extents() != s) return check_shape(w, s, owner_ + " weights (slot " + std::to_string(slot) + ")");
    if (g.extents() != s) return check_shape(g, s, owner_ + " grads (slot " + std::to_string(slot) + ")");
    if (!(lr >= 0.0f) || !std::isfinite(lr))
      return {errc::invalid_argument,
              owner_ + " step: learning rate must be finite and >= 0, got " + std::to_string(lr)};
    if (!has_distinct_elements(w))
      return {errc::invalid_argument, owner_ + " weights (slot " + std::to_string(slot) +
                                          "): strides make two elements share memory"};
    const tensor_view<const float, 1> state(data_.data(), {floats()});
    const tensor_view<const float, 1> ws(scratch.data(), {static_cast<index_t>(scratch.size())});
    const char* clash = overlaps(w, g)       ? "weights overlap grads"
                        : overlaps(w, state) ? "weights overlap the optimizer's state"
                        : overlaps(g, state) ? "grads overlap the optimizer's state"
                        : overlaps(w, ws)    ? "weights overlap the optimizer's workspace"
                        : overlaps(g, ws)    ? "grads overlap the optimizer's workspace"
                                             : nullptr;
    if (clash)
      return {errc::invalid_argument, owner_ + " step (slot " + std::to_string(slot) + "): " + clash};
    return {};
  }

  // Checks that finite(b, i, j) holds for every element of the slot's shape (one parallel pass);
  // otherwise names the slot and the first failing element in (b, i, j) order. `what` says which
  // value would have become non-finite.
  template <class Finite>
  status check_finite(index_t slot, std::string_view what, Finite&& finite) const {
    const auto& s = shape(slot);
    std::atomic<bool> bad{false};
    for_each_row(s, [&](index_t b, index_t i) {
      for (index_t j = 0; j < s[2]; ++j)
        if (!finite(b, i, j)) {
          bad.store(true, std::memory_order_relaxed);
          return;
        }
    });
    if (!bad.load()) return {};
    for (index_t b = 0; b < s[0]; ++b)
      for (index_t i = 0; i < s[1]; ++i)
        for (index_t j = 0; j < s[2]; ++j)
          if (!finite(b, i, j))
            return {errc::invalid_argument,
                    owner_ + " step (slot " + std::to_string(slot) + "): " + std::string(what) + " at " +
                        shape_string<3>({b, i, j}) + " would be non-finite; nothing was changed"};
    return {};
  }

  // Counts a step of `slot` (after every check passed).
  void count_step(index_t slot) { ++slots_[static_cast<std::size_t>(slot)].steps; }

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

}  // namespace dsv4::optim
