// GEMV/GEMM over f32, bf16, FP8 and FP4 weights: the vectorized decoders equal the scalar
// dequantization on every code and scale (NaN ones included), also as the kernels see them (in
// registers for the GEMV, in tiles for the GEMM: a one-hot x reads each weight back), products
// match a double-precision reference on dequantized weights, NaN weights reach exactly their
// outputs, a batch equals its tokens one by one bit for bit, and thread count changes nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/core/linear.hpp"
#include "fixture.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;
using dsv4::test::format;
using dsv4::test::random_matrix;

// Decodes all of W chunk by chunk through W::decode.
template <class W>
std::vector<float> decode_all(const W& w) {
  std::vector<float> d(static_cast<std::size_t>(w.rows() * w.cols()));
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t k = 0; k < w.cols(); k += dsv4::weight_chunk)
      w.decode(r, k, std::min(dsv4::weight_chunk, w.cols() - k), d.data() + r * w.cols() + k);
  return d;
}

// Decodes all of W's whole chunks through the GEMV's and GEMM's register decoder
// (detail::load_chunk), which yields each chunk in W's lane order.
template <class W>
std::vector<float> decode_all_in_lane_order(const W& w) {
  std::vector<float> d(static_cast<std::size_t>(w.rows() * w.cols()));
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t k = 0; k + dsv4::weight_chunk <= w.cols(); k += dsv4::weight_chunk) {
      dsv4::detail::chunk_regs v;
      dsv4::detail::load_chunk(w, r, k, v);
      for (int i = 0; i < 4; ++i) dsv4::detail::store8(d.data() + r * w.cols() + k + 8 * i, v[i]);
    }
  return d;
}

// One row of values in column order, rearranged into W's lane order.
template <class W>
std::vector<float> in_lane_order(const std::vector<float>& row) {
  std::vector<float> out(row.size());
  dsv4::detail::lane_order<W>(row.data(), static_cast<index_t>(row.size()), out.data());
  return out;
}

// Bit for bit, except that any NaN matches any NaN and, where the decoder's contract says so (the
// FP4 lane decoder gives +0 for both zero codes), -0 matches +0.
void require_same_floats(const std::vector<float>& got, const std::vector<float>& ref, const char* what,
                         bool zero_sign_free = false) {
  REQUIRE(got.size() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO(what << ", element " << i << ": " << got[i] << " vs " << ref[i]);
    if (std::isnan(ref[i])) {
      REQUIRE(std::isnan(got[i]));
    } else if (zero_sign_free && ref[i] == 0.0f) {
      REQUIRE(got[i] == 0.0f);
    } else {
      REQUIRE(std::bit_cast<std::uint32_t>(got[i]) == std::bit_cast<std::uint32_t>(ref[i]));
    }
  }
}

template <format F>
void check_gemm_against_reference(index_t n, index_t out, index_t in) {
  const random_matrix<F> w(out, in, 11, 0.05f);
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(n * in), 12);
  std::vector<float> y(static_cast<std::size_t>(n * out));
  REQUIRE(dsv4::linear(w.view(), {x.data(), {n, in}}, {y.data(), {n, out}}).ok());
  const auto ref = dsv4::test::reference_gemm(w.dequantized(), x, n, out, in);
  const std::vector<float> ref_f(ref.begin(), ref.end());
  // fp32 accumulation over `in` terms: relative error ~ sqrt(in) * 2^-24, far below 1e-6.
  CHECK(dsv4::test::rel_l2(y, ref_f) < 1e-6);

  // Each token alone through gemv gives exactly its row of the batch.
  std::vector<float> yt(static_cast<std::size_t>(out));
  for (index_t t = 0; t < n; ++t) {
    REQUIRE(dsv4::gemv(w.view(), std::span<const float>(x.data() + t * in, static_cast<std::size_t>(in)),
                       std::span<float>(yt))
                .ok());
    for (index_t o = 0; o < out; ++o)
      REQUIRE(yt[static_cast<std::size_t>(o)] == y[static_cast<std::size_t>(t * out + o)]);
  }
}

}  // namespace

