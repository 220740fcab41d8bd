// Exhaustive tests of dsv4/core/dtype.hpp: every code of bf16, fp8_e4m3, ue8m0 and fp4_e2m1 is
// decoded and compared with the format's definition (computed here from its sign, exponent and
// mantissa fields with std::ldexp, independently of the library's bit tricks), re-encoded, and
// every midpoint between neighbouring values is checked to round to the even code. Encoding of
// arbitrary floats is compared with a brute-force nearest-value search.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "dsv4/core/dtype.hpp"

namespace {

using dsv4::bf16;
using dsv4::fp4_e2m1;
using dsv4::fp4x2;
using dsv4::fp8_e4m3;
using dsv4::ue8m0;

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
bool same_float(float a, float b) { return bits_of(a) == bits_of(b); }  // also tells -0 from +0

// ---- reference decoders: the format definitions, written from the bit fields ----------------

double ref_bf16(std::uint16_t c) {
  const int s = c >> 15, e = (c >> 7) & 0xff, m = c & 0x7f;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0xff) return m == 0 ? sign * std::numeric_limits<double>::infinity() : std::nan("");
  if (e == 0) return sign * std::ldexp(m, -126 - 7);
  return sign * std::ldexp(128 + m, e - 127 - 7);
}

double ref_fp8(std::uint8_t c) {
  const int s = c >> 7, e = (c >> 3) & 0xf, m = c & 0x7;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0xf && m == 0x7) return std::nan("");
  if (e == 0) return sign * std::ldexp(m, -6 - 3);
  return sign * std::ldexp(8 + m, e - 7 - 3);
}

double ref_ue8m0(std::uint8_t c) { return c == 0xff ? std::nan("") : std::ldexp(1.0, c - 127); }

double ref_fp4(std::uint8_t c) {
  const int s = (c >> 3) & 1, e = (c >> 1) & 0x3, m = c & 0x1;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(m, -1);
  return sign * std::ldexp(2 + m, e - 1 - 1);
}

