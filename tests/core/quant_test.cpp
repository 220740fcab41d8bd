// Tests of dsv4/core/quant.hpp on the CPU: block-scaled dequantization of the checkpoint layouts
// against plain loops written here from the layout description (spec §11.1), shape validation
// that leaves the output untouched, and the FP8/FP4 quantization simulations of spec §18.3
// against a brute-force nearest-value reference and their structural properties.
//
// The element decoders themselves are checked exhaustively in dtype_test.cpp; here the reference
// decodes fp8 with the library's to_float (already proven) but fp4 from a literal E2M1 table, and
// computes every block index and scale independently.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "dsv4/core/quant.hpp"

namespace {

using dsv4::fp4_e2m1;
using dsv4::fp4x2;
using dsv4::fp8_e4m3;
using dsv4::index_t;
using dsv4::tensor_view;
using dsv4::ue8m0;

std::vector<fp8_e4m3> random_fp8(std::mt19937& rng, std::size_t n) {
  std::uniform_int_distribution<int> code(0, 255);
  std::vector<fp8_e4m3> v(n);
  for (auto& x : v) {
    do {
      x = fp8_e4m3::from_bits(static_cast<std::uint8_t>(code(rng)));
    } while (x.is_nan());  // checkpoints hold no NaN; NaN would also defeat the == comparison
  }
  return v;
}

// Scale bytes around 2^0: large enough spread to catch a wrong block, small enough not to overflow.
std::vector<ue8m0> random_scales(std::mt19937& rng, std::size_t n) {
  std::uniform_int_distribution<int> code(110, 140);
  std::vector<ue8m0> v(n);
  for (auto& s : v) s = ue8m0::from_bits(static_cast<std::uint8_t>(code(rng)));
  return v;
}

std::vector<fp4x2> random_fp4x2(std::mt19937& rng, std::size_t n) {
  std::uniform_int_distribution<int> code(0, 255);
  std::vector<fp4x2> v(n);
  for (auto& x : v) x = fp4x2::from_bits(static_cast<std::uint8_t>(code(rng)));
  return v;
}

bool any_nonzero(const std::vector<float>& v) {
  return std::any_of(v.begin(), v.end(), [](float x) { return x != 0.0f; });
}

// ---- independent references of the layouts --------------------------------------------------

// weight (rows, cols) row-major, scale (ceil(rows/128), ceil(cols/128)) row-major.
std::vector<float> ref_dequant_fp8(const std::vector<fp8_e4m3>& w, const std::vector<ue8m0>& s, index_t rows,
                                   index_t cols) {
  const index_t scale_cols = (cols + 127) / 128;
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) {
      const int e = s[static_cast<std::size_t>((r / 128) * scale_cols + c / 128)].bits - 127;
      const double v =
          std::ldexp(static_cast<double>(w[static_cast<std::size_t>(r * cols + c)].to_float()), e);
      out[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(v);
    }
  }
  return out;
}

