// Eight-float vectors for the CPU kernels (GEMM, GEMV, attention): GCC vector extensions, which
// become AVX registers with -march=native on an AVX machine and two SSE halves or scalars
// elsewhere, plus the few operations the micro-kernels need to control code generation.
#pragma once

#include <cstdint>

#include "dsv4/core/macros.hpp"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace dsv4::detail {

using v8f = float __attribute__((vector_size(32)));
// Unaligned, aliasing views of 8 floats: plain loads and stores the compiler keeps in registers.
using v8f_unaligned = float __attribute__((vector_size(32), aligned(4), may_alias));

using v8u32 = std::uint32_t __attribute__((vector_size(32)));
using v8u16 = std::uint16_t __attribute__((vector_size(16)));

// 32-byte vectors cross function boundaries by reference only: passed by value they would change
// the calling convention between AVX and non-AVX builds (GCC's -Wpsabi).
DSV4_FORCEINLINE void load8(v8f& v, const float* p) { v = *reinterpret_cast<const v8f_unaligned*>(p); }
DSV4_FORCEINLINE void store8(float* p, const v8f& v) { *reinterpret_cast<v8f_unaligned*>(p) = v; }

// c += a * b, fused where the target can.
DSV4_FORCEINLINE void fma8(v8f& c, const v8f& a, const v8f& b) {
#if defined(__FMA__)
  // Value casts between same-size vectors: punning through references would pin c to memory.
  c = reinterpret_cast<v8f>(
      _mm256_fmadd_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b), reinterpret_cast<__m256>(c)));
#else
  c += a * b;
#endif
}

// The scalar twin of fma8, for the column tail.
DSV4_FORCEINLINE float fma1(float a, float b, float c) {
#if defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  return c + a * b;
#endif
}

// The sum of the 8 lanes in the order of every lane sum in dsv4 (dot, sum_of, the GEMV contract):
// ((0 + 4) + (1 + 5)) + ((2 + 6) + (3 + 7)).
DSV4_FORCEINLINE float reduce_lanes(const v8f& a) {
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

// Each lane of x, which holds no NaN (infinities allowed), rounded to bfloat16 (nearest, ties to
// even; overflow to +-inf), returned as floats: round_to_bf16_8 without its NaN case.
DSV4_FORCEINLINE v8f round_to_bf16_8_not_nan(const v8f& x) {
  using v8u = unsigned __attribute__((vector_size(32)));
  const v8u u = reinterpret_cast<v8u>(x);
  return reinterpret_cast<v8f>((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
}

// Each lane rounded to bfloat16 as dsv4::round_to_bf16 does (nearest, ties to even; overflow to
// +-inf; NaN kept with its sign and payload, made quiet), returned as floats.
DSV4_FORCEINLINE v8f round_to_bf16_8(const v8f& x) {
  using v8u = unsigned __attribute__((vector_size(32)));
  const v8u u = reinterpret_cast<v8u>(x);
  const v8u rounded = reinterpret_cast<v8u>(round_to_bf16_8_not_nan(x));
  const v8u quiet = (u | 0x00400000u) & 0xffff0000u;
  return reinterpret_cast<v8f>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

// Makes v opaque to the optimizer, so that a loaded vector is kept in a register: with every
// register taken by accumulators GCC would otherwise fold the load into each of the
// multiply-adds that use it, and a micro-kernel would issue more loads than multiply-adds.
DSV4_FORCEINLINE void pin_register([[maybe_unused]] v8f& v) {
#if defined(__AVX__)
  asm("" : "+x"(v));
#endif
}

}  // namespace dsv4::detail
