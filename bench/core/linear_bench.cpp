// GEMV (one token) and GEMM (256 tokens) over one weight matrix of V4-Flash's routed-expert shape
// (2048 x 4096) in each storage format, and FP4 under numerics::fast. The GEMV cycles over enough copies of
// the matrix that they do not fit in the last-level cache, and reports the bytes it reads as a fraction of
// the read bandwidth measured in the same run (`of_read_bw`); the GEMM reports its FLOP rate as a fraction of
// the measured FMA peak (`of_fma_peak`). Each benchmark checks one output against a direct evaluation before
// timing.
//
// Where the GEMV's time goes, without a profiler: bm_decode decodes a cache-resident matrix chunk
// by chunk into an L1 buffer (decode alone), bm_gemv_cached runs the GEMV on it (decode plus
// multiply-adds, no memory traffic); both count weights per second (`items_per_second`) on one
// thread. Against bm_gemv's weight rate they tell whether a format is bound by decoding or by
// memory. bm_gemv_cached_fp8_subnormal repeats the FP8 one with every code subnormal. The
// `numerics::fast` cases run FP4 weights against int8 activations (core/linear_q8.hpp).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "dsv4/core/linear.hpp"
#include "moe/bench_weights.hpp"
#include "roofline.hpp"

namespace {

using dsv4::index_t;
constexpr index_t rows = 2048, cols = 4096;
constexpr double working_set_bytes = 320.0 * (1 << 20);  // well past any last-level cache

// y[o] against a double dot product of the decoded row, for one row.
// tolerance: relative to the sum of |terms| (the int8 path quantizes x: about 1/254 per block).
template <class W>
void verify_or_abort(const W& w, const float* x, const float* y, index_t n_tok, index_t o,
                     double tolerance = 1e-5) {
  std::vector<float> row(static_cast<std::size_t>(w.cols()));
  for (index_t k = 0; k < w.cols(); k += dsv4::weight_chunk)
    w.decode(o, k, dsv4::weight_chunk, row.data() + k);
  for (index_t t = 0; t < n_tok; ++t) {
    double s = 0, mag = 0;
    for (index_t k = 0; k < w.cols(); ++k) {
      s += double(row[static_cast<std::size_t>(k)]) * x[t * w.cols() + k];
      mag += std::fabs(double(row[static_cast<std::size_t>(k)]) * x[t * w.cols() + k]);
    }
    if (std::fabs(s - y[t * w.rows() + o]) > tolerance * mag) std::abort();
  }
}

// One token's y = W . x under numerics Num, with a workspace of the caller's.
template <class W, dsv4::numerics Num>
dsv4::status gemv_as(const W& w, const std::vector<float>& x, std::vector<float>& y, std::vector<float>& ws) {
  return dsv4::linear(w, {x.data(), {1, w.cols()}}, {y.data(), {1, w.rows()}}, ws, Num);
}
constexpr double tolerance_of(dsv4::numerics num) { return num == dsv4::numerics::fast ? 1e-2 : 1e-5; }

template <class W, dsv4::numerics Num = dsv4::numerics::exact>
void bm_gemv(benchmark::State& state) {
  const dsv4::bench::stored_matrix<W> probe(rows, cols, 1);
  const int copies = std::max(1, static_cast<int>(std::ceil(working_set_bytes / probe.bytes())));
  std::vector<dsv4::bench::stored_matrix<W>> mats;
  for (int c = 0; c < copies; ++c) mats.emplace_back(rows, cols, static_cast<unsigned>(c + 2));
  const auto x = std::vector<float>(cols, 0.5f);
  std::vector<float> y(rows), ws(cols);
  if (!gemv_as<W, Num>(mats[0].view(), x, y, ws).ok()) std::abort();
  verify_or_abort(mats[0].view(), x.data(), y.data(), 1, 1234, tolerance_of(Num));
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(gemv_as<W, Num>(mats[i].view(), x, y, ws));
    benchmark::ClobberMemory();
    i = (i + 1) % mats.size();
  }
  state.counters["bytes"] = benchmark::Counter(probe.bytes(), benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1024);
  state.counters["of_read_bw"] = dsv4::bench::bandwidth_fraction(probe.bytes());
}

// 64 x 4096: 256 KiB in FP8, 128 KiB in FP4, within L2.
constexpr index_t cached_rows = 64;

template <class W>
void bm_decode(benchmark::State& state) {
  const dsv4::bench::stored_matrix<W> w(cached_rows, cols, 1);
  alignas(64) float chunk[dsv4::weight_chunk];
  for (auto _ : state) {
    for (index_t r = 0; r < cached_rows; ++r)
      for (index_t k = 0; k < cols; k += dsv4::weight_chunk) {
        w.view().decode(r, k, dsv4::weight_chunk, chunk);
        benchmark::DoNotOptimize(chunk);
      }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * cached_rows * cols);
}