// Nearest code among the non-negative codes [0, max_code] (listed in increasing value), ties to
// the even code, saturating at max_code: the rounding rule by exhaustive search.
template <class Decode>
std::uint32_t nearest_code(double a, std::uint32_t max_code, Decode decode) {
  std::uint32_t best = 0;
  double best_d = std::abs(a - decode(0));
  for (std::uint32_t c = 1; c <= max_code; ++c) {
    const double d = std::abs(a - decode(c));
    if (d < best_d || (d == best_d && (c & 1u) == 0)) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

std::uint8_t ref_encode_fp8(float f) {
  const std::uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const double a = std::abs(static_cast<double>(f));
  return static_cast<std::uint8_t>(
      sign | nearest_code(a, 0x7e, [](std::uint32_t c) { return ref_fp8(static_cast<std::uint8_t>(c)); }));
}

std::uint8_t ref_encode_fp4(float f) {
  const std::uint8_t sign = std::signbit(f) ? 0x08 : 0x00;
  const double a = std::abs(static_cast<double>(f));
  return static_cast<std::uint8_t>(
      sign | nearest_code(a, 0x7, [](std::uint32_t c) { return ref_fp4(static_cast<std::uint8_t>(c)); }));
}

// A float spread over many binades: random sign, exponent in [lo, hi], random mantissa bits.
float random_float(std::mt19937& rng, int lo, int hi) {
  std::uniform_int_distribution<int> e(lo, hi);
  std::uniform_int_distribution<std::uint32_t> m(0, 0x7fffff);
  std::uniform_int_distribution<int> s(0, 1);
  const float mag = std::ldexp(1.0f + static_cast<float>(m(rng)) * 0x1p-23f, e(rng));
  return s(rng) ? -mag : mag;
}

}  // namespace

// ---- compile-time use -----------------------------------------------------------------------

static_assert(bf16(1.5f).to_float() == 1.5f);
static_assert(fp8_e4m3(-2.0f).bits == 0xc0);
static_assert(fp4_e2m1(6.0f).bits == 0x7);
static_assert(ue8m0::from_exponent(0).to_float() == 1.0f);
static_assert(fp4x2::pack(fp4_e2m1::from_bits(0x1), fp4_e2m1::from_bits(0xa)).bits == 0xa1);
static_assert(dsv4::to_float(dsv4::from_float<fp8_e4m3>(3.0f)) == 3.0f);

// ---- bf16 -----------------------------------------------------------------------------------

TEST_CASE("bf16: every code decodes to its definition", "[dtype][bf16]") {
  int checked = 0;
  for (std::uint32_t c = 0; c <= 0xffff; ++c) {
    const auto code = static_cast<std::uint16_t>(c);
    const double ref = ref_bf16(code);
    const float got = bf16::from_bits(code).to_float();
    if (std::isnan(ref)) {
      REQUIRE(std::isnan(got));
      REQUIRE(std::signbit(got) == ((c & 0x8000) != 0));
    } else {
      REQUIRE(same_float(got, static_cast<float>(ref)));
      REQUIRE(static_cast<double>(got) == ref);
      REQUIRE(std::signbit(got) == ((c & 0x8000) != 0));  // -0 stays -0
    }
    ++checked;
  }
  REQUIRE(checked == 65536);
}

TEST_CASE("bf16: encode(decode(code)) == code for every non-NaN code; NaN stays a quiet NaN",
          "[dtype][bf16]") {
  for (std::uint32_t c = 0; c <= 0xffff; ++c) {
    const auto code = static_cast<std::uint16_t>(c);
    const float f = bf16::from_bits(code).to_float();
    const bf16 back(f);
    if (std::isnan(f)) {
      REQUIRE((back.bits & 0x7f80) == 0x7f80);
      REQUIRE((back.bits & 0x0040) != 0);  // quiet
      REQUIRE((back.bits & 0x8000) == (code & 0x8000));
    } else {
      REQUIRE(back.bits == code);
    }
  }
  // Signalling NaN payloads below the kept half must not truncate to infinity.
  for (std::uint32_t u : {0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7fc00000u}) {
    const bf16 b(float_of(u));
    REQUIRE(std::isnan(b.to_float()));
    REQUIRE((b.bits & 0x8000) == ((u >> 16) & 0x8000));
  }
}

TEST_CASE("bf16: every midpoint rounds to the even neighbour, others to the nearest", "[dtype][bf16]") {
  // For a finite code c whose successor c + 1 is also finite (same sign), the float with bits
  // (c << 16) | 0x8000 lies exactly halfway between them.
  for (std::uint32_t c = 0; c <= 0xffff; ++c) {
    if ((c & 0x7fff) >= 0x7f7f) continue;  // c + 1 would be inf or NaN; overflow is tested below
    const std::uint32_t mid = (c << 16) | 0x8000u;
    const std::uint16_t even = static_cast<std::uint16_t>((c & 1u) ? c + 1 : c);
    REQUIRE(bf16(float_of(mid)).bits == even);
    REQUIRE(bf16(float_of(mid - 1)).bits == c);      // just below the midpoint
    REQUIRE(bf16(float_of(mid + 1)).bits == c + 1);  // just above
  }
  // Overflow rounds to infinity as IEEE does: the midpoint between the largest finite value and
  // 2^128 goes to the even code, which is inf.
  REQUIRE(bf16(std::numeric_limits<float>::max()).bits == 0x7f80);
  REQUIRE(bf16(-std::numeric_limits<float>::max()).bits == 0xff80);
  REQUIRE(bf16(float_of(0x7f7f7fffu)).bits == 0x7f7f);
  REQUIRE(bf16(std::numeric_limits<float>::infinity()).bits == 0x7f80);
  REQUIRE(bf16(-std::numeric_limits<float>::infinity()).bits == 0xff80);
}

TEST_CASE("bf16: random floats round to the nearer of the two neighbouring codes", "[dtype][bf16]") {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::uint32_t> any(0, 0xffffffffu);
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = any(rng);
    const float f = float_of(u);
    if (!std::isfinite(f) || (u & 0x7fffffffu) >= 0x7f7f8000u) continue;  // overflow tested above
    const auto lo = static_cast<std::uint16_t>(u >> 16);                  // truncation toward zero
    const auto hi = static_cast<std::uint16_t>(lo + 1);                   // next code away from zero
    const double x = std::abs(static_cast<double>(f));
    const double d_lo = x - std::abs(ref_bf16(lo)), d_hi = std::abs(ref_bf16(hi)) - x;
    const std::uint16_t expect = d_lo < d_hi ? lo : (d_hi < d_lo ? hi : ((lo & 1) ? hi : lo));
    REQUIRE(bf16(f).bits == expect);
  }
  REQUIRE(dsv4::round_to_bf16(1.0f + 0x1p-9f) == 1.0f);
  REQUIRE(dsv4::round_to_bf16(1.0f + 0x1p-7f) == 1.0f + 0x1p-7f);
}

