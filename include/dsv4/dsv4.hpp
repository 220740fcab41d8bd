// Umbrella header for host code: every CPU implementation, config and accounting of dsv4.
// CUDA translation units include dsv4/cuda.cuh instead.
#pragma once

#include "dsv4/core/backend.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/config/presets.hpp"
