// One mHC site per decoded token at V4-Flash width (n_hc = 4, d = 4096, n_hc * d = 16384):
// HC_pre (24 dot products of 16384, RMS, Sinkhorn, stream collapse) + HC_post (comb^T X + post y),
// with the exact fp32 numerics or the released BF16 streams (`released` = 1; core/numerics.hpp).
// A batch of `tokens` shares one pass over fn (hyper_connection.hpp), so per-token cost falls with
// the batch until the streams, not fn, dominate the bytes.
//
// Bytes per step of `tokens` tokens: fn 24 x 16384 fp32 (1.5 MiB, once) plus, per token, the
// streams read by HC_pre (64 KiB), x_in written (16 KiB), y read (16 KiB), the streams read and
// written by HC_post (2 x 64 KiB). `fn_copies` rotates through that many copies of fn: 1 keeps it
// in cache, 64 (96 MiB) makes every step stream it from memory as a real decode step does (each of
// the 2 x 43 sites of Flash reads its own fn once per token).
//
// `layer_share` estimates what the two mHC sites of one layer cost in a batch-1 decode step: the
// layer's other traffic (activated weights at their checkpoint formats plus the FP8 KV entries it
// reads at a 64K context, averaged over Flash's 43 layers, from dsv4/config/accounting.hpp) is
// taken to run at the measured read bandwidth, and the two sites at the time measured here:
//   share = 2 t_site / (2 t_site + other_bytes / read_bw).
// `bytes_share` is the same ratio in bytes only (2 site bytes / (2 site bytes + other bytes)).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/mhc/hyper_connection.hpp"
#include "dsv4/mhc/sinkhorn.hpp"
#include "roofline.hpp"

namespace {
using dsv4::index_t;
namespace cfg = dsv4::config;

constexpr index_t n = cfg::v4_flash.hc_mult, d = cfg::v4_flash.d_model, width = n * d;
constexpr index_t rows = dsv4::mhc::mix_width(n);

// Bytes one decode step reads besides mHC, averaged over the backbone layers, at `context` tokens.
double other_layer_bytes(const cfg::model_config& c, std::int64_t context) {
  double bytes = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    cfg::for_each_layer_tensor(c, l, [&](const cfg::tensor_desc& t) {
      if (t.group == cfg::tensor_group::mhc || t.group == cfg::tensor_group::hash_table) return;
      const double share = t.group == cfg::tensor_group::routed_experts
                               ? static_cast<double>(c.n_experts_per_tok) / static_cast<double>(t.copies)
                               : 1.0;
      bytes += static_cast<double>(t.stored_bytes()) * share;
    });
    const cfg::layer_kind kind = cfg::layer_kind_of(c, l);
    const cfg::kv_entry_size e = cfg::kv_entry_bytes(c, cfg::kv_format::fp8_released);
    const cfg::attention_geometry g = cfg::geometry_of(c, kind);
    bytes += static_cast<double>(cfg::attention_candidates(c, kind, context) * e.entry);
    if (g.indexed) bytes += static_cast<double>(g.entries(context) * e.index_key);
  }
  return bytes / c.n_layers;
}

double site_bytes(index_t tokens) {
  return 4.0 * (rows * width + 2 * rows + 3) + 4.0 * static_cast<double>(tokens) * (3 * width + 2 * d);
}

struct flash_site {
  index_t tokens, copies;
  dsv4::numerics num;
  std::vector<float> fn, scale{0.9f, 1.1f, 1.2f}, base, x, y, x_in, pre, post, comb, mix, out;

  flash_site(index_t tokens_, index_t copies_, dsv4::numerics num_)
      : tokens(tokens_), copies(copies_), num(num_) {
    const auto fill = [](std::vector<float>& v, std::size_t count, float stddev, unsigned seed) {
      std::mt19937 rng(seed);
      std::normal_distribution<float> dist(0.0f, stddev);
      v.resize(count);
      for (float& f : v) f = dist(rng);
    };
    fill(fn, static_cast<std::size_t>(copies * rows * width), 0.02f, 1);  // the HF initialization
    fill(base, rows, 0.5f, 2);
    fill(x, static_cast<std::size_t>(tokens * width), 1.0f, 3);
    fill(y, static_cast<std::size_t>(tokens * d), 1.0f, 4);
    dsv4::to_activation(num, x);  // released: BF16 streams and sublayer output
    dsv4::to_activation(num, y);
    x_in.resize(static_cast<std::size_t>(tokens * d));
    pre.resize(static_cast<std::size_t>(tokens * n));
    post.resize(pre.size());
    comb.resize(static_cast<std::size_t>(tokens * n * n));
    mix.resize(static_cast<std::size_t>(tokens * rows));
    out.resize(x.size());
  }
  dsv4::mhc::hc_state state() {
    return {{pre.data(), {tokens, n}},
            {post.data(), {tokens, n}},
            {comb.data(), {tokens, n, n}},
            {mix.data(), {tokens, rows}}};
  }
  dsv4::mhc::hc_pre_op::params pre_params(index_t copy) {
    return {{x.data(), {tokens, n, d}},
            {{fn.data() + copy * rows * width, {rows, width}}, {scale.data(), {3}}, {base.data(), {rows}}},
            {},
            dsv4::mhc::residual_map::sinkhorn,
            {x_in.data(), {tokens, d}},
            state(),
            num};
  }
  dsv4::mhc::hc_post_op::params post_params() {
    return {{y.data(), {tokens, d}},
            {x.data(), {tokens, n, d}},
            state().post,
            state().comb,
            {out.data(), {tokens, n, d}},
            num};
  }
  std::size_t at(index_t t, index_t j, index_t k) const {
    return static_cast<std::size_t>((t * n + j) * d + k);
  }

