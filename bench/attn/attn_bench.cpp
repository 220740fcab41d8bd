// Attention at V4-Flash shapes (64 heads of 512, window 128, CSA top-512 of ratio-4 entries scored
// by 64 index heads of 128, HCA every ratio-128 entry).
//
//   decode_core/<format>/<kind>   one decode step of the attention core (indexer, top-k, sparse
//       attention; no projections) at position context - 1, on a one-layer kv_cache synthesized
//       directly in the exact fp32 format or in the released FP8/FP4 layout; `dense` is the
//       baseline: full causal attention over every raw token in the same format.
//   decode_core/released_numerics/<kind>   the same in the released layout with the released
//       model's roundings (numerics::released: BF16 index scores, BF16 probabilities and output).
//   flash_cache_1m                the whole V4-Flash cache (43 layers + MTP) for one sequence of
//       1M tokens in the released layout; one decode step of the core in every layer.
//   layer_64_tokens/<weights>/per_call/<n>   one HCA layer with its projections, 64 tokens in calls
//       of n: 64 (a prefill, projections as GEMMs) or 1 (decoding); f32 weights with exact numerics,
//       or the released formats (FP8 linears, BF16 compressor, FP8/FP4 cache) and numerics.
//
// Counters: `bytes` what the step must read (candidate rows, index keys), `flops` 2 per
// multiply-add of scores and weighted sums (and index scores), their ratios to the roofline
// measured in the same run (`of_read_bw`, `of_fma_peak`), and `of_roofline`: the time the larger
// of the two bounds allows over the time taken. decode_core steps also report
// `of_roofline_paired`, the same against the FMA peak measured around each call
// (bench::paired_roofline; their time is the calls' alone).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "attn/attn_test_support.hpp"
#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"
#include "kv_synthesis.hpp"
#include "moe/random_weights.hpp"
#include "roofline.hpp"
#include "setup.hpp"