// ---- fp8 e4m3 -------------------------------------------------------------------------------

TEST_CASE("fp8_e4m3: every code decodes to its definition", "[dtype][fp8]") {
  int nan_codes = 0;
  for (std::uint32_t c = 0; c <= 0xff; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    const double ref = ref_fp8(code);
    const fp8_e4m3 v = fp8_e4m3::from_bits(code);
    const float got = v.to_float();
    if (std::isnan(ref)) {
      ++nan_codes;
      REQUIRE(std::isnan(got));
      REQUIRE(v.is_nan());
    } else {
      REQUIRE(static_cast<double>(got) == ref);
      REQUIRE(std::signbit(got) == ((c & 0x80) != 0));
      REQUIRE_FALSE(v.is_nan());
    }
  }
  REQUIRE(nan_codes == 2);  // only 0x7f and 0xff
  REQUIRE(fp8_e4m3::from_bits(0x7e).to_float() == 448.0f);
  REQUIRE(fp8_e4m3::from_bits(0x01).to_float() == std::ldexp(1.0f, -9));  // smallest subnormal
  REQUIRE(fp8_e4m3::from_bits(0x08).to_float() == std::ldexp(1.0f, -6));  // smallest normal
  REQUIRE(fp8_e4m3::from_bits(0x38).to_float() == 1.0f);
}

TEST_CASE("fp8_e4m3: encode(decode(code)) == code; NaN stays NaN", "[dtype][fp8]") {
  for (std::uint32_t c = 0; c <= 0xff; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    const float f = fp8_e4m3::from_bits(code).to_float();
    // The NaN codes come back as themselves too: NaN encodes to S.1111.111 with its sign.
    REQUIRE(fp8_e4m3(f).bits == code);
  }
  REQUIRE(fp8_e4m3(0.0f).bits == 0x00);
  REQUIRE(fp8_e4m3(-0.0f).bits == 0x80);
  REQUIRE(fp8_e4m3(std::numeric_limits<float>::quiet_NaN()).is_nan());
  REQUIRE(fp8_e4m3(-std::numeric_limits<float>::quiet_NaN()).bits == 0xff);
  REQUIRE(fp8_e4m3(float_of(0x7f800001u)).is_nan());  // signalling NaN
}

TEST_CASE("fp8_e4m3: every midpoint rounds to the even code", "[dtype][fp8]") {
  // Codes 0..0x7e are the non-negative finite values in increasing order.
  for (std::uint32_t c = 0; c < 0x7e; ++c) {
    const double lo = ref_fp8(static_cast<std::uint8_t>(c)), hi = ref_fp8(static_cast<std::uint8_t>(c + 1));
    const auto mid = static_cast<float>((lo + hi) / 2);  // exact in float
    REQUIRE(static_cast<double>(mid) == (lo + hi) / 2);
    const std::uint32_t even = (c & 1u) ? c + 1 : c;
    REQUIRE(fp8_e4m3(mid).bits == even);
    REQUIRE(fp8_e4m3(-mid).bits == (even | 0x80u));
    REQUIRE(fp8_e4m3(std::nextafter(mid, 0.0f)).bits == c);
    REQUIRE(fp8_e4m3(std::nextafter(mid, 1000.0f)).bits == c + 1);
  }
  // Subnormal ties: 2^-10 is halfway between 0 and 2^-9 and goes to 0; 3 * 2^-10 goes to code 2.
  REQUIRE(fp8_e4m3(std::ldexp(1.0f, -10)).bits == 0x00);
  REQUIRE(fp8_e4m3(std::ldexp(3.0f, -10)).bits == 0x02);
  REQUIRE(fp8_e4m3(std::ldexp(1.0f, -11)).bits == 0x00);
  REQUIRE(fp8_e4m3(std::numeric_limits<float>::denorm_min()).bits == 0x00);
  REQUIRE(fp8_e4m3(-std::numeric_limits<float>::denorm_min()).bits == 0x80);
}

TEST_CASE("fp8_e4m3: saturates to +-448 beyond the largest finite value and for inf", "[dtype][fp8]") {
  const float inf = std::numeric_limits<float>::infinity();
  for (float f : {448.0f, 449.0f, 463.99f, 464.0f, 464.01f, 480.0f, 512.0f, 1e10f,
                  std::numeric_limits<float>::max(), inf}) {
    REQUIRE(fp8_e4m3(f).bits == 0x7e);
    REQUIRE(fp8_e4m3(-f).bits == 0xfe);
  }
  REQUIRE(fp8_e4m3(447.0f).bits == 0x7e);  // nearest
  REQUIRE(fp8_e4m3(431.0f).bits == 0x7d);  // below the 416..448 midpoint (432)
  REQUIRE(fp8_e4m3(432.0f).bits == 0x7e);  // the tie goes to the even mantissa 110 = 448
}