// weight (rows, cols/2) bytes, scale (rows, cols/32).
std::vector<float> ref_dequant_fp4(const std::vector<fp4x2>& w, const std::vector<ue8m0>& s, index_t rows,
                                   index_t cols) {
  const double table[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) {
      const unsigned byte = w[static_cast<std::size_t>(r * (cols / 2) + c / 2)].bits;
      const unsigned nibble = (c % 2 == 0) ? (byte & 0xfu) : (byte >> 4);  // low nibble = even element
      const double mag = table[nibble & 7u];
      const double v = (nibble & 8u) ? -mag : mag;
      const int e = s[static_cast<std::size_t>(r * (cols / 32) + c / 32)].bits - 127;
      out[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(std::ldexp(v, e));
    }
  }
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// ---- dequantize_fp8_op -----------------------------------------------------------------------

TEST_CASE("dequantize_fp8: 128x128 blocks on a non-multiple-of-128 shape match the layout", "[quant][fp8]") {
  constexpr index_t rows = 200, cols = 300, srows = 2, scols = 3;
  std::mt19937 rng(2024);
  const auto w = random_fp8(rng, rows * cols);
  const auto s = random_scales(rng, srows * scols);
  std::vector<float> out(rows * cols, -1.0f);

  dsv4::dequantize_fp8_op::params p{
      {w.data(), {rows, cols}}, {s.data(), {srows, scols}}, {out.data(), {rows, cols}}};
  const dsv4::status st = dsv4::run<dsv4::cpu>(p);
  REQUIRE(st.ok());
  const auto ref = ref_dequant_fp8(w, s, rows, cols);
  REQUIRE(any_nonzero(ref));
  REQUIRE(bit_equal(out, ref));

  SECTION("a row segment decoded on its own equals the same part of the matrix") {
    const index_t r = 150, begin = 100, end = 260;  // crosses the column block boundary at 128 and 256
    std::vector<float> seg(end - begin);
    dsv4::dequantize_fp8_row(w.data() + r * cols, s.data() + (r / 128) * scols, begin, end, seg.data());
    for (index_t c = begin; c < end; ++c) REQUIRE(seg[c - begin] == ref[r * cols + c]);
    REQUIRE(dsv4::dequantize_fp8_at(w.data() + r * cols, s.data() + scols, 299) == ref[r * cols + 299]);
  }

  SECTION("a strided output view (row stride > cols) is filled row by row, padding untouched") {
    constexpr index_t ld = 310;
    std::vector<float> padded(rows * ld, 7.0f);
    dsv4::dequantize_fp8_op::params q = p;
    q.out = tensor_view<float, 2>(padded.data(), {rows, cols}, {ld, 1});
    REQUIRE(dsv4::run<dsv4::cpu>(q).ok());
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < cols; ++c) REQUIRE(padded[r * ld + c] == ref[r * cols + c]);
      for (index_t c = cols; c < ld; ++c) REQUIRE(padded[r * ld + c] == 7.0f);
    }
  }
}

TEST_CASE("dequantize_fp8: bad shapes name the tensor and leave out untouched", "[quant][fp8]") {
  constexpr index_t rows = 130, cols = 129;
  std::mt19937 rng(5);
  const auto w = random_fp8(rng, rows * cols);
  const auto s = random_scales(rng, 2 * 3);
  std::vector<float> out(rows * (cols + 1), 3.0f);
  const std::vector<float> before = out;

  auto expect_error = [&](const dsv4::dequantize_fp8_op::params& p, const std::string& name) {
    const dsv4::status st = dsv4::run<dsv4::cpu>(p);
    REQUIRE_FALSE(st.ok());
    REQUIRE(st.code() == dsv4::errc::shape_mismatch);
    INFO(st.to_string());
    REQUIRE(st.message().rfind(name + ":", 0) == 0);  // the message starts with the tensor's name
    REQUIRE(out == before);
  };
  const tensor_view<const fp8_e4m3, 2> wv(w.data(), {rows, cols});
  const tensor_view<float, 2> ov(out.data(), {rows, cols});
  // The correct scale is (2, 2); (2, 3) and (1, 2) are wrong.
  expect_error({wv, {s.data(), {2, 3}}, ov}, "scale");
  expect_error({wv, {s.data(), {1, 2}}, ov}, "scale");
  expect_error({wv, {s.data(), {2, 2}}, {out.data(), {rows, cols + 1}}}, "out");
  expect_error({wv, {s.data(), {2, 2}}, {out.data(), {rows - 1, cols}}}, "out");
  expect_error({wv, {s.data(), {2, 2}}, {out.data(), {rows, cols}, {cols + 1, 2}}}, "out");
  expect_error({{w.data(), {rows / 2, cols}, {2 * cols, 2}}, {s.data(), {1, 2}}, ov}, "weight");
  // And the good call does write.
  REQUIRE(dsv4::run<dsv4::cpu>(dsv4::dequantize_fp8_op::params{wv, {s.data(), {2, 2}}, ov}).ok());
  REQUIRE(out != before);
}

// ---- dequantize_fp4_op -----------------------------------------------------------------------

