// Number formats of DeepSeek-V4: bf16, fp8 e4m3 (OCP), ue8m0 scale bytes and fp4 e2m1 (MXFP4).
//
// The released checkpoint stores dense linears as fp8 e4m3 with ue8m0 128x128 block scales and the
// routed experts as packed fp4 e2m1 pairs with ue8m0 1x32 block scales (spec §11.1); the reference
// also simulates fp8/fp4 rounding of activations, KV and indexer keys (spec §18.3). Each format is a
// trivially copyable struct holding its raw bits, so tensors of them alias checkpoint bytes
// directly. Conversions are written once here with integer bit manipulation (no host intrinsics, no
// CUDA headers) and marked DSV4_HOST_DEVICE, so the CPU specification and the CUDA kernels round
// identically, and are constexpr so the tables they imply can be checked at compile time.
//
// Rounding is round-to-nearest-even everywhere. Saturation choices (documented per type):
//   bf16      overflow rounds to +-inf as IEEE does; NaN stays a quiet NaN with its sign.
//   fp8_e4m3  no infinities: finite values beyond 448 and +-inf saturate to +-448 (the reference
//             clamps to [-448, 448] before its cast, so saturating is the same thing); NaN -> NaN.
//   fp4_e2m1  no inf/NaN codes: beyond 6 and +-inf saturate to +-6; NaN -> zero with NaN's sign bit.
//   ue8m0     2^(bits-127), 0xFF = NaN; no sign, no zero.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

#include "dsv4/core/macros.hpp"

namespace dsv4 {

namespace detail {

DSV4_HOST_DEVICE constexpr std::uint32_t float_to_bits(float f) { return std::bit_cast<std::uint32_t>(f); }
DSV4_HOST_DEVICE constexpr float bits_to_float(std::uint32_t u) { return std::bit_cast<float>(u); }

inline constexpr std::uint32_t f32_abs_mask = 0x7fffffffu;
inline constexpr std::uint32_t f32_inf_bits = 0x7f800000u;
inline constexpr std::uint32_t f32_quiet_nan_bits = 0x7fc00000u;

// 2^e as a float for e in [-149, 127], built from bits (subnormal below -126).
DSV4_HOST_DEVICE constexpr float exp2i(int e) {
  return e >= -126 ? bits_to_float(static_cast<std::uint32_t>(e + 127) << 23)
                   : bits_to_float(1u << static_cast<unsigned>(e + 149));
}

// Magnitude code of a small binary float format with ManBits mantissa bits and exponent bias Bias
// (subnormals, no special values), for a finite non-negative float given by its bits, rounded to
// nearest even. The result is NOT saturated: it may exceed the format's largest code, and the
// caller decides what overflow means.
//
// Why it works: within one target binade (or the subnormal range) representable values are
// multiples of a quantum 2^qe, so we round the float's 24-bit integer significand to a multiple of
// 2^qe by shifting; the count r of quanta is then in [2^ManBits, 2^(ManBits+1)] for normals (the
// top end carries into the next exponent through the addition below) and in [0, 2^ManBits] for
// subnormals, where r == 2^ManBits is exactly the smallest normal.
template <int ManBits, int Bias>
DSV4_HOST_DEVICE constexpr std::uint32_t encode_magnitude_rne(std::uint32_t abs_bits) {
  const int f_exp_field = static_cast<int>(abs_bits >> 23);
  const std::uint32_t f_man = abs_bits & 0x7fffffu;
  const std::uint32_t sig = f_exp_field != 0 ? (f_man | 0x800000u) : f_man;  // value = sig * 2^lsb_exp
  const int lsb_exp = (f_exp_field != 0 ? f_exp_field : 1) - 150;
  const int value_exp = lsb_exp + 23;  // exponent of the value when normal; below emin otherwise
  constexpr int emin = 1 - Bias;       // exponent of the smallest normal of the target format
  const int target_exp = value_exp < emin ? emin : value_exp;
  const int shift = target_exp - ManBits - lsb_exp;  // >= 23 - ManBits > 0
  if (shift >= 25) return 0;                         // value < quantum / 2
  const std::uint32_t r0 = sig >> shift;
  const std::uint32_t rem = sig & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  const std::uint32_t r = r0 + ((rem > half || (rem == half && (r0 & 1u) != 0)) ? 1u : 0u);
  return (static_cast<std::uint32_t>(target_exp + Bias) << ManBits) + r - (1u << ManBits);
}

// The non-negative value of magnitude code `code` of the same family of formats (no special
// values; callers handle NaN codes first).
template <int ManBits, int Bias>
DSV4_HOST_DEVICE constexpr float decode_magnitude(std::uint32_t code) {
  const std::uint32_t exp_field = code >> ManBits;
  const std::uint32_t man = code & ((1u << ManBits) - 1u);
  if (exp_field == 0) return static_cast<float>(man) * exp2i(1 - Bias - ManBits);
  const auto f_exp_field = static_cast<std::uint32_t>(static_cast<int>(exp_field) - Bias + 127);
  return bits_to_float((f_exp_field << 23) | (man << (23 - ManBits)));
}

}  // namespace detail

namespace number_format {

// The part every number format shares: T holds its raw bits in a member `bits` of type Bits, is
// built from them by T::from_bits and compares equal when the bits are equal (so +0 != -0 and a
// NaN equals itself, as for checkpoint bytes). An empty base, so T stays one Bits wide. It has a
// namespace of its own because a base's namespace joins argument-dependent lookup for calls on T.
template <class T, class Bits>
struct raw_bits {
  DSV4_HOST_DEVICE static constexpr T from_bits(Bits b) {
    T r{};
    r.bits = b;
    return r;
  }
  friend DSV4_HOST_DEVICE constexpr bool operator==(T a, T b) { return a.bits == b.bits; }
};

}  // namespace number_format

// ---- bf16: 1 sign, 8 exponent (bias 127), 7 mantissa bits: the top half of an IEEE float -----
struct bf16 : number_format::raw_bits<bf16, std::uint16_t> {
  std::uint16_t bits;