TEST_CASE("fp8_e4m3: random floats match a brute-force nearest-even search", "[dtype][fp8]") {
  std::mt19937 rng(42);
  for (int i = 0; i < 100000; ++i) {
    const float f = random_float(rng, -14, 9);  // below the subnormals up to past 448
    REQUIRE(fp8_e4m3(f).bits == ref_encode_fp8(f));
  }
}

// ---- ue8m0 ----------------------------------------------------------------------------------

TEST_CASE("ue8m0: every code decodes to 2^(code - 127); 0xff is NaN", "[dtype][ue8m0]") {
  for (std::uint32_t c = 0; c <= 0xff; ++c) {
    const auto s = ue8m0::from_bits(static_cast<std::uint8_t>(c));
    const double ref = ref_ue8m0(static_cast<std::uint8_t>(c));
    if (std::isnan(ref)) {
      REQUIRE(std::isnan(s.to_float()));
      REQUIRE(s.is_nan());
    } else {
      REQUIRE(static_cast<double>(s.to_float()) == ref);
      REQUIRE(s.exponent() == static_cast<int>(c) - 127);
      REQUIRE(ue8m0::from_exponent(s.exponent()).bits == c);
    }
  }
  REQUIRE(ue8m0::from_bits(0).to_float() == std::ldexp(1.0f, -127));  // a float subnormal
  REQUIRE(ue8m0::from_exponent(-1000).bits == 0);
  REQUIRE(ue8m0::from_exponent(1000).bits == 254);
}

TEST_CASE("ue8m0::ceil_pow2: the smallest power of two >= x", "[dtype][ue8m0]") {
  for (int e = -127; e <= 127; ++e) {
    const float p = std::ldexp(1.0f, e);
    INFO("e = " << e);
    REQUIRE(ue8m0::ceil_pow2(p).bits == e + 127);  // exact on powers of two
    if (e < 127) REQUIRE(ue8m0::ceil_pow2(std::nextafter(p, 2 * p)).bits == e + 128);
    if (e > -127) REQUIRE(ue8m0::ceil_pow2(std::nextafter(p, 0.0f)).bits == e + 127);
  }
  // Against ceil(log2(x)) in double, which is exact enough: a non-power-of-two float is at least
  // log2(1 + 2^-23) away from an integer.
  std::mt19937 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const float x = std::abs(random_float(rng, -126, 126));
    const double ref = std::ceil(std::log2(static_cast<double>(x)));
    REQUIRE(ue8m0::ceil_pow2(x).exponent() == static_cast<int>(ref));
  }
  // Float subnormals.
  REQUIRE(ue8m0::ceil_pow2(std::ldexp(1.0f, -127)).bits == 0);
  REQUIRE(ue8m0::ceil_pow2(std::ldexp(1.5f, -127)).bits == 1);  // 2^-126
  REQUIRE(ue8m0::ceil_pow2(std::ldexp(1.0f, -140)).bits == 0);  // clamped to 2^-127
  REQUIRE(ue8m0::ceil_pow2(std::numeric_limits<float>::denorm_min()).bits == 0);
  // Documented edges: saturation at 2^127, x <= 0 -> 2^-127, NaN and +inf -> NaN.
  REQUIRE(ue8m0::ceil_pow2(std::ldexp(1.5f, 127)).bits == 254);
  REQUIRE(ue8m0::ceil_pow2(0.0f).bits == 0);
  REQUIRE(ue8m0::ceil_pow2(-1.0f).bits == 0);
  REQUIRE(ue8m0::ceil_pow2(std::numeric_limits<float>::quiet_NaN()).is_nan());
  REQUIRE(ue8m0::ceil_pow2(std::numeric_limits<float>::infinity()).is_nan());
  // The simulation scales: amax / 448 for amax = 448 is exactly 1.
  REQUIRE(ue8m0::ceil_pow2(448.0f / 448.0f).bits == 127);
  REQUIRE(ue8m0::ceil_pow2(449.0f / 448.0f).bits == 128);
}

