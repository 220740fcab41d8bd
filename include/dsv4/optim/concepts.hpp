// The optimizer concept: what Muon, AdamW and any user optimizer offer to a training loop.
//
// Optimizers stay out of the model type (design: inference builds never instantiate them). A
// training engine registers each parameter's shape once, gets back a slot, and after each backward
// pass calls step(slot, weights, grads, lr) with views of its own parameter and gradient memory.
// The optimizer owns its state (momentum, moments), sized per parameter by state_size(shape), so
// an engine can budget memory before it registers anything. Every parameter is seen as a batch of
// same-shape matrices (batch, rows, cols): a single matrix is (1, rows, cols), a vector
// (1, 1, n), the experts of a layer stacked in one tensor (experts, rows, cols).
#pragma once

#include <concepts>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::optim {

template <class O>
concept optimizer = requires(O& o, const O& co, const extents_t<3>& shape, index_t slot,
                             tensor_view<float, 3> weights, tensor_view<const float, 3> grads, float lr) {
  typename O::hyper_params;
  // Floats of state one parameter of this shape needs (a status for a shape with an extent < 1
  // or a size that does not fit in 64 bits).
  { O::state_size(shape) } -> std::same_as<result<index_t>>;
  // Registers a parameter and allocates its state (zeros); returns its slot, or a status (bad or
  // overflowing shape, allocation failure, invalid hyper-parameters) with the optimizer unchanged.
  { o.add(shape) } -> std::same_as<result<index_t>>;
  // Floats of state held for all registered parameters.
  { co.state_floats() } -> std::same_as<index_t>;
  // One update of the parameter in `slot`; validates everything (shapes, lr, overlaps, and that no
  // non-finite value would enter the state) before changing anything.
  { o.step(slot, weights, grads, lr) } -> std::same_as<status>;
};

// A rank-1 or rank-2 view seen as the (1, rows, cols) batch step() takes.
template <class T>
tensor_view<T, 3> as_batch(const tensor_view<T, 2>& v) {
  return {v.data(), {1, v.extent(0), v.extent(1)}, {v.extent(0) * v.stride(0), v.stride(0), v.stride(1)}};
}
template <class T>
tensor_view<T, 3> as_batch(const tensor_view<T, 1>& v) {
  return {v.data(), {1, 1, v.extent(0)}, {v.extent(0) * v.stride(0), v.extent(0) * v.stride(0), v.stride(0)}};
}

}  // namespace dsv4::optim