TEST_CASE("gemv: FP8 decoders equal the scalar dequantization on all 256 codes and extreme scales") {
  // Row 0 holds every code twice; the scale blocks run from 2^-127 to 2^127 (the largest ones take
  // the scalar path, the rest the vectorized one).
  const index_t in = 512;
  std::vector<dsv4::fp8_e4m3> w(static_cast<std::size_t>(in));
  for (index_t i = 0; i < in; ++i)
    w[static_cast<std::size_t>(i)] = dsv4::fp8_e4m3::from_bits(static_cast<std::uint8_t>(i & 0xff));
  for (int e : {-127, -20, 0, 119, 120, 127, 128}) {  // 128: the NaN scale code 0xff
    INFO("scale 2^" << e);
    const auto scale = e == 128 ? dsv4::ue8m0::from_bits(0xff) : dsv4::ue8m0::from_exponent(e);
    std::vector<dsv4::ue8m0> s(4, scale);
    const dsv4::fp8_matrix m{{w.data(), {1, in}}, {s.data(), {1, 4}}};
    std::vector<float> ref(static_cast<std::size_t>(in));
    for (index_t c = 0; c < in; ++c)
      ref[static_cast<std::size_t>(c)] = dsv4::dequantize_fp8_at(w.data(), s.data(), c);
    require_same_floats(decode_all(m), ref, "W::decode, column order");
    require_same_floats(decode_all_in_lane_order(m), in_lane_order<dsv4::fp8_matrix>(ref),
                        "GEMV decoder, lane order");
  }
}

TEST_CASE("gemv: FP4 decoders equal the scalar dequantization on all byte pairs and extreme scales") {
  const index_t in = 512;  // 256 bytes: every (even, odd) nibble pair once
  std::vector<dsv4::fp4x2> w(static_cast<std::size_t>(in / 2));
  for (index_t i = 0; i < in / 2; ++i)
    w[static_cast<std::size_t>(i)] = dsv4::fp4x2::from_bits(static_cast<std::uint8_t>(i));
  // The lane decoder puts scales 2^-125 .. 2^125 into the exponent and multiplies by the others.
  for (int e : {-127, -126, -125, -30, 0, 113, 114, 125, 126, 127, 128}) {  // 128: the NaN scale code 0xff
    INFO("scale 2^" << e);
    const auto scale = e == 128 ? dsv4::ue8m0::from_bits(0xff) : dsv4::ue8m0::from_exponent(e);
    std::vector<dsv4::ue8m0> s(static_cast<std::size_t>(in / 32), scale);
    const dsv4::fp4_matrix m{{w.data(), {1, in / 2}}, {s.data(), {1, in / 32}}};
    std::vector<float> ref(static_cast<std::size_t>(in));
    for (index_t c = 0; c < in; ++c)
      ref[static_cast<std::size_t>(c)] = dsv4::dequantize_fp4_at(w.data(), s.data(), c);
    require_same_floats(decode_all(m), ref, "W::decode, column order");
    require_same_floats(decode_all_in_lane_order(m), in_lane_order<dsv4::fp4_matrix>(ref),
                        "GEMV decoder, lane order", true);
  }
}

TEST_CASE("gemv: bf16 decode widens exactly, including the column tail") {
  const random_matrix<format::bf16> w(3, 45, 5);
  const auto d = decode_all(w.view());
  REQUIRE(d == w.dequantized());
}

TEST_CASE("gemv: gemm matches a double reference and gemv matches gemm bit for bit, every format") {
  // 70 tokens cross a 64-token pass; 7 rows leave a partial row block; odd widths leave column tails.
  check_gemm_against_reference<format::f32>(70, 7, 301);
  check_gemm_against_reference<format::bf16>(5, 9, 77);
  check_gemm_against_reference<format::fp8>(67, 130, 300);
  check_gemm_against_reference<format::fp4>(4, 6, 544);
  check_gemm_against_reference<format::fp8>(9, 5, 800);  // three column slices, the last partial
}

