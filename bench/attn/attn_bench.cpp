// One decode step of the attention core per layer kind at V4-Flash shapes (64 heads of 512, window
// 128, CSA top-512 of ratio-4 entries scored by 64 index heads of 128, HCA every ratio-128 entry)
// against the dense baseline over every raw token, on caches synthesized directly (exact path,
// fp32). Projections are left out: they are the same for every kind and belong to the GEMV.
//
// `bytes` counts what the step must read (kv rows of the candidates, index keys for CSA), `flops`
// the multiply-adds of scores and weighted sums (2 per MAC); `of_read_bw` and `of_fma_peak` relate
// them to the roofline measured in the same run.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/attn/indexer.hpp"
#include "dsv4/attn/sparse_attention.hpp"
#include "dsv4/config/presets.hpp"
#include "roofline.hpp"

namespace {
using namespace dsv4;
constexpr auto cfg = config::v4_flash;
constexpr index_t heads = cfg.n_heads, c = cfg.head_dim, window = cfg.window;
constexpr index_t index_heads = cfg.index_n_heads, index_dim = cfg.index_head_dim;

enum class kind { swa, csa, hca, dense };

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A decode step at position context - 1 (the last token of the context).
void bm_decode_step(benchmark::State& state, kind k) {
  const index_t context = state.range(0);
  const index_t entries = k == kind::csa   ? context / cfg.csa_ratio
                          : k == kind::hca ? context / cfg.hca_ratio
                                           : 0;
  const index_t raw = k == kind::dense ? context : window;
  const index_t rows = raw + entries;
  const auto kv = random_floats(std::size_t(rows * c), 1);
  const auto q = random_floats(std::size_t(heads * c), 2);
  const auto sink = random_floats(std::size_t(heads), 3);
  std::vector<float> keys, index_q, index_w, scores;
  std::vector<std::int32_t> selected;
  if (k == kind::csa) {
    keys = random_floats(std::size_t(entries * index_dim), 4);
    index_q = random_floats(std::size_t(index_heads * index_dim), 5);
    index_w = random_floats(std::size_t(index_heads), 6);
    scores.resize(std::size_t(entries));
    selected.resize(std::size_t(entries));
  }
  const index_t top_k = std::min<index_t>(cfg.index_topk, entries);
  const index_t n = raw + (k == kind::csa ? top_k : entries);
  std::vector<std::int32_t> candidates(static_cast<std::size_t>(n));
  std::vector<float> out(std::size_t(heads * c));
  std::vector<float> workspace(
      std::size_t(attn::sparse_attention_op<attn::f32_codec>::workspace_floats(heads, c, n)));

  const auto step = [&] {
    index_t m = 0;
    for (index_t r = 0; r < raw; ++r) candidates[std::size_t(m++)] = std::int32_t(r);
    if (k == kind::csa) {
      attn::indexer_scores({index_q.data(), {index_heads, index_dim}}, index_w,
                           {keys.data(), {entries, index_dim}}, scores);
      const index_t got = attn::select_top_k(scores, top_k, selected);
      for (index_t i = 0; i < got; ++i)
        candidates[std::size_t(m++)] = std::int32_t(raw + selected[std::size_t(i)]);
    } else {
      for (index_t e = 0; e < entries; ++e) candidates[std::size_t(m++)] = std::int32_t(raw + e);
    }
    const attn::sparse_attention_op<attn::f32_codec>::params p{.q = {q.data(), {heads, c}},
                                                               .kv = attn::f32_rows({kv.data(), {rows, c}}),
                                                               .candidates = candidates,
                                                               .sink = {sink.data(), {heads}},
                                                               .scale = 1.0f / std::sqrt(float(c)),
                                                               .out = {out.data(), {heads, c}},
                                                               .workspace = workspace};
    return run<cpu>(p);
  };
  // Checked once before timing: the attention output is a convex combination of kv rows.
  if (!step().ok()) std::abort();
  for (float v : out)
    if (!(std::fabs(v) <= 1.0f)) std::abort();
  for (auto _ : state) {
    benchmark::DoNotOptimize(step());
    benchmark::ClobberMemory();
  }
  const double kv_bytes = double(n) * c * sizeof(float);
  const double index_bytes = k == kind::csa ? double(entries) * index_dim * sizeof(float) : 0.0;
  const double flops =
      4.0 * heads * c * double(n) + (k == kind::csa ? 2.0 * index_heads * index_dim * double(entries) : 0.0);
  state.counters["candidates"] = double(n);
  state.counters["bytes"] = kv_bytes + index_bytes;
  state.counters["flops"] = flops;
  state.counters["of_read_bw"] = bench::bandwidth_fraction(kv_bytes + index_bytes);
  state.counters["of_fma_peak"] = bench::fma_fraction(flops);
}

void contexts(benchmark::internal::Benchmark* b) {
  for (std::int64_t ctx : {4096, 65536, 262144, 1048576}) b->Arg(ctx);
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK_CAPTURE(bm_decode_step, swa, kind::swa)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bm_decode_step, csa, kind::csa)->Apply(contexts);
BENCHMARK_CAPTURE(bm_decode_step, hca, kind::hca)->Apply(contexts);
BENCHMARK_CAPTURE(bm_decode_step, dense, kind::dense)->Apply(contexts);
