// CUDA twins of dsv4/core/quant.hpp and the number formats of dtype.hpp against the CPU, on the
// same random inputs. Every result here is exact arithmetic (decoding is a table of powers of two,
// the products a few significant bits times a power of two), so CUDA must equal the CPU bit for
// bit: any difference is a bug, not a tolerance question. Skipped (exit 77) without a GPU.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dsv4/core/quant.cuh"

namespace {

using dsv4::bf16;
using dsv4::fp4_e2m1;
using dsv4::fp4x2;
using dsv4::fp8_e4m3;
using dsv4::index_t;
using dsv4::tensor_view;
using dsv4::ue8m0;

// Owns a device allocation of n elements of T.
template <class T>
class device_buffer {
 public:
  explicit device_buffer(std::size_t n) : n_(n) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)) == cudaSuccess);
  }
  explicit device_buffer(const std::vector<T>& host) : device_buffer(host.size()) { upload(host); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { cudaFree(p_); }

  T* get() const { return p_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    REQUIRE(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return host;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

template <class T>
std::vector<T> random_codes(std::mt19937& rng, std::size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> code(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = T::from_bits(static_cast<std::uint8_t>(code(rng)));
  return v;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool nonzero(const std::vector<float>& v) {
  for (float x : v)
    if (x != 0.0f) return true;
  return false;
}

template <class Backend>
void check_fp8_dequant() {
  constexpr index_t rows = 200, cols = 300, srows = 2, scols = 3, ld = 304;
  std::mt19937 rng(11);
  auto w = random_codes<fp8_e4m3>(rng, rows * cols, 0, 255);
  for (auto& x : w)
    if (x.is_nan()) x = fp8_e4m3::from_bits(0x3f);
  const auto s = random_codes<ue8m0>(rng, srows * scols, 110, 140);

  std::vector<float> cpu_out(rows * cols);
  REQUIRE(dsv4::run<dsv4::cpu>(dsv4::dequantize_fp8_op::params{{w.data(), {rows, cols}},
                                                               {s.data(), {srows, scols}},
                                                               {cpu_out.data(), {rows, cols}}})
              .ok());
  REQUIRE(nonzero(cpu_out));

  device_buffer<fp8_e4m3> dw(w);
  device_buffer<ue8m0> ds(s);
  device_buffer<float> dout(std::vector<float>(rows * ld, 9.0f));
  // A row stride larger than cols: the padding must stay untouched.
  const dsv4::dequantize_fp8_op::params p{
      {dw.get(), {rows, cols}}, {ds.get(), {srows, scols}}, {dout.get(), {rows, cols}, {ld, 1}}};
  REQUIRE(dsv4::run<Backend>(p).ok());
  const auto got = dout.download();
  for (index_t r = 0; r < rows; ++r) {
    REQUIRE(std::memcmp(&got[r * ld], &cpu_out[r * cols], cols * sizeof(float)) == 0);
    for (index_t c = cols; c < ld; ++c) REQUIRE(got[r * ld + c] == 9.0f);
  }

  // A bad shape returns the same status as on the CPU and launches nothing.
  dsv4::dequantize_fp8_op::params bad = p;
  bad.scale = tensor_view<const ue8m0, 2>(ds.get(), {srows, scols - 1});
  const dsv4::status st = dsv4::run<Backend>(bad);
  REQUIRE_FALSE(st.ok());
  REQUIRE(st.message().rfind("scale:", 0) == 0);
  device_buffer<float> untouched(std::vector<float>(rows * cols, 4.0f));
  bad = {{dw.get(), {rows, cols}}, {ds.get(), {srows, scols}}, {untouched.get(), {rows, cols + 1}}};
  REQUIRE(dsv4::run<Backend>(bad).message().rfind("out:", 0) == 0);
  for (float v : untouched.download()) REQUIRE(v == 4.0f);
}

template <class Backend>
void check_fp4_dequant() {
  constexpr index_t rows = 7, cols = 96;
  std::mt19937 rng(12);
  const auto w = random_codes<fp4x2>(rng, rows * cols / 2, 0, 255);
  const auto s = random_codes<ue8m0>(rng, rows * cols / 32, 110, 140);

  std::vector<float> cpu_out(rows * cols);
  REQUIRE(dsv4::run<dsv4::cpu>(dsv4::dequantize_fp4_op::params{{w.data(), {rows, cols / 2}},
                                                               {s.data(), {rows, cols / 32}},
                                                               {cpu_out.data(), {rows, cols}}})
              .ok());
  REQUIRE(nonzero(cpu_out));

  device_buffer<fp4x2> dw(w);
  device_buffer<ue8m0> ds(s);
  device_buffer<float> dout(std::vector<float>(rows * cols, 9.0f));
  const dsv4::dequantize_fp4_op::params p{
      {dw.get(), {rows, cols / 2}}, {ds.get(), {rows, cols / 32}}, {dout.get(), {rows, cols}}};
  REQUIRE(dsv4::run<Backend>(p, cudaStream_t{}).ok());
  REQUIRE(bit_equal(dout.download(), cpu_out));

  dsv4::dequantize_fp4_op::params bad = p;
  bad.weight = tensor_view<const fp4x2, 2>(dw.get(), {rows, 20});  // in = 40, not a multiple of 32
  REQUIRE(dsv4::run<Backend>(bad).message().rfind("weight:", 0) == 0);
}

// ---- the shared number-format code, run on the device -------------------------------------

// Decodes every code of each format and encodes each of `inputs` into every format.
struct format_results {
  float* bf16_decoded;     // (65536)
  float* fp8_decoded;      // (256)
  float* ue8m0_decoded;    // (256)
  float* fp4_decoded;      // (16)
  std::uint16_t* bf16_of;  // (n)
  std::uint8_t* fp8_of;    // (n)
  std::uint8_t* fp4_of;    // (n)
  std::uint8_t* pow2_of;   // (n)
  const float* inputs;     // (n)
  int n;
};

__global__ void format_kernel(format_results r) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < 65536) r.bf16_decoded[i] = bf16::from_bits(static_cast<std::uint16_t>(i)).to_float();
  if (i < 256) {
    r.fp8_decoded[i] = fp8_e4m3::from_bits(static_cast<std::uint8_t>(i)).to_float();
    r.ue8m0_decoded[i] = ue8m0::from_bits(static_cast<std::uint8_t>(i)).to_float();
  }
  if (i < 16) r.fp4_decoded[i] = fp4_e2m1::from_bits(static_cast<std::uint8_t>(i)).to_float();
  if (i < r.n) {
    const float x = r.inputs[i];
    r.bf16_of[i] = bf16(x).bits;
    r.fp8_of[i] = fp8_e4m3(x).bits;
    r.fp4_of[i] = fp4_e2m1(x).bits;
    r.pow2_of[i] = ue8m0::ceil_pow2(x > 0.0f ? x : -x).bits;
  }
}

// One simulated tile per block-sized chunk: x (n) in place.
__global__ void simulate_kernel(float* fp8_x, float* fp4_x, index_t n, int fp8_tile) {
  const index_t t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t * fp8_tile < n) {
    const index_t len = n - t * fp8_tile < fp8_tile ? n - t * fp8_tile : fp8_tile;
    dsv4::fp8_simulate_tile(fp8_x + t * fp8_tile, len);
  }
  if (t * dsv4::fp4_block < n) {
    const index_t len = n - t * dsv4::fp4_block < dsv4::fp4_block ? n - t * dsv4::fp4_block : dsv4::fp4_block;
    dsv4::fp4_simulate_tile(fp4_x + t * dsv4::fp4_block, len);
  }
}

std::vector<float> random_floats(std::mt19937& rng, std::size_t n) {
  // Raw bit patterns cover NaN, inf, subnormals and every binade; half of them are scaled into
  // the ranges where fp8 and fp4 rounding actually happens.
  std::uniform_int_distribution<std::uint32_t> any(0, 0xffffffffu);
  std::uniform_real_distribution<float> small(-500.0f, 500.0f);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 2 == 0) {
      const std::uint32_t u = any(rng);
      std::memcpy(&v[i], &u, sizeof u);
    } else {
      v[i] = small(rng) * (i % 4 == 1 ? 1.0f : 0.01f);
    }
  }
  return v;
}

}  // namespace

