// The whole model (model::causal_lm) at the peer-small shape (config/presets.hpp: d 1024, 8 layers
// SWA, SWA, then CSA/HCA, 16 heads of 512, 64 experts of width 512 top-6 plus one shared expert,
// hc 4, vocabulary 256), random weights built through the checkpoint path (io::random_model), in
// three storages:
//   bf16_exact     peer_small: BF16 weights and cache, numerics::exact
//   fp8_released   peer_small_fp8: FP8 linears and experts, BF16 others, the FP8/FP4 cache
//                  layout, numerics::released
//   fp4_released   peer_small_fp4: the same with FP4 (e2m1, 1x32 scales) routed experts
//   fp4_fast       the same checkpoint under numerics::fast (int8 inputs to the FP4 experts)
//
//   decode/<storage>/context:<T>   one token of one sequence at position T (its cache synthesized
//       with T tokens: bench::synthesize_kv, random rows in the cache format); after each step
//       the sequence is truncated back to T, so every step is the same step. `bytes` is what a
//       decode token must read: every weight outside the routed experts (attention, shared expert,
//       router, mHC, norms, the LM head), top-6 of the routed experts in their stored format, the
//       token's embedding row, and the KV rows the token attends to (window rows, the compressed
//       entries it reads, every index key of the CSA layers) in the cache format; the compressors'
//       fp32 tails are left out. `of_read_bw` is those bytes over the read bandwidth.
//   prefill/<storage>   512 tokens of one sequence from position 0, the last token's logits; `flops`
//       = 2 x active parameters x 512 (the LM head once) + the attention of every position
//       (config::decode_flops at 1..512), `of_fma_peak` their rate over the FMA peak.
//   decode_batch/<storage>/sequences:<B>   B sequences at position 512 each (synthesized), one
//       token each in one forward call, truncated back after each call. items_per_second is the
//       aggregate tokens/s; `of_fma_peak` counts B tokens' decode FLOPs; `bytes` counts every
//       weight once per call with the distinct routed experts B tokens reach when routing is
//       uniform (E (1 - (1 - k/E)^B) per layer) plus B tokens' KV.
//
// Each benchmark checks its result once before timing: the logits are finite and not constant, a
// decode step repeated after the truncation gives the same bits, a prefill's last logits agree with
// 511 tokens then one decode step (`chunk_diff`, the largest difference over the logits' spread),
// and each sequence of a batched call has the bits of its own call. `allocs` counts the heap
// allocations of one forward with the caller's workspace (the global operator new of this
// executable counts them; the library promises none). forward and the roofline probes run on
// parallel_for's default pool. Models are built
// once per storage, outside the timed loops, and one storage is held at a time (the benchmarks run
// grouped by storage).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <vector>

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/io/random_model.hpp"
#include "dsv4/model/causal_lm.hpp"
#include "dsv4/model/fidelity.hpp"
#include "kv_synthesis.hpp"
#include "roofline.hpp"
#include "setup.hpp"

// ---- heap allocations, counted ----------------------------------------------------------------