TEST_CASE("gemv: a one-hot x reads every weight exactly through the register decoders") {
  // y = W . e_k is w[o][k] times 1 plus exact zeros: bit for bit the decoded weight, whatever path
  // (decode in registers for gemv, into the tile for gemm) produced it. Scales stay below overflow
  // (an infinite weight times a zero of x would be NaN) but reach the subnormal results.
  const index_t rows = 5, in = 256;
  std::vector<dsv4::fp8_e4m3> w8(static_cast<std::size_t>(rows * in));
  std::vector<dsv4::fp4x2> w4(static_cast<std::size_t>(rows * in / 2));
  std::mt19937 rng(41);
  for (auto& c : w8) {
    do c = dsv4::fp8_e4m3::from_bits(static_cast<std::uint8_t>(rng() & 0xff));
    while (c.is_nan());
  }
  for (auto& c : w4) c = dsv4::fp4x2::from_bits(static_cast<std::uint8_t>(rng() & 0xff));
  std::vector<dsv4::ue8m0> s8(2), s4(static_cast<std::size_t>(rows * in / 32));
  const int exps[] = {-127, -126, -3, 0, 7, 100, 119, 120};
  for (std::size_t i = 0; i < s8.size(); ++i) s8[i] = dsv4::ue8m0::from_exponent(exps[i * 6 % 8]);
  for (std::size_t i = 0; i < s4.size(); ++i) s4[i] = dsv4::ue8m0::from_exponent(exps[i % 7]);
  const dsv4::fp8_matrix m8{{w8.data(), {rows, in}}, {s8.data(), {1, 2}}};
  const dsv4::fp4_matrix m4{{w4.data(), {rows, in / 2}}, {s4.data(), {rows, in / 32}}};
  std::vector<float> x(static_cast<std::size_t>(2 * in)), y8(static_cast<std::size_t>(rows)),
      y4(static_cast<std::size_t>(2 * rows));
  for (index_t k = 0; k < in; ++k) {
    std::fill(x.begin(), x.end(), 0.0f);
    x[static_cast<std::size_t>(k)] = 1.0f;       // token 0 of the batch: one-hot
    x[static_cast<std::size_t>(in + k)] = 1.0f;  // token 1: the same, through the GEMM tiles
    REQUIRE(dsv4::gemv(m8, std::span<const float>(x.data(), static_cast<std::size_t>(in)), y8).ok());
    REQUIRE(dsv4::linear(m4, {x.data(), {2, in}}, {y4.data(), {2, rows}}).ok());
    for (index_t o = 0; o < rows; ++o) {
      INFO("row " << o << " column " << k);
      CHECK(y8[static_cast<std::size_t>(o)] == dsv4::dequantize_fp8_at(w8.data() + o * in, s8.data(), k));
      const float ref4 = dsv4::dequantize_fp4_at(w4.data() + o * in / 2, s4.data() + o * in / 32, k);
      CHECK(y4[static_cast<std::size_t>(o)] == ref4);
      CHECK(y4[static_cast<std::size_t>(rows + o)] == ref4);
    }
  }
}

TEST_CASE("gemv: NaN codes and scales reach the outputs, and gemv still equals the gemm row") {
  // NaN codes sit in a few chunks (the vectorized FP8 decoder hands those to the scalar one); a
  // NaN scale covers one FP4 block. Rows without them stay finite and bit-identical.
  random_matrix<format::fp8> w8(24, 256, 51);
  w8.e4m3[3 * 256 + 40] = dsv4::fp8_e4m3::from_bits(0x7f);
  w8.e4m3[17 * 256 + 200] = dsv4::fp8_e4m3::from_bits(0xff);
  random_matrix<format::fp4> w4(24, 256, 52);
  w4.scale[5 * 8 + 2] = dsv4::ue8m0::from_bits(0xff);
  const index_t n = 5;
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(n * 256), 53);
  auto check = [&](const auto& m, const std::vector<index_t>& nan_rows) {
    std::vector<float> y(static_cast<std::size_t>(n * 24)), yt(24);
    REQUIRE(dsv4::linear(m, {x.data(), {n, 256}}, {y.data(), {n, 24}}).ok());
    for (index_t t = 0; t < n; ++t) {
      REQUIRE(dsv4::gemv(m, std::span<const float>(x.data() + t * 256, 256), std::span<float>(yt)).ok());
      for (index_t o = 0; o < 24; ++o) {
        const float a = y[static_cast<std::size_t>(t * 24 + o)], b = yt[static_cast<std::size_t>(o)];
        const bool nan_row = std::find(nan_rows.begin(), nan_rows.end(), o) != nan_rows.end();
        INFO("token " << t << " row " << o);
        REQUIRE(std::isnan(a) == nan_row);
        REQUIRE(std::isnan(b) == nan_row);
        if (!nan_row) REQUIRE(a == b);
      }
    }
  };
  check(w8.view(), {3, 17});
  check(w4.view(), {5});
}

