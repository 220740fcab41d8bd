// CUDA twins of the block-scaled dequantization operations of dsv4/core/quant.hpp.
//
// This header also fixes the pattern every CUDA specialization of dsv4 follows:
//   - `kernel<Op, cuda<Arch>>::run(params, stream)` takes the same params as the CPU kernel, with
//     device pointers in the views;
//   - shapes are validated on the host with the op's own `check` before anything is launched, so a
//     bad call returns a status naming the tensor and leaves the output untouched;
//   - the per-launch state is a small struct passed to the kernel by value;
//   - the device code calls the same DSV4_HOST_DEVICE decoders as the CPU code, so the results are
//     bit-identical (the arithmetic here is exact anyway);
//   - the launch reports cudaGetLastError() as a status; it does not synchronize.
// Kernels live in dsv4::detail and are templates on Arch so that a header included by several
// translation units defines them without ODR trouble.
#pragma once

#include <cuda_runtime.h>

#include "dsv4/core/cuda_check.cuh"
#include "dsv4/core/quant.hpp"

namespace dsv4 {

namespace detail {

// Per-launch state of both dequantization kernels: row strides in elements of each view (the
// last dimension is dense, checked by the op), rows x cols output elements.
template <class Weight>
struct dequantize_launch {
  const Weight* weight;  // (rows, cols) fp8, or (rows, cols/2) fp4x2
  index_t weight_ld;
  const ue8m0* scale;  // (ceil(rows/128), ceil(cols/128)) for fp8, (rows, cols/32) for fp4
  index_t scale_ld;
  float* out;  // (rows, cols)
  index_t out_ld;
  index_t rows;
  index_t cols;
};

inline constexpr int dequantize_threads = 256;

// Output element (r, c) of each format: an FP8 scale row covers fp8_block weight rows, an FP4 one a
// single row.
DSV4_HOST_DEVICE inline float dequantize_element(const dequantize_launch<fp8_e4m3>& p, index_t r, index_t c) {
  return dequantize_fp8_at(p.weight + r * p.weight_ld, p.scale + (r / fp8_block) * p.scale_ld, c);
}
DSV4_HOST_DEVICE inline float dequantize_element(const dequantize_launch<fp4x2>& p, index_t r, index_t c) {
  return dequantize_fp4_at(p.weight + r * p.weight_ld, p.scale + r * p.scale_ld, c);
}

template <int Arch, class Weight>
__global__ void __launch_bounds__(dequantize_threads) dequantize_kernel(dequantize_launch<Weight> p) {
  const index_t n = p.rows * p.cols;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const index_t r = i / p.cols, c = i % p.cols;
    p.out[r * p.out_ld + c] = dequantize_element(p, r, c);
  }
}

// Blocks for a grid-stride loop over n elements: enough to fill any current GPU, capped so that
// huge matrices loop instead of launching millions of blocks.
inline unsigned dequantize_blocks(index_t n) {
  constexpr index_t max_blocks = 8192;
  const index_t b = (n + dequantize_threads - 1) / dequantize_threads;
  return static_cast<unsigned>(b < max_blocks ? b : max_blocks);
}

// Launches the dequantization of p (already checked by its op) into rows x cols outputs, rows being
// the weight's; `what` names the launch in an error status.
template <int Arch, class Params>
status launch_dequantize(const Params& p, index_t cols, cudaStream_t stream, const char* what) {
  using weight_t = typename decltype(p.weight)::value_type;
  const dequantize_launch<weight_t> launch{
      p.weight.data(), p.weight.stride(0), p.scale.data(),     p.scale.stride(0),
      p.out.data(),    p.out.stride(0),    p.weight.extent(0), cols};
  const index_t n = launch.rows * launch.cols;
  if (n == 0) return {};
  dequantize_kernel<Arch><<<dequantize_blocks(n), dequantize_threads, 0, stream>>>(launch);
  return cuda_status(cudaGetLastError(), what);
}

}  // namespace detail

template <int Arch>
struct kernel<dequantize_fp8_op, cuda<Arch>> {
  // p's views hold device pointers; the launch is asynchronous on `stream`.
  static status run(const dequantize_fp8_op::params& p, cudaStream_t stream = nullptr) {
    DSV4_TRY(dequantize_fp8_op::check(p));
    return detail::launch_dequantize<Arch>(p, p.weight.extent(1), stream, "dequantize_fp8_kernel launch");
  }
};

template <int Arch>
struct kernel<dequantize_fp4_op, cuda<Arch>> {
  // p's views hold device pointers; the launch is asynchronous on `stream`.
  static status run(const dequantize_fp4_op::params& p, cudaStream_t stream = nullptr) {
    DSV4_TRY(dequantize_fp4_op::check(p));
    return detail::launch_dequantize<Arch>(p, 2 * p.weight.extent(1), stream, "dequantize_fp4_kernel launch");
  }
};

}  // namespace dsv4
