// generate and generate_speculative on the committed tiny checkpoint: greedy generate equals
// transformers' generate; a seed gives the same sampled text whatever ran before on the cache;
// speculative greedy decoding with an MTP block equals plain greedy decoding.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/model/generate.hpp"
#include "fixture.hpp"

using namespace dsv4;

namespace {

constexpr config::model_config C = config::tiny_v4;
using lm = model::causal_lm<C>;

const io::loaded_model<C>& tiny() {
  static auto m = io::load_model<C>(std::string(DSV4_FIXTURE_DIR) + "/tiny_v4");
  REQUIRE(m.ok());
  return *m;
}

std::vector<std::int32_t> prompt_of(std::size_t n) {
  const auto f = test::fixture::load("tiny_v4_model.json");
  auto p = f.meta().at("prompt").get<std::vector<std::int32_t>>();
  p.resize(n);
  return p;
}

model::generation run(const lm& m, std::span<const std::int32_t> prompt, const model::sampling_params& sp,
                      index_t n, bool speculative = false) {
  // Speculative decoding drops a rejected draft: the cache must allow truncating one token.
  auto cache = lm::make_cache(attn::kv_cache_options{.max_sequences = 1, .capacity = 256, .max_truncate = 1});
  REQUIRE(cache.ok());
  const auto seq = *cache->open();
  const model::stop_condition stop{{}, n};
  auto g = speculative ? model::generate_speculative(m, *cache, seq, prompt, stop)
                       : model::generate(m, *cache, seq, prompt, sp, stop);
  INFO((g.ok() ? std::string() : g.error().message()));
  REQUIRE(g.ok());
  return *g;
}

}  // namespace

TEST_CASE("generate: greedy decoding gives transformers' generate tokens", "[model][generate]") {
  const auto f = test::fixture::load("tiny_v4_model.json");
  const auto want = f.meta().at("greedy").get<std::vector<std::int32_t>>();
  auto m = lm::create(tiny().weights(), tiny().params());
  REQUIRE(m.ok());
  const auto prompt = prompt_of(f.meta().at("greedy_prompt_len").get<std::size_t>());
  CHECK(run(*m, prompt, {}, static_cast<index_t>(want.size())).tokens == want);
}

TEST_CASE("generate: a seed gives the same sampled tokens, another seed other tokens", "[model][generate]") {
  auto m = lm::create(tiny().weights(), tiny().params());
  REQUIRE(m.ok());
  const auto prompt = prompt_of(12);
  const model::sampling_params a{.temperature = 1.0f, .top_k = 40, .top_p = 0.95f, .min_p = 0.01f, .seed = 7};
  model::sampling_params b = a;
  b.seed = 8;
  const auto ta = run(*m, prompt, a, 24).tokens;
  CHECK(run(*m, prompt, a, 24).tokens == ta);
  CHECK(run(*m, prompt, b, 24).tokens != ta);
  CHECK(ta.size() == 24);
}

namespace {

// tiny_v4's file holds no MTP block: one assembled from its own blocks (the SWA attention and mHC
// sites of layer 0, the score-routed MoE of layer 2, the final norm and HC head) with random
// e_proj and h_proj.
struct mtp_model {
  std::vector<float> e_proj, h_proj;  // (d, d)
  model::model_weights<C> w;
};
mtp_model with_mtp(unsigned seed) {
  constexpr index_t d = C.d_model;
  mtp_model x{std::vector<float>(d * d), std::vector<float>(d * d), tiny().weights()};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.15f);
  for (float& v : x.e_proj) v = normal(rng);
  for (float& v : x.h_proj) v = normal(rng);
  model::mtp_weights<C> m;
  m.block = x.w.layers[0];
  const model::block_weights<C>& scored = x.w.layers[2];
  m.block.gate = scored.gate;
  m.block.gate_bias = scored.gate_bias;
  m.block.tid2eid = {};
  m.block.experts = scored.experts;
  m.block.shared = scored.shared;
  m.e_proj = f32_matrix{tensor_view<const float, 2>(x.e_proj.data(), {d, d})};
  m.h_proj = f32_matrix{tensor_view<const float, 2>(x.h_proj.data(), {d, d})};
  m.enorm = x.w.layers[1].attn_norm;
  m.hnorm = x.w.layers[1].ffn_norm;
  m.norm = x.w.norm;
  m.hc_head = x.w.hc_head;
  x.w.mtp.push_back(m);
  return x;
}

}  // namespace

