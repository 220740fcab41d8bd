// weight_format: the storage format of a weight tensor in a checkpoint (spec §11.1). The matrix
// views of weight_matrix.hpp read each one; a model described at compile time names the format of
// each group of its weights (config::model_config's linear_format, expert_format, other_format).
#pragma once

#include <cstdint>

namespace dsv4 {

enum class weight_format : std::uint8_t {
  f32,
  bf16,
  fp8_e4m3_block128,  // e4m3 values, one ue8m0 scale per 128x128 block
  fp4_e2m1_block32,   // two e2m1 values per byte, one ue8m0 scale per 1x32 block along the input
};

}  // namespace dsv4