namespace {
using namespace dsv4;
using bench::random_floats;
using config::model_config;

constexpr model_config flash = config::v4_flash;  // released layout
constexpr model_config flash_exact = [] {         // fp32 cache and weights
  model_config c = config::v4_flash;
  c.cache_format = config::kv_format::f32;
  c.linear_format = c.other_format = config::weight_format::f32;
  return c;
}();
constexpr index_t heads = flash.n_heads, c = flash.head_dim;

// Declares `tokens` tokens of seq with random rows (kv_synthesis.hpp); the benchmark's own cache
// has room for them, so a failure stops it.
template <model_config C>
void synthesize(attn::kv_cache_for<C>& cache, attn::sequence_id seq, index_t tokens) {
  if (const status s = bench::synthesize_kv(cache, seq, tokens); !s.ok()) {
    std::fprintf(stderr, "attn_bench: %s\n", s.to_string().c_str());
    std::abort();
  }
}

// Random query-side inputs of one decode step.
struct step_inputs {
  std::vector<float> q = random_floats(std::size_t(heads * c), 2);
  std::vector<float> index_q = random_floats(std::size_t(flash.index_n_heads * flash.index_head_dim), 3);
  std::vector<float> index_w = random_floats(std::size_t(flash.index_n_heads), 4);
  std::vector<float> sink = random_floats(std::size_t(heads), 5);
  std::vector<float> out = std::vector<float>(std::size_t(heads * c));
};

// Bytes read and FLOPs of one decode step of policy P at position t.
template <model_config C, class P>
std::pair<double, double> step_cost(index_t t, index_t ring) {
  using cache_t = attn::kv_cache_for<C>;
  constexpr int ratio = P::compress_ratio(attn::shape_of<C>), top_k = P::top_k(attn::shape_of<C>);
  const index_t visible = ratio > 0 ? attn::visible_entries(t, ratio) : 0;
  const index_t n = std::min(t + 1, ring) + (top_k > 0 ? std::min<index_t>(top_k, visible) : visible);
  double bytes = double(n) * double(cache_t::entry_region::bytes_per_row(C.head_dim, C.rope_dim));
  double flops = 4.0 * heads * c * double(n);
  if (top_k > 0) {
    bytes += double(visible) * double(cache_t::key_region::bytes_per_row(C.index_head_dim, 0));
    flops += 2.0 * C.index_n_heads * C.index_head_dim * double(visible);
  }
  return {bytes, flops};
}

// The buffers of attend_cached for layer `layer` of a cache, in memory of their own.
template <model_config C, class P>
struct attend_workspace {
  std::vector<std::byte> memory;
  attn::attend_buffers<attn::shape_of<C>, P> buffers;
  attend_workspace(const attn::kv_cache_for<C>& cache, int layer) {
    const auto g = cache.geometry(layer);
    const index_t entries = g.ratio > 0 ? cache.capacity() / g.ratio : 0;
    workspace_layout size;
    attn::attend_buffers<attn::shape_of<C>, P>::carve(size, g.window, entries);
    memory.resize(std::size_t(size.used) + workspace_align);
    workspace_layout l{memory.data() + (workspace_align - std::uintptr_t(memory.data()) % workspace_align)};
    buffers = attn::attend_buffers<attn::shape_of<C>, P>::carve(l, g.window, entries);
  }
};

template <model_config C, class P, numerics Num = numerics::exact>
void attend(attn::kv_cache_for<C>& cache, int layer, attn::sequence_id seq, const attend_workspace<C, P>& ws,
            step_inputs& in, index_t t) {
  const status s = attn::attend_cached<attn::shape_of<C>, P, Num>(
      cache.view(layer, seq), ws.buffers, t, {in.q.data(), {heads, c}},
      {in.index_q.data(), {C.index_n_heads, C.index_head_dim}}, in.index_w, {in.sink.data(), {heads}},
      {in.out.data(), {heads, c}});
  if (!s.ok()) std::abort();
}

void set_counters(benchmark::State& state, double bytes, double flops) {
  state.counters["bytes"] = bytes;
  state.counters["flops"] = flops;
  state.counters["of_read_bw"] = bench::bandwidth_fraction(bytes);
  state.counters["of_fma_peak"] = bench::fma_fraction(flops);
  state.counters["of_roofline"] = bench::roofline_fraction(bytes, flops);
}

template <model_config C, class P, numerics Num = numerics::exact>
void bm_decode_core(benchmark::State& state) {
  const index_t context = state.range(0), t = context - 1;
  auto cache = attn::kv_cache_for<C>::create(1, context, {attn::kv_geometry<attn::shape_of<C>, P>(context)});
  const auto seq = *cache->open();
  synthesize<C>(*cache, seq, context);
  step_inputs in;
  const attend_workspace<C, P> ws(*cache, 0);
  // Checked once before timing: the output is a convex combination of rows of magnitude <= 1.
  attend<C, P, Num>(*cache, 0, seq, ws, in, t);
  for (float v : in.out)
    if (!(std::fabs(v) <= 1.0f)) std::abort();
  const auto [bytes, flops] = step_cost<C, P>(t, cache->geometry(0).window);
  bench::paired_roofline paired(bytes, flops);
  for (auto _ : state) {
    state.SetIterationTime(paired.timed([&] {
      attend<C, P, Num>(*cache, 0, seq, ws, in, t);
      benchmark::ClobberMemory();
    }));
  }
  set_counters(state, bytes, flops);
  state.counters["of_roofline_paired"] = paired.median();
}

void bm_flash_cache_1m(benchmark::State& state) {
  const index_t context = index_t{1} << 20, t = context - 1;
  auto cache = attn::make_model_cache<flash>(1, context);
  const auto seq = *cache->open();
  synthesize<flash>(*cache, seq, context);
  step_inputs in;
  double bytes = 0, flops = 0;
  const auto step = [&](bool count) {
    for (int l = 0; l < cache->layers(); ++l) {
      attn::visit_policy(config::layer_kind_of(flash, std::min(l, flash.n_layers)), [&]<class P>() {
        static const attend_workspace<flash, P> ws(*cache, l);  // one per layer kind, made once
        attend<flash, P>(*cache, l, seq, ws, in, t);
        if (count) {
          const auto [b, f] = step_cost<flash, P>(t, cache->geometry(l).window);
          bytes += b;
          flops += f;
        }
      });
    }
  };
  step(true);
  for (auto _ : state) step(false);
  state.counters["cache_GB"] = double(cache->bytes()) / 1e9;
  state.counters["layers"] = cache->layers();
  set_counters(state, bytes, flops);
}

// Multiply-adds of an HCA layer's projections per token at V4-Flash shapes.
double projection_macs_per_token() {
  const index_t d = flash.d_model;
  return double(flash.q_lora_rank) * d + double(heads) * c * flash.q_lora_rank + double(c) * d + 2.0 * c * d +
         double(flash.o_groups) * flash.o_lora_rank * (heads * c / flash.o_groups) +
         double(d) * flash.o_groups * flash.o_lora_rank;
}

using bench::made;

// One HCA layer of V4-Flash shapes with fp32 weights (about 0.5 GB), exact numerics, made once.
struct flash_layer_f32 {
  using layer_type = attn::attention_layer<flash_exact, attn::hca>;
  test::tensor_store store = test::random_attention_store<flash_exact>(1);
  layer_type layer =
      made(layer_type::create(test::attention_views(store, flash_exact.hca_ratio), config::v4_flash_params));
  double weight_bytes = 4.0 * projection_macs_per_token();
};

// The same layer as released: FP8 linears with 128x128 block scales, BF16 compressor, the FP8/FP4
// cache layout and the released numerics (about 115 MB of weights); or a layer of policy P in the
// same formats (CSA adds its overlapping compressor and the indexer).
template <class P = attn::hca>
struct flash_layer_released {
  using layer_type = attn::attention_layer<flash, P, numerics::released>;
  std::deque<test::random_matrix<test::format::fp8>> fp8;  // deques: views stay valid
  std::deque<test::random_matrix<test::format::bf16>> b16;
  std::deque<std::vector<float>> vectors;
  double weight_bytes = 0;