TEST_CASE("dequantize_fp4: 1x32 blocks and nibble order match the layout", "[quant][fp4]") {
  constexpr index_t rows = 7, cols = 96;
  std::mt19937 rng(77);
  const auto w = random_fp4x2(rng, rows * cols / 2);
  const auto s = random_scales(rng, rows * cols / 32);
  std::vector<float> out(rows * cols, -1.0f);

  dsv4::dequantize_fp4_op::params p{
      {w.data(), {rows, cols / 2}}, {s.data(), {rows, cols / 32}}, {out.data(), {rows, cols}}};
  REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
  const auto ref = ref_dequant_fp4(w, s, rows, cols);
  REQUIRE(any_nonzero(ref));
  REQUIRE(bit_equal(out, ref));

  SECTION("an odd-aligned row segment decodes the right nibbles") {
    const index_t r = 4, begin = 31, end = 66;
    std::vector<float> seg(end - begin);
    dsv4::dequantize_fp4_row(w.data() + r * (cols / 2), s.data() + r * (cols / 32), begin, end, seg.data());
    for (index_t c = begin; c < end; ++c) REQUIRE(seg[c - begin] == ref[r * cols + c]);
  }

  SECTION("a hand-made byte: first element in the low nibble") {
    const fp4x2 b = fp4x2::pack(fp4_e2m1(1.5f), fp4_e2m1(-4.0f));
    const ue8m0 sc = ue8m0::from_exponent(3);
    REQUIRE(dsv4::dequantize_fp4_at(&b, &sc, 0) == 12.0f);
    REQUIRE(dsv4::dequantize_fp4_at(&b, &sc, 1) == -32.0f);
  }
}

TEST_CASE("dequantize_fp4: bad shapes name the tensor and leave out untouched", "[quant][fp4]") {
  constexpr index_t rows = 7, cols = 96;
  std::mt19937 rng(8);
  const auto w = random_fp4x2(rng, rows * cols / 2);
  const auto s = random_scales(rng, rows * cols / 32 + 8);
  std::vector<float> out(rows * cols + 8, 5.0f);
  const std::vector<float> before = out;

  auto expect_error = [&](const dsv4::dequantize_fp4_op::params& p, const std::string& name) {
    const dsv4::status st = dsv4::run<dsv4::cpu>(p);
    REQUIRE_FALSE(st.ok());
    REQUIRE(st.code() == dsv4::errc::shape_mismatch);
    INFO(st.to_string());
    REQUIRE(st.message().rfind(name + ":", 0) == 0);
    REQUIRE(out == before);
  };
  const tensor_view<const fp4x2, 2> wv(w.data(), {rows, cols / 2});
  const tensor_view<const ue8m0, 2> sv(s.data(), {rows, cols / 32});
  const tensor_view<float, 2> ov(out.data(), {rows, cols});
  // in = 40 is not a multiple of 32.
  expect_error({{w.data(), {rows, 20}}, {s.data(), {rows, 1}}, {out.data(), {rows, 40}}}, "weight");
  expect_error({wv, {s.data(), {rows, 4}}, ov}, "scale");
  expect_error({wv, {s.data(), {rows + 1, 3}}, ov}, "scale");
  expect_error({wv, sv, {out.data(), {rows, cols / 2}}}, "out");
  expect_error({wv, sv, {out.data(), {rows, cols}, {cols, 2}}}, "out");
  REQUIRE(dsv4::run<dsv4::cpu>(dsv4::dequantize_fp4_op::params{wv, sv, ov}).ok());
  REQUIRE(out != before);
}

// ---- simulations ----------------------------------------------------------------------------

namespace {

// The nearest value q * s to x with q in the format (magnitudes `table`, ascending, codes in
// order so that "even code" = even index), ties to the even code, saturating: a brute-force
// reading of "round(clamp(x / s, -max, max)) * s".
double nearest_scaled(double x, double s, const std::vector<double>& table) {
  const double a = std::min(std::abs(x) / s, table.back());
  std::size_t best = 0;
  for (std::size_t k = 1; k < table.size(); ++k) {
    const double d = std::abs(a - table[k]), bd = std::abs(a - table[best]);
    if (d < bd || (d == bd && k % 2 == 0)) best = k;
  }
  return (x < 0 ? -table[best] : table[best]) * s;
}

std::vector<double> e4m3_magnitudes() {
  std::vector<double> t;
  for (int c = 0; c <= 0x7e; ++c) {
    const int e = c >> 3, m = c & 7;
    t.push_back(e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10));
  }
  return t;
}

std::vector<double> e2m1_magnitudes() { return {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}; }

