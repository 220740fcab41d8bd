// A whole attention layer under numerics::released, in the released formats (FP8 linears with
// 128x128 block scales, BF16 compressors and weights_proj, the FP8/FP4 cache layout), against
// tests/fixtures/attn_released.json: a plain PyTorch emulation of the official inference code's
// Attention, Compressor and Indexer, token by token, for each layer kind
// (tests/reference/make_attn_released_fixtures.py, whose banner lists every rounding).
//
// Measured on x86-64 (AVX2/FMA, g++ 12): every output of the 40 tokens bit-identical for all three
// kinds; the exact path is 0.057-0.067 away (relative L2). Both sides accumulate the GEMMs and the
// attention sums in fp32 in different orders, so a BF16 value can differ where the two sums
// straddle a rounding boundary (as can cos and sin, which the emulation rounds correctly and a GPU
// to within two ulps), and such a flip early in the layer moves later values by about an ulp.
// Asserted, with room for other compilers and targets: at least 97% bit-identical, within 2 BF16
// ulps of the row's largest element, relative L2 below 1e-3, and the exact path above 1e-2.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "allocations.hpp"
#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"
#include "fixture.hpp"
#include "hashed_weights.hpp"
#include "random.hpp"

namespace {

using namespace dsv4;
using test::format;

// V4's 128-wide tiles at the smallest width: d = q_lora_rank = head_dim = c_I = 128.
constexpr config::model_config released_config = [] {
  config::model_config c =
      config::released_storage(config::with_released_tiles(config::tiny_hybrid), config::weight_format::f32);
  c.window = 16;
  return c;
}();
static_assert(config::is_valid_config<released_config>);

// The fixture's weights, rebuilt from the seeds its meta lists.
struct released_fixture {
  test::fixture fx = test::fixture::load("attn_released.json");
  index_t tokens = fx.meta().at("tokens");
  std::map<std::string, test::random_matrix<format::fp8>> fp8;
  std::map<std::string, std::vector<float>> grid;
  std::map<std::string, std::vector<index_t>> shape;
  std::map<std::string, test::random_matrix<format::bf16>> b16;

  released_fixture() {
    for (const auto& [name, v] : fx.meta().at("fp8").items())
      fp8.emplace(name, test::hashed_fp8(v[0], v[1], v[2], v[3]));
    for (const auto& [name, v] : fx.meta().at("grid").items()) {
      shape[name] = v[0].get<std::vector<index_t>>();
      std::size_t n = 1;
      for (index_t e : shape[name]) n *= static_cast<std::size_t>(e);
      grid[name] = test::hashed_grid(n, v[1], v[2], v[3]);
      if (shape[name].size() == 2) {  // a BF16 matrix of the checkpoint
        test::random_matrix<format::bf16> m(shape[name][0], shape[name][1], 0);
        m.b16.clear();
        for (const float g : grid[name]) m.b16.push_back(bf16(g));  // exact: the grid values are BF16
        b16.emplace(name, std::move(m));
      }
    }
  }
  fp8_matrix f8(const std::string& n) const { return fp8.at(n).view(); }
  bf16_matrix bf(const std::string& n) const { return b16.at(n).view(); }
  tensor_view<const float, 1> v1(const std::string& n) const {
    return {grid.at(n).data(), {static_cast<index_t>(grid.at(n).size())}};
  }
  tensor_view<const float, 2> v2(const std::string& n) const {
    return {grid.at(n).data(), {shape.at(n)[0], shape.at(n)[1]}};
  }
  attn::compressor_weights<bf16_matrix> compressor(const std::string& p) const {
    return {bf(p + ".wkv"), bf(p + ".wgate"), v2(p + ".ape"), v1(p + ".norm")};
  }
  attn::attention_weights_for<attn::shape_of<released_config>> weights(int ratio) const {
    attn::attention_weights_for<attn::shape_of<released_config>> w{
        f8("wq_a"), v1("q_norm"), f8("wq_b"),      f8("wkv"), v1("kv_norm"),
        f8("wo_a"), f8("wo_b"),   v1("attn_sink"), {},        {}};
    if (ratio > 0) w.compressor = compressor(ratio == released_config.csa_ratio ? "csa" : "hca");
    w.indexer = {f8("indexer.wq_b"), bf("indexer.weights_proj"), compressor("indexer")};
    return w;
  }