TEST_CASE("generate_speculative: MTP drafts verified two tokens at a time give plain greedy's tokens",
          "[model][generate]") {
  const mtp_model x = with_mtp(11);
  auto m = lm::create(x.w, tiny().params());
  INFO((m.ok() ? std::string() : m.error().message()));
  REQUIRE(m.ok());
  REQUIRE(m->has_mtp());
  index_t accepted = 0;  // both ways of a verification must run: a draft accepted and one dropped
  for (const std::size_t n : {1u, 9u, 40u}) {
    const auto prompt = prompt_of(n);
    const auto plain = run(*m, prompt, {}, 48);
    const auto fast = run(*m, prompt, {}, 48, /*speculative=*/true);
    INFO("prompt " << n << ": " << fast.accepted << " of " << fast.drafted << " drafts accepted");
    CHECK(fast.tokens == plain.tokens);
    CHECK(fast.drafted > 0);
    CHECK(fast.drafted <= 48);
    CHECK(fast.accepted < fast.drafted);
    accepted += fast.accepted;
  }
  CHECK(accepted > 0);
}

TEST_CASE("generate: on_token sees every token in order, stops early, and changes no token",
          "[model][generate]") {
  auto m = lm::create(tiny().weights(), tiny().params());
  REQUIRE(m.ok());
  const auto prompt = prompt_of(12);
  const model::sampling_params sp{.temperature = 1.0f, .top_k = 40, .seed = 3};
  const auto plain = run(*m, prompt, sp, 20);
  REQUIRE(plain.tokens.size() == 20);
  CHECK(plain.prefill_seconds > 0);
  CHECK(plain.decode_seconds > 0);

  auto cache = lm::make_cache(1, 256);
  REQUIRE(cache.ok());
  const auto seq = *cache->open();
  std::vector<std::int32_t> seen;
  auto g = model::generate(*m, *cache, seq, prompt, sp, model::stop_condition{{}, 20},
                           [&](std::int32_t t) { seen.push_back(t); });  // void: never stops
  REQUIRE(g.ok());
  CHECK(g->tokens == plain.tokens);
  CHECK(seen == plain.tokens);
  // The cache holds the prompt and every token but the last.
  CHECK(*cache->tokens(seq, 0) == static_cast<index_t>(prompt.size() + 19));

  // Stopping after the 7th token: 7 tokens, the first 7 of the run without the callback.
  auto cache2 = lm::make_cache(1, 256);
  REQUIRE(cache2.ok());
  const auto seq2 = *cache2->open();
  seen.clear();
  auto early =
      model::generate(*m, *cache2, seq2, prompt, sp, model::stop_condition{{}, 20}, [&](std::int32_t t) {
        seen.push_back(t);
        return seen.size() < 7;
      });
  REQUIRE(early.ok());
  const std::vector<std::int32_t> first7(plain.tokens.begin(), plain.tokens.begin() + 7);
  CHECK(early->tokens == first7);
  CHECK(seen == first7);
  CHECK(*cache2->tokens(seq2, 0) == static_cast<index_t>(prompt.size() + 6));
}

TEST_CASE("generate_speculative: on_token sees every token in order and stops early", "[model][generate]") {
  const mtp_model x = with_mtp(11);
  auto m = lm::create(x.w, tiny().params());
  REQUIRE(m.ok());
  const auto prompt = prompt_of(9);
  const auto plain = run(*m, prompt, {}, 30, /*speculative=*/true);
  REQUIRE(plain.tokens.size() == 30);
  CHECK(plain.prefill_seconds > 0);
  CHECK(plain.decode_seconds > 0);
  // Each stopping point: after an accepted draft, after the token that follows one, after a
  // rejected draft; the cache then holds the prompt and every token but the last.
  for (const std::size_t stop_after : {1u, 2u, 3u, 5u, 8u, 13u, 30u}) {
    auto cache =
        lm::make_cache(attn::kv_cache_options{.max_sequences = 1, .capacity = 256, .max_truncate = 1});
    REQUIRE(cache.ok());
    const auto seq = *cache->open();
    std::vector<std::int32_t> seen;
    auto g = model::generate_speculative(*m, *cache, seq, prompt, model::stop_condition{{}, 30},
                                         [&](std::int32_t t) {
                                           seen.push_back(t);
                                           return seen.size() < stop_after;
                                         });
    REQUIRE(g.ok());
    const std::vector<std::int32_t> want(plain.tokens.begin(),
                                         plain.tokens.begin() + static_cast<std::ptrdiff_t>(stop_after));
    INFO("stop after " << stop_after);
    CHECK(g->tokens == want);
    CHECK(seen == want);
    CHECK(*cache->tokens(seq, 0) == static_cast<index_t>(prompt.size() + stop_after - 1));
  }
}