TEST_CASE("cuda: dequantize_fp8 equals the CPU bit for bit", "[quant][cuda]") {
  SECTION("cuda<80>") { check_fp8_dequant<dsv4::cuda<80>>(); }
  SECTION("cuda<90>") { check_fp8_dequant<dsv4::cuda<90>>(); }
}

TEST_CASE("cuda: dequantize_fp4 equals the CPU bit for bit", "[quant][cuda]") {
  SECTION("cuda<80>") { check_fp4_dequant<dsv4::cuda<80>>(); }
  SECTION("cuda<90>") { check_fp4_dequant<dsv4::cuda<90>>(); }
}

TEST_CASE("cuda: number-format conversions equal the host's", "[dtype][cuda]") {
  constexpr int n = 1 << 16;
  std::mt19937 rng(13);
  const auto inputs = random_floats(rng, n);
  device_buffer<float> d_in(inputs), bf16_dec(65536), fp8_dec(256), ue8m0_dec(256), fp4_dec(16);
  device_buffer<std::uint16_t> bf16_of(n);
  device_buffer<std::uint8_t> fp8_of(n), fp4_of(n), pow2_of(n);
  const format_results r{bf16_dec.get(), fp8_dec.get(), ue8m0_dec.get(), fp4_dec.get(), bf16_of.get(),
                         fp8_of.get(),   fp4_of.get(),  pow2_of.get(),   d_in.get(),    n};
  format_kernel<<<n / 256, 256>>>(r);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

  const auto b = bf16_dec.download();
  for (int c = 0; c < 65536; ++c) {
    const float h = bf16::from_bits(static_cast<std::uint16_t>(c)).to_float();
    REQUIRE(std::memcmp(&b[c], &h, sizeof h) == 0);
  }
  const auto f8 = fp8_dec.download(), e8 = ue8m0_dec.download(), f4 = fp4_dec.download();
  for (int c = 0; c < 256; ++c) {
    const float h8 = fp8_e4m3::from_bits(static_cast<std::uint8_t>(c)).to_float();
    const float he = ue8m0::from_bits(static_cast<std::uint8_t>(c)).to_float();
    REQUIRE(std::memcmp(&f8[c], &h8, sizeof h8) == 0);
    REQUIRE(std::memcmp(&e8[c], &he, sizeof he) == 0);
  }
  for (int c = 0; c < 16; ++c) {
    const float h4 = fp4_e2m1::from_bits(static_cast<std::uint8_t>(c)).to_float();
    REQUIRE(std::memcmp(&f4[c], &h4, sizeof h4) == 0);
  }
  const auto gb = bf16_of.download();
  const auto g8 = fp8_of.download(), g4 = fp4_of.download(), gp = pow2_of.download();
  for (int i = 0; i < n; ++i) {
    const float x = inputs[i];
    REQUIRE(gb[i] == bf16(x).bits);
    REQUIRE(g8[i] == fp8_e4m3(x).bits);
    REQUIRE(g4[i] == fp4_e2m1(x).bits);
    REQUIRE(gp[i] == ue8m0::ceil_pow2(x > 0.0f ? x : -x).bits);
  }
}

TEST_CASE("cuda: fp8/fp4 simulation tiles equal the host's", "[quant][cuda]") {
  constexpr index_t n = 64 * 40 + 17;
  std::mt19937 rng(14);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> binade(-20, 12);
  std::vector<float> x(n);
  float mag = 1.0f;
  for (index_t i = 0; i < n; ++i) {
    if (i % 32 == 0) mag = std::ldexp(1.0f, binade(rng));
    x[i] = normal(rng) * mag;
  }
  for (int tile : {64, 128}) {
    device_buffer<float> d8(x), d4(x);
    simulate_kernel<<<(n + 127) / 128, 128>>>(d8.get(), d4.get(), n, tile);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    auto h8 = x, h4 = x;
    dsv4::fp8_simulate(h8, tile);
    dsv4::fp4_simulate(h4);
    REQUIRE(h8 != x);
    REQUIRE(bit_equal(d8.download(), h8));
    REQUIRE(bit_equal(d4.download(), h4));
  }
}