  fp8_matrix linear(index_t out, index_t in) {
    fp8.emplace_back(out, in, unsigned(fp8.size() + 1), 1.0f / std::sqrt(float(in)));
    weight_bytes += double(out) * double(in);
    return fp8.back().view();
  }
  bf16_matrix other(index_t out, index_t in) {
    b16.emplace_back(out, in, unsigned(b16.size() + 100), 1.0f / std::sqrt(float(in)));
    weight_bytes += 2.0 * double(out) * double(in);
    return b16.back().view();
  }
  tensor_view<const float, 2> values(index_t rows, index_t cols, float mean) {
    std::mt19937 rng(unsigned(vectors.size() + 200));
    vectors.push_back(test::normal(std::size_t(rows * cols), mean, 0.2f, rng));
    return {vectors.back().data(), {rows, cols}};
  }
  tensor_view<const float, 1> vector(index_t n, float mean) {
    const auto v = values(1, n, mean);
    return {v.data(), {n}};
  }
  typename layer_type::weights weights() {
    const index_t d = flash.d_model, go = index_t{flash.o_groups} * flash.o_lora_rank;
    typename layer_type::weights w{linear(flash.q_lora_rank, d),
                                   vector(flash.q_lora_rank, 1.0f),
                                   linear(heads * c, flash.q_lora_rank),
                                   linear(c, d),
                                   vector(c, 1.0f),
                                   linear(go, heads * c / flash.o_groups),
                                   linear(d, go),
                                   vector(heads, 0.0f),
                                   {},
                                   {}};
    constexpr int ratio = P::compress_ratio(attn::shape_of<flash>);
    const index_t coff = ratio == flash.csa_ratio ? 2 : 1, ci = flash.index_head_dim;
    if constexpr (ratio > 0)
      w.compressor = {other(coff * c, d), other(coff * c, d), values(ratio, coff * c, 0.0f), vector(c, 1.0f)};
    if constexpr (P::top_k(attn::shape_of<flash>) > 0)
      w.indexer = {
          linear(index_t{flash.index_n_heads} * ci, flash.q_lora_rank),
          other(flash.index_n_heads, d),
          {other(2 * ci, d), other(2 * ci, d), values(flash.csa_ratio, 2 * ci, 0.0f), vector(ci, 1.0f)}};
    return w;
  }
  layer_type layer = made(layer_type::create(weights(), config::v4_flash_params));
};

template <class Layer>
const Layer& shared_layer() {
  static const Layer l;
  return l;
}

// 64 tokens from position 0, in calls of `per_call` tokens. `of_read_bw`: the weights' bytes
// read once per call over the time (what bounds one-token calls).
template <class Layer>
void bm_layer_tokens(benchmark::State& state) {
  const index_t per_call = state.range(0), S = 64, d = flash.d_model;
  const auto& l = shared_layer<Layer>();
  const auto x = random_floats(std::size_t(S * d), 9);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    auto cache = made(Layer::layer_type::make_cache(1, S));
    const auto seq = made(cache.open());
    for (index_t i = 0; i < S; i += per_call)
      if (!l.layer
               .forward(cache, 0, seq, {x.data() + i * d, {per_call, d}}, {y.data() + i * d, {per_call, d}})
               .ok())
        std::abort();
  }
  state.counters["tokens_per_s"] =
      benchmark::Counter(double(S), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_MB"] = l.weight_bytes / 1e6;
  state.counters["of_fma_peak"] = bench::fma_fraction(2.0 * projection_macs_per_token() * double(S));
  state.counters["of_read_bw"] = bench::bandwidth_fraction(l.weight_bytes * double(S / per_call));
}

// B sequences, each at position context (a synthesized cache), decoding one token each per call:
// the projections of the B rows run as one GEMM per weight. Checked once before timing: the
// batched call's outputs equal the bits of each sequence's own call in a copy of the cache.
// Sequences go back to `context` tokens (untimed, synthesized again) when the cache fills: its
// capacity is context + 3.
template <class P>
void bm_decode_batch(benchmark::State& state) {
  using Layer = flash_layer_released<P>;
  const index_t B = state.range(0), context = 4096, capacity = context + 3, d = flash.d_model;
  const auto& l = shared_layer<Layer>();
  const auto x = random_floats(std::size_t(B * d), 9);
  std::vector<float> y(x.size()), alone(y.size() / std::size_t(B));
  auto cache = made(Layer::layer_type::make_cache(B, capacity)),
       other = made(Layer::layer_type::make_cache(B, capacity));
  const auto at_context = [&](attn::kv_cache_for<flash>& to, attn::sequence_id seq) {
    synthesize<flash>(to, seq, context);
  };
  std::vector<attn::sequence_tokens> batch;
  for (index_t i = 0; i < B; ++i) {
    batch.push_back({made(cache.open()), 1});
    at_context(cache, batch.back().seq);
  }
  const auto call = [&] {
    if (!l.layer.forward(cache, 0, batch, {x.data(), {B, d}}, {y.data(), {B, d}}).ok()) std::abort();
  };
  call();
  for (index_t i = 0; i < B; ++i) {
    const auto seq = made(other.open());
    at_context(other, seq);
    if (!l.layer.forward(other, 0, seq, {x.data() + i * d, {1, d}}, {alone.data(), {1, d}}).ok() ||
        std::memcmp(alone.data(), y.data() + i * d, alone.size() * sizeof(float)) != 0) {
      std::fprintf(stderr, "attn_bench: decode_batch: sequence %lld differs from its own call\n",
                   (long long)i);
      std::abort();
    }
  }
  for (auto _ : state) {
    if (*cache.tokens(batch[0].seq, 0) == capacity) {
      state.PauseTiming();
      for (const auto& b : batch) at_context(cache, b.seq);
      state.ResumeTiming();
    }
    call();
  }
  state.SetItemsProcessed(state.iterations() * B);  // items_per_second: tokens per second
  state.counters["weight_MB"] = l.weight_bytes / 1e6;
  state.counters["of_read_bw"] = bench::bandwidth_fraction(l.weight_bytes);  // the weights, once per call
}

// Decode steps are timed call by call (manual time), between probes of the FMA peak.
void contexts(benchmark::internal::Benchmark* b) {
  for (std::int64_t ctx : {4096, 65536, 262144, 1048576}) b->Arg(ctx);
  b->Unit(benchmark::kMillisecond)->UseManualTime();
}

}  // namespace