// Random tiles whose magnitudes differ by many binades from tile to tile, so a wrong tile
// boundary or a shared scale shows.
std::vector<float> random_tiled(std::mt19937& rng, std::size_t n, std::size_t tile) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> binade(-20, 12);
  std::vector<float> x(n);
  float mag = 1.0f;
  for (std::size_t i = 0; i < n; ++i) {
    if (i % tile == 0) mag = std::ldexp(1.0f, binade(rng));
    x[i] = normal(rng) * mag;
  }
  return x;
}

// s = 2^ceil(log2(max(amax, floor) / max_q)) for x[b, e), the spec's formula in double (the
// quotient is rounded to float first, as the reference computes it in FP32).
double ref_scale(const std::vector<float>& x, std::size_t b, std::size_t e, float amax_floor, float max_q) {
  float amax = 0.0f;
  for (std::size_t i = b; i < e; ++i) amax = std::max(amax, std::abs(x[i]));
  amax = std::max(amax, amax_floor);
  return std::exp2(std::ceil(std::log2(static_cast<double>(amax / max_q))));
}

}  // namespace

TEST_CASE("fp8_simulate: per-tile power-of-two scale and e4m3 round-to-nearest-even", "[quant][simulate]") {
  const auto table = e4m3_magnitudes();
  for (int tile : {128, 64}) {
    INFO("tile = " << tile);
    std::mt19937 rng(static_cast<unsigned>(tile));
    const std::size_t n = static_cast<std::size_t>(5 * tile + 17);  // a partial tile at the end
    const auto x = random_tiled(rng, n, static_cast<std::size_t>(tile));
    auto y = x;
    dsv4::fp8_simulate(y, tile);

    REQUIRE(y != x);  // the simulation must change something on random data
    for (std::size_t b = 0; b < n; b += static_cast<std::size_t>(tile)) {
      const std::size_t e = std::min(n, b + static_cast<std::size_t>(tile));
      const double s = ref_scale(x, b, e, 1e-4f, 448.0f);
      for (std::size_t i = b; i < e; ++i) {
        // The brute-force reference, exactly.
        REQUIRE(static_cast<double>(y[i]) == nearest_scaled(x[i], s, table));
        // y / s is an e4m3 value and y is exact in bf16 (so the reference's bf16 cast is a no-op).
        REQUIRE(static_cast<double>(fp8_e4m3(static_cast<float>(y[i] / s)).to_float()) == y[i] / s);
        REQUIRE(dsv4::round_to_bf16(y[i]) == y[i]);
        // Error: at most half a quantum, 2^-4 relative for normals, 2^-10 * s in the subnormals.
        REQUIRE(std::abs(static_cast<double>(x[i]) - y[i]) <= std::max(std::abs(x[i]) * 0x1p-4, s * 0x1p-10));
      }
      // The largest element of the tile keeps at least 3 significant bits: s was chosen so that
      // amax / s lands in (224, 448].
      float amax = 0.0f;
      for (std::size_t i = b; i < e; ++i) amax = std::max(amax, std::abs(x[i]));
      if (amax > 1e-4f) {
        REQUIRE(amax / s > 224.0);
        REQUIRE(amax / s <= 448.0);
      }
    }

    // Idempotent: simulating again changes nothing.
    auto z = y;
    dsv4::fp8_simulate(z, tile);
    REQUIRE(z == y);

    // Tiles are independent: the trailing partial tile alone gives the same result.
    const std::size_t tail = n - n % static_cast<std::size_t>(tile);
    std::vector<float> t(x.begin() + static_cast<std::ptrdiff_t>(tail), x.end());
    dsv4::fp8_simulate(t, tile);
    REQUIRE(std::equal(t.begin(), t.end(), y.begin() + static_cast<std::ptrdiff_t>(tail)));
  }
}

