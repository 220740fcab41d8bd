// model_config, its layer schedule, validation rules and presets (spec §1.1, §1.2, §15).
#include <catch2/catch.hpp>

#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "dsv4/config/model_config.hpp"
#include "dsv4/config/presets.hpp"

using namespace dsv4::config;
using dsv4::errc;
using dsv4::status;

namespace {

// A consumer that takes the config as a non-type template parameter, as block types will.
template <model_config C>
requires is_valid_config<C>
struct model_probe {
  static constexpr int layers = C.n_layers;
  static constexpr layer_kind first = layer_kind_of(C, 0);
};

std::vector<int> layers_of(const model_config& c, layer_kind kind) {
  std::vector<int> out;
  for (int l = 0; l < c.n_layers; ++l)
    if (layer_kind_of(c, l) == kind) out.push_back(l);
  return out;
}

std::vector<int> stride_range(int first, int last, int step) {
  std::vector<int> out;
  for (int l = first; l <= last; l += step) out.push_back(l);
  return out;
}

}  // namespace

TEST_CASE("compress_schedule::append concatenates repeated patterns like config.json") {
  constexpr compress_schedule s =
      compress_schedule{}.append({0, 0}).append({4, 128}, 2).append({4}).append({0});
  STATIC_REQUIRE(s.size == 8);
  const std::vector<int> got(s.ratios.begin(), s.ratios.begin() + s.size);
  CHECK(got == std::vector<int>{0, 0, 4, 128, 4, 128, 4, 0});
  CHECK(s.ratios[8] == 0);  // unused capacity stays zero
  CHECK(compress_schedule{}.append({7}, 0).size == 0);
}

TEST_CASE("V4-Flash schedule: SWA 0-1, CSA even 2..42, HCA odd 3..41, SWA MTP (spec 1.2)") {
  CHECK(v4_flash.n_schedule == 44);
  CHECK(layers_of(v4_flash, layer_kind::swa) == std::vector<int>{0, 1});
  CHECK(layers_of(v4_flash, layer_kind::csa) == stride_range(2, 42, 2));
  CHECK(layers_of(v4_flash, layer_kind::hca) == stride_range(3, 41, 2));
  CHECK(count_layers(v4_flash, layer_kind::swa) == 2);
  CHECK(count_layers(v4_flash, layer_kind::csa) == 21);
  CHECK(count_layers(v4_flash, layer_kind::hca) == 20);
  CHECK(layer_kind_of(v4_flash, v4_flash.n_layers) == layer_kind::swa);  // MTP block
}

TEST_CASE("V4-Pro schedule: HCA 0, 1 and odd 3..59, CSA even 2..60, SWA MTP (spec 1.2)") {
  CHECK(v4_pro.n_schedule == 62);
  std::vector<int> hca{0, 1};
  for (int l : stride_range(3, 59, 2)) hca.push_back(l);
  CHECK(layers_of(v4_pro, layer_kind::hca) == hca);
  CHECK(layers_of(v4_pro, layer_kind::csa) == stride_range(2, 60, 2));
  CHECK(layers_of(v4_pro, layer_kind::swa).empty());
  CHECK(count_layers(v4_pro, layer_kind::hca) == 31);
  CHECK(count_layers(v4_pro, layer_kind::csa) == 30);
  CHECK(layer_kind_of(v4_pro, v4_pro.n_layers) == layer_kind::swa);
}

TEST_CASE("hash routing covers layers 0-2 only and the MTP block is score-routed") {
  for (const model_config* c : {&v4_flash, &v4_pro}) {
    CHECK(is_hash_layer(*c, 0));
    CHECK(is_hash_layer(*c, 2));
    CHECK_FALSE(is_hash_layer(*c, 3));
    CHECK_FALSE(is_hash_layer(*c, c->n_layers));
    CHECK_FALSE(is_dense_layer(*c, 0));  // V4 has MoE in every layer
  }
  CHECK(is_dense_layer(v32, 2));
  CHECK_FALSE(is_dense_layer(v32, 3));
}

TEST_CASE("tiny models cover every layer kind and both routers") {
  CHECK(layers_of(tiny_swa, layer_kind::swa) == std::vector<int>{0, 1});
  CHECK(tiny_swa.n_mtp_layers == 0);
  CHECK(layers_of(tiny_hybrid, layer_kind::swa) == std::vector<int>{0});
  CHECK(layers_of(tiny_hybrid, layer_kind::csa) == std::vector<int>{1, 3});
  CHECK(layers_of(tiny_hybrid, layer_kind::hca) == std::vector<int>{2, 4});
  CHECK(layer_kind_of(tiny_hybrid, 5) == layer_kind::swa);  // MTP
  // Hash routing on a SWA and a CSA layer, score routing on CSA and HCA layers.
  CHECK(is_hash_layer(tiny_hybrid, 0));
  CHECK(is_hash_layer(tiny_hybrid, 1));
  CHECK_FALSE(is_hash_layer(tiny_hybrid, 2));
  CHECK(tiny_hybrid.n_mtp_layers == 1);
  // A window shorter than the HCA ratio, so HCA entries arrive after the window is full.
  CHECK(tiny_hybrid.window < tiny_hybrid.hca_ratio);
}

