// Where the MoE's hyper-parameters and tables come from: the from() factories take k from the
// config and route_scale / swiglu_limit from model_params, and check shapes against the config;
// tid2eid is read as the checkpoint stores it (int64) or narrowed to int32 by a checked function,
// with the same routes either way; the router's top-k wrapper follows core/top_k.hpp's rule; the
// load summary reports bad extents.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/moe/load_balance.hpp"
#include "dsv4/moe/moe_ffn.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::errc;
using dsv4::f32_matrix;
using dsv4::index_t;
using dsv4::moe::swiglu_weights;

constexpr auto cfg = dsv4::config::tiny_swa;  // d_model 64, 8 experts, top-2, inter 32, vocab 256
constexpr index_t d = cfg.d_model, n_experts = cfg.n_routed_experts, k = cfg.n_experts_per_tok,
                  inter = cfg.moe_inter_dim, vocab = cfg.vocab_size;

void check_names(const dsv4::status& st, const std::string& name) {
  INFO(st.to_string());
  CHECK_FALSE(st.ok());
  CHECK(st.message().find(name) != std::string::npos);
}

// A (vocab, kk) table of distinct experts per row, in random order.
std::vector<std::int64_t> random_table(index_t rows, index_t kk, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int64_t> t;
  std::vector<std::int64_t> all(static_cast<std::size_t>(n_experts));
  std::iota(all.begin(), all.end(), 0);
  for (index_t r = 0; r < rows; ++r) {
    std::shuffle(all.begin(), all.end(), rng);
    t.insert(t.end(), all.begin(), all.begin() + kk);
  }
  return t;
}

struct model_weights {
  std::vector<float> gate = dsv4::test::random_normal(n_experts * d, 1, 0.3f);
  std::vector<float> bias = dsv4::test::random_normal(n_experts, 2, 0.1f);
  std::vector<float> mats = dsv4::test::random_normal((n_experts + 1) * 3 * inter * d, 3, 0.2f);
  std::vector<float> shared_mats = dsv4::test::random_normal(3 * inter * d, 4, 0.2f);
  std::vector<swiglu_weights<f32_matrix>> experts;
  model_weights() {
    for (index_t e = 0; e < n_experts; ++e) {
      const float* b = mats.data() + e * 3 * inter * d;
      experts.push_back(
          {{{b, {inter, d}}}, {{b + inter * d, {inter, d}}}, {{b + 2 * inter * d, {d, inter}}}});
    }
  }
  f32_matrix gate_view() const { return {{gate.data(), {n_experts, d}}}; }
  swiglu_weights<f32_matrix> shared(index_t width = inter) const {
    const float* b = shared_mats.data();
    return {{{b, {width, d}}}, {{b + width * d, {width, d}}}, {{b + 2 * width * d, {d, width}}}};
  }
};

}  // namespace

TEST_CASE("moe from(): k comes from the config, route_scale and swiglu_limit from model_params") {
  const model_weights w;
  const auto flash = dsv4::moe::score_router<f32_matrix>::from(cfg, dsv4::config::v4_flash_params,
                                                               w.gate_view(), {w.bias.data(), {n_experts}});
  REQUIRE(flash.ok());
  CHECK(flash->k == k);
  CHECK(flash->route_scale == 1.5f);
  const auto pro =
      dsv4::moe::score_router<f32_matrix>::from(cfg, dsv4::config::v4_pro_params, w.gate_view(), {});
  REQUIRE(pro.ok());
  CHECK(pro->route_scale == 2.5f);

  const auto layer = dsv4::moe::moe_ffn<dsv4::moe::score_router<f32_matrix>, f32_matrix>::from(
      cfg, dsv4::config::v4_flash_params, *flash, w.experts, w.shared());
  REQUIRE(layer.ok());
  CHECK(layer->swiglu_limit == 10.0f);
  const auto dense = dsv4::moe::dense_swiglu_ffn<f32_matrix>::from(cfg, dsv4::config::v32_params, w.shared());
  REQUIRE(dense.ok());
  CHECK(dense->swiglu_limit == 0.0f);  // V3.2: no clamp

  // The routed output of the factory-made layer is the hand-made one's with the same values.
  const index_t n = 4;
  const auto x = dsv4::test::random_normal(n * d, 5);
  std::vector<float> y1(static_cast<std::size_t>(n * d)), y2(y1.size());
  const dsv4::moe::moe_ffn<dsv4::moe::score_router<f32_matrix>, f32_matrix> by_hand{
      {w.gate_view(), {w.bias.data(), {n_experts}}, k, 1.5f}, w.experts, w.shared(), 10.0f};
  dsv4::test::aligned_workspace ws(by_hand.workspace_bytes(n));
  REQUIRE(layer->forward({{x.data(), {n, d}}, {}}, {y1.data(), {n, d}}, ws.bytes).ok());
  REQUIRE(by_hand.forward({{x.data(), {n, d}}, {}}, {y2.data(), {n, d}}, ws.bytes).ok());
  CHECK(y1 == y2);
}