TEST_CASE("gemv: FP8 with x at the edge of the float range still equals the gemm row") {
  // The one-token FP8 path multiplies x by each block's scale * 2^8 instead of the weights; that
  // is exact only while x * scale * 2^8 stays a normal float. Tiny x against a small scale
  // (subnormal products) and large x against a large scale (overflow) must take the decoded
  // weights instead, and every case must equal the batch's row bit for bit.
  const index_t out = 8, in = 256;
  random_matrix<format::fp8> w(out, in, 61);
  const auto base = dsv4::test::random_normal(static_cast<std::size_t>(in), 62);
  for (auto [e_scale, e_x] : {std::pair{-20, -120}, std::pair{100, 30}, std::pair{-3, 0}}) {
    std::fill(w.scale.begin(), w.scale.end(), dsv4::ue8m0::from_exponent(e_scale));
    std::vector<float> x(static_cast<std::size_t>(2 * in)), y(static_cast<std::size_t>(2 * out)), yt(out);
    for (index_t k = 0; k < in; ++k)
      x[static_cast<std::size_t>(k)] = x[static_cast<std::size_t>(in + k)] =
          std::ldexp(base[static_cast<std::size_t>(k)], e_x);
    REQUIRE(dsv4::linear(w.view(), {x.data(), {2, in}}, {y.data(), {2, out}}).ok());
    REQUIRE(dsv4::gemv(w.view(), std::span<const float>(x.data(), static_cast<std::size_t>(in)), yt).ok());
    for (index_t o = 0; o < out; ++o) {
      INFO("scale 2^" << e_scale << ", x ~ 2^" << e_x << ", row " << o);
      REQUIRE(std::bit_cast<std::uint32_t>(yt[static_cast<std::size_t>(o)]) ==
              std::bit_cast<std::uint32_t>(y[static_cast<std::size_t>(o)]));
    }
  }
}

namespace {

// The accumulation-order contract written out for FP8 and FP4: eight lanes; within each whole
// 32-column chunk lane l takes the columns column(i, l) for i = 0 .. 3 (in that order, with a fused
// multiply-add) before the next chunk, a column tail lane = k mod 8; then the lane tree of
// dsv4::dot. The column maps are written here from the contract's text, not taken from the library.
template <class Column>
float contract_dot_chunks(const float* w, const float* x, index_t n, Column column) {
  float lanes[8] = {};
  const auto add = [&](int l, index_t c) {
#if defined(__FMA__)
    lanes[l] = std::fma(w[c], x[c], lanes[l]);
#else
    lanes[l] = lanes[l] + w[c] * x[c];
#endif
  };
  index_t b = 0;
  for (; b + 32 <= n; b += 32)
    for (int i = 0; i < 4; ++i)
      for (int l = 0; l < 8; ++l) add(l, b + column(i, l));
  for (int t = 0; b + t < n; ++t) add(t % 8, b + t);  // b is a multiple of 8: lane = k mod 8
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
}
// FP8: lane l takes the chunk's columns 2l, 2l + 1, 16 + 2l, 17 + 2l.
float contract_dot_fp8(const float* w, const float* x, index_t n) {
  return contract_dot_chunks(w, x, n, [](int i, int l) { return index_t{16 * (i / 2) + 2 * l + i % 2}; });
}
// FP4: lane l takes the chunk's columns l/4 + 4 (l mod 4) + 0, 2, 16, 18.
float contract_dot_fp4(const float* w, const float* x, index_t n) {
  return contract_dot_chunks(
      w, x, n, [](int i, int l) { return index_t{16 * (i / 2) + 2 * (i % 2) + 4 * (l % 4) + l / 4}; });
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) ||
         std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

// gemv of m against a contract evaluated on the scalar-dequantized weights (weight(o, k)) and
// against the gemm row of the same token, bit for bit.
template <class W, class Weight, class Contract>
void check_gemv_contract(const W& m, const std::vector<float>& x, Weight weight, Contract contract,
                         const std::string& what) {
  const index_t out = m.rows(), in = m.cols();
  std::vector<float> y(static_cast<std::size_t>(out)), yb(static_cast<std::size_t>(2 * out)),
      xb(static_cast<std::size_t>(2 * in)), w(static_cast<std::size_t>(in));
  std::copy(x.begin(), x.end(), xb.begin());
  std::copy(x.begin(), x.end(), xb.begin() + in);
  REQUIRE(dsv4::gemv(m, x, y).ok());
  REQUIRE(dsv4::linear(m, {xb.data(), {2, in}}, {yb.data(), {2, out}}).ok());
  for (index_t o = 0; o < out; ++o) {
    for (index_t k = 0; k < in; ++k) w[static_cast<std::size_t>(k)] = weight(o, k);
    const float ref = contract(w.data(), x.data(), in);
    const float got = y[static_cast<std::size_t>(o)];
    INFO(what << ", row " << o << ": gemv " << got << ", contract " << ref);
    REQUIRE(same_float(got, ref));
    REQUIRE(same_float(got, yb[static_cast<std::size_t>(out + o)]));
  }
}

// gemv of one FP8 matrix whose 128-row blocks all carry scale 2^e_scale against the contract.
void check_fp8_gemv_contract(const std::vector<dsv4::fp8_e4m3>& codes, index_t out, index_t in, int e_scale,
                             const std::vector<float>& x) {
  const index_t sr = dsv4::ceil_div(out, dsv4::fp8_block), sc = dsv4::ceil_div(in, dsv4::fp8_block);
  std::vector<dsv4::ue8m0> s(static_cast<std::size_t>(sr * sc), dsv4::ue8m0::from_exponent(e_scale));
  const dsv4::fp8_matrix m{{codes.data(), {out, in}}, {s.data(), {sr, sc}}};
  check_gemv_contract(
      m, x,
      [&](index_t o, index_t k) {
        return dsv4::dequantize_fp8_at(codes.data() + o * in, s.data() + (o / 128) * sc, k);
      },
      contract_dot_fp8, "scale 2^" + std::to_string(e_scale));
}

}  // namespace