// ---- fp4 e2m1 -------------------------------------------------------------------------------

TEST_CASE("fp4_e2m1: every code decodes to its definition and the E2M1 table", "[dtype][fp4]") {
  const float table[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (std::uint32_t c = 0; c < 16; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    const float got = fp4_e2m1::from_bits(code).to_float();
    REQUIRE(static_cast<double>(got) == ref_fp4(code));
    REQUIRE(std::abs(got) == table[c & 7]);
    REQUIRE(std::signbit(got) == ((c & 8) != 0));
    REQUIRE(fp4_e2m1(got).bits == code);  // round trip, including -0 (0x8)
  }
  REQUIRE(fp4_e2m1::from_bits(0xf3).bits == 0x3);  // only the low nibble is kept
}

TEST_CASE("fp4_e2m1: midpoints round to the even code, and the documented examples", "[dtype][fp4]") {
  for (std::uint32_t c = 0; c < 7; ++c) {
    const double lo = ref_fp4(static_cast<std::uint8_t>(c)), hi = ref_fp4(static_cast<std::uint8_t>(c + 1));
    const auto mid = static_cast<float>((lo + hi) / 2);
    const std::uint32_t even = (c & 1u) ? c + 1 : c;
    REQUIRE(fp4_e2m1(mid).bits == even);
    REQUIRE(fp4_e2m1(-mid).bits == (even | 0x8u));
    REQUIRE(fp4_e2m1(std::nextafter(mid, 0.0f)).bits == c);
    REQUIRE(fp4_e2m1(std::nextafter(mid, 100.0f)).bits == c + 1);
  }
  REQUIRE(fp4_e2m1(2.5f).to_float() == 2.0f);
  REQUIRE(fp4_e2m1(3.5f).to_float() == 4.0f);
  REQUIRE(fp4_e2m1(5.0f).to_float() == 4.0f);
  REQUIRE(fp4_e2m1(0.25f).to_float() == 0.0f);
  REQUIRE(fp4_e2m1(0.75f).to_float() == 1.0f);
  REQUIRE(fp4_e2m1(1.25f).to_float() == 1.0f);
  REQUIRE(fp4_e2m1(1.75f).to_float() == 2.0f);
}

TEST_CASE("fp4_e2m1: saturation, inf, NaN and subnormal inputs", "[dtype][fp4]") {
  const float inf = std::numeric_limits<float>::infinity();
  for (float f : {6.0f, 6.5f, 7.0f, 100.0f, std::numeric_limits<float>::max(), inf}) {
    REQUIRE(fp4_e2m1(f).bits == 0x7);
    REQUIRE(fp4_e2m1(-f).bits == 0xf);
  }
  REQUIRE(fp4_e2m1(5.01f).bits == 0x7);  // nearer to 6 than to 4
  // NaN has no E2M1 code: it encodes as zero with the NaN's sign bit (documented choice).
  REQUIRE(fp4_e2m1(std::numeric_limits<float>::quiet_NaN()).bits == 0x0);
  REQUIRE(fp4_e2m1(-std::numeric_limits<float>::quiet_NaN()).bits == 0x8);
  REQUIRE(fp4_e2m1(std::numeric_limits<float>::denorm_min()).bits == 0x0);
  REQUIRE(fp4_e2m1(-0.0f).bits == 0x8);
}

TEST_CASE("fp4_e2m1: random floats match a brute-force nearest-even search", "[dtype][fp4]") {
  std::mt19937 rng(99);
  for (int i = 0; i < 100000; ++i) {
    const float f = random_float(rng, -4, 4);
    REQUIRE(fp4_e2m1(f).bits == ref_encode_fp4(f));
  }
}

TEST_CASE("fp4x2: low nibble is the first (even) element, high nibble the second", "[dtype][fp4]") {
  for (std::uint32_t b = 0; b <= 0xff; ++b) {
    const auto p = fp4x2::from_bits(static_cast<std::uint8_t>(b));
    REQUIRE(p.first().bits == (b & 0xfu));
    REQUIRE(p.second().bits == (b >> 4));
    REQUIRE(p[0] == p.first());
    REQUIRE(p[1] == p.second());
    REQUIRE(fp4x2::pack(p.first(), p.second()).bits == b);
  }
  // 1.0 (code 0x2) first, -6.0 (code 0xf) second -> byte 0xf2.
  REQUIRE(fp4x2::pack(fp4_e2m1(1.0f), fp4_e2m1(-6.0f)).bits == 0xf2);
}
