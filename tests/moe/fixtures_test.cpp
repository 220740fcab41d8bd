// Golden fixtures from the Hugging Face transformers DeepseekV4 MoE modules (made by
// tests/reference/make_moe_fixtures.py, float32, tiny sizes): routers, routed experts, the shared
// expert and the whole sparse MoE block, score- and hash-routed. Tolerance: relative L2 1e-5 (fp32
// sums in a different order, HF's 1e-20 in the renormalization and its routing weight after w2 are
// all orders of magnitude below it).
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

#include "dsv4/moe/moe_ffn.hpp"
#include "fixture.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;
using dsv4::moe::swiglu_weights;

struct hf_block {
  dsv4::test::fixture fx = dsv4::test::fixture::load("moe_block.json");
  index_t d = fx.meta().at("d"), inter = fx.meta().at("inter"), n_experts = fx.meta().at("n_experts"),
          k = fx.meta().at("top_k"), vocab = fx.meta().at("vocab"), n = fx.meta().at("tokens");
  float route_scale = fx.meta().at("route_scale"), limit = fx.meta().at("swiglu_limit");
  std::vector<float> x = fx.tensor("x").data, gate = fx.tensor("gate.weight").data,
                     bias = fx.tensor("gate.bias").data, gate_up = fx.tensor("experts.gate_up_proj").data,
                     down = fx.tensor("experts.down_proj").data, sh_gate = fx.tensor("shared.gate_proj").data,
                     sh_up = fx.tensor("shared.up_proj").data, sh_down = fx.tensor("shared.down_proj").data;
  std::vector<std::int32_t> token_ids = as_ids<std::int32_t>("token_ids");
  std::vector<std::int64_t> tid2eid = as_ids<std::int64_t>("gate.tid2eid");  // int64, as the checkpoint
  std::vector<swiglu_weights<dsv4::f32_matrix>> experts;
  swiglu_weights<dsv4::f32_matrix> shared{
      {{sh_gate.data(), {inter, d}}}, {{sh_up.data(), {inter, d}}}, {{sh_down.data(), {d, inter}}}};

  hf_block() {
    // gate_up_proj (E, 2I, d): rows [0, I) are w1 (gate), rows [I, 2I) w3 (up); down_proj (E, d, I).
    for (index_t e = 0; e < n_experts; ++e) {
      const float* gu = gate_up.data() + e * 2 * inter * d;
      experts.push_back(
          {{{gu, {inter, d}}}, {{gu + inter * d, {inter, d}}}, {{down.data() + e * d * inter, {d, inter}}}});
    }
  }
  template <class Id>
  std::vector<Id> as_ids(const char* name) const {
    const auto f = fx.tensor(name).data;
    return std::vector<Id>(f.begin(), f.end());
  }
  dsv4::tensor_view<const float, 2> xv() const { return {x.data(), {n, d}}; }
  dsv4::moe::score_router<dsv4::f32_matrix> score() const {
    return {{{gate.data(), {n_experts, d}}}, {bias.data(), {n_experts}}, k, route_scale};
  }
  dsv4::moe::hash_router<dsv4::f32_matrix> hash() const {
    return {{{gate.data(), {n_experts, d}}}, {tid2eid.data(), {vocab, k}}, route_scale};
  }
};

// Routes a batch and compares ids and weights with the fixture's (sorted by expert id per token).
template <class Router>
void check_routes(const hf_block& b, const Router& r, const char* prefix) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(b.n * b.k));
  std::vector<float> w(ids.size()), scores(static_cast<std::size_t>(b.n * b.n_experts));
  REQUIRE(r.route({b.xv(), b.token_ids},
                  {{ids.data(), {b.n, b.k}}, {w.data(), {b.n, b.k}}, {scores.data(), {b.n, b.n_experts}}})
              .ok());
  std::vector<float> sorted_ids, sorted_w;
  for (index_t t = 0; t < b.n; ++t) {
    std::vector<index_t> order(static_cast<std::size_t>(b.k));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](index_t a, index_t c) { return ids[t * b.k + a] < ids[t * b.k + c]; });
    for (index_t j : order) {
      sorted_ids.push_back(static_cast<float>(ids[t * b.k + j]));
      sorted_w.push_back(w[t * b.k + j]);
    }
  }
  CHECK(sorted_ids == b.fx.tensor(std::string(prefix) + ".indices").data);
  CHECK(dsv4::test::rel_l2(sorted_w, b.fx.tensor(std::string(prefix) + ".weights").data) < 1e-5);
  // The affinities are sqrt(softplus) of HF's logits.
  const auto logits = b.fx.tensor("score.logits").data;
  std::vector<float> ref(logits.size());
  std::transform(logits.begin(), logits.end(), ref.begin(), [](float l) { return dsv4::moe::affinity(l); });
  CHECK(dsv4::test::rel_l2(scores, ref) < 1e-5);
}

