// One Muon step (momentum, Nesterov input, V4's 10-step hybrid Newton-Schulz, rescale and decay)
// on fp32 matrices of 1024x1024, 4096x1024 and 4096x4096. FLOPs count the orthogonalization's
// products, 10 * (4 s^2 l + 2 s^3) for s = min(n, m), l = max(n, m) (the elementwise work is
// O(n m)); `of_fma_peak` relates the rate to the FMA peak measured in the same run. No BLAS line:
// no optimized BLAS is installed on the development machine (docs/muon.md).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/optim/muon.hpp"
#include "roofline.hpp"

namespace {
using dsv4::index_t;

std::vector<float> random_vector(std::size_t n, unsigned seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void bm_muon_step(benchmark::State& state) {
  const index_t n = state.range(0), m = state.range(1);
  dsv4::optim::muon<> opt;
  const auto slot = opt.add({1, n, m});
  auto w = random_vector(static_cast<std::size_t>(n * m), 1, 0.02f);
  const auto g = random_vector(w.size(), 2, 1e-3f);
  const dsv4::tensor_view<float, 3> wv(w.data(), {1, n, m});
  const dsv4::tensor_view<const float, 3> gv(g.data(), {1, n, m});
  const float lr = 1e-3f;
  // Checked once before timing: the update's RMS is gamma = 0.18 (within 5%).
  const auto before = w;
  if (!slot.ok() || !opt.step(*slot, wv, gv, lr).ok()) std::abort();
  double ss = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double u = (double(before[i]) * (1.0 - lr * 0.1) - w[i]) / lr;
    ss += u * u;
  }
  if (std::fabs(std::sqrt(ss / double(w.size())) / 0.18 - 1.0) > 0.05) std::abort();
  for (auto _ : state) {
    benchmark::DoNotOptimize(opt.step(*slot, wv, gv, lr));
    benchmark::ClobberMemory();
  }
  const double flops = dsv4::optim::muon<>::orthogonalizer::flops(n, m);
  state.counters["GFLOPs"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(flops);
}

}  // namespace

BENCHMARK(bm_muon_step)
    ->ArgNames({"n", "m"})
    ->Args({1024, 1024})
    ->Args({4096, 1024})
    ->Args({4096, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(0.1);
