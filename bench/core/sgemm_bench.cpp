// fp32 GEMM C = A * op(B) on square sizes and on the Gram product X X^T of a (1024, 4096) matrix
// (the shape Newton-Schulz spends its time in), whole and as the symmetric upper triangle.
// 2*m*n*k FLOPs per call, m*(m+1)*k for the symmetric one (the executed upper triangle);
// `of_fma_peak` relates the rate to the FMA peak measured in the same run.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/core/sgemm.hpp"
#include "random.hpp"
#include "roofline.hpp"

namespace {
using dsv4::index_t;

std::vector<float> random_matrix(index_t rows, index_t cols, unsigned seed) {
  return dsv4::test::random_normal(static_cast<std::size_t>(rows * cols), seed);
}

// Checked once before timing: sampled entries against a double-precision dot product.
void verify_or_abort(const dsv4::sgemm_op::params& p) {
  if (!dsv4::run<dsv4::cpu>(p).ok()) std::abort();
  const index_t k = p.a.extent(1);
  for (index_t i = 0; i < p.c.extent(0); i += 97)
    for (index_t j = 0; j < p.c.extent(1); j += 89) {
      double ref = 0, mag = 0;
      for (index_t q = 0; q < k; ++q) {
        const double x = p.a(i, q), y = p.trans_b == dsv4::sgemm_op::transpose::no ? p.b(q, j) : p.b(j, q);
        ref += x * y;
        mag += std::fabs(x * y);
      }
      if (std::fabs(p.c(i, j) - ref) > 1e-5 * mag) std::abort();
    }
}

void bm_sgemm(benchmark::State& state) {
  const index_t m = state.range(0), n = state.range(1), k = state.range(2);
  const auto tb = state.range(3) != 0 ? dsv4::sgemm_op::transpose::yes : dsv4::sgemm_op::transpose::no;
  const bool sym = state.range(4) != 0;
  const auto a = random_matrix(m, k, 1);
  // The symmetric case multiplies A by its own transpose.
  const auto b = sym                                   ? a
                 : tb == dsv4::sgemm_op::transpose::no ? random_matrix(k, n, 2)
                                                       : random_matrix(n, k, 2);
  std::vector<float> c(static_cast<std::size_t>(m * n));
  std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(m, n, k)));
  const dsv4::tensor_view<const float, 2> bv = tb == dsv4::sgemm_op::transpose::no
                                                   ? dsv4::tensor_view<const float, 2>(b.data(), {k, n})
                                                   : dsv4::tensor_view<const float, 2>(b.data(), {n, k});
  const dsv4::sgemm_op::params p{
      {a.data(), {m, k}}, bv, {c.data(), {m, n}}, ws, 1.0f, 0.0f, dsv4::sgemm_op::transpose::no, tb, sym};
  verify_or_abort(p);
  for (auto _ : state) {
    benchmark::DoNotOptimize(dsv4::run<dsv4::cpu>(p));
    benchmark::ClobberMemory();
  }
  const double flops = (sym ? static_cast<double>(m + 1) : 2.0 * static_cast<double>(n)) *
                       static_cast<double>(m) * static_cast<double>(k);
  state.counters["GFLOPs"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(flops);
}

}  // namespace

BENCHMARK(bm_sgemm)
    ->ArgNames({"m", "n", "k", "bT", "sym"})
    ->Args({1024, 1024, 1024, 0, 0})
    ->Args({2048, 2048, 2048, 0, 0})
    ->Args({4096, 4096, 4096, 0, 0})
    ->Args({1024, 1024, 4096, 1, 0})  // Gram X X^T of a (1024, 4096) X
    ->Args({1024, 1024, 4096, 1, 1})  // the same, upper triangle mirrored
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