  bf16() = default;
  // Round to nearest even; overflow rounds to +-inf, NaN becomes a quiet NaN with the same sign.
  DSV4_HOST_DEVICE constexpr explicit bf16(float f) : bits(from_float_bits(detail::float_to_bits(f))) {}

  DSV4_HOST_DEVICE constexpr float to_float() const {
    return detail::bits_to_float(static_cast<std::uint32_t>(bits) << 16);
  }

 private:
  DSV4_HOST_DEVICE static constexpr std::uint16_t from_float_bits(std::uint32_t u) {
    if ((u & detail::f32_abs_mask) > detail::f32_inf_bits) {
      return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // keep sign and payload, set quiet bit
    }
    // Adding 0x7fff plus the lowest kept bit rounds to nearest with ties to even; a carry out of
    // the mantissa correctly bumps the exponent, up to infinity.
    const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(rounded >> 16);
  }
};

// ---- fp8_e4m3 (OCP E4M3, "e4m3fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits --------------
// No infinities; S.1111.111 (0x7F, 0xFF) is NaN, so the largest finite value is 1.75 * 2^8 = 448
// (0x7E). Subnormals: exponent field 0, value mantissa * 2^-9.
struct fp8_e4m3 : number_format::raw_bits<fp8_e4m3, std::uint8_t> {
  std::uint8_t bits;

  static constexpr float max_finite = 448.0f;

  fp8_e4m3() = default;
  // Round to nearest even (also into the subnormals). Saturating: results beyond 448 and +-inf
  // become +-448, matching the reference's clamp(x, -448, 448) before its cast. NaN -> NaN (0x7F
  // with the input's sign).
  DSV4_HOST_DEVICE constexpr explicit fp8_e4m3(float f) : bits(from_float_bits(detail::float_to_bits(f))) {}

  DSV4_HOST_DEVICE constexpr bool is_nan() const { return (bits & 0x7fu) == 0x7fu; }
  DSV4_HOST_DEVICE constexpr float to_float() const {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x80u) << 24;
    if (is_nan()) return detail::bits_to_float(sign | detail::f32_quiet_nan_bits);
    return detail::bits_to_float(sign | detail::float_to_bits(detail::decode_magnitude<3, 7>(bits & 0x7fu)));
  }