TEST_CASE("V3.2 has no schedule: every layer is an indexed (DSA) layer") {
  CHECK(count_layers(v32, layer_kind::csa) == 61);
  CHECK(layer_kind_of(v32, 61) == layer_kind::csa);
  CHECK(v32.head_dim == v32.nope_dim + v32.rope_dim);
}

TEST_CASE("model_config is a structural type usable as a template argument") {
  STATIC_REQUIRE(model_probe<v4_flash>::layers == 43);
  STATIC_REQUIRE(model_probe<v4_pro>::layers == 61);
  STATIC_REQUIRE(model_probe<v4_pro>::first == layer_kind::hca);
  STATIC_REQUIRE(model_probe<tiny_hybrid>::first == layer_kind::swa);
  STATIC_REQUIRE_FALSE(std::is_same_v<model_probe<v4_flash>, model_probe<v4_pro>>);
  // Equal values name the same specialization, however they were built.
  constexpr model_config flash_copy = [] {
    model_config c = v4_flash;
    c.index_topk = 512;
    return c;
  }();
  STATIC_REQUIRE(std::is_same_v<model_probe<v4_flash>, model_probe<flash_copy>>);
}

TEST_CASE("presets match the released configs (spec 1.1, 15)") {
  SECTION("Flash") {
    CHECK(v4_flash.d_model == 4096);
    CHECK(v4_flash.n_heads == 64);
    CHECK(v4_flash.q_lora_rank == 1024);
    CHECK(v4_flash.o_groups == 8);
    CHECK(v4_flash.index_topk == 512);
    CHECK(v4_flash.n_routed_experts == 256);
    CHECK(v4_flash.moe_inter_dim == 2048);
    CHECK(v4_flash_params.route_scale == 1.5f);
  }
  SECTION("Pro") {
    CHECK(v4_pro.d_model == 7168);
    CHECK(v4_pro.n_heads == 128);
    CHECK(v4_pro.q_lora_rank == 1536);
    CHECK(v4_pro.o_groups == 16);
    CHECK(v4_pro.index_topk == 1024);
    CHECK(v4_pro.n_routed_experts == 384);
    CHECK(v4_pro.moe_inter_dim == 3072);
    CHECK(v4_pro_params.route_scale == 2.5f);
  }
  SECTION("identical in both") {
    for (const model_config* c : {&v4_flash, &v4_pro}) {
      CHECK(c->vocab_size == 129280);
      CHECK(c->head_dim == 512);
      CHECK(c->rope_dim == 64);
      CHECK(c->window == 128);
      CHECK(c->o_lora_rank == 1024);
      CHECK(c->index_n_heads == 64);
      CHECK(c->index_head_dim == 128);
      CHECK(c->csa_ratio == 4);
      CHECK(c->hca_ratio == 128);
      CHECK(c->hc_mult == 4);
      CHECK(c->hc_sinkhorn_iters == 20);
      CHECK(c->n_experts_per_tok == 6);
      CHECK(c->n_shared_experts == 1);
      CHECK(c->n_hash_layers == 3);
      CHECK(c->n_mtp_layers == 1);
      CHECK(c->expert_format == weight_format::fp4_e2m1_block32);
      CHECK(c->linear_format == weight_format::fp8_e4m3_block128);
      CHECK(c->cache_format == kv_format::fp8_released);
    }
    for (const model_params* p : {&v4_flash_params, &v4_pro_params}) {
      CHECK(p->rms_norm_eps == 1e-6f);
      CHECK(p->compress_rope_theta == 160000.0f);
      CHECK(p->rope_theta == 10000.0f);
      CHECK(p->yarn_factor == 16.0f);
      CHECK(p->yarn_original_seq_len == 65536);
      CHECK(p->swiglu_limit == 10.0f);
    }
  }
}

