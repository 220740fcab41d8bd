// Block dequantization of the released checkpoint layouts (FP8 128x128 and FP4 1x32 scales) into
// float, at the shapes of V4-Flash: a shared-expert matrix (FP8) and a routed-expert matrix (FP4).
// The op streams the packed weight in and writes 4 bytes per element; `bytes` counts both, and
// `of_read_bw` relates them to the streaming-read bandwidth measured in the same run.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/core/quant.hpp"
#include "roofline.hpp"

namespace {

template <class T>
std::vector<T> random_codes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<T> v(n);
  for (T& x : v) x.bits = static_cast<std::uint8_t>(rng() & 0xff);
  return v;
}

std::vector<dsv4::ue8m0> random_scales(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<dsv4::ue8m0> v(n);
  for (auto& s : v) s = dsv4::ue8m0::from_exponent(static_cast<int>(rng() % 16) - 8);
  return v;
}

// Checked once before timing: the op against a direct evaluation of weight * scale.
template <class Params, class Ref>
void verify_or_abort(const Params& p, Ref reference) {
  if (!dsv4::run<dsv4::cpu>(p).ok()) std::abort();
  for (dsv4::index_t r = 0; r < p.out.extent(0); r += 97)
    for (dsv4::index_t c = 0; c < p.out.extent(1); c += 89)
      if (p.out(r, c) != reference(r, c)) std::abort();
}

void bm_dequantize_fp8(benchmark::State& state) {
  const dsv4::index_t rows = state.range(0), cols = state.range(1);
  const dsv4::index_t srows = (rows + 127) / 128, scols = (cols + 127) / 128;
  auto w = random_codes<dsv4::fp8_e4m3>(static_cast<std::size_t>(rows * cols), 1);
  for (auto& x : w)
    if (x.is_nan()) x.bits = 0;
  const auto s = random_scales(static_cast<std::size_t>(srows * scols), 2);
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  const dsv4::dequantize_fp8_op::params p{
      {w.data(), {rows, cols}}, {s.data(), {srows, scols}}, {out.data(), {rows, cols}}};
  verify_or_abort(p, [&](dsv4::index_t r, dsv4::index_t c) {
    return w[static_cast<std::size_t>(r * cols + c)].to_float() *
           s[static_cast<std::size_t>((r / 128) * scols + c / 128)].to_float();
  });
  for (auto _ : state) {
    benchmark::DoNotOptimize(dsv4::run<dsv4::cpu>(p));
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(rows * cols) * (1 + 4) + static_cast<double>(srows * scols);
  state.counters["bytes"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1024);
  state.counters["of_read_bw"] = dsv4::bench::bandwidth_fraction(bytes);
}

void bm_dequantize_fp4(benchmark::State& state) {
  const dsv4::index_t rows = state.range(0), cols = state.range(1);
  const auto w = random_codes<dsv4::fp4x2>(static_cast<std::size_t>(rows * cols / 2), 3);
  const auto s = random_scales(static_cast<std::size_t>(rows * cols / 32), 4);
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  const dsv4::dequantize_fp4_op::params p{
      {w.data(), {rows, cols / 2}}, {s.data(), {rows, cols / 32}}, {out.data(), {rows, cols}}};
  verify_or_abort(p, [&](dsv4::index_t r, dsv4::index_t c) {
    return w[static_cast<std::size_t>((r * cols + c) / 2)][static_cast<int>(c % 2)].to_float() *
           s[static_cast<std::size_t>(r * (cols / 32) + c / 32)].to_float();
  });
  for (auto _ : state) {
    benchmark::DoNotOptimize(dsv4::run<dsv4::cpu>(p));
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(rows * cols) * (0.5 + 4) + static_cast<double>(rows * cols / 32);
  state.counters["bytes"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1024);
  state.counters["of_read_bw"] = dsv4::bench::bandwidth_fraction(bytes);
}

}  // namespace

BENCHMARK(bm_dequantize_fp8)->Args({2048, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_dequantize_fp4)->Args({2048, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
