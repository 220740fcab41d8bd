// Activation numerics: which roundings of the released model an operation reproduces.
//
// Why one concept for the whole library: DeepSeek-V4 was trained and is served with BF16
// activations, FP8-quantized inputs to its FP8/FP4 linears and FP32 only where the reference says
// so (spec §13, §18.3). The fp32 path is the readable specification and matches the Hugging Face
// modules run in float32; the released path reproduces the official inference code's roundings so
// that results agree with the served model bit for bit or within one BF16 ulp. Every module that
// has both paths takes this one enum, so a model picks its numerics once:
//
//   numerics::exact     everything in fp32, no intermediate rounding (the default).
//   numerics::released  values rounded where the official code stores BF16 tensors or simulates
//                       FP8 (the roundings each module applies are listed in its header and doc).
//   numerics::fast      opt-in, approximate: released's roundings, except that a linear over FP4
//                       weights takes its input as int8 in blocks of 32 (linear_q8.hpp) instead of
//                       FP8-simulated, and multiplies in integers; never a default.
//
// The mechanism, the same as mhc::residual_map: a policy type takes the numerics as a template
// argument (moe::moe_ffn<..., numerics::released>, mhc::hyper_connection<4, map, numerics::released>,
// attn::attention_layer<C, P, numerics::released>),
// so a model's numerics are part of its type and the exact path pays nothing for the other; the
// operations underneath take the value as a params field or argument, defaulted to exact.
//
// Storage is unchanged: a released-numerics tensor is still an fp32 view whose values are exactly
// representable in BF16 (or FP8 times a power of two), so both paths share views, kernels and tests.
// Two helpers carry the roundings every module shares: to_activation (a value stored as a BF16
// activation) and to_linear_input (what the reference's linear() feeds its GEMM).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "dsv4/core/dtype.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/simd.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4 {

enum class numerics : std::uint8_t {
  exact,     // fp32 throughout
  released,  // the official inference code's BF16 activations and FP8 activation simulation
  fast,      // released, with int8 activations for FP4-weight linears (opt-in, approximate)
};

// ok for the three values, invalid_argument naming `num` for anything else a caller cast in.
inline status check_numerics(numerics num) {
  if (num == numerics::exact || num == numerics::released || num == numerics::fast) return {};
  return {errc::invalid_argument,
          "num: not a dsv4::numerics value (" + std::to_string(static_cast<int>(num)) + ")"};
}

// Whether num rounds activations as the released model stores them (BF16): released and fast.
DSV4_HOST_DEVICE constexpr bool rounds_activations(numerics num) { return num != numerics::exact; }

// v as the released model stores an activation: rounded to BF16 under numerics::released,
// unchanged under numerics::exact.
DSV4_HOST_DEVICE constexpr float to_activation(numerics num, float v) {
  return rounds_activations(num) ? round_to_bf16(v) : v;
}

// to_activation on every element of x, in place, 8 at a time (simd.hpp's round_to_bf16_8 is the
// same rounding without a branch).
inline void to_activation(numerics num, std::span<float> x) {
  if (!rounds_activations(num)) return;
  float* v = x.data();
  float* const end = v + x.size();
  for (; end - v >= 8; v += 8) {
    detail::v8f r;
    detail::load8(r, v);
    detail::store8(v, detail::round_to_bf16_8(r));
  }
  for (; v != end; ++v) *v = round_to_bf16(*v);
}

// x (width) in place: the input of a linear as the released model's `linear()` feeds it
// (numerics::released): BF16, then, for a weight stored in FP8 or FP4 (fp8_input), FP8-simulated in
// 1 x fp8_block tiles as its act_quant does (spec §18.3), because those GEMMs take FP8 activations.
// BF16 weights take the BF16 values as they are. No-op under numerics::exact. Under numerics::fast
// the caller passes fp8_input false for FP4 weights, whose linear quantizes x itself
// (linear_q8.hpp's to_linear_input<W> decides from the weight type).
inline void to_linear_input(numerics num, bool fp8_input, std::span<float> x) {
  if (!rounds_activations(num)) return;
  to_activation(num, x);
  if (fp8_input) fp8_simulate(x, fp8_block);
}

static_assert(to_activation(numerics::released, 1.0f + 0x1p-9f) == 1.0f);
static_assert(to_activation(numerics::exact, 1.0f + 0x1p-9f) == 1.0f + 0x1p-9f);

}  // namespace dsv4