TEST_CASE("each validation rule rejects the config that breaks it") {
  struct broken {
    const char* what;
    bool (*rule)(const model_config&);
    model_config config;
  };
  const auto with = [](auto mutate) {
    model_config c = tiny_hybrid;
    mutate(c);
    return c;
  };
  const broken cases[] = {
      {"d_model 0", rules::core_dims_positive, with([](model_config& c) { c.d_model = 0; })},
      {"head_dim split", rules::head_dim_split, with([](model_config& c) { c.nope_dim = 8; })},
      {"odd rope", rules::rope_dim_fits, with([](model_config& c) {
         c.rope_dim = 15;
         c.nope_dim = 17;
       })},
      {"schedule overflow", rules::schedule_fits_capacity,
       with([](model_config& c) { c.n_layers = max_schedule; })},
      {"schedule length", rules::schedule_length, with([](model_config& c) { c.n_schedule = 5; })},
      {"unknown ratio", rules::ratios_known, with([](model_config& c) { c.compress_ratios[2] = 8; })},
      {"csa ratio 0", rules::csa_ratio_positive, with([](model_config& c) { c.csa_ratio = 0; })},
      {"hca not multiple", rules::hca_multiple_of_csa, with([](model_config& c) { c.hca_ratio = 18; })},
      {"window 0", rules::window_positive, with([](model_config& c) { c.window = 0; })},
      {"o_groups", rules::output_groups_divide_heads, with([](model_config& c) { c.o_groups = 3; })},
      {"o_lora 0", rules::o_lora_rank_positive, with([](model_config& c) { c.o_lora_rank = 0; })},
      {"hc 0", rules::hyper_connections_positive, with([](model_config& c) { c.hc_mult = 0; })},
      {"topk 0", rules::index_topk_positive, with([](model_config& c) { c.index_topk = 0; })},
      {"index heads 0", rules::indexer_dims_positive, with([](model_config& c) { c.index_n_heads = 0; })},
      {"index dim 24", rules::indexer_head_dim_shape, with([](model_config& c) { c.index_head_dim = 24; })},
      {"mla rank 0", rules::mla_dims_positive,
       with([](model_config& c) { c.family = attention_family::v32_mla_dsa; })},
      {"no experts", rules::experts_positive, with([](model_config& c) { c.moe_inter_dim = 0; })},
      {"top-k > E", rules::experts_per_token_range, with([](model_config& c) { c.n_experts_per_tok = 9; })},
      {"hash > layers", rules::hash_layers_range, with([](model_config& c) { c.n_hash_layers = 6; })},
      {"dense + hash", rules::dense_layers_range, with([](model_config& c) {
         c.first_k_dense = 1;
         c.dense_inter_dim = 64;
       })},
      {"mtp 2", rules::mtp_depth, with([](model_config& c) { c.n_mtp_layers = 2; })},
      {"fp8 kv tiles", rules::kv_layout_tiles,
       with([](model_config& c) { c.cache_format = kv_format::fp8_released; })},
      {"fp4 tiles", rules::fp4_expert_tiles, with([](model_config& c) {
         c.expert_format = weight_format::fp4_e2m1_block32;
         c.moe_inter_dim = 48;
       })},
  };
  for (const broken& b : cases) {
    INFO(b.what);
    CHECK(b.rule(tiny_hybrid));
    CHECK_FALSE(b.rule(b.config));
  }
}

TEST_CASE("schedule-dependent rules do not fire on a broken schedule") {
  // Only the schedule rule should report; the indexer rules must not read past n_schedule.
  model_config c = tiny_hybrid;
  c.n_schedule = 3;
  c.index_topk = 0;
  CHECK_FALSE(rules::schedule_length(c));
  CHECK(rules::index_topk_positive(c));
}

TEST_CASE("check_params accepts the presets' parameters and names the field a broken one breaks") {
  CHECK(check_params(v4_flash, v4_flash_params).ok());
  CHECK(check_params(v4_pro, v4_pro_params).ok());
  CHECK(check_params(tiny_hybrid, tiny_params).ok());
  const auto broken = [](auto mutate) {
    model_params p = tiny_params;
    mutate(p);
    return check_params(tiny_hybrid, p);
  };
  const std::pair<const char*, status> cases[] = {
      {"rms_norm_eps", broken([](model_params& p) { p.rms_norm_eps = 0.0f; })},
      {"hc_eps", broken([](model_params& p) { p.hc_eps = std::numeric_limits<float>::quiet_NaN(); })},
      {"rope_theta", broken([](model_params& p) { p.rope_theta = -1.0f; })},
      {"compress_rope_theta", broken([](model_params& p) { p.compress_rope_theta = 0.0f; })},
      {"yarn_original_seq_len", broken([](model_params& p) { p.yarn_original_seq_len = -1; })},
      {"YaRN", broken([](model_params& p) { p.yarn_beta_fast = 0.5f; })},
      {"route_scale",
       broken([](model_params& p) { p.route_scale = std::numeric_limits<float>::infinity(); })},
      {"swiglu_limit", broken([](model_params& p) { p.swiglu_limit = -1.0f; })},
      {"max_seq_len", broken([](model_params& p) { p.max_seq_len = 0; })},
      {"bos_id", broken([](model_params& p) { p.bos_id = -1; })},
      {"eos_id", broken([](model_params& p) { p.eos_id = tiny_hybrid.vocab_size; })},
  };
  for (const auto& [field, s] : cases) {
    INFO(field);
    CHECK(s.code() == errc::invalid_argument);
    CHECK_THAT(s.message(), Catch::Contains(field));
  }
}