// One thread's GEMV over w, whose rows fit in L2: the decode-bound rate of its format.
template <class W, dsv4::numerics Num = dsv4::numerics::exact>
void run_gemv_cached(benchmark::State& state, const dsv4::bench::stored_matrix<W>& w) {
  const auto x = std::vector<float>(cols, 0.5f);
  std::vector<float> y(cached_rows), ws(cols);
  const int threads = dsv4::max_threads();
  dsv4::set_num_threads(1);
  if (!gemv_as<W, Num>(w.view(), x, y, ws).ok()) std::abort();
  verify_or_abort(w.view(), x.data(), y.data(), 1, 5, tolerance_of(Num));
  for (auto _ : state) {
    benchmark::DoNotOptimize(gemv_as<W, Num>(w.view(), x, y, ws));
    benchmark::ClobberMemory();
  }
  dsv4::set_num_threads(threads);
  state.SetItemsProcessed(state.iterations() * cached_rows * cols);
}

template <class W, dsv4::numerics Num = dsv4::numerics::exact>
void bm_gemv_cached(benchmark::State& state) {
  run_gemv_cached<W, Num>(state, dsv4::bench::stored_matrix<W>(cached_rows, cols, 1));
}

// bm_gemv_cached on FP8 codes that are all subnormal (exponent field 0). The one-token FP8 GEMV
// reads codes as fp32 patterns worth code * 2^-120, so these reach the multiply-adds as fp32
// subnormals: a rate below bm_gemv_cached<fp8_matrix>'s would show a penalty for such operands.
void bm_gemv_cached_fp8_subnormal(benchmark::State& state) {
  dsv4::bench::stored_matrix<dsv4::fp8_matrix> w(cached_rows, cols, 1);
  for (auto& c : w.codes) c = static_cast<std::uint8_t>(c & 0x87);
  run_gemv_cached(state, w);
}

// n tokens against the matrix. Exact paths report their FLOP rate as a fraction of the FMA peak;
// the int8 path of numerics::fast reports its operations as a fraction of the int8 dot-product
// peak (`of_int8_peak`), and of the FMA peak beside it.
template <class W, dsv4::numerics Num = dsv4::numerics::exact>
void bm_gemm(benchmark::State& state) {
  const index_t n = state.range(0);
  const dsv4::bench::stored_matrix<W> w(rows, cols, 1);
  std::vector<float> x(static_cast<std::size_t>(n * cols));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
  std::vector<float> y(static_cast<std::size_t>(n * rows)),
      ws(static_cast<std::size_t>(dsv4::linear_op<W>::workspace_floats(n, cols)));
  const auto run = [&] {
    return dsv4::linear(w.view(), {x.data(), {n, cols}}, {y.data(), {n, rows}}, ws, Num);
  };
  if (!run().ok()) std::abort();
  verify_or_abort(w.view(), x.data(), y.data(), n, 777, tolerance_of(Num));
  for (auto _ : state) {
    benchmark::DoNotOptimize(run());
    benchmark::ClobberMemory();
  }
  const double ops = 2.0 * static_cast<double>(n * rows * cols);
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(ops);
  if (dsv4::takes_int8_input<W>(Num)) state.counters["of_int8_peak"] = dsv4::bench::int8_dot_fraction(ops);
}

}  // namespace

BENCHMARK(bm_gemv<dsv4::f32_matrix>)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(bm_gemv<dsv4::bf16_matrix>)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(bm_gemv<dsv4::fp8_matrix>)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(bm_gemv<dsv4::fp4_matrix>)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(bm_gemv<dsv4::fp4_matrix, dsv4::numerics::fast>)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(bm_gemm<dsv4::f32_matrix>)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_gemm<dsv4::bf16_matrix>)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_gemm<dsv4::fp8_matrix>)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_gemm<dsv4::fp4_matrix>)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_gemm<dsv4::fp4_matrix, dsv4::numerics::fast>)
    ->Arg(256)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode<dsv4::bf16_matrix>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_decode<dsv4::fp8_matrix>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_decode<dsv4::fp4_matrix>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_gemv_cached<dsv4::bf16_matrix>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_gemv_cached<dsv4::fp8_matrix>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_gemv_cached<dsv4::fp4_matrix>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_gemv_cached<dsv4::fp4_matrix, dsv4::numerics::fast>)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_gemv_cached_fp8_subnormal)->Unit(benchmark::kMicrosecond);