  // The layer's outputs for every token, fed `per_call` tokens at a time through the engine's
  // workspace; later_allocations receives the heap allocations of every call after the first.
  template <class P, numerics Num>
  std::vector<float> run(index_t per_call, std::int64_t* later_allocations = nullptr) const {
    using layer_t = attn::attention_layer<released_config, P, Num>;
    const auto layer =
        layer_t::create(weights(P::compress_ratio(attn::shape_of<released_config>)), config::tiny_params);
    REQUIRE(layer.ok());
    auto cache = layer_t::make_cache(1, tokens);
    const auto seq = *cache->open();
    const index_t d = released_config.d_model;
    const std::vector<float>& x = grid.at("x");
    std::vector<float> y(x.size());
    const test::aligned_workspace workspace(layer_t::workspace_bytes(tokens));
    const std::span<std::byte> ws = workspace.bytes;
    std::int64_t later = 0;
    for (index_t t = 0; t < tokens; t += per_call) {
      const index_t n = std::min(per_call, tokens - t);
      const std::array<attn::sequence_tokens, 1> batch{{{seq, n}}};
      status st;
      const std::int64_t a = test::allocations_during([&] {
        st = layer->forward(*cache, 0, batch, {x.data() + t * d, {n, d}}, {y.data() + t * d, {n, d}}, ws);
      });
      REQUIRE(st.ok());
      if (t > 0) later += a;
    }
    if (later_allocations) *later_allocations = later;
    return y;
  }
};

template <class P>
void check_kind(const released_fixture& f, const std::string& kind) {
  const auto ref = f.fx.tensor(kind + ".y").data;
  const auto got = f.run<P, numerics::released>(f.tokens);
  const auto a = test::compare_bf16_rows(got, ref, released_config.d_model);
  const double exact = test::rel_l2(f.run<P, numerics::exact>(f.tokens), ref);
  WARN(kind << ": " << a.identical * 100 << "% bit-identical, worst " << a.worst_row_ulps
            << " row ulps, rel L2 " << a.rel_l2 << "; exact numerics: rel L2 " << exact);
  CHECK(a.all_bf16);
  CHECK(a.identical >= 0.97);
  CHECK(a.worst_row_ulps <= 2.0);
  CHECK(a.rel_l2 < 1e-3);
  CHECK(exact > 1e-2);  // the roundings matter: the exact path is far outside the released one's error
  // Decoding in chunks of 7 tokens (and token by token) computes the same bits as one prefill.
  CHECK(f.run<P, numerics::released>(7) == got);
  std::int64_t allocations = -1;
  CHECK(f.run<P, numerics::released>(1, &allocations) == got);
  CHECK(allocations == 0);  // decode steps over FP8 weights and the released cache allocate nothing
}

}  // namespace

TEST_CASE("released attention layer: SWA matches the emulation of the reference",
          "[attn][fixture][released]") {
  check_kind<attn::swa>(released_fixture{}, "swa");
}

TEST_CASE("released attention layer: CSA matches the emulation of the reference",
          "[attn][fixture][released]") {
  check_kind<attn::csa>(released_fixture{}, "csa");
}

TEST_CASE("released attention layer: HCA matches the emulation of the reference",
          "[attn][fixture][released]") {
  check_kind<attn::hca>(released_fixture{}, "hca");
}

namespace {

// Two heads in two output groups, so that wo_a's FP8 rows are sliced per group at a scale block.
constexpr config::model_config grouped_fp8 = [] {
  config::model_config c = released_config;
  c.o_groups = 2;
  return c;
}();
constexpr config::model_config grouped_f32 = [] {
  config::model_config c = grouped_fp8;
  c.linear_format = c.other_format = config::weight_format::f32;
  return c;
}();

// Weights of grouped_fp8 from the hash, and the same values as fp32 matrices.
struct format_twins {
  std::vector<test::random_matrix<format::fp8>> fp8;
  std::vector<test::random_matrix<format::bf16>> b16;
  std::vector<std::vector<float>> f32, vec;
  std::uint32_t seed = 498;  // wo_a (the sixth tensor) then has two different block scales