 private:
  DSV4_HOST_DEVICE static constexpr std::uint8_t from_float_bits(std::uint32_t u) {
    const std::uint32_t sign = (u >> 24) & 0x80u;
    const std::uint32_t a = u & detail::f32_abs_mask;
    if (a > detail::f32_inf_bits) return static_cast<std::uint8_t>(sign | 0x7fu);
    // Everything at or above 448 rounds to 448 or to a code past it (the tie 464 goes to the even
    // 448 anyway), so saturating here is exact.
    if (a >= detail::float_to_bits(max_finite)) return static_cast<std::uint8_t>(sign | 0x7eu);
    return static_cast<std::uint8_t>(sign | detail::encode_magnitude_rne<3, 7>(a));
  }
};

// ---- ue8m0: an unsigned power-of-two scale byte, value 2^(bits - 127); 0xFF is NaN -------------
// The checkpoint dtype F8_E8M0 (torch float8_e8m0fnu). There is no zero and no sign: bits 0 is
// 2^-127 (a float subnormal), bits 254 is 2^127.
struct ue8m0 : number_format::raw_bits<ue8m0, std::uint8_t> {
  std::uint8_t bits;

  ue8m0() = default;

  // 2^e, with e clamped to [-127, 127].
  DSV4_HOST_DEVICE static constexpr ue8m0 from_exponent(int e) {
    const int c = e < -127 ? -127 : (e > 127 ? 127 : e);
    return from_bits(static_cast<std::uint8_t>(c + 127));
  }
  // The smallest power of two >= x, i.e. 2^ceil(log2(x)), computed from x's bits (exact for
  // powers of two, where log2f might not be). For x > 0 finite; the result saturates at 2^127
  // (x > 2^127) and at 2^-127 (x <= 2^-127). x <= 0 gives 2^-127, NaN and +inf give NaN.
  DSV4_HOST_DEVICE static constexpr ue8m0 ceil_pow2(float x) {
    const std::uint32_t u = detail::float_to_bits(x);
    const std::uint32_t a = u & detail::f32_abs_mask;
    if (a > detail::f32_inf_bits) return from_bits(0xff);   // NaN
    if ((u >> 31) != 0 || a == 0) return from_bits(0);      // x <= 0, including -inf
    if (a == detail::f32_inf_bits) return from_bits(0xff);  // +inf
    const int exp_field = static_cast<int>(u >> 23);
    const std::uint32_t man = u & 0x7fffffu;
    if (exp_field != 0) return from_exponent(exp_field - 127 + (man != 0 ? 1 : 0));
    // Subnormal x = man * 2^-149: ceil(log2 x) = floor(log2 man) + (man not a power of two) - 149.
    int floor_log2 = 0;
    while ((man >> (floor_log2 + 1)) != 0) ++floor_log2;
    const bool pow2 = (man & (man - 1u)) == 0;
    return from_exponent(floor_log2 + (pow2 ? 0 : 1) - 149);
  }

  DSV4_HOST_DEVICE constexpr bool is_nan() const { return bits == 0xffu; }
  DSV4_HOST_DEVICE constexpr int exponent() const { return static_cast<int>(bits) - 127; }
  DSV4_HOST_DEVICE constexpr float to_float() const {
    if (is_nan()) return detail::bits_to_float(detail::f32_quiet_nan_bits);
    if (bits == 0) return detail::bits_to_float(0x00400000u);  // 2^-127 is a float subnormal
    return detail::bits_to_float(static_cast<std::uint32_t>(bits) << 23);
  }
};

// ---- fp4_e2m1 (OCP MXFP4 element): 1 sign, 2 exponent (bias 1), 1 mantissa bit in the low nibble -
// Codes 0..7 are the magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; bit 3 is the sign. No inf or NaN.
struct fp4_e2m1 : number_format::raw_bits<fp4_e2m1, std::uint8_t> {
  std::uint8_t bits;  // only the low 4 bits are used; the high 4 are zero

  static constexpr float max_finite = 6.0f;

  fp4_e2m1() = default;
  // Round to nearest even (2.5 -> 2, 3.5 -> 4, 5 -> 4, 0.25 -> 0, 0.75 -> 1). Saturating: beyond 6
  // and +-inf become +-6. NaN has no code: it becomes zero carrying NaN's sign bit, so that one bad
  // value cannot turn into a maximal one; callers that must detect NaN test before encoding.
  DSV4_HOST_DEVICE constexpr explicit fp4_e2m1(float f) : bits(from_float_bits(detail::float_to_bits(f))) {}

