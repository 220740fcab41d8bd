// Storage formats: weight_format, how a weight tensor is stored in a checkpoint (spec §11.1), and
// kv_format, how the KV cache stores its rows (spec §8.2). The matrix views of weight_matrix.hpp
// read the first, the codecs of attn/kv_codec.hpp the second; a model described at compile time
// names one format per group of weights and one for its cache (config::model_config).
#pragma once

#include <cstdint>

namespace dsv4 {

enum class weight_format : std::uint8_t {
  f32,
  bf16,
  fp8_e4m3_block128,  // e4m3 values, one ue8m0 scale per 128x128 block
  fp4_e2m1_block32,   // two e2m1 values per byte, one ue8m0 scale per 1x32 block along the input
};

enum class kv_format : std::uint8_t {
  f32,           // exact path, matches the Hugging Face reference in float32
  bf16,          // exact path at activation precision
  fp8_released,  // FlashMLA layout: 584 B per V4 entry, 68 B FP4 indexer keys (V3.2: 656 B / 132 B)
};

}  // namespace dsv4