  fp8_matrix f8(index_t rows, index_t cols) {
    fp8.push_back(test::hashed_fp8(rows, cols, seed++, -5));
    f32.push_back(fp8.back().dequantized());
    return fp8.back().view();
  }
  bf16_matrix bf(index_t rows, index_t cols) {
    test::random_matrix<format::bf16> m(rows, cols, 0);
    m.b16.clear();
    for (const float g : test::hashed_grid(static_cast<std::size_t>(rows * cols), seed++, 0.0f, -10))
      m.b16.push_back(bf16(g));
    b16.push_back(std::move(m));
    f32.push_back(b16.back().dequantized());
    return b16.back().view();
  }
  tensor_view<const float, 2> vec2(index_t rows, index_t cols, float center) {
    vec.push_back(test::hashed_grid(static_cast<std::size_t>(rows * cols), seed++, center, -7));
    return {vec.back().data(), {rows, cols}};
  }
  tensor_view<const float, 1> vec1(index_t n, float center) {
    const auto v = vec2(1, n, center);
    return {v.data(), {n}};
  }
};

}  // namespace

TEST_CASE("FP8 and BF16 projection weights compute what their values do as fp32", "[attn][released]") {
  constexpr auto c = grouped_fp8;
  format_twins t;
  t.fp8.reserve(16), t.b16.reserve(16), t.f32.reserve(32), t.vec.reserve(16);  // views stay valid
  const index_t d = c.d_model, hc = index_t{c.n_heads} * c.head_dim, go = index_t{c.o_groups} * c.o_lora_rank;
  const auto compressor = [&](index_t channels, index_t dim, int ratio) {
    return attn::compressor_weights<bf16_matrix>{t.bf(channels, d), t.bf(channels, d),
                                                 t.vec2(ratio, channels, 0.0f), t.vec1(dim, 1.0f)};
  };
  attn::attention_weights_for<attn::shape_of<c>> w{t.f8(c.q_lora_rank, d),
                                                   t.vec1(c.q_lora_rank, 1.0f),
                                                   t.f8(hc, c.q_lora_rank),
                                                   t.f8(c.head_dim, d),
                                                   t.vec1(c.head_dim, 1.0f),
                                                   t.f8(go, hc / c.o_groups),
                                                   t.f8(d, go),
                                                   t.vec1(c.n_heads, 0.0f),
                                                   compressor(2 * c.head_dim, c.head_dim, c.csa_ratio),
                                                   {}};
  w.indexer = {t.f8(index_t{c.index_n_heads} * c.index_head_dim, c.q_lora_rank), t.bf(c.index_n_heads, d),
               compressor(2 * c.index_head_dim, c.index_head_dim, c.csa_ratio)};
  // The same tensors in order of creation: fp32 twins of every matrix.
  const auto m = [&](std::size_t i, const auto& like) {
    return f32_matrix{{t.f32[i].data(), {like.rows(), like.cols()}}};
  };
  attn::attention_weights_for<attn::shape_of<grouped_f32>> w32{
      m(0, w.wq_a),
      w.q_norm,
      m(1, w.wq_b),
      m(2, w.wkv),
      w.kv_norm,
      m(3, w.wo_a),
      m(4, w.wo_b),
      w.attn_sink,
      {m(5, w.compressor.wkv), m(6, w.compressor.wgate), w.compressor.ape, w.compressor.norm},
      {m(7, w.indexer.wq_b),
       m(8, w.indexer.weights_proj),
       {m(9, w.indexer.compressor.wkv), m(10, w.indexer.compressor.wgate), w.indexer.compressor.ape,
        w.indexer.compressor.norm}}};
  const index_t tokens = 24;
  const auto x = test::hashed_grid(static_cast<std::size_t>(tokens * d), 599, 0.0f, -6);
  const auto run = [&]<config::model_config C>(const auto& weights) {
    const auto layer = attn::attention_layer<C, attn::csa>::create(weights, config::tiny_params);
    REQUIRE(layer.ok());
    auto cache = attn::attention_layer<C, attn::csa>::make_cache(1, tokens);
    std::vector<float> y(x.size());
    REQUIRE(layer->forward(*cache, 0, *cache->open(), {x.data(), {tokens, d}}, {y.data(), {tokens, d}}).ok());
    return y;
  };
  // The two output groups' wo_a rows lie in scale blocks of different scales.
  REQUIRE(w.wo_a.block_scale(0, 0).bits != w.wo_a.block_scale(c.o_lora_rank, 0).bits);
  const auto y8 = run.template operator()<grouped_fp8>(w);
  const auto y32 = run.template operator()<grouped_f32>(w32);
  // FP8 and fp32 weights sum their products in different lane orders (core/linear_op.hpp), so the two
  // agree to rounding; a misread scale or a group sliced at the wrong block would be off by far
  // more.
  CHECK(test::rel_l2(y8, y32) < 1e-6);
  CHECK(std::any_of(y8.begin(), y8.end(), [](float v) { return v != 0.0f; }));
}
