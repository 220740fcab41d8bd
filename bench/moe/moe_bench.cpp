// The MoE at V4-Flash width (d = 4096, I = 2048, 256 experts, top-6, spec §1.1, §9):
//   bm_router          score routing (bf16 gate, 256 experts) of a batch; items = tokens
//   bm_expert_gemv     one token through one routed expert (w1, w3: 2048 x 4096, w2: 4096 x 2048)
//                      in bf16, FP8 and FP4, cycling over enough experts to miss the last-level
//                      cache; `of_read_bw` = weight bytes read / the read bandwidth measured in the
//                      same run
//   bm_expert_gemm     one expert over a group of 256 tokens; `of_fma_peak` = its FLOP rate / the
//                      FMA peak measured in the same run
//   bm_moe_batch       the whole layer (routing, dispatch, experts, combine) on 256 tokens routed
//                      top-6 over 16 FP4 experts (about 96 tokens per expert), with an FP8 shared
//                      expert; `of_fma_peak` counts the expert FLOPs only
// Each benchmark checks one output against a direct evaluation before timing.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "dsv4/moe/moe_ffn.hpp"
#include "moe/bench_weights.hpp"
#include "roofline.hpp"

namespace {

using dsv4::index_t;
constexpr index_t d = 4096, inter = 2048, n_experts = 256, top_k = 6;
constexpr double cache_escape_bytes = 320.0 * (1 << 20);

template <class W>
struct stored_expert {
  dsv4::bench::stored_matrix<W> w1, w3, w2;
  explicit stored_expert(unsigned seed)
      : w1(inter, d, seed), w3(inter, d, seed + 1), w2(d, inter, seed + 2) {}
  dsv4::moe::swiglu_weights<W> view() const { return {w1.view(), w3.view(), w2.view()}; }
  double bytes() const { return w1.bytes() + w3.bytes() + w2.bytes(); }
};

std::vector<float> bench_input(index_t n, unsigned seed) {
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i * 7 + seed)) * 0.05f;
  return x;
}

// y[t][c] of one expert against a double evaluation from its decoded rows.
template <class W>
void verify_expert_or_abort(const dsv4::moe::swiglu_weights<W>& e, const std::vector<float>& x,
                            const std::vector<float>& y, index_t t, index_t c) {
  std::vector<float> row(static_cast<std::size_t>(d)), a(static_cast<std::size_t>(inter)), down(a.size());
  for (index_t i = 0; i < inter; ++i) {
    double g = 0, u = 0;
    for (index_t k0 = 0; k0 < d; k0 += dsv4::weight_chunk)
      e.w1.decode(i, k0, dsv4::weight_chunk, row.data() + k0);
    for (index_t k = 0; k < d; ++k) g += double(row[k]) * x[t * d + k];
    for (index_t k0 = 0; k0 < d; k0 += dsv4::weight_chunk)
      e.w3.decode(i, k0, dsv4::weight_chunk, row.data() + k0);
    for (index_t k = 0; k < d; ++k) u += double(row[k]) * x[t * d + k];
    a[i] = dsv4::moe::clamped_swiglu(static_cast<float>(g), static_cast<float>(u), 10.0f);
  }
  for (index_t k0 = 0; k0 < inter; k0 += dsv4::weight_chunk)
    e.w2.decode(c, k0, dsv4::weight_chunk, down.data() + k0);
  double s = 0, mag = 0;
  for (index_t i = 0; i < inter; ++i) {
    s += double(down[i]) * a[i];
    mag += std::fabs(double(down[i]) * a[i]);
  }
  if (std::fabs(s - y[t * d + c]) > 1e-4 * mag + 1e-30) std::abort();
}

void bm_router(benchmark::State& state) {
  const index_t n = state.range(0);
  const dsv4::bench::stored_matrix<dsv4::bf16_matrix> gate(n_experts, d, 1);
  std::vector<float> bias(n_experts, 0.0f);
  const dsv4::moe::score_router<dsv4::bf16_matrix> r{gate.view(), {bias.data(), {n_experts}}, top_k, 1.5f};
  const auto x = bench_input(n, 2);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n * top_k));
  std::vector<float> w(ids.size()), scores(static_cast<std::size_t>(n * n_experts));
  const dsv4::moe::routes out{
      {ids.data(), {n, top_k}}, {w.data(), {n, top_k}}, {scores.data(), {n, n_experts}}};
  if (!r.route({{x.data(), {n, d}}, {}}, out).ok()) std::abort();
  float sum = 0;
  for (index_t j = 0; j < top_k; ++j) sum += w[j];
  if (std::fabs(sum - 1.5f) > 1e-5f) std::abort();
  for (auto _ : state) {
    benchmark::DoNotOptimize(r.route({{x.data(), {n, d}}, {}}, out));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(2.0 * static_cast<double>(n * n_experts * d));
}

