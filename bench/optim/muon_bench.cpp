// One Muon step (momentum, Nesterov input, V4's 10-step hybrid Newton-Schulz, rescale and decay)
// on fp32 matrices of 1024x1024, 4096x1024 and 4096x4096. FLOPs count the orthogonalization's
// products as each line executes them (the elementwise work is O(n m)): dsv4 computes the
// symmetric Gram matrix and its square as upper triangles, 10 * (s (s + 1) (l + s) + 2 s^2 l) for
// s = min(n, m), l = max(n, m); the sgemm line computes them whole, 10 * (4 s^2 l + 2 s^3). So
// `of_fma_peak` (the rate over the FMA peak measured in the same run) measures how well the
// kernels run; the time per step compares the two lines.
// Where CMake finds OpenBLAS (libopenblas-dev; benchmarks only, the library never uses it), a
// reference line runs the same hybrid Newton-Schulz iteration over cblas_sgemm.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/optim/muon.hpp"
#include "random.hpp"
#include "roofline.hpp"

#if defined(DSV4_BENCH_OPENBLAS)
#include <cblas.h>
#endif

namespace {
using dsv4::index_t;

using dsv4::test::random_normal;

// The shapes of the issue: 1024x1024, 4096x1024 and 4096x4096.
void muon_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "m"})->Args({1024, 1024})->Args({4096, 1024})->Args({4096, 4096});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.1);
}

void count_flops(benchmark::State& state, double flops) {
  state.counters["GFLOPs"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(flops);
}

void bm_muon_step(benchmark::State& state) {
  const index_t n = state.range(0), m = state.range(1);
  dsv4::optim::muon<> opt;
  const auto slot = opt.add({1, n, m});
  auto w = random_normal(static_cast<std::size_t>(n * m), 1, 0.02f);
  const auto g = random_normal(w.size(), 2, 1e-3f);
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
  count_flops(state, dsv4::optim::muon<>::orthogonalizer::flops(n, m));
}

#if defined(DSV4_BENCH_OPENBLAS)
// The reference line: V4's schedule over cblas_sgemm, on the small Gram side as dsv4 does, with the
// Frobenius normalization first; compared with dsv4's result once before timing.
void bm_newton_schulz_openblas(benchmark::State& state) {
  const index_t n = state.range(0), m = state.range(1), s = std::min(n, m);
  const bool wide = n <= m;
  const auto g = random_normal(static_cast<std::size_t>(n * m), 2, 1e-3f);
  std::vector<float> x(g.size()), y(g.size()), a(static_cast<std::size_t>(s * s)), b(a.size());
  const auto ni = static_cast<int>(n), mi = static_cast<int>(m), si = static_cast<int>(s);
  auto iterate = [&] {
    double ss = 0;
    for (float v : g) ss += double(v) * v;
    const auto inv = static_cast<float>(1.0 / (std::sqrt(ss) + 1e-7));
    for (std::size_t i = 0; i < g.size(); ++i) x[i] = g[i] * inv;
    for (const auto& st : dsv4::optim::v4_hybrid_schedule.steps) {
      // A = X X^T (wide) or X^T X (tall); B = c A A + b A; Y = a X + B X (wide) or a X + X B (tall).
      if (wide)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, si, si, mi, 1.0f, x.data(), mi, x.data(), mi,
                    0.0f, a.data(), si);
      else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, si, si, ni, 1.0f, x.data(), mi, x.data(), mi,
                    0.0f, a.data(), si);
      b = a;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, si, si, si, st.c, a.data(), si, a.data(), si,
                  st.b, b.data(), si);
      y = x;
      if (wide)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, mi, si, 1.0f, b.data(), si, x.data(), mi,
                    st.a, y.data(), mi);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, mi, si, 1.0f, x.data(), mi, b.data(), si,
                    st.a, y.data(), mi);
      std::swap(x, y);
    }
  };
  // Checked once before timing: the same orthogonalization as dsv4's newton_schulz.
  iterate();
  using ns = dsv4::optim::newton_schulz<>;
  std::vector<float> ours(g.size()), ws(static_cast<std::size_t>(ns::workspace_size(n, m)));
  const ns::params p{{g.data(), {n, m}}, {ours.data(), {n, m}}, ws};
  if (!dsv4::run<dsv4::cpu>(p).ok()) std::abort();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    num += (double(ours[i]) - x[i]) * (double(ours[i]) - x[i]);
    den += double(x[i]) * x[i];
  }
  if (std::sqrt(num / den) > 1e-3) std::abort();
  for (auto _ : state) {
    iterate();
    benchmark::DoNotOptimize(x.data());
  }
  count_flops(state, dsv4::optim::muon<>::orthogonalizer::dense_flops(n, m));
}
BENCHMARK(bm_newton_schulz_openblas)->Apply(muon_shapes);
#endif

}  // namespace

BENCHMARK(bm_muon_step)->Apply(muon_shapes);