  // Checked once before timing: the collapse and HC_post against direct sums in double (to fp32
  // rounding, or half a BF16 ulp under the released numerics), and the residual matrix's column sums.
  void verify_or_abort() {
    const double tol = num == dsv4::numerics::released ? 4e-3 : 1e-4;
    if (!dsv4::run<dsv4::cpu>(pre_params(0)).ok() || !dsv4::run<dsv4::cpu>(post_params()).ok()) std::abort();
    for (index_t t = 0; t < tokens; ++t) {
      for (index_t j = 0; j < n; ++j) {
        double col = 0;
        for (index_t i = 0; i < n; ++i) col += comb[static_cast<std::size_t>((t * n + i) * n + j)];
        if (std::fabs(col - 1.0) > 1e-5) std::abort();
      }
      for (index_t k = 0; k < d; k += 97) {
        double collapsed = 0;
        for (index_t j = 0; j < n; ++j)
          collapsed += double(pre[static_cast<std::size_t>(t * n + j)]) * x[at(t, j, k)];
        if (std::fabs(collapsed - x_in[static_cast<std::size_t>(t * d + k)]) >
            tol * (1 + std::fabs(collapsed)))
          std::abort();
        for (index_t j = 0; j < n; ++j) {
          double v =
              double(post[static_cast<std::size_t>(t * n + j)]) * y[static_cast<std::size_t>(t * d + k)];
          for (index_t i = 0; i < n; ++i)
            v += double(comb[static_cast<std::size_t>((t * n + i) * n + j)]) * x[at(t, i, k)];
          if (std::fabs(v - out[at(t, j, k)]) > tol * (1 + std::fabs(v))) std::abort();
        }
      }
    }
  }
};

void bm_mhc_site_flash(benchmark::State& state) {
  const index_t tokens = state.range(0), copies = state.range(1);
  flash_site s(tokens, copies, state.range(2) != 0 ? dsv4::numerics::released : dsv4::numerics::exact);
  s.verify_or_abort();
  index_t copy = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    copy = (copy + 1) % copies;
    benchmark::DoNotOptimize(dsv4::run<dsv4::cpu>(s.pre_params(copy)));
    benchmark::DoNotOptimize(dsv4::run<dsv4::cpu>(s.post_params()));
    benchmark::ClobberMemory();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                         static_cast<double>(state.iterations());
  const double bytes = site_bytes(tokens);
  state.counters["bytes"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1024);
  state.counters["of_read_bw"] = dsv4::bench::bandwidth_fraction(bytes);
  state.counters["tokens"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["us_per_token"] = seconds * 1e6 / static_cast<double>(tokens);
  if (tokens == 1) {
    const double other = other_layer_bytes(cfg::v4_flash, 65536);
    state.counters["layer_share"] =
        2 * seconds / (2 * seconds + other / dsv4::bench::roofline().read_bytes_per_s);
    state.counters["bytes_share"] = 2 * bytes / (2 * bytes + other);
  }
}

// The Sinkhorn projection alone, for one 4x4 matrix at the released 20 iterations.
void bm_sinkhorn_4x4(benchmark::State& state) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  float logits[16], p[16];
  for (float& v : logits) v = dist(rng);
  for (auto _ : state) {
    std::copy(logits, logits + 16, p);
    benchmark::DoNotOptimize(p);
    dsv4::mhc::sinkhorn_project(p, 4, cfg::v4_flash.hc_sinkhorn_iters, 1e-6f);
    benchmark::DoNotOptimize(p);
  }
}
}  // namespace

BENCHMARK(bm_mhc_site_flash)
    ->ArgNames({"tokens", "fn_copies", "released"})
    ->Args({1, 1, 0})
    ->Args({1, 64, 0})
    ->Args({16, 64, 0})
    ->Args({64, 64, 0})
    ->Args({1, 64, 1})
    ->Args({16, 64, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(bm_sinkhorn_4x4)->Unit(benchmark::kNanosecond);
