// Umbrella header for CUDA translation units (compile with nvcc, link dsv4::cuda): the host
// library plus every CUDA specialization.
#pragma once

#include "dsv4/dsv4.hpp"

#include "dsv4/core/cuda_check.cuh"
#include "dsv4/core/quant.cuh"