TEST_CASE("fp8_simulate: amax floor, zeros, saturation edge and NaN", "[quant][simulate]") {
  // All values tiny: amax is floored at 1e-4, s = 2^ceil(log2(1e-4 / 448)) = 2^-22.
  std::vector<float> tiny = {3e-6f, -1e-6f, 2.5e-7f, 0.0f};
  const std::vector<float> orig = tiny;
  dsv4::fp8_simulate(tiny, 4);
  const float s = std::ldexp(1.0f, -22);
  for (std::size_t i = 0; i < tiny.size(); ++i) {
    REQUIRE(tiny[i] == fp8_e4m3(orig[i] / s).to_float() * s);
  }
  REQUIRE(tiny[0] != 0.0f);

  std::vector<float> zeros(64, 0.0f);
  dsv4::fp8_simulate(zeros, 64);
  REQUIRE(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));

  // amax exactly 448 * 2^k keeps s = 2^k and the maximum maps to itself.
  std::vector<float> edge = {448.0f * 8.0f, -1.0f, 100.0f};
  dsv4::fp8_simulate(edge, 3);
  REQUIRE(edge[0] == 3584.0f);  // s = 8 and 448 is the largest code
  REQUIRE(edge[1] == -1.0f);    // -1 / 8 = -2^-3 is an e4m3 normal
  REQUIRE(edge[2] == 96.0f);    // 100 / 8 = 12.5 is a tie between 12 (even mantissa) and 13
}

TEST_CASE("fp4_simulate: 1x32 tiles, power-of-two scale and e2m1 round-to-nearest-even",
          "[quant][simulate]") {
  const auto table = e2m1_magnitudes();
  std::mt19937 rng(4);
  const std::size_t n = 7 * 32 + 5;
  const auto x = random_tiled(rng, n, 32);
  auto y = x;
  dsv4::fp4_simulate(y);
  REQUIRE(y != x);

  const float amax_floor = 6.0f * std::ldexp(1.0f, -126);
  for (std::size_t b = 0; b < n; b += 32) {
    const std::size_t e = std::min(n, b + 32);
    const double s = ref_scale(x, b, e, amax_floor, 6.0f);
    for (std::size_t i = b; i < e; ++i) {
      REQUIRE(static_cast<double>(y[i]) == nearest_scaled(x[i], s, table));
      REQUIRE(dsv4::round_to_bf16(y[i]) == y[i]);
      // Half a quantum: the E2M1 gaps are at most 2 (between 4 and 6), in units of s.
      REQUIRE(std::abs(static_cast<double>(x[i]) - y[i]) <= s);
    }
  }
  auto z = y;
  dsv4::fp4_simulate(z);
  REQUIRE(z == y);
}

TEST_CASE("fp4_simulate: amax floor and the documented examples", "[quant][simulate]") {
  // A tile with amax 6: s = 1, so the values are plain E2M1 roundings.
  std::vector<float> x(32, 0.0f);
  const float in[] = {6.0f, 2.5f, 3.5f, 5.0f, 0.25f, 0.75f, -1.25f, -5.9f};
  std::copy(std::begin(in), std::end(in), x.begin());
  dsv4::fp4_simulate(x);
  const float expect[] = {6.0f, 2.0f, 4.0f, 4.0f, 0.0f, 1.0f, -1.0f, -6.0f};
  for (std::size_t i = 0; i < 8; ++i) REQUIRE(x[i] == expect[i]);

  // amax 12: s = 2, so 5 -> 4 (2.5 -> 2), 7 -> 8 (3.5 -> 4), -3 stays (-1.5), 9 -> 8 (4.5 -> 4).
  std::vector<float> y = {12.0f, 5.0f, 7.0f, -3.0f, 9.0f};
  dsv4::fp4_simulate(y);
  REQUIRE(y == std::vector<float>{12.0f, 4.0f, 8.0f, -3.0f, 8.0f});

  // Tiny values: amax is floored at 6 * 2^-126, so s = 2^-126 and they round to 0 or 2^-127 multiples.
  std::vector<float> tiny = {std::ldexp(1.0f, -128), std::ldexp(5.0f, -128), -std::ldexp(1.0f, -126)};
  dsv4::fp4_simulate(tiny);
  REQUIRE(tiny[0] == 0.0f);                     // 0.25 * s: a tie between 0 and 0.5, goes to 0
  REQUIRE(tiny[1] == std::ldexp(1.0f, -126));   // 1.25 * s: a tie between 1 and 1.5, goes to 1
  REQUIRE(tiny[2] == -std::ldexp(1.0f, -126));  // exactly -1 * s
}