TEST_CASE("moe from(): parameters outside their domain and shapes that contradict the config are refused") {
  const model_weights w;
  using score = dsv4::moe::score_router<f32_matrix>;
  for (const float scale :
       {0.0f, -1.5f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto params = dsv4::config::v4_flash_params;
    params.route_scale = scale;
    check_names(score::from(cfg, params, w.gate_view(), {}).error(), "route_scale");
  }
  check_names(
      score::from(cfg, dsv4::config::v4_flash_params, f32_matrix{{w.gate.data(), {n_experts - 1, d}}}, {})
          .error(),
      "gate");
  check_names(score::from(cfg, dsv4::config::v4_flash_params, w.gate_view(), {w.bias.data(), {n_experts - 1}})
                  .error(),
              "gate.bias");
  auto wide = cfg;
  wide.n_experts_per_tok = n_experts + 1;  // not a valid config; the factory still refuses it
  check_names(score::from(wide, dsv4::config::v4_flash_params, w.gate_view(), {}).error(), "k = 9");

  const auto router = score::from(cfg, dsv4::config::v4_flash_params, w.gate_view(), {});
  REQUIRE(router.ok());
  using layer = dsv4::moe::moe_ffn<score, f32_matrix>;
  for (const float limit : {-1.0f, std::numeric_limits<float>::quiet_NaN()}) {
    auto params = dsv4::config::v4_flash_params;
    params.swiglu_limit = limit;
    check_names(layer::from(cfg, params, *router, w.experts, w.shared()).error(), "swiglu_limit");
    check_names(dsv4::moe::dense_swiglu_ffn<f32_matrix>::from(cfg, params, w.shared()).error(),
                "swiglu_limit");
  }
  const auto& p = dsv4::config::v4_flash_params;
  check_names(layer::from(cfg, p, *router, w.experts, std::nullopt).error(), "shared_experts");
  check_names(layer::from(cfg, p, *router, w.experts, w.shared(inter / 2)).error(), "shared_experts");
  check_names(
      layer::from(cfg, p, *router, {w.experts.data(), std::size_t(n_experts - 1)}, w.shared()).error(),
      "experts");
  const score three{w.gate_view(), {}, 3, 1.5f};
  check_names(layer::from(cfg, p, three, w.experts, w.shared()).error(), "router");
  auto narrow_cfg = cfg;
  narrow_cfg.moe_inter_dim = inter / 2;
  check_names(layer::from(narrow_cfg, p, *router, w.experts, w.shared()).error(), "experts");
}

TEST_CASE("moe hash tables: an int64 tid2eid routes as the int32 one narrowed from it") {
  const model_weights w;
  const auto table64 = random_table(vocab, k, 6);
  std::vector<std::int32_t> table32(table64.size(), -7);
  REQUIRE(
      dsv4::moe::narrow_tid2eid({table64.data(), {vocab, k}}, n_experts, {table32.data(), {vocab, k}}).ok());
  CHECK(std::equal(table32.begin(), table32.end(), table64.begin()));

  const auto r64 = dsv4::moe::hash_router<f32_matrix>::from(cfg, dsv4::config::v4_flash_params, w.gate_view(),
                                                            {table64.data(), {vocab, k}});
  const auto r32 = dsv4::moe::hash_router<f32_matrix, std::int32_t>::from(
      cfg, dsv4::config::v4_flash_params, w.gate_view(), {table32.data(), {vocab, k}});
  REQUIRE(r64.ok());
  REQUIRE(r32.ok());
  CHECK(r64->route_scale == 1.5f);
  const index_t n = 40;
  const auto x = dsv4::test::random_normal(n * d, 7);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  std::mt19937 rng(8);
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % vocab);
  std::vector<std::int32_t> e64(static_cast<std::size_t>(n * k)), e32(e64.size());
  std::vector<float> w64(e64.size()), w32(e64.size()), s64(static_cast<std::size_t>(n * n_experts)),
      s32(s64.size());
  REQUIRE(r64->route({{x.data(), {n, d}}, ids},
                     {{e64.data(), {n, k}}, {w64.data(), {n, k}}, {s64.data(), {n, n_experts}}})
              .ok());
  REQUIRE(r32->route({{x.data(), {n, d}}, ids},
                     {{e32.data(), {n, k}}, {w32.data(), {n, k}}, {s32.data(), {n, n_experts}}})
              .ok());
  CHECK(e64 == e32);
  CHECK(w64 == w32);
  for (index_t t = 0; t < n; ++t)
    for (index_t j = 0; j < k; ++j) CHECK(e64[t * k + j] == table64[ids[t] * k + j]);
}