BENCHMARK(bm_decode_core<flash, attn::swa>)
    ->Name("decode_core/released/swa")
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK(bm_decode_core<flash, attn::csa>)->Name("decode_core/released/csa")->Apply(contexts);
BENCHMARK(bm_decode_core<flash, attn::hca>)->Name("decode_core/released/hca")->Apply(contexts);
BENCHMARK(bm_decode_core<flash, attn::dense>)->Name("decode_core/released/dense")->Apply(contexts);
BENCHMARK(bm_decode_core<flash, attn::csa, numerics::released>)
    ->Name("decode_core/released_numerics/csa")
    ->Apply(contexts);
BENCHMARK(bm_decode_core<flash, attn::hca, numerics::released>)
    ->Name("decode_core/released_numerics/hca")
    ->Apply(contexts);
BENCHMARK(bm_decode_core<flash_exact, attn::csa>)->Name("decode_core/exact/csa")->Apply(contexts);
BENCHMARK(bm_decode_core<flash_exact, attn::hca>)->Name("decode_core/exact/hca")->Apply(contexts);
BENCHMARK(bm_decode_core<flash_exact, attn::dense>)
    ->Name("decode_core/exact/dense")
    ->Arg(4096)
    ->Arg(65536)
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK(bm_flash_cache_1m)
    ->Name("flash_cache_1m")
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_layer_tokens<flash_layer_f32>)
    ->Name("layer_64_tokens/f32/per_call")
    ->Arg(64)
    ->Arg(1)
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_layer_tokens<flash_layer_released<>>)
    ->Name("layer_64_tokens/released/per_call")
    ->Arg(64)
    ->Arg(1)
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode_batch<attn::swa>)
    ->Name("decode_batch/released/swa/B")
    ->Arg(1)
    ->Arg(4)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode_batch<attn::csa>)
    ->Name("decode_batch/released/csa/B")
    ->Arg(1)
    ->Arg(4)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode_batch<attn::hca>)
    ->Name("decode_batch/released/hca/B")
    ->Arg(1)
    ->Arg(4)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