namespace {
std::atomic<std::int64_t> allocations{0};

void* allocate(std::size_t n, std::size_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  n = std::max<std::size_t>(n, 1);
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n)
                                               : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return allocate(n, alignof(std::max_align_t)); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {
using namespace dsv4;
using config::model_config;

constexpr model_config bf16_cfg = config::peer_small, fp8_cfg = config::peer_small_fp8,
                       fp4_cfg = config::peer_small_fp4;
constexpr config::model_params params = config::v4_flash_params;
constexpr index_t vocab = config::peer_small.vocab_size;
static_assert(fp8_cfg.vocab_size == vocab && fp4_cfg.vocab_size == vocab);

using bench::made;
using bench::must;

// One storage's model: the random checkpoint (kept alive: the weights view it) and the engine.
template <model_config C, numerics Num>
struct engine {
  using lm = model::causal_lm<C, model::default_policies<C, Num>>;
  io::loaded_model<C> loaded = made(io::random_model<C>(1, params, false));
  lm model = made(lm::create(loaded.weights(), loaded.params()));
};

// The engine of one storage, built on first use; building another storage's frees this one first,
// so that one model is held at a time.
struct held_engine {
  const void* key = nullptr;
  std::shared_ptr<void> engine;
};
held_engine& held() {
  static held_engine h;
  return h;
}
template <model_config C, numerics Num>
const engine<C, Num>& engine_of() {
  static constexpr char key = 0;
  held_engine& h = held();
  if (h.key != &key) {
    h.engine.reset();
    h.key = nullptr;
    const auto t0 = std::chrono::steady_clock::now();
    h.engine = std::make_shared<engine<C, Num>>();
    h.key = &key;
    std::fprintf(stderr, "model_bench: built a random %s model in %.1f s\n",
                 C.expert_format == config::weight_format::bf16               ? "BF16"
                 : C.expert_format == config::weight_format::fp4_e2m1_block32 ? "FP8/FP4"
                                                                              : "FP8",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return *static_cast<const engine<C, Num>*>(h.engine.get());
}

// A 64-byte aligned workspace of n bytes.
struct workspace {
  std::vector<std::byte> memory;
  std::span<std::byte> bytes;
  explicit workspace(std::size_t n) : memory(n + workspace_align) {
    const std::size_t skew = reinterpret_cast<std::uintptr_t>(memory.data()) % workspace_align;
    bytes = std::span<std::byte>(memory.data() + (workspace_align - skew) % workspace_align, n);
  }
};

// ---- what a token reads and computes ------------------------------------------------------------

// Bytes of the weights one decode token reads, the routed experts counted as `experts` of them per
// layer (top-k for one token), in their stored formats.
double weight_bytes(const model_config& c, double experts) {
  double bytes = 0;
  const auto visit = [&](const config::tensor_desc& t) {
    const auto stored = static_cast<double>(t.stored_bytes());
    switch (t.group) {
      case config::tensor_group::routed_experts:
        bytes += stored * experts / static_cast<double>(t.copies);
        break;
      case config::tensor_group::hash_table:
        bytes += 4.0 * c.n_experts_per_tok;  // one row, as int32
        break;
      case config::tensor_group::embedding:
        bytes += stored / static_cast<double>(t.rows);  // one row
        break;
      default:
        bytes += stored;
    }
  };
  for (int l = 0; l < c.n_layers; ++l) config::for_each_layer_tensor(c, l, visit);
  config::for_each_top_tensor(c, visit);
  return bytes;
}

// Bytes of the cache a token at position `context` reads (it sees context + 1 tokens): its window
// rows, the compressed entries it attends to and, in indexed layers, every index key.
double kv_read_bytes(const model_config& c, index_t context) {
  const config::kv_entry_size e = config::kv_entry_bytes(c, c.cache_format);
  double bytes = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const config::layer_kind k = config::layer_kind_of(c, l);
    const config::attention_geometry g = config::geometry_of(c, k);
    bytes += static_cast<double>(config::attention_candidates(c, k, context + 1) * e.entry);
    if (g.indexed) bytes += static_cast<double>(g.entries(context + 1) * e.index_key);
  }
  return bytes;
}

// Distinct routed experts a layer runs for b tokens routed top-k uniformly over E.
double distinct_experts(const model_config& c, index_t b) {
  const double e = c.n_routed_experts, k = c.n_experts_per_tok;
  return e * (1.0 - std::pow(1.0 - k / e, static_cast<double>(b)));
}

// FLOPs of a prefill of n tokens from position 0 with the last token's logits: every linear for
// every token but the LM head once, and the attention of every position.
double prefill_flops(const model_config& c, index_t n) {
  const double head = 2.0 * static_cast<double>(c.vocab_size) * c.d_model;
  const config::token_flops f = config::decode_flops(c, 1);
  double flops = (static_cast<double>(f.linear) - head) * static_cast<double>(n) + head;
  for (index_t t = 1; t <= n; ++t) flops += static_cast<double>(config::decode_flops(c, t).attention());
  return flops;
}

void roofline_counters(benchmark::State& state, double bytes, double flops) {
  state.counters["bytes"] = bytes;
  state.counters["flops"] = flops;
  state.counters["of_read_bw"] = bench::bandwidth_fraction(bytes);
  state.counters["of_fma_peak"] = bench::fma_fraction(flops);
  state.counters["of_roofline"] = bench::roofline_fraction(bytes, flops);
}

// The logits are finite and not all equal.
void check_logits(std::span<const float> logits, const char* what) {
  float lo = logits[0], hi = logits[0];
  for (const float v : logits) {
    if (!std::isfinite(v)) {
      std::fprintf(stderr, "model_bench: %s: a logit is not finite\n", what);
      std::abort();
    }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!(hi - lo > 1e-3f)) {
    std::fprintf(stderr, "model_bench: %s: constant logits\n", what);
    std::abort();
  }
}

// Heap allocations made by f().
std::int64_t allocations_in(auto&& f) {
  const std::int64_t before = allocations.load();
  f();
  return allocations.load() - before;
}

// ---- benchmarks ----------------------------------------------------------------------------------

template <model_config C, numerics Num>
void bm_decode(benchmark::State& state) {
  using lm = typename engine<C, Num>::lm;
  const index_t context = state.range(0);
  const lm& m = engine_of<C, Num>().model;
  auto cache = made(lm::make_cache(attn::kv_cache_options{1, context + 1, 0, 1}));
  const attn::sequence_id seq = made(cache.open());
  must(bench::synthesize_kv(cache, seq, context), "synthesize_kv");
  workspace ws(m.workspace_bytes(1, cache.capacity()));
  std::vector<float> logits(vocab), first(vocab);
  const std::int32_t token = 7;
  const model::sequence_input in{seq, {&token, 1}, model::logits_rows::last};
  const auto forward = [&] {
    must(m.forward(cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}), ws.bytes), "decode");
  };
  const std::int64_t allocs = allocations_in(forward);
  must(cache.truncate(seq, context), "truncate");
  check_logits(logits, "decode");
  first = logits;
  const auto step = [&] {
    forward();
    must(cache.truncate(seq, context), "truncate");
  };
  step();
  if (std::memcmp(first.data(), logits.data(), logits.size() * sizeof(float)) != 0) {
    std::fprintf(stderr, "model_bench: decode: the step after truncate() differs\n");
    std::abort();
  }
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  const double weights = weight_bytes(C, C.n_experts_per_tok), kv = kv_read_bytes(C, context);
  state.SetItemsProcessed(state.iterations());
  state.counters["weight_MB"] = weights / 1e6;
  state.counters["kv_MB"] = kv / 1e6;
  state.counters["allocs"] = static_cast<double>(allocs);
  roofline_counters(state, weights + kv, static_cast<double>(config::decode_flops(C, context + 1).total()));
}

template <model_config C, numerics Num>
void bm_prefill(benchmark::State& state) {
  using lm = typename engine<C, Num>::lm;
  constexpr index_t n = 512;
  const lm& m = engine_of<C, Num>().model;
  auto cache = made(lm::make_cache(attn::kv_cache_options{1, n, 0, 1}));
  const attn::sequence_id seq = made(cache.open());
  std::vector<std::int32_t> tokens(n);
  for (index_t i = 0; i < n; ++i) tokens[std::size_t(i)] = static_cast<std::int32_t>((i * 37 + 11) % vocab);
  workspace ws(m.workspace_bytes(n, n));
  std::vector<float> logits(vocab), chunked(vocab);
  const auto prefill = [&] {
    must(cache.truncate(seq, 0), "truncate");
    const model::sequence_input in{seq, tokens, model::logits_rows::last};
    must(m.forward(cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}), ws.bytes), "prefill");
  };
  const std::int64_t allocs = allocations_in(prefill);
  check_logits(logits, "prefill");
  // The same logits from 511 tokens and one decode step.
  must(cache.truncate(seq, 0), "truncate");
  const std::span<const std::int32_t> all(tokens);
  const model::sequence_input head{seq, all.first(n - 1), model::logits_rows::none},
      tail{seq, all.last(1), model::logits_rows::last};
  must(m.forward(cache, {&head, 1}, tensor_view<float, 2>(chunked.data(), {0, vocab}), ws.bytes),
       "prefill 511");
  must(m.forward(cache, {&tail, 1}, tensor_view<float, 2>(chunked.data(), {1, vocab}), ws.bytes),
       "decode 512");
  float diff = 0, lo = logits[0], hi = logits[0];
  for (index_t i = 0; i < vocab; ++i) {
    diff = std::max(diff, std::fabs(logits[std::size_t(i)] - chunked[std::size_t(i)]));
    lo = std::min(lo, logits[std::size_t(i)]);
    hi = std::max(hi, logits[std::size_t(i)]);
  }
  if (!(diff <= 0.05f * (hi - lo))) {
    std::fprintf(stderr, "model_bench: prefill: 511 + 1 tokens differ from 512 by %g (spread %g)\n", diff,
                 hi - lo);
    std::abort();
  }
  for (auto _ : state) {
    prefill();
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["allocs"] = static_cast<double>(allocs);
  state.counters["chunk_diff"] = diff / (hi - lo);
  state.counters["flops"] = prefill_flops(C, n);
  state.counters["of_fma_peak"] = bench::fma_fraction(prefill_flops(C, n));
}