  // Only the low nibble of b is kept.
  DSV4_HOST_DEVICE static constexpr fp4_e2m1 from_bits(std::uint8_t b) {
    return raw_bits::from_bits(static_cast<std::uint8_t>(b & 0x0fu));
  }
  DSV4_HOST_DEVICE constexpr float to_float() const {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x08u) << 28;
    return detail::bits_to_float(sign | detail::float_to_bits(detail::decode_magnitude<1, 1>(bits & 0x07u)));
  }

 private:
  DSV4_HOST_DEVICE static constexpr std::uint8_t from_float_bits(std::uint32_t u) {
    const std::uint32_t sign = (u >> 28) & 0x08u;
    const std::uint32_t a = u & detail::f32_abs_mask;
    if (a > detail::f32_inf_bits) return static_cast<std::uint8_t>(sign);
    if (a >= detail::float_to_bits(max_finite)) return static_cast<std::uint8_t>(sign | 0x07u);
    return static_cast<std::uint8_t>(sign | detail::encode_magnitude_rne<1, 1>(a));
  }
};

// Two fp4_e2m1 values in one byte, as the checkpoint stores them (spec §11.1): the low nibble is
// the even (first) element along the input dimension, the high nibble the odd (second) one.
struct fp4x2 : number_format::raw_bits<fp4x2, std::uint8_t> {
  std::uint8_t bits;

  DSV4_HOST_DEVICE static constexpr fp4x2 pack(fp4_e2m1 first, fp4_e2m1 second) {
    return from_bits(static_cast<std::uint8_t>((first.bits & 0x0fu) | ((second.bits & 0x0fu) << 4)));
  }
  DSV4_HOST_DEVICE constexpr fp4_e2m1 first() const {
    return fp4_e2m1::from_bits(static_cast<std::uint8_t>(bits & 0x0fu));
  }
  DSV4_HOST_DEVICE constexpr fp4_e2m1 second() const {
    return fp4_e2m1::from_bits(static_cast<std::uint8_t>(bits >> 4));
  }
  // Element i (0 = first/low nibble, 1 = second/high nibble).
  DSV4_HOST_DEVICE constexpr fp4_e2m1 operator[](int i) const { return i == 0 ? first() : second(); }
};

static_assert(sizeof(bf16) == 2 && sizeof(fp8_e4m3) == 1 && sizeof(ue8m0) == 1 && sizeof(fp4_e2m1) == 1 &&
                  sizeof(fp4x2) == 1,
              "dsv4 number formats must alias checkpoint bytes");
static_assert(std::is_trivially_copyable_v<bf16> && std::is_standard_layout_v<bf16> &&
                  std::is_trivially_copyable_v<fp4x2> && std::is_standard_layout_v<fp4x2>,
              "dsv4 number formats must alias checkpoint bytes");

// ---- generic helpers --------------------------------------------------------------------------
// to_float(x) decodes any of the formats above (and passes float through); from_float<T>(f)
// encodes with T's rounding and saturation.
template <class T>
DSV4_HOST_DEVICE constexpr float to_float(T x) {
  return x.to_float();
}
DSV4_HOST_DEVICE constexpr float to_float(float x) { return x; }

template <class T>
DSV4_HOST_DEVICE constexpr T from_float(float f) {
  return T(f);
}

// f rounded to bf16 and back: what storing an FP32 result in a BF16 tensor does to it.
DSV4_HOST_DEVICE constexpr float round_to_bf16(float f) { return bf16(f).to_float(); }

// Compile-time spot checks of the tables the formats define; tests/core/dtype_test.cpp checks
// every code.
static_assert(fp8_e4m3::from_bits(0x7e).to_float() == 448.0f);
static_assert(fp8_e4m3::from_bits(0x01).to_float() == 0x1p-9f);
static_assert(fp8_e4m3(1000.0f).bits == 0x7e);
static_assert(fp4_e2m1(2.5f).bits == 0x4 && fp4_e2m1(3.5f).bits == 0x6 && fp4_e2m1(-0.75f).bits == 0xa);
static_assert(ue8m0::ceil_pow2(1.0f).bits == 127 && ue8m0::ceil_pow2(1.5f).bits == 128);
static_assert(bf16(1.0f).bits == 0x3f80);

}  // namespace dsv4
