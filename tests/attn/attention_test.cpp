// The attention layer's properties for every policy: decode == prefill == chunked prefill,
// causality, CSA with a large top-k == attending to every visible entry. (The cache's own
// properties and bad input: kv_cache_test.cpp.)
#include <cxxabi.h>
#include <catch2/catch.hpp>

#include <array>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include "allocations.hpp"
#include "attn/attn_test_support.hpp"
#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"
#include "fixture.hpp"
#include "random.hpp"

namespace {
using namespace dsv4;
using config::model_config;

// Window 8 with HCA blocks of 16 (tiny_hybrid), and the real model's window of 128 with HCA
// blocks of 128 and a top-k that leaves entries unselected.
constexpr model_config tiny = config::tiny_hybrid;
constexpr model_config tiny_w128 = [] {
  model_config c = config::tiny_hybrid;
  c.window = 128;
  c.hca_ratio = 128;
  c.compress_ratios = config::compress_schedule{}.append({0}).append({4, 128}, 2).append({0}).ratios;
  c.index_topk = 16;
  return c;
}();
// The released cache layout (FP8 entries, FP4 index keys) on a latent it can hold (64 NoPE dims,
// 16 RoPE dims, 32-dim index keys), for the released numerics.
constexpr model_config tiny_released = [] {
  model_config c = config::tiny_hybrid;
  c.head_dim = 80;
  c.nope_dim = 64;
  c.rope_dim = 16;
  c.index_head_dim = 32;
  c.cache_format = config::kv_format::fp8_released;
  return c;
}();
// A top-k larger than any number of visible entries in these tests.
constexpr model_config tiny_all = [] {
  model_config c = config::tiny_hybrid;
  c.index_topk = 1000;
  return c;
}();

// csa without the indexer: every visible overlapping entry.
struct csa_every_entry : attn::csa {
  static constexpr int top_k(const attn::shape&) { return 0; }
};
static_assert(attn::attention_policy<csa_every_entry>);

// A layer of policy P over random weights it owns.

// Runs x (S, d) through a fresh cache in calls of the given lengths (cycled until S is covered).
template <attn::shape Shape, class P, numerics Num>
std::vector<float> run(const attn::attention<Shape, P, Num>& layer, const std::vector<float>& x,
                       index_t capacity, const std::vector<index_t>& chunks) {
  const index_t d = Shape.d_model, S = static_cast<index_t>(x.size()) / d;
  auto cache = attn::attention<Shape, P, Num>::make_cache(1, capacity);
  REQUIRE(cache.ok());
  const auto seq = cache->open();
  REQUIRE(seq.ok());
  std::vector<float> y(x.size());
  for (index_t done = 0, k = 0; done < S; ++k) {
    const index_t n = std::min(chunks[std::size_t(k) % chunks.size()], S - done);
    const tensor_view<const float, 2> xv(x.data() + done * d, {n, d});
    const tensor_view<float, 2> yv(y.data() + done * d, {n, d});
    REQUIRE(layer.forward(*cache, 0, *seq, xv, yv).ok());
    done += n;
  }
  REQUIRE(*cache->tokens(*seq, 0) == S);
  return y;
}

template <model_config C, class P, numerics Num = numerics::exact>
void check_decode_equals_prefill() {
  const test::random_layer<C, P, Num> r(11);
  const auto* layer = &r.layer;
  std::mt19937 rng(5);
  for (index_t S : {1, 3, 4, 5, 127, 128, 129, 300}) {
    const auto x = test::normal(std::size_t(S * C.d_model), 0.0f, 1.0f, rng);
    const auto whole = run(*layer, x, 320, {S});
    const auto tokens = run(*layer, x, 320, {1});
    const auto chunked = run(*layer, x, 320, {7, 1, 16, 33});
    INFO(P::name << " S = " << S);
    CHECK(test::rel_l2(tokens, whole) <= 1e-5);
    CHECK(test::rel_l2(chunked, whole) <= 1e-5);
  }
}

template <model_config C, class P>
void check_causal() {
  const test::random_layer<C, P> r(12);
  const auto* layer = &r.layer;
  std::mt19937 rng(6);
  const index_t S = 200, d = C.d_model;
  auto x = test::normal(std::size_t(S * d), 0.0f, 1.0f, rng);
  const auto before = run(*layer, x, S, {S});
  for (index_t j : {0, 37, 150, 199}) {
    auto changed = x;
    for (index_t i = 0; i < d; ++i) changed[std::size_t(j * d + i)] += 0.5f;
    const auto after = run(*layer, changed, S, {S});
    INFO(P::name << " token " << j);
    CHECK(std::equal(before.begin(), before.begin() + j * d, after.begin()));
    CHECK(!std::equal(before.begin() + j * d, before.begin() + (j + 1) * d, after.begin() + j * d));
  }
}
}  // namespace