template <model_config C, numerics Num>
void bm_decode_batch(benchmark::State& state) {
  using lm = typename engine<C, Num>::lm;
  const index_t b = state.range(0), context = 512;
  const lm& m = engine_of<C, Num>().model;
  auto cache = made(lm::make_cache(attn::kv_cache_options{b, context + 1, 0, 1}));
  std::vector<std::int32_t> tokens(std::size_t(b), 0);
  std::vector<model::sequence_input> batch;
  for (index_t i = 0; i < b; ++i) {
    tokens[std::size_t(i)] = static_cast<std::int32_t>((7 + 13 * i) % vocab);
    batch.push_back({made(cache.open()), {&tokens[std::size_t(i)], 1}, model::logits_rows::last});
    must(bench::synthesize_kv(cache, batch.back().seq, context), "synthesize_kv");
  }
  workspace ws(m.workspace_bytes(b, cache.capacity()));
  std::vector<float> logits(std::size_t(b * vocab));
  const auto call = [&] {
    must(m.forward(cache, batch, tensor_view<float, 2>(logits.data(), {b, vocab}), ws.bytes), "decode batch");
    for (const model::sequence_input& s : batch) must(cache.truncate(s.seq, context), "truncate");
  };
  const std::int64_t allocs = allocations_in(call);
  check_logits(logits, "decode batch");
  // A few sequences alone, in a cache of their own: the bits of the batched call.
  {
    auto alone = made(lm::make_cache(attn::kv_cache_options{1, context + 1, 0, 1}));
    workspace ws1(m.workspace_bytes(1, alone.capacity()));
    std::vector<float> own(vocab);
    for (const index_t i : {index_t{0}, b / 3, (2 * b) / 3, b - 1}) {
      const attn::sequence_id seq = made(alone.open());
      must(bench::synthesize_kv(alone, seq, context), "synthesize_kv");
      const model::sequence_input in{seq, batch[std::size_t(i)].tokens, model::logits_rows::last};
      must(m.forward(alone, {&in, 1}, tensor_view<float, 2>(own.data(), {1, vocab}), ws1.bytes),
           "decode alone");
      if (std::memcmp(own.data(), logits.data() + i * vocab, own.size() * sizeof(float)) != 0) {
        std::fprintf(stderr, "model_bench: decode batch: sequence %lld differs from its own call\n",
                     static_cast<long long>(i));
        std::abort();
      }
      must(alone.release(seq), "release");
    }
  }
  for (auto _ : state) {
    call();
    benchmark::ClobberMemory();
  }
  const double weights = weight_bytes(C, distinct_experts(C, b)), kv = double(b) * kv_read_bytes(C, context);
  state.SetItemsProcessed(state.iterations() * b);
  state.counters["allocs"] = static_cast<double>(allocs);
  roofline_counters(state, weights + kv,
                    double(b) * static_cast<double>(config::decode_flops(C, context + 1).total()));
}