TEST_CASE(
    "moe hash tables: out-of-range and repeated expert ids are refused, token ids outside the vocabulary "
    "too") {
  const model_weights w;
  const auto good = random_table(vocab, k, 9);
  struct bad_case {
    index_t at;
    std::int64_t value;
    const char* message;
  };
  // 2^32 + 1 would narrow to 1 by a plain cast.
  for (const bad_case& c : {bad_case{2 * k + 1, n_experts, "tid2eid[2][1] = 8 is not an expert id"},
                            bad_case{7 * k, -1, "tid2eid[7][0] = -1 is not an expert id"},
                            bad_case{5 * k, (std::int64_t{1} << 32) + 1, "tid2eid[5][0] = 4294967297"}}) {
    auto table = good;
    table[static_cast<std::size_t>(c.at)] = c.value;
    std::vector<std::int32_t> out(table.size(), -7);
    check_names(dsv4::moe::narrow_tid2eid({table.data(), {vocab, k}}, n_experts, {out.data(), {vocab, k}}),
                c.message);
    CHECK(std::all_of(out.begin(), out.end(), [](std::int32_t v) { return v == -7; }));
    check_names(dsv4::moe::hash_router<f32_matrix>::from(cfg, dsv4::config::v4_flash_params, w.gate_view(),
                                                         {table.data(), {vocab, k}})
                    .error(),
                c.message);
  }
  auto repeated = good;
  repeated[11 * k] = repeated[11 * k + 1];
  const std::string row = "tid2eid[11] = (" + std::to_string(repeated[11 * k]) + ", " +
                          std::to_string(repeated[11 * k]) + ") names expert " +
                          std::to_string(repeated[11 * k]) + " twice";
  check_names(dsv4::moe::check_tid2eid<std::int64_t>({repeated.data(), {vocab, k}}, n_experts), row);
  std::vector<std::int32_t> out(good.size(), -7);
  check_names(dsv4::moe::narrow_tid2eid({repeated.data(), {vocab, k}}, n_experts, {out.data(), {vocab, k}}),
              row);
  check_names(dsv4::moe::narrow_tid2eid({good.data(), {vocab, k}}, n_experts, {out.data(), {vocab, k + 1}}),
              "tid2eid (int32)");
  CHECK(std::all_of(out.begin(), out.end(), [](std::int32_t v) { return v == -7; }));
  check_names(dsv4::moe::hash_router<f32_matrix>::from(cfg, dsv4::config::v4_flash_params, w.gate_view(),
                                                       {good.data(), {vocab - 1, k}})
                  .error(),
              "tid2eid");

  // A router built by hand (no whole-table check) still refuses the repeated row of a token it
  // routes, and token ids outside the vocabulary.
  const dsv4::moe::hash_router<f32_matrix> r{w.gate_view(), {repeated.data(), {vocab, k}}, 1.5f};
  const auto x = dsv4::test::random_normal(3 * d, 10);
  std::vector<std::int32_t> e(6, -7);
  std::vector<float> wt(6, -7.0f), s(static_cast<std::size_t>(3 * n_experts), -7.0f);
  const dsv4::moe::routes out_routes{{e.data(), {3, k}}, {wt.data(), {3, k}}, {s.data(), {3, n_experts}}};
  check_names(r.route({{x.data(), {3, d}}, std::vector<std::int32_t>{0, 11, 1}}, out_routes),
              "token_ids[1] = 11: " + row);
  for (const std::int32_t bad :
       {static_cast<std::int32_t>(vocab), -1, std::numeric_limits<std::int32_t>::max()}) {
    check_names(r.route({{x.data(), {3, d}}, std::vector<std::int32_t>{0, 1, bad}}, out_routes),
                "token_ids[2] = " + std::to_string(bad) + " is outside the vocabulary");
  }
  CHECK(std::all_of(e.begin(), e.end(), [](std::int32_t v) { return v == -7; }));
  CHECK(std::all_of(s.begin(), s.end(), [](float v) { return v == -7.0f; }));
}

