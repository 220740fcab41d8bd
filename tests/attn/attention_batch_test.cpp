// Batched calls: a call's rows run in chunks of up to chunk_rows rows whatever sequences they
// belong to, the projections of a chunk as one GEMM. A batch of sequences with mixed token counts
// (none, one, a chunk's worth, more than two chunks) at different positions, whose sequences cross
// chunk boundaries, gives every sequence the bits of running it alone, for every policy, both
// numerics, and on 1 and 2 threads.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "attn/attn_test_support.hpp"
#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/core/parallel.hpp"
#include "moe/random_weights.hpp"

namespace {
using namespace dsv4;
using config::model_config;

// V4's 128-wide tiles at the smallest width (as in attn_released_test.cpp): FP8 linears with
// 128x128 block scales, BF16 compressors and weights_proj, the FP8/FP4 cache layout.
constexpr model_config released_config = [] {
  config::model_config c =
      config::released_storage(config::with_released_tiles(config::tiny_hybrid), config::weight_format::f32);
  c.window = 16;
  return c;
}();
static_assert(config::is_valid_config<released_config>);

// A released layer of policy P over random weights in the released formats, owned.
template <class P>
struct released_layer {
  using layer_type = attn::attention_layer<released_config, P, numerics::released>;
  using policy = P;
  static constexpr model_config C = released_config;
  static constexpr const char* numerics_name = "released";
  std::deque<test::random_matrix<test::format::fp8>> fp8;  // a deque: views stay valid
  std::deque<test::random_matrix<test::format::bf16>> b16;
  std::deque<std::vector<float>> values;
  std::mt19937 rng{31};