// fidelity/fp4_fast: numerics::fast and numerics::released against numerics::exact on the same
// FP4 checkpoint, every next-token distribution of a 256-token text: mean KL divergence
// (`kl_fast`, `kl_released`) and top-1 agreement (`top1_fast`, `top1_released`). The timed loop
// is the fast model's 256-token prefill.
void bm_fidelity(benchmark::State& state) {
  constexpr model_config C = fp4_cfg;
  constexpr index_t n = 256;
  const auto& fast = engine_of<C, numerics::fast>();
  const auto exact = made(
      model::causal_lm<C, model::default_policies<C>>::create(fast.loaded.weights(), fast.loaded.params()));
  const auto released = made(
      model::causal_lm<C, model::released_policies<C>>::create(fast.loaded.weights(), fast.loaded.params()));
  std::vector<std::int32_t> tokens(n);
  for (index_t i = 0; i < n; ++i) tokens[std::size_t(i)] = static_cast<std::int32_t>((i * 53 + 5) % vocab);
  const auto score = [&](const auto& m) {
    using lm = std::remove_cvref_t<decltype(m)>;
    auto cache = made(lm::make_cache(attn::kv_cache_options{1, n, 0, 1}));
    const model::sequence_input in{made(cache.open()), tokens, model::logits_rows::all};
    std::vector<float> logits(std::size_t(n * vocab));
    workspace ws(m.workspace_bytes(n, n));
    must(m.forward(cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {n, vocab}), ws.bytes), "fidelity");
    check_logits(logits, "fidelity");
    return logits;
  };
  const auto ref = score(exact), rel = score(released);
  std::vector<float> got;
  for (auto _ : state) got = score(fast.model);
  double kl[2] = {}, top1[2] = {};
  for (int k = 0; k < 2; ++k) {
    model::logit_agreement a;
    must(model::compare_logits(tensor_view<const float, 2>(ref.data(), {n, vocab}),
                               tensor_view<const float, 2>((k == 0 ? got : rel).data(), {n, vocab}), a),
         "fidelity");
    kl[k] = a.mean_kl;
    top1[k] = a.top1;
  }
  state.counters["kl_fast"] = kl[0];
  state.counters["top1_fast"] = top1[0];
  state.counters["kl_released"] = kl[1];
  state.counters["top1_released"] = top1[1];
}

