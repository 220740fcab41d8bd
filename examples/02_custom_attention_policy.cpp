// 02_custom_attention_policy: a user-defined attention policy plugged into the V4 attention layer.
//
// A policy is a static description (dsv4/attn/concepts.hpp); deriving from a stock one and
// overriding a member is enough. Here: a CSA layer whose Lightning Indexer keeps the top 2
// compressed entries instead of the config's index_topk, and an HCA layer compressing every 8
// tokens instead of hca_ratio. Both run on the tiny_hybrid config with random weights, next to the
// stock policies, over the same 64 tokens.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"

namespace {
using namespace dsv4;
using config::model_config;
constexpr model_config cfg = config::tiny_hybrid;

struct csa_top2 : attn::csa {
  static constexpr std::string_view name = "csa_top2";
  static constexpr int top_k(const attn::shape&) { return 2; }
};
static_assert(attn::attention_policy<csa_top2>);

struct hca_ratio8 : attn::hca {
  static constexpr std::string_view name = "hca_ratio8";
  static constexpr int compress_ratio(const attn::shape&) { return 8; }
};
static_assert(attn::attention_policy<hca_ratio8>);

// Random weights owned here; the layer reads views of them.
struct random_weights {
  std::mt19937 rng{2026};
  std::vector<std::vector<float>> buffers;

  tensor_view<const float, 2> matrix(index_t rows, index_t cols, float stddev) {
    std::normal_distribution<float> d(0.0f, stddev);
    auto& b = buffers.emplace_back(static_cast<std::size_t>(rows * cols));
    for (float& x : b) x = d(rng);
    return {b.data(), {rows, cols}};
  }
  tensor_view<const float, 2> linear(index_t out, index_t in) {
    return matrix(out, in, 1.0f / std::sqrt(static_cast<float>(in)));
  }
  tensor_view<const float, 1> vector(index_t n) {
    const auto m = matrix(1, n, 1.0f);
    return {m.data(), {n}};
  }
  attn::compressor_weights<> compressor(int ratio, index_t dim, bool overlap) {
    const index_t ch = overlap ? 2 * dim : dim;
    return {{linear(ch, cfg.d_model)}, {linear(ch, cfg.d_model)}, matrix(ratio, ch, 1.0f), vector(dim)};
  }
};

template <attn::attention_policy P>
void run(const attn::attention_weights<>& w, const std::vector<float>& x, index_t tokens) {
  const auto layer = attn::attention_layer<cfg, P>::create(w, config::tiny_params);
  if (!layer.ok()) {
    std::printf("%s: %s\n", std::string(P::name).c_str(), layer.error().to_string().c_str());
    return;
  }
  // A one-layer cache with the geometry this policy needs (ring, ratio, index keys).
  auto cache = attn::attention_layer<cfg, P>::make_cache(1, tokens);
  const auto seq = cache->open();
  std::vector<float> y(x.size());
  const status s =
      layer->forward(*cache, 0, *seq, {x.data(), {tokens, cfg.d_model}}, {y.data(), {tokens, cfg.d_model}});
  double norm = 0;
  for (float v : y) norm += double(v) * v;
  const index_t entries =
      P::compress_ratio(attn::shape_of<cfg>) > 0 ? tokens / P::compress_ratio(attn::shape_of<cfg>) : 0;
  std::printf("%-10s ratio %3d  top-k %4d  entries %3lld  cache %6lld B  |y| = %.6f  (%s)\n",
              std::string(P::name).c_str(), P::compress_ratio(attn::shape_of<cfg>),
              P::top_k(attn::shape_of<cfg>), static_cast<long long>(entries),
              static_cast<long long>(cache->bytes()), std::sqrt(norm), s.to_string().c_str());
}
}  // namespace

int main() {
  random_weights r;
  const index_t d = cfg.d_model, c = cfg.head_dim, heads = cfg.n_heads;
  // fp32 weights (cfg's formats are f32): attention_weights<> holds f32_matrix projections.
  attn::attention_weights<> w{{r.linear(cfg.q_lora_rank, d)},
                              r.vector(cfg.q_lora_rank),
                              {r.linear(heads * c, cfg.q_lora_rank)},
                              {r.linear(c, d)},
                              r.vector(c),
                              {r.linear(index_t{cfg.o_groups} * cfg.o_lora_rank, heads * c / cfg.o_groups)},
                              {r.linear(d, index_t{cfg.o_groups} * cfg.o_lora_rank)},
                              r.vector(heads),
                              {},
                              {}};
  w.indexer = {{r.linear(index_t{cfg.index_n_heads} * cfg.index_head_dim, cfg.q_lora_rank)},
               {r.linear(cfg.index_n_heads, d)},
               r.compressor(cfg.csa_ratio, cfg.index_head_dim, true)};
  const index_t tokens = 64;
  const auto x = r.matrix(tokens, d, 1.0f);
  const std::vector<float> input(x.data(), x.data() + tokens * d);

  w.compressor = r.compressor(cfg.csa_ratio, c, true);
  run<attn::csa>(w, input, tokens);
  run<csa_top2>(w, input, tokens);
  w.compressor = r.compressor(cfg.hca_ratio, c, false);
  run<attn::hca>(w, input, tokens);
  w.compressor = r.compressor(8, c, false);  // the custom ratio needs an ape of 8 rows
  run<hca_ratio8>(w, input, tokens);
  return 0;
}