TEST_CASE("decode token by token and chunked prefill equal one prefill", "[attn]") {
  check_decode_equals_prefill<tiny, attn::swa>();
  check_decode_equals_prefill<tiny, attn::csa>();
  check_decode_equals_prefill<tiny, attn::hca>();
  check_decode_equals_prefill<tiny, attn::dense>();
  check_decode_equals_prefill<tiny_w128, attn::swa>();
  check_decode_equals_prefill<tiny_w128, attn::csa>();
  check_decode_equals_prefill<tiny_w128, attn::hca>();
}

TEST_CASE("under released numerics decode and chunked prefill still equal one prefill", "[attn][released]") {
  check_decode_equals_prefill<tiny_released, attn::csa, numerics::released>();
  check_decode_equals_prefill<tiny_released, attn::hca, numerics::released>();
  // The roundings change the outputs.
  const test::random_layer<tiny_released, attn::csa, numerics::released> released(13);
  const test::random_layer<tiny_released, attn::csa> exact(13);
  std::mt19937 rng(7);
  const auto x = test::normal(std::size_t(40 * tiny_released.d_model), 0.0f, 1.0f, rng);
  CHECK(test::rel_l2(run(released.layer, x, 40, {40}), run(exact.layer, x, 40, {40})) > 1e-4);
}

TEST_CASE("an output never depends on later tokens", "[attn]") {
  check_causal<tiny, attn::swa>();
  check_causal<tiny, attn::csa>();
  check_causal<tiny, attn::hca>();
  check_causal<tiny, attn::dense>();
}

TEST_CASE("CSA with top-k past the visible entries attends to all of them", "[attn]") {
  const auto store = test::random_attention_store<tiny_all>(13);
  const auto w = test::attention_views(store, tiny_all.csa_ratio);
  const auto sparse = attn::attention_layer<tiny_all, attn::csa>::create(w, config::tiny_params);
  const auto every = attn::attention_layer<tiny_all, csa_every_entry>::create(w, config::tiny_params);
  const auto narrow = attn::attention_layer<tiny, attn::csa>::create(w, config::tiny_params);
  REQUIRE((sparse.ok() && every.ok() && narrow.ok()));
  std::mt19937 rng(7);
  const index_t S = 150;
  const auto x = test::normal(std::size_t(S * tiny.d_model), 0.0f, 1.0f, rng);
  const auto a = run(*sparse, x, S, {S});
  const auto b = run(*every, x, S, {S});
  CHECK(test::rel_l2(a, b) <= 1e-6);
  // With top-4 of up to 37 entries the selection matters (the comparison above can fail).
  const auto c = run(*narrow, x, S, {S});
  CHECK(test::rel_l2(c, b) > 1e-3);
}

TEST_CASE("dense attention equals SWA while the sequence fits in the window", "[attn]") {
  const auto store = test::random_attention_store<tiny>(14);
  const auto w = test::attention_views(store, 0);
  const auto window = attn::attention_layer<tiny, attn::swa>::create(w, config::tiny_params);
  const auto dense = attn::attention_layer<tiny, attn::dense>::create(w, config::tiny_params);
  REQUIRE((window.ok() && dense.ok()));
  std::mt19937 rng(8);
  const auto x = test::normal(std::size_t(40 * tiny.d_model), 0.0f, 1.0f, rng);
  const auto a = run(*window, x, 40, {40});
  const auto b = run(*dense, x, 40, {40});
  const auto d = static_cast<std::size_t>(tiny.d_model);
  const std::size_t fit = std::size_t(tiny.window) * d;
  CHECK(test::rel_l2({a.data(), fit}, {b.data(), fit}) == 0.0);
  CHECK(test::rel_l2({a.data() + fit, a.size() - fit}, {b.data() + fit, b.size() - fit}) > 1e-3);
}

TEST_CASE("visit_policy maps each layer kind of the schedule to its policy", "[attn]") {
  std::vector<std::string_view> names;
  for (int l = 0; l <= tiny.n_layers; ++l)
    names.push_back(attn::visit_policy(config::layer_kind_of(tiny, l), []<class P>() { return P::name; }));
  CHECK(names == std::vector<std::string_view>{"swa", "csa", "hca", "csa", "hca", "swa"});
}

