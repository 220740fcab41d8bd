// Turning CUDA runtime errors into dsv4::status.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4 {

// status for a CUDA runtime result: "CUDA error: cudaMemcpy(...): invalid argument".
inline status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return {};
  return {errc::cuda_error, std::string(what) + ": " + cudaGetErrorString(err)};
}

}  // namespace dsv4