TEST_CASE("gemv: FP8 GEMV and GEMM follow the contract on every code, across each path's scale limits") {
  // The one-token FP8 GEMV reads the codes as code * 2^-120 and multiplies x by scale * 2^120 for
  // scales up to 2^7, uses the half decoder with x times scale * 2^8 above that up to 2^119, and the
  // decoded weights beyond, or wherever x * (the factor) would leave the normal range. Each row here
  // holds every non-NaN code (subnormal codes included, so the fp32-subnormal operands are exercised)
  // in a different order; x is random, then pushed towards the subnormal and the overflowing ends.
  const index_t out = 9, in = 300;  // a partial 4-row group, a partial scale block, a column tail
  std::vector<dsv4::fp8_e4m3> codes(static_cast<std::size_t>(out * in));
  std::mt19937 rng(71);
  for (auto& c : codes) {
    do c = dsv4::fp8_e4m3::from_bits(static_cast<std::uint8_t>(rng() & 0xff));
    while (c.is_nan());
  }
  for (index_t o = 0; o < out; ++o)  // every non-NaN code at least once per row
    for (index_t i = 0, b = 0; b < 256; ++b)
      if ((b & 0x7f) != 0x7f)
        codes[static_cast<std::size_t>(o * in + (i++ * 7 + o) % in)].bits = static_cast<std::uint8_t>(b);
  const auto base = dsv4::test::random_normal(static_cast<std::size_t>(in), 72);
  for (int e_x : {0, -100, -118, -125, 100, 120}) {
    std::vector<float> x(base.size());
    for (std::size_t k = 0; k < x.size(); ++k) x[k] = std::ldexp(base[k], e_x);
    for (int e_scale : {-127, -126, -40, -3, 0, 6, 7, 8, 9, 60, 119, 120, 127}) {
      check_fp8_gemv_contract(codes, out, in, e_scale, x);
    }
  }
  // Subnormal x entries mixed with ordinary ones.
  std::vector<float> x(base);
  for (std::size_t k = 0; k < x.size(); k += 5) x[k] = std::ldexp(base[k], -140);
  for (int e_scale : {-127, -7, 0, 7, 8}) check_fp8_gemv_contract(codes, out, in, e_scale, x);
}