TEST_CASE("a layer large enough to use both threads gives identical outputs on 1 and 2 threads", "[attn]") {
  // Projections of 128K+ multiply-adds and 160+ candidates: every parallel path of the layer runs.
  constexpr model_config mid = [] {
    model_config c = config::tiny_hybrid;
    c.d_model = 256;
    c.n_heads = 8;
    c.head_dim = 128;
    c.rope_dim = 64;
    c.nope_dim = 64;
    c.q_lora_rank = 128;
    c.o_lora_rank = 64;
    c.window = 128;
    c.index_n_heads = 8;
    c.index_head_dim = 64;
    c.index_topk = 8;
    return c;
  }();
  const test::random_layer<mid, attn::hca> r(17);
  std::mt19937 rng(11);
  const index_t S = 200;
  const auto x = test::normal(std::size_t(S * mid.d_model), 0.0f, 1.0f, rng);
  const int threads = max_threads();
  set_num_threads(1);
  const auto one = run(r.layer, x, S, {S});
  set_num_threads(2);
  const auto two = run(r.layer, x, S, {S});
  set_num_threads(threads);
  CHECK(one == two);
}

namespace {
// Decode steps of one layer after a prefill, with the engine's workspace: heap allocations counted
// over the steps (the prefill and the first step may size the thread team).
template <model_config C, class P, numerics Num = numerics::exact>
std::int64_t steady_state_allocations() {
  const test::random_layer<C, P, Num> r(41);
  std::mt19937 rng(42);
  const index_t d = C.d_model, S = 60;
  const auto x = test::normal(std::size_t(S * d), 0.0f, 1.0f, rng);
  std::vector<float> y(x.size());
  using layer_t = attn::attention_layer<C, P, Num>;
  auto cache = layer_t::make_cache(2, S);
  const auto a = *cache->open(), b = *cache->open();
  const test::aligned_workspace workspace(layer_t::workspace_bytes(S));
  const std::span<std::byte> ws = workspace.bytes;
  const auto step = [&](attn::sequence_id seq, index_t from, index_t n) {
    const std::array<attn::sequence_tokens, 1> batch{{{seq, n}}};
    return r.layer.forward(*cache, 0, batch, {x.data() + from * d, {n, d}}, {y.data() + from * d, {n, d}},
                           ws);
  };
  REQUIRE(step(a, 0, 40).ok());
  REQUIRE(step(b, 0, 3).ok());
  status last;
  const std::int64_t n = test::allocations_during([&] {
    for (index_t t = 40; t < S && last.ok(); ++t) last = step(a, t, 1);
    if (last.ok()) last = step(b, 3, 17);  // a chunk of a prefill, another sequence
  });
  REQUIRE(last.ok());
  return n;
}
}  // namespace

TEST_CASE("steady-state forward allocates nothing, for every policy and both numerics", "[attn]") {
  CHECK(steady_state_allocations<tiny, attn::swa>() == 0);
  CHECK(steady_state_allocations<tiny, attn::csa>() == 0);
  CHECK(steady_state_allocations<tiny, attn::hca>() == 0);
  CHECK(steady_state_allocations<tiny_released, attn::csa, numerics::released>() == 0);
  CHECK(steady_state_allocations<tiny_released, attn::hca, numerics::released>() == 0);
}

// A layer's type carries its attention shape, not the whole model config (whose 128-entry layer
// schedule and every other field made the name of a V4-Flash layer over 670 characters long).
TEST_CASE("attention layer types name their shape, not the model config", "[attn][names]") {
  using flash_csa = attn::attention_layer<config::v4_flash, attn::csa, numerics::released>;
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(typeid(flash_csa).name(), nullptr, nullptr, &status), std::free);
  REQUIRE(status == 0);
  const std::string n(name.get());
  INFO(n);
  CHECK(n.find("model_config") == std::string::npos);
  CHECK(n.find("dsv4::attn::shape{4096, 64, 512, 64, 1024, 8, 1024, 128, 4, 128, 64, 128, 512") !=
        std::string::npos);
  CHECK(n.size() < 210);
  STATIC_REQUIRE(
      std::same_as<flash_csa,
                   attn::attention<attn::shape_of<config::v4_flash>, attn::csa, numerics::released>>);
}
