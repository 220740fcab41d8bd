// A model of any shape with random weights, for benchmarks, smoke runs and tests that need a
// whole model but no trained one: random_model<C>(seed) writes every tensor of C's checkpoint
// inventory (inventory.hpp) in the official layout through safetensors_writer, in memory, and
// loads it as loaded_model<C> (load_model.hpp), so a random model goes through exactly the path a
// real checkpoint does, quantization and views included.
//
// Values come from a counter-based hash of (seed, tensor, element), so any thread count gives the
// same model: matrices uniform with standard deviation 1/sqrt(in) (activations keep their scale
// through a layer), the embedding with deviation 1, norm weights 1 +- 0.1, mHC mixing weights,
// scales and biases small (the streams stay near an average), sinks and position biases of
// deviation 0.5, the gate bias 0.01, tid2eid row r = (r * 7 + j) mod E for j < k (distinct). Dense
// tensors are stored BF16 unless every format of the shape is f32. MTP blocks when with_mtp.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/inventory.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/io/writer.hpp"

namespace dsv4::io {

namespace detail {
// A uniform value in [-1, 1) from (seed, stream, i): splitmix64 of their mix.
inline float hashed_uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  std::uint64_t z = seed * 0x9e3779b97f4a7c15ull + stream * 0xd1b54a32d192ed03ull + i;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) * 0x1p-23 - 1.0);
}

// The random values of one expected tensor (its logical float shape), by what the name says it is.
inline std::vector<float> random_values(const expected_tensor& e, std::int64_t rows, std::int64_t cols,
                                        std::uint64_t seed, std::uint64_t stream) {
  const std::string& n = e.name;
  const auto ends = [&](std::string_view s) { return n.ends_with(s); };
  float center = 0.0f, spread = 0.0f;  // value = center + spread * sqrt(3) * u, u uniform in [-1, 1)
  if (ends("norm.weight")) {
    center = 1.0f;
    spread = 0.1f;
  } else if (ends("_fn")) {
    spread = 0.02f;
  } else if (ends("_scale") || ends("_base")) {
    spread = 0.1f;
  } else if (ends("attn_sink") || ends(".ape")) {
    spread = 0.5f;
  } else if (ends("gate.bias")) {
    spread = 0.01f;
  } else if (n == "embed.weight") {
    spread = 1.0f;
  } else {
    spread = 1.0f / std::sqrt(static_cast<float>(cols));
  }
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  const float a = spread * std::sqrt(3.0f);
  parallel_for(0, rows, [&](index_t r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::uint64_t i = static_cast<std::uint64_t>(r * cols + c);
      v[i] = center + a * hashed_uniform(seed, stream, i);
    }
  });
  return v;
}
}  // namespace detail

// The safetensors bytes of a random checkpoint of shape s (official names).
inline result<std::vector<std::byte>> random_safetensors(const model_shape& s, bool with_mtp,
                                                         std::uint64_t seed) {
  DSV4_TRY(check_rules(s, "random_safetensors: the model shape"));
  safetensors_writer w;
  const bool all_f32 = s.linear_format == config::weight_format::f32 &&
                       s.expert_format == config::weight_format::f32 &&
                       s.other_format == config::weight_format::f32;
  const std::vector<expected_tensor> all = expected_tensors(s, with_mtp);
  for (std::size_t t = 0; t < all.size(); ++t) {
    const expected_tensor& e = all[t];
    const std::int64_t rows = e.shape[0], stored_cols = e.shape.size() > 1 ? e.shape[1] : 1;
    switch (e.kind) {
      case tensor_kind::scale:
        break;  // written with its weight
      case tensor_kind::ids: {
        std::vector<std::int64_t> ids(static_cast<std::size_t>(rows * stored_cols));
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t j = 0; j < stored_cols; ++j)
            ids[static_cast<std::size_t>(r * stored_cols + j)] = (r * 7 + j) % s.n_routed_experts;
        DSV4_TRY(w.add<std::int64_t>(e.name, e.shape, ids));
        break;
      }
      case tensor_kind::fp8_weight:
      case tensor_kind::fp4_weight: {
        const bool fp4 = e.kind == tensor_kind::fp4_weight;
        const std::int64_t cols = fp4 ? 2 * stored_cols : stored_cols;
        const auto v = detail::random_values(e, rows, cols, seed, t);
        DSV4_TRY(w.add_linear(
            e.name.substr(0, e.name.size() - 7),
            fp4 ? config::weight_format::fp4_e2m1_block32 : config::weight_format::fp8_e4m3_block128,
            tensor_view<const float, 2>(v.data(), {rows, cols})));
        break;
      }
      case tensor_kind::dense:
      case tensor_kind::fp32: {
        const auto v = detail::random_values(e, rows, stored_cols, seed, t);
        if (e.kind == tensor_kind::dense && !all_f32) {  // BF16 widens exactly into an f32 view
          std::vector<bf16> b(v.size());
          for (std::size_t i = 0; i < v.size(); ++i) b[i] = bf16(v[i]);
          DSV4_TRY(w.add<bf16>(e.name, e.shape, b));
        } else {
          DSV4_TRY(w.add<float>(e.name, e.shape, v));
        }
        break;
      }
    }
  }
  return w.serialize();
}

// Model C with random weights (the MTP blocks when with_mtp), loaded through load_model.hpp.
template <config::model_config C>
result<loaded_model<C>> random_model(std::uint64_t seed, const config::model_params& params,
                                     bool with_mtp = C.n_mtp_layers > 0) {
  try {
    auto bytes = random_safetensors(shape_of(C), with_mtp, seed);
    if (!bytes) return bytes.error();
    return loaded_model<C>::bind(std::move(*bytes), "random model", params,
                                 with_mtp ? mtp_policy::required : mtp_policy::absent);
  } catch (const std::bad_alloc&) {
    return status{errc::out_of_range, "random_model: out of memory"};
  }
}

}  // namespace dsv4::io