namespace {

// gemv of an FP4 matrix against its contract.
void check_fp4_gemv_contract(const std::vector<dsv4::fp4x2>& codes, const std::vector<dsv4::ue8m0>& s,
                             index_t out, index_t in, const std::vector<float>& x, const std::string& what) {
  const dsv4::fp4_matrix m{{codes.data(), {out, in / 2}}, {s.data(), {out, in / 32}}};
  check_gemv_contract(
      m, x,
      [&](index_t o, index_t k) {
        return dsv4::dequantize_fp4_at(codes.data() + o * in / 2, s.data() + o * in / 32, k);
      },
      contract_dot_fp4, what);
}

}  // namespace

TEST_CASE("gemv: FP4 GEMV and GEMM follow the contract on every code, across the decoder's scale limits") {
  // The FP4 kernels scale by adding the exponent to the looked-up patterns for scales 2^-125 ..
  // 2^125 and multiply outside that range; a 4-row GEMV pass takes the first way only when all its
  // rows can. Scales vary by row and block here so that passes meet both; every row holds every
  // code (both zeros included); x is random, then pushed towards the ends of the float range so
  // that products of the smallest and largest weights reach the outputs.
  const index_t out = 9, in = 320;  // a partial 4-row group
  std::vector<dsv4::fp4x2> codes(static_cast<std::size_t>(out * in / 2));
  for (index_t o = 0; o < out; ++o)  // byte b of row o is 7b + o: each nibble takes every code
    for (index_t b = 0; b < in / 2; ++b)
      codes[static_cast<std::size_t>(o * in / 2 + b)] =
          dsv4::fp4x2::from_bits(static_cast<std::uint8_t>(b * 7 + o));
  const int bits[] = {0, 1, 2, 3, 60, 100, 124, 127, 130, 200, 251, 252, 253, 254, 255, 127};
  std::vector<dsv4::ue8m0> s(static_cast<std::size_t>(out * in / 32));
  for (index_t o = 0; o < out; ++o)
    for (index_t b = 0; b < in / 32; ++b)
      s[static_cast<std::size_t>(o * in / 32 + b)] =
          dsv4::ue8m0::from_bits(static_cast<std::uint8_t>(bits[(o * 7 + b * 3) % 16]));
  const int row_bits[] = {127, 253, 130, 255, 2, 252, 1, 127, 253};
  std::vector<dsv4::ue8m0> row_scales(s.size());
  for (index_t o = 0; o < out; ++o)
    std::fill_n(row_scales.begin() + o * in / 32, in / 32,
                dsv4::ue8m0::from_bits(static_cast<std::uint8_t>(row_bits[o])));
  auto small_codes = codes;  // codes 0 to 1.5 and one 6 per row: at scale bits 253 only the 6 overflows
  for (std::size_t i = 0; i < small_codes.size(); ++i)
    small_codes[i] =
        dsv4::fp4x2::from_bits(static_cast<std::uint8_t>(i % 160 == 17 ? 0x37 : codes[i].bits & 0x33));
  const auto base = dsv4::test::random_normal(static_cast<std::size_t>(in), 92);
  for (int e_x : {0, -20, 20, 100, 124, -100}) {
    std::vector<float> x(base.size());
    for (std::size_t k = 0; k < x.size(); ++k) x[k] = std::ldexp(base[k], e_x);
    check_fp4_gemv_contract(codes, s, out, in, x, "mixed scales, x ~ 2^" + std::to_string(e_x));
    // One scale per row: passes whose first row is within the limits and a later row is not (a
    // pass must not take the exponent way unless every row can), and row 8 (a pass of its own) at
    // 2^126; one infinite weight per row gives an infinite output rather than inf - inf.
    check_fp4_gemv_contract(small_codes, row_scales, out, in, x, "row scales, x ~ 2^" + std::to_string(e_x));
    // One scale for the whole matrix: every row group the same way.
    for (int b : {1, 2, 127, 252, 253}) {
      std::vector<dsv4::ue8m0> u(s.size(), dsv4::ue8m0::from_bits(static_cast<std::uint8_t>(b)));
      check_fp4_gemv_contract(codes, u, out, in, x,
                              "scale bits " + std::to_string(b) + ", x ~ 2^" + std::to_string(e_x));
    }
  }
}