void contexts(benchmark::internal::Benchmark* b) {
  b->ArgName("context")->Arg(16)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->UseRealTime();
}
void sequences(benchmark::internal::Benchmark* b) {
  b->ArgName("sequences")->Arg(1)->Arg(4)->Arg(16)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

// Grouped by storage: one model is built per group and freed before the next.
BENCHMARK(bm_decode<bf16_cfg, numerics::exact>)->Name("decode/bf16_exact")->Apply(contexts);
BENCHMARK(bm_prefill<bf16_cfg, numerics::exact>)
    ->Name("prefill/bf16_exact")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode_batch<bf16_cfg, numerics::exact>)->Name("decode_batch/bf16_exact")->Apply(sequences);
BENCHMARK(bm_decode<fp8_cfg, numerics::released>)->Name("decode/fp8_released")->Apply(contexts);
BENCHMARK(bm_prefill<fp8_cfg, numerics::released>)
    ->Name("prefill/fp8_released")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode_batch<fp8_cfg, numerics::released>)->Name("decode_batch/fp8_released")->Apply(sequences);
BENCHMARK(bm_decode<fp4_cfg, numerics::released>)->Name("decode/fp4_released")->Apply(contexts);
BENCHMARK(bm_prefill<fp4_cfg, numerics::released>)
    ->Name("prefill/fp4_released")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_decode<fp4_cfg, numerics::fast>)->Name("decode/fp4_fast")->Apply(contexts);
BENCHMARK(bm_prefill<fp4_cfg, numerics::fast>)
    ->Name("prefill/fp4_fast")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(bm_fidelity)
    ->Name("fidelity/fp4_fast")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
