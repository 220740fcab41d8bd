// Turning CUDA runtime errors into dsv4::status, and querying the device a launch runs on.
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

// Number of usable CUDA devices (0 when there is no driver or no GPU).
inline int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

}  // namespace dsv4