TEST_CASE("moe select_top_k: ranks by core/top_k.hpp's rule and checks its views") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> s = {0.5f, nan, 2.0f, 0.5f, -nan, -std::numeric_limits<float>::infinity()};
  const std::vector<float> bias = {0.0f, 0.0f, -1.5f, 0.0f, 0.0f, 0.0f};
  std::vector<std::int32_t> ids(4, -7);
  REQUIRE(dsv4::moe::select_top_k({s.data(), {6}}, {}, {ids.data(), {4}}).ok());
  CHECK(ids == std::vector<std::int32_t>{2, 0, 3, 5});  // NaN after -inf; ties to the lower id
  REQUIRE(dsv4::moe::select_top_k({s.data(), {6}}, {bias.data(), {6}}, {ids.data(), {4}}).ok());
  CHECK(ids == std::vector<std::int32_t>{0, 2, 3, 5});  // 2.0 - 1.5 = 0.5 ties 0 and 3: by id
  std::fill(ids.begin(), ids.end(), -7);
  check_names(dsv4::moe::select_top_k({s.data(), {-6}}, {}, {ids.data(), {4}}), "scores");
  check_names(dsv4::moe::select_top_k({s.data(), {6}}, {bias.data(), {5}}, {ids.data(), {4}}), "bias");
  check_names(dsv4::moe::select_top_k({s.data(), {6}}, {}, {ids.data(), {-4}}), "ids");
  check_names(dsv4::moe::select_top_k({s.data(), {3}}, {}, {ids.data(), {4}}), "ids");
  check_names(dsv4::moe::select_top_k({s.data(), {3}, {2}}, {}, {ids.data(), {2}}), "scores");
  CHECK(std::all_of(ids.begin(), ids.end(), [](std::int32_t v) { return v == -7; }));
}

TEST_CASE("moe summarize_load: a negative extent is an error, an empty vector all zeros") {
  const std::vector<std::int64_t> counts = {3, 1, 2};
  check_names(dsv4::moe::summarize_load({counts.data(), {-3}}).error(), "counts");
  const auto empty = dsv4::moe::summarize_load({counts.data(), {0}});
  REQUIRE(empty.ok());
  CHECK(empty->mean == 0.0);
  CHECK(empty->max == 0);
}