  fp8_matrix linear(index_t out, index_t in) {
    return fp8.emplace_back(out, in, unsigned(fp8.size() + 1), 1.0f / std::sqrt(float(in))).view();
  }
  bf16_matrix other(index_t out, index_t in) {
    return b16.emplace_back(out, in, unsigned(b16.size() + 100), 1.0f / std::sqrt(float(in))).view();
  }
  tensor_view<const float, 2> matrix(index_t rows, index_t cols, float mean) {
    return {values.emplace_back(test::normal(std::size_t(rows * cols), mean, 0.2f, rng)).data(),
            {rows, cols}};
  }
  tensor_view<const float, 1> vector(index_t n, float mean) { return {matrix(1, n, mean).data(), {n}}; }
  attn::compressor_weights<bf16_matrix> compressor(index_t ratio, index_t coff, index_t dim) {
    return {other(coff * dim, C.d_model), other(coff * dim, C.d_model), matrix(ratio, coff * dim, 0.0f),
            vector(dim, 1.0f)};
  }
  typename layer_type::weights weights() {
    const index_t d = C.d_model, c = C.head_dim, h = C.n_heads, go = index_t{C.o_groups} * C.o_lora_rank;
    typename layer_type::weights w{linear(C.q_lora_rank, d),
                                   vector(C.q_lora_rank, 1.0f),
                                   linear(h * c, C.q_lora_rank),
                                   linear(c, d),
                                   vector(c, 1.0f),
                                   linear(go, h * c / C.o_groups),
                                   linear(d, go),
                                   vector(h, 0.0f),
                                   {},
                                   {}};
    constexpr int ratio = P::compress_ratio(attn::shape_of<C>);
    if (ratio > 0) w.compressor = compressor(ratio, ratio == C.csa_ratio ? 2 : 1, c);
    w.indexer = {linear(index_t{C.index_n_heads} * C.index_head_dim, C.q_lora_rank),
                 other(C.index_n_heads, d), compressor(C.csa_ratio, 2, C.index_head_dim)};
    return w;
  }
  layer_type layer = *layer_type::create(weights(), config::tiny_params);
};

// The exact layer of tiny_hybrid (window 8, CSA blocks of 4, HCA blocks of 16), fp32 weights.
template <class P>
struct exact_layer : test::random_layer<config::tiny_hybrid, P> {
  using layer_type = attn::attention_layer<config::tiny_hybrid, P>;
  using policy = P;
  static constexpr model_config C = config::tiny_hybrid;
  static constexpr const char* numerics_name = "exact";
  exact_layer() : test::random_layer<config::tiny_hybrid, P>(29) {}
};

// Six sequences: a first call from position 0 with `history` tokens each, then a second call
// with `step` tokens each, every sequence at its own position. In both calls sequences cross the
// boundaries of 64-row chunks, and entries with no tokens sit between others.
const std::vector<index_t> history = {5, 0, 37, 64, 3, 90}, step = {1, 70, 3, 64, 0, 130};
constexpr index_t capacity = 256;

// Every sequence's rows of x (its history then its step) run alone: the history in one call,
// the step in another. Returns the outputs of all of its rows.
template <class L>
std::vector<float> alone(const L& l, const std::vector<float>& x, index_t h, index_t s) {
  constexpr index_t d = L::C.d_model;
  auto cache = L::layer_type::make_cache(1, capacity);
  REQUIRE(cache.ok());
  const auto seq = *cache->open();
  std::vector<float> y(x.size());
  REQUIRE(l.layer.forward(*cache, 0, seq, {x.data(), {h, d}}, {y.data(), {h, d}}).ok());
  REQUIRE(l.layer.forward(*cache, 0, seq, {x.data() + h * d, {s, d}}, {y.data() + h * d, {s, d}}).ok());
  return y;
}

// The same sequences through one cache in two batched calls (histories, then steps), their rows
// back to back in batch order. Returns each sequence's outputs (history then step).
template <class L>
std::vector<std::vector<float>> batched(const L& l, const std::vector<std::vector<float>>& x) {
  constexpr index_t d = L::C.d_model;
  const std::size_t n = x.size();
  auto cache = L::layer_type::make_cache(index_t(n), capacity);
  REQUIRE(cache.ok());
  std::vector<attn::sequence_id> seq;
  for (std::size_t i = 0; i < n; ++i) seq.push_back(*cache->open());
  std::vector<std::vector<float>> y(n);
  for (std::size_t i = 0; i < n; ++i) y[i].resize(x[i].size());
  for (const bool second : {false, true}) {
    std::vector<attn::sequence_tokens> batch;
    std::vector<float> xb;
    for (std::size_t i = 0; i < n; ++i) {
      const index_t from = second ? history[i] : 0, tokens = second ? step[i] : history[i];
      batch.push_back({seq[i], tokens});
      xb.insert(xb.end(), x[i].begin() + from * d, x[i].begin() + (from + tokens) * d);
    }
    const index_t rows = index_t(xb.size()) / d;
    std::vector<float> yb(xb.size());
    REQUIRE(l.layer.forward(*cache, 0, batch, {xb.data(), {rows, d}}, {yb.data(), {rows, d}}).ok());
    index_t row = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const index_t from = second ? history[i] : 0;
      std::copy_n(yb.begin() + row * d, batch[i].tokens * d, y[i].begin() + from * d);
      row += batch[i].tokens;
      CHECK(*cache->tokens(seq[i], 0) == from + batch[i].tokens);
    }
  }
  return y;
}

template <class L>
void check_batch_equals_alone() {
  const L l;
  constexpr index_t d = L::C.d_model;
  std::mt19937 rng(30);
  std::vector<std::vector<float>> x;
  for (std::size_t i = 0; i < history.size(); ++i)
    x.push_back(test::normal(std::size_t((history[i] + step[i]) * d), 0.0f, 1.0f, rng));

  const int threads = max_threads();
  set_num_threads(1);
  const auto one = batched(l, x);
  set_num_threads(2);
  const auto two = batched(l, x);
  set_num_threads(threads);
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO(L::policy::name << ", " << L::numerics_name << " numerics, sequence " << i);
    const auto ref = alone(l, x[i], history[i], step[i]);
    REQUIRE(one[i].size() == ref.size());
    CHECK(std::memcmp(one[i].data(), ref.data(), ref.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(two[i].data(), one[i].data(), ref.size() * sizeof(float)) == 0);
  }
}
}  // namespace

TEST_CASE("a batch of sequences with mixed token counts equals each sequence alone, exact numerics",
          "[attn][batch]") {
  check_batch_equals_alone<exact_layer<attn::swa>>();
  check_batch_equals_alone<exact_layer<attn::csa>>();
  check_batch_equals_alone<exact_layer<attn::hca>>();
}

TEST_CASE("a batch of sequences with mixed token counts equals each sequence alone, released numerics",
          "[attn][batch][released]") {
  check_batch_equals_alone<released_layer<attn::swa>>();
  check_batch_equals_alone<released_layer<attn::csa>>();
  check_batch_equals_alone<released_layer<attn::hca>>();
}