template <class W>
void bm_expert_gemv(benchmark::State& state) {
  const stored_expert<W> probe(1);
  const int copies = std::max(1, static_cast<int>(std::ceil(cache_escape_bytes / probe.bytes())));
  std::vector<stored_expert<W>> experts;
  for (int c = 0; c < copies; ++c) experts.emplace_back(static_cast<unsigned>(3 * c + 1));
  const auto x = bench_input(1, 3);
  std::vector<float> y(static_cast<std::size_t>(d)),
      scratch(dsv4::moe::swiglu_scratch_floats(probe.view(), 1));
  const float weight[1] = {1.0f};
  auto run = [&](std::size_t e) {
    return dsv4::moe::swiglu_forward(experts[e].view(), {x.data(), {1, d}}, weight, 10.0f, {y.data(), {1, d}},
                                     scratch);
  };
  if (!run(0).ok()) std::abort();
  verify_expert_or_abort(experts[0].view(), x, y, 0, 1234);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(run(i));
    benchmark::ClobberMemory();
    i = (i + 1) % experts.size();
  }
  state.counters["bytes"] = benchmark::Counter(probe.bytes(), benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1024);
  state.counters["of_read_bw"] = dsv4::bench::bandwidth_fraction(probe.bytes());
}

template <class W>
void bm_expert_gemm(benchmark::State& state) {
  const index_t n = state.range(0);
  const stored_expert<W> e(1);
  const auto x = bench_input(n, 4);
  std::vector<float> y(static_cast<std::size_t>(n * d)),
      scratch(dsv4::moe::swiglu_scratch_floats(e.view(), n));
  auto run = [&] {
    return dsv4::moe::swiglu_forward(e.view(), {x.data(), {n, d}}, {}, 10.0f, {y.data(), {n, d}}, scratch);
  };
  if (!run().ok()) std::abort();
  verify_expert_or_abort(e.view(), x, y, n - 1, 77);
  for (auto _ : state) {
    benchmark::DoNotOptimize(run());
    benchmark::ClobberMemory();
  }
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(6.0 * static_cast<double>(n * d * inter));
}

void bm_moe_batch(benchmark::State& state) {
  const index_t n = state.range(0), groups = 16;
  const dsv4::bench::stored_matrix<dsv4::bf16_matrix> gate(groups, d, 5);
  std::vector<stored_expert<dsv4::fp4_matrix>> routed;
  std::vector<dsv4::moe::swiglu_weights<dsv4::fp4_matrix>> views;
  for (index_t e = 0; e < groups; ++e) routed.emplace_back(static_cast<unsigned>(10 + 3 * e));
  for (const auto& e : routed) views.push_back(e.view());
  const stored_expert<dsv4::fp8_matrix> shared(100);
  const dsv4::moe::moe_ffn<dsv4::moe::score_router<dsv4::bf16_matrix>, dsv4::fp4_matrix, dsv4::fp8_matrix>
      layer{{gate.view(), {}, top_k, 1.5f}, views, shared.view(), 10.0f};
  const auto x = bench_input(n, 6);
  std::vector<float> y(static_cast<std::size_t>(n * d));
  std::vector<std::byte> ws_storage(layer.workspace_bytes(n) + 64);
  const auto skew = reinterpret_cast<std::uintptr_t>(ws_storage.data()) % 64;
  const std::span<std::byte> ws(ws_storage.data() + (64 - skew) % 64, layer.workspace_bytes(n));
  auto run = [&] { return layer.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws); };
  if (!run().ok()) std::abort();
  for (float v : y)
    if (!std::isfinite(v)) std::abort();
  for (auto _ : state) {
    benchmark::DoNotOptimize(run());
    benchmark::ClobberMemory();
  }
  const double expert_flops = 6.0 * static_cast<double>((n * top_k + n) * d * inter);
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["of_fma_peak"] = dsv4::bench::fma_fraction(expert_flops);
}

}  // namespace

BENCHMARK(bm_router)->Arg(1)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(bm_expert_gemv<dsv4::bf16_matrix>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_expert_gemv<dsv4::fp8_matrix>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_expert_gemv<dsv4::fp4_matrix>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_expert_gemm<dsv4::fp4_matrix>)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_expert_gemm<dsv4::fp8_matrix>)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_moe_batch)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