TEST_CASE("gemv: an FP8 NaN code sends its row group to the exact fallback, other rows unchanged") {
  // The NaN probe covers the 4 rows of a GEMV pass and the 4 chunks of a 128-column scale block
  // at once; a NaN code in one of them must make that row NaN and leave the other three
  // bit-identical to the contract. The code sits in the first block's second chunk or the second
  // block's last chunk, so the chunks around it take the single-chunk way and the block after it
  // the whole-block way again.
  const index_t out = 8, in = 256;
  random_matrix<format::fp8> w(out, in, 81);
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(in), 82);
  for (const auto& [nan, col] : {std::pair<std::uint8_t, index_t>{0x7f, 37}, {0xff, 37}, {0x7f, 229}}) {
    auto codes = w.e4m3;
    codes[static_cast<std::size_t>(2 * in + col)] = dsv4::fp8_e4m3::from_bits(nan);
    std::vector<float> y(static_cast<std::size_t>(out)), d(static_cast<std::size_t>(in));
    const dsv4::fp8_matrix m{{codes.data(), {out, in}}, {w.scale.data(), {1, 2}}};
    REQUIRE(dsv4::gemv(m, x, y).ok());
    for (index_t o = 0; o < out; ++o) {
      for (index_t k = 0; k < in; ++k)
        d[static_cast<std::size_t>(k)] = dsv4::dequantize_fp8_at(codes.data() + o * in, w.scale.data(), k);
      INFO("NaN code " << int(nan) << " at column " << col << ", row " << o);
      if (o == 2) {
        REQUIRE(std::isnan(y[static_cast<std::size_t>(o)]));
      } else {
        REQUIRE(same_float(y[static_cast<std::size_t>(o)], contract_dot_fp8(d.data(), x.data(), in)));
      }
    }
  }
}

template <class W>
void check_thread_independence(const W& w, index_t n) {
  const index_t out = w.rows(), in = w.cols();
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(n * in), 22);
  std::vector<float> y1(static_cast<std::size_t>(n * out)), y2(y1.size());
  const int threads = dsv4::max_threads();
  dsv4::set_num_threads(1);
  REQUIRE(dsv4::linear(w, {x.data(), {n, in}}, {y1.data(), {n, out}}).ok());
  dsv4::set_num_threads(2);
  REQUIRE(dsv4::linear(w, {x.data(), {n, in}}, {y2.data(), {n, out}}).ok());
  dsv4::set_num_threads(threads);
  REQUIRE(y1 == y2);
}

TEST_CASE("gemv: results do not depend on the thread count") {
  // 64 and 137 rows split into parallel tasks of 12 rows with a partial last one; 1 token takes
  // the GEMV path, 9 and 40 the GEMM (40 crosses a pass of 32 tokens).
  for (index_t n : {1, 9, 40}) {
    check_thread_independence(random_matrix<format::fp4>(64, 512, 21).view(), n);
    check_thread_independence(random_matrix<format::fp8>(137, 384, 23).view(), n);
    check_thread_independence(random_matrix<format::bf16>(64, 200, 24).view(), n);
  }
}

TEST_CASE("gemv: shape errors name the tensor and leave the output untouched") {
  const random_matrix<format::fp8> w(8, 256, 31);
  std::vector<float> x(255, 1.0f), y(8, 7.0f);
  const auto s = dsv4::gemv(w.view(), x, y);
  CHECK(s.code() == dsv4::errc::shape_mismatch);
  CHECK(s.message().find("x:") != std::string::npos);
  CHECK(y == std::vector<float>(8, 7.0f));

  std::vector<dsv4::ue8m0> bad_scale(3);
  const dsv4::fp8_matrix m{w.view().weight, {bad_scale.data(), {1, 3}}};
  std::vector<float> x2(256, 1.0f);
  const auto s2 = dsv4::gemv(m, x2, y);
  CHECK(s2.message().find("weight.scale") != std::string::npos);

  std::vector<dsv4::fp4x2> w4(8 * 20);
  std::vector<dsv4::ue8m0> s4(8);
  const dsv4::fp4_matrix m4{{w4.data(), {8, 20}}, {s4.data(), {8, 1}}};
  std::vector<float> x4(40, 1.0f);
  CHECK(dsv4::gemv(m4, x4, y).code() == dsv4::errc::shape_mismatch);
}