template <class Layer>
std::vector<float> run_layer(const hf_block& b, const Layer& layer) {
  std::vector<float> y(static_cast<std::size_t>(b.n * b.d));
  dsv4::test::aligned_workspace ws(layer.workspace_bytes(b.n));
  REQUIRE(layer.forward({b.xv(), b.token_ids}, {y.data(), {b.n, b.d}}, ws.bytes).ok());
  return y;
}

}  // namespace

TEST_CASE("moe fixtures: the fixture exercises the bias and the clamp") {
  // Asked of the library, not of the fixture's metadata: a router that ignored the bias in
  // selection, or experts that skipped the clamp, would give the same results as these controls,
  // and the comparisons with HF below could not tell.
  const hf_block b;
  const auto experts_of = [&](const dsv4::moe::score_router<dsv4::f32_matrix>& r) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(b.n * b.k));
    std::vector<float> w(ids.size()), scores(static_cast<std::size_t>(b.n * b.n_experts));
    REQUIRE(r.route({b.xv(), b.token_ids},
                    {{ids.data(), {b.n, b.k}}, {w.data(), {b.n, b.k}}, {scores.data(), {b.n, b.n_experts}}})
                .ok());
    for (index_t t = 0; t < b.n; ++t) std::sort(ids.begin() + t * b.k, ids.begin() + (t + 1) * b.k);
    return ids;
  };
  auto unbiased = b.score();
  unbiased.bias = {};
  const auto with_bias = experts_of(b.score()), without_bias = experts_of(unbiased);
  index_t tokens_moved = 0;
  for (index_t t = 0; t < b.n; ++t)
    tokens_moved += !std::equal(with_bias.begin() + t * b.k, with_bias.begin() + (t + 1) * b.k,
                                without_bias.begin() + t * b.k);
  WARN("tokens whose experts the bias changes: " << tokens_moved << " of " << b.n);
  CHECK(tokens_moved >= 2);

  using score_layer = dsv4::moe::moe_ffn<dsv4::moe::score_router<dsv4::f32_matrix>, dsv4::f32_matrix>;
  const auto clamped = run_layer(b, score_layer{b.score(), b.experts, b.shared, b.limit});
  const auto unclamped = run_layer(b, score_layer{b.score(), b.experts, b.shared, 0.0f});
  index_t rows_changed = 0;
  for (index_t t = 0; t < b.n; ++t)
    rows_changed +=
        !std::equal(clamped.begin() + t * b.d, clamped.begin() + (t + 1) * b.d, unclamped.begin() + t * b.d);
  WARN("output rows the clamp changes: " << rows_changed << " of " << b.n);
  CHECK(rows_changed >= 2);
  CHECK(dsv4::test::rel_l2(unclamped, b.fx.tensor("score.out").data) > 1e-3);
}

TEST_CASE("moe fixtures: score and hash routers match DeepseekV4TopKRouter and DeepseekV4HashRouter") {
  const hf_block b;
  check_routes(b, b.score(), "score");
  check_routes(b, b.hash(), "hash");
}

TEST_CASE("moe fixtures: the shared expert matches DeepseekV4MLP") {
  const hf_block b;
  std::vector<float> y(static_cast<std::size_t>(b.n * b.d)),
      scratch(static_cast<std::size_t>(dsv4::moe::swiglu_scratch_floats(b.shared, b.n)));
  REQUIRE(dsv4::moe::swiglu_forward(b.shared, b.xv(), {}, b.limit, {y.data(), {b.n, b.d}}, scratch).ok());
  CHECK(dsv4::test::rel_l2(y, b.fx.tensor("shared_out").data) < 1e-5);
}

TEST_CASE(
    "moe fixtures: routed experts and whole blocks match DeepseekV4Experts and DeepseekV4SparseMoeBlock") {
  const hf_block b;
  using score_layer = dsv4::moe::moe_ffn<dsv4::moe::score_router<dsv4::f32_matrix>, dsv4::f32_matrix>;
  using hash_layer = dsv4::moe::moe_ffn<dsv4::moe::hash_router<dsv4::f32_matrix>, dsv4::f32_matrix>;
  CHECK(dsv4::test::rel_l2(run_layer(b, score_layer{b.score(), b.experts, std::nullopt, b.limit}),
                           b.fx.tensor("routed_out").data) < 1e-5);
  CHECK(dsv4::test::rel_l2(run_layer(b, score_layer{b.score(), b.experts, b.shared, b.limit}),
                           b.fx.tensor("score.out").data) < 1e-5);
  CHECK(dsv4::test::rel_l2(run_layer(b, hash_layer{b.hash(), b.experts, b.shared, b.limit}),
                           b.fx.tensor("hash.out").data) < 1e-5);
}
