// config.json: both spellings (the released repos' and transformers' save_pretrained) read into
// model_shape and model_params, compared with compile-time configs, and rejected with the key named
// when they are wrong.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <string>

#include "dsv4/config/presets.hpp"
#include "dsv4/io/hf_config.hpp"
#include "io_test_util.hpp"

using namespace dsv4;
using Catch::Matchers::Contains;

namespace {

// tests/fixtures/tiny_v4 as a compile-time config (tests/reference/make_tiny_checkpoint.py).
using config::tiny_v4;

// V4-Flash's config.json as the deepseek-ai repository spells it (spec §1.1).
nlohmann::json released_flash() {
  std::vector<int> ratios{0, 0};
  for (int i = 0; i < 20; ++i) ratios.insert(ratios.end(), {4, 128});
  ratios.insert(ratios.end(), {4, 0});
  return {{"architectures", {"DeepseekV4ForCausalLM"}},
          {"model_type", "deepseek_v4"},
          {"vocab_size", 129280},
          {"hidden_size", 4096},
          {"num_hidden_layers", 43},
          {"bos_token_id", 0},
          {"eos_token_id", 1},
          {"num_attention_heads", 64},
          {"num_key_value_heads", 1},
          {"head_dim", 512},
          {"qk_rope_head_dim", 64},
          {"q_lora_rank", 1024},
          {"o_groups", 8},
          {"o_lora_rank", 1024},
          {"sliding_window", 128},
          {"compress_ratios", ratios},
          {"index_n_heads", 64},
          {"index_head_dim", 128},
          {"index_topk", 512},
          {"rope_theta", 10000.0},
          {"compress_rope_theta", 160000.0},
          {"rope_scaling",
           {{"type", "yarn"},
            {"factor", 16},
            {"original_max_position_embeddings", 65536},
            {"beta_fast", 32},
            {"beta_slow", 1}}},
          {"rms_norm_eps", 1e-6},
          {"hc_mult", 4},
          {"hc_sinkhorn_iters", 20},
          {"hc_eps", 1e-6},
          {"n_routed_experts", 256},
          {"n_shared_experts", 1},
          {"num_experts_per_tok", 6},
          {"moe_intermediate_size", 2048},
          {"scoring_func", "sqrtsoftplus"},
          {"routed_scaling_factor", 1.5},
          {"num_hash_layers", 3},
          {"swiglu_limit", 10.0},
          {"num_nextn_predict_layers", 1},
          {"max_position_embeddings", 1048576},
          {"quantization_config",
           {{"activation_scheme", "dynamic"},
            {"fmt", "e4m3"},
            {"quant_method", "fp8"},
            {"scale_fmt", "ue8m0"},
            {"weight_block_size", {128, 128}}}},
          {"expert_dtype", "fp4"},
          {"torch_dtype", "bfloat16"}};
}

result<io::hf_config> parse(const nlohmann::json& j) {
  return io::parse_hf_config(j.dump(), "cfg/config.json");
}

std::string error_of(const nlohmann::json& j) {
  auto r = parse(j);
  return r ? std::string("accepted") : r.error().message();
}

}  // namespace

TEST_CASE("hf_config: the transformers-written config.json of tests/fixtures/tiny_v4") {
  auto cfg = io::read_hf_config(std::string(DSV4_FIXTURE_DIR) + "/tiny_v4/config.json");
  REQUIRE(cfg.ok());
  const io::model_shape& s = cfg->shape;
  CHECK(s.n_layers == 4);
  CHECK(s.rope_dim == 16);  // partial_rotary_factor 0.5 * head_dim 32
  CHECK(s.n_schedule == 5);
  CHECK((s.compress_ratios[0] == 0 && s.compress_ratios[1] == 4 && s.compress_ratios[2] == 128 &&
         s.compress_ratios[3] == 4 && s.compress_ratios[4] == 0));
  CHECK(s.n_hash_layers == 2);  // mlp_layer_types [hash_moe, hash_moe, moe, moe]
  CHECK(s.linear_format == config::weight_format::f32);
  const auto ok = io::check_matches<tiny_v4>(s, "tiny_v4/config.json");
  INFO(ok.message());
  CHECK(ok.ok());
  const config::model_params& p = cfg->params;
  CHECK(p.route_scale == 1.5f);
  CHECK(p.rope_theta == 10000.0f);
  CHECK(p.compress_rope_theta == 160000.0f);
  CHECK(p.yarn_factor == 16.0f);
  CHECK(p.yarn_original_seq_len == 65536);
  CHECK(p.yarn_beta_fast == 32.0f);
  CHECK(p.yarn_beta_slow == 1.0f);
  CHECK(p.swiglu_limit == 10.0f);
  CHECK(p.max_seq_len == 1048576);
  CHECK(p.rms_norm_eps == 1e-6f);
}

TEST_CASE("hf_config: a differing compile-time config is named by its first differing field") {
  auto cfg = io::read_hf_config(std::string(DSV4_FIXTURE_DIR) + "/tiny_v4/config.json");
  REQUIRE(cfg.ok());
  const auto a = io::check_matches(cfg->shape, config::tiny_hybrid, "tiny_v4/config.json");
  REQUIRE_FALSE(a.ok());
  CHECK(a.message() == "tiny_v4/config.json: vocab_size is 128, the model type has 256");
  config::model_config b = tiny_v4;
  b.compress_ratios[2] = 4;
  CHECK(io::check_matches(cfg->shape, b, "c").message() ==
        "c: compress_ratios[2] is 128, the model type has 4");
  b = tiny_v4;
  b.expert_format = config::weight_format::fp4_e2m1_block32;
  CHECK(io::check_matches(cfg->shape, b, "c").message() ==
        "c: expert_format is f32, the model type has fp4_e2m1_block32");
  b = tiny_v4;
  b.cache_format = config::kv_format::f32;  // the engine's choice: not compared
  CHECK(io::check_matches(cfg->shape, b, "c").ok());
}

TEST_CASE("hf_config: the released V4-Flash and V4-Pro configs equal the presets") {
  auto flash = parse(released_flash());
  REQUIRE(flash.ok());
  CHECK(io::check_matches<config::v4_flash>(flash->shape, "flash").ok());
  CHECK(flash->params.route_scale == 1.5f);
  CHECK(flash->params.yarn_original_seq_len == 65536);
  auto j = released_flash();
  std::vector<int> ratios{128, 128};
  for (int i = 0; i < 29; ++i) ratios.insert(ratios.end(), {4, 128});
  ratios.insert(ratios.end(), {4, 0});
  j["compress_ratios"] = ratios;
  j["hidden_size"] = 7168;
  j["num_hidden_layers"] = 61;
  j["num_attention_heads"] = 128;
  j["q_lora_rank"] = 1536;
  j["o_groups"] = 16;
  j["index_topk"] = 1024;
  j["n_routed_experts"] = 384;
  j["moe_intermediate_size"] = 3072;
  j["routed_scaling_factor"] = 2.5;
  auto pro = parse(j);
  REQUIRE(pro.ok());
  const auto m = io::check_matches<config::v4_pro>(pro->shape, "pro");
  INFO(m.message());
  CHECK(m.ok());
  CHECK(pro->params.route_scale == 2.5f);
  // Against the wrong preset, the first difference is named.
  CHECK(io::check_matches<config::v4_flash>(pro->shape, "pro").message() ==
        "pro: d_model is 7168, the model type has 4096");
}

TEST_CASE("hf_config: schedule spellings and defaults") {
  auto j = released_flash();
  // n_layers entries: the MTP block's SWA entry is appended.
  auto r = j["compress_ratios"];
  r.erase(r.size() - 1);
  j["compress_ratios"] = r;
  auto a = parse(j);
  REQUIRE(a.ok());
  CHECK(io::check_matches<config::v4_flash>(a->shape, "a").ok());
  // layer_types + compress_rates instead of compress_ratios.
  j.erase("compress_ratios");
  nlohmann::json types = nlohmann::json::array();
  for (int l = 0; l < 43; ++l)
    types.push_back(l < 2        ? "sliding_attention"
                    : l % 2 == 0 ? "compressed_sparse_attention"
                                 : "heavily_compressed_attention");
  j["layer_types"] = types;
  j["compress_rates"] = {{"compressed_sparse_attention", 4}, {"heavily_compressed_attention", 128}};
  auto b = parse(j);
  REQUIRE(b.ok());
  CHECK(io::check_matches<config::v4_flash>(b->shape, "b").ok());
  // Neither: transformers' default [HCA, HCA] + [HCA, CSA, ...] (spec 16.7).
  j.erase("layer_types");
  auto c = parse(j);
  REQUIRE(c.ok());
  CHECK((c->shape.compress_ratios[0] == 128 && c->shape.compress_ratios[1] == 128 &&
         c->shape.compress_ratios[2] == 128 && c->shape.compress_ratios[3] == 4 &&
         c->shape.compress_ratios[43] == 0));
  // num_hash_layers absent: mlp_layer_types, else 3.
  j = released_flash();
  j.erase("num_hash_layers");
  CHECK(parse(j)->shape.n_hash_layers == 3);
  nlohmann::json mlp = nlohmann::json::array();
  for (int l = 0; l < 43; ++l) mlp.push_back(l < 5 ? "hash_moe" : "moe");
  j["mlp_layer_types"] = mlp;
  CHECK(parse(j)->shape.n_hash_layers == 5);
  // rope_dim from partial_rotary_factor, else transformers' default head_dim / 8.
  j = released_flash();
  j.erase("qk_rope_head_dim");
  j["partial_rotary_factor"] = 0.25;
  CHECK(parse(j)->shape.rope_dim == 128);
  CHECK(parse(j)->shape.nope_dim == 384);
  j.erase("partial_rotary_factor");
  CHECK(io::check_matches<config::v4_flash>(parse(j)->shape, "j").ok());
  // No rope_scaling: no YaRN.
  j = released_flash();
  j.erase("rope_scaling");
  CHECK(parse(j)->params.yarn_original_seq_len == 0);
  // eos_token_id as a list, dtype without quantization.
  j = released_flash();
  j["eos_token_id"] = {1, 2};
  j.erase("quantization_config");
  j.erase("expert_dtype");
  auto d = parse(j);
  REQUIRE(d.ok());
  CHECK(d->params.eos_id == 1);
  CHECK(d->shape.linear_format == config::weight_format::bf16);
}

TEST_CASE("hf_config: bad configs name the key") {
  auto with = [](const std::string& key, const nlohmann::json& v) {
    auto j = released_flash();
    if (v.is_discarded())
      j.erase(key);
    else
      j[key] = v;
    return error_of(j);
  };
  const auto gone = nlohmann::json(nlohmann::json::value_t::discarded);
  CHECK_THAT(with("hidden_size", gone), Contains("cfg/config.json") && Contains("missing hidden_size"));
  CHECK_THAT(with("hidden_size", "4096"), Contains("hidden_size must be an integer"));
  CHECK_THAT(with("hidden_size", -1), Contains("hidden_size = -1 is outside"));
  CHECK_THAT(with("hidden_size", 4096.5), Contains("hidden_size must be an integer"));
  CHECK_THAT(with("hidden_size", nlohmann::json(std::uint64_t{1} << 63)), Contains("outside"));
  CHECK_THAT(with("num_hidden_layers", 1000), Contains("num_hidden_layers"));
  CHECK_THAT(with("compress_ratios", nlohmann::json::array({0, 4})),
             Contains("compress_ratios must be a list"));
  CHECK_THAT(with("model_type", "llama"), Contains("model_type is \"llama\""));
  CHECK_THAT(with("o_groups", 7), Contains("output_groups_divide_heads"));
  CHECK_THAT(with("num_experts_per_tok", 300), Contains("experts_per_token_range"));
  CHECK_THAT(with("rope_scaling", {{"type", "linear"}, {"factor", 2}}), Contains("rope type linear"));
  CHECK_THAT(with("rope_scaling", {{"type", "yarn"}, {"factor", 16}}),
             Contains("original_max_position_embeddings"));
  CHECK_THAT(with("quantization_config", {{"quant_method", "awq"}}), Contains("only fp8"));
  CHECK_THAT(with("quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {64, 64}}}),
             Contains("[128, 128]"));
  CHECK_THAT(with("expert_dtype", "int4"), Contains("expert_dtype"));
  CHECK_THAT(with("rms_norm_eps", "tiny"), Contains("rms_norm_eps must be a finite number"));
  CHECK_THAT(with("eos_token_id", 129280), Contains("cfg/config.json") && Contains("eos_id must be a token"));
  CHECK_THAT(with("compress_rope_theta", 0), Contains("compress_rope_theta must be finite and positive"));
  CHECK_THAT(with("scoring_func", "sigmoid"), Contains("scoring_func is \"sigmoid\""));
  CHECK_THAT(with("num_key_value_heads", 8), Contains("num_key_value_heads is 8"));
  CHECK_THAT(with("tie_word_embeddings", true), Contains("tie_word_embeddings"));
  auto j = released_flash();
  j.erase("compress_ratios");
  j.erase("qk_rope_head_dim");
  j["partial_rotary_factor"] = 0.3;
  CHECK_THAT(error_of(j), Contains("partial_rotary_factor"));
  j = released_flash();
  j.erase("compress_ratios");
  j["layer_types"] = nlohmann::json::array();
  for (int l = 0; l < 43; ++l) j["layer_types"].push_back(l == 7 ? "full_attention" : "sliding_attention");
  CHECK_THAT(error_of(j), Contains("layer_types[7] = full_attention"));
  j = released_flash();
  j.erase("num_hash_layers");
  j["mlp_layer_types"] = nlohmann::json::array();
  for (int l = 0; l < 43; ++l) j["mlp_layer_types"].push_back(l == 4 ? "hash_moe" : "moe");
  CHECK_THAT(error_of(j), Contains("mlp_layer_types[4] is hash_moe after a moe layer"));
  CHECK_THAT(io::parse_hf_config("{\"hidden_size\": ", "x.json").error().message(), Contains("JSON at byte"));
  CHECK_THAT(io::parse_hf_config(std::string(50, '[') + std::string(50, ']'), "x.json").error().message(),
             Contains("nesting deeper"));
  CHECK_THAT(io::parse_hf_config("{\"a\": 1, \"a\": 2}", "x.json").error().message(),
             Contains("repeated member name \"a\""));
  CHECK_FALSE(io::read_hf_config("/nonexistent/dsv4/config.json").ok());
}

namespace {

// V4-Flash's inference/config.json, in the official inference code's ModelArgs spelling, with the
// keys the shipped file lacks (spec §18.2: n_mtp_layers, scale_dtype, norm_eps, hc_eps,
// max_seq_len, max_batch_size) left out.
nlohmann::json inference_flash() {
  return {{"vocab_size", 129280},
          {"dim", 4096},
          {"moe_inter_dim", 2048},
          {"n_layers", 43},
          {"n_hash_layers", 3},
          {"n_heads", 64},
          {"n_routed_experts", 256},
          {"n_shared_experts", 1},
          {"n_activated_experts", 6},
          {"score_func", "sqrtsoftplus"},
          {"route_scale", 1.5},
          {"swiglu_limit", 10.0},
          {"q_lora_rank", 1024},
          {"head_dim", 512},
          {"rope_head_dim", 64},
          {"o_groups", 8},
          {"o_lora_rank", 1024},
          {"window_size", 128},
          {"compress_ratios", released_flash()["compress_ratios"]},
          {"compress_rope_theta", 160000.0},
          {"original_seq_len", 65536},
          {"rope_theta", 10000.0},
          {"rope_factor", 16},
          {"beta_fast", 32},
          {"beta_slow", 1},
          {"index_n_heads", 64},
          {"index_head_dim", 128},
          {"index_topk", 512},
          {"hc_mult", 4},
          {"hc_sinkhorn_iters", 20},
          {"dtype", "fp8"},
          {"scale_fmt", "ue8m0"},
          {"expert_dtype", "fp4"}};
}

void check_same_params(const config::model_params& a, const config::model_params& b) {
  CHECK(a.rms_norm_eps == b.rms_norm_eps);
  CHECK(a.hc_eps == b.hc_eps);
  CHECK(a.rope_theta == b.rope_theta);
  CHECK(a.compress_rope_theta == b.compress_rope_theta);
  CHECK(a.yarn_factor == b.yarn_factor);
  CHECK(a.yarn_original_seq_len == b.yarn_original_seq_len);
  CHECK(a.yarn_beta_fast == b.yarn_beta_fast);
  CHECK(a.yarn_beta_slow == b.yarn_beta_slow);
  CHECK(a.route_scale == b.route_scale);
  CHECK(a.swiglu_limit == b.swiglu_limit);
  CHECK(a.max_seq_len == b.max_seq_len);
  CHECK(a.bos_id == b.bos_id);
  CHECK(a.eos_id == b.eos_id);
}

}  // namespace

TEST_CASE("hf_config: the inference code's spelling of V4-Flash equals the Hugging Face one") {
  auto hf = parse(released_flash());
  auto inf = parse(inference_flash());
  INFO((inf.ok() ? std::string() : inf.error().message()));
  REQUIRE(hf.ok());
  REQUIRE(inf.ok());
  const auto same = io::check_matches(inf->shape, io::to_model_config(hf->shape), "inference/config.json");
  INFO(same.message());
  CHECK(same.ok());
  CHECK(io::check_matches<config::v4_flash>(inf->shape, "inference/config.json").ok());
  CHECK(inf->shape.n_mtp_layers == 1);  // absent: the code's default (spec §18.2)
  CHECK(inf->shape.expert_format == config::weight_format::fp4_e2m1_block32);
  CHECK(inf->shape.linear_format == config::weight_format::fp8_e4m3_block128);
  check_same_params(inf->params, hf->params);
  // The keys a loader may add at run time, and the explicit defaults, change nothing.
  auto j = inference_flash();
  j["n_mtp_layers"] = 1;
  j["scale_dtype"] = "fp8";
  j["norm_eps"] = 1e-6;
  j["hc_eps"] = 1e-6;
  j["max_batch_size"] = 4;
  j["max_seq_len"] = 4096;
  auto with_runtime = parse(j);
  REQUIRE(with_runtime.ok());
  CHECK(with_runtime->params.max_seq_len == 4096);
  CHECK(io::check_matches(with_runtime->shape, io::to_model_config(hf->shape), "x").ok());
}

TEST_CASE("hf_config: the inference spelling's defaults, formats and errors") {
  SECTION("numbers missing take the inference code's defaults") {
    auto j = inference_flash();
    for (const char* k :
         {"route_scale", "swiglu_limit", "compress_rope_theta", "original_seq_len", "rope_factor"})
      j.erase(k);
    auto r = parse(j);
    REQUIRE(r.ok());
    CHECK(r->params.route_scale == 1.0f);
    CHECK(r->params.swiglu_limit == 0.0f);
    CHECK(r->params.compress_rope_theta == 40000.0f);
    CHECK(r->params.yarn_original_seq_len == 0);  // no YaRN
  }
  SECTION("expert_dtype null: experts as dtype; dtype bf16: unquantized") {
    auto j = inference_flash();
    j["expert_dtype"] = nullptr;
    auto r = parse(j);
    REQUIRE(r.ok());
    CHECK(r->shape.expert_format == config::weight_format::fp8_e4m3_block128);
    j["dtype"] = "bf16";
    auto b = parse(j);
    REQUIRE(b.ok());
    CHECK(b->shape.linear_format == config::weight_format::bf16);
    CHECK(b->shape.expert_format == config::weight_format::bf16);
  }
  SECTION("bad values and keys are named") {
    auto j = inference_flash();
    j["n_hash_layer"] = 3;  // a typo: ModelArgs(**json) refuses it too
    CHECK_THAT(error_of(j), Contains("unknown key \"n_hash_layer\""));
    j = inference_flash();
    j.erase("dim");
    j["hidden_size"] = 4096;
    CHECK_THAT(error_of(j), Contains("mixes the inference code's spelling") && Contains("hidden_size"));
    j = inference_flash();
    j.erase("window_size");
    CHECK(error_of(j) == "cfg/config.json: missing window_size");
    j = inference_flash();
    j.erase("compress_ratios");
    CHECK(error_of(j) == "cfg/config.json: missing compress_ratios");
    j = inference_flash();
    j["compress_ratios"] = {0, 4};
    CHECK(error_of(j) ==
          "cfg/config.json: compress_ratios must be a list of n_layers or n_layers + 1 integers");
    j = inference_flash();
    j["dtype"] = "fp16";
    CHECK_THAT(error_of(j), Contains("dtype is \"fp16\""));
    j = inference_flash();
    j["score_func"] = "sigmoid";
    CHECK_THAT(error_of(j), Contains("score_func is \"sigmoid\""));
    j = inference_flash();
    j["scale_dtype"] = "fp32";
    CHECK(parse(j).ok());  // scale_fmt ue8m0: power-of-two scales kept in fp32
    j["scale_fmt"] = nullptr;
    CHECK_THAT(error_of(j), Contains("not powers of two"));
    j = inference_flash();
    j["n_mtp_layers"] = 2;
    CHECK_THAT(error_of(j), Contains("n_mtp_layers"));
  }
}

TEST_CASE("hf_config: a directory with only inference/config.json") {
  test::scratch_dir dir("hf_config_inference_dir");
  std::filesystem::create_directories(dir.path / "inference");
  test::write_text(dir.path / "inference" / "config.json", inference_flash().dump(2));
  auto p = io::config_path(dir.path);
  REQUIRE(p.ok());
  CHECK(*p == dir.path / "inference" / "config.json");
  auto cfg = io::read_hf_config(dir.path);
  INFO((cfg.ok() ? std::string() : cfg.error().message()));
  REQUIRE(cfg.ok());
  CHECK(io::check_matches<config::v4_flash>(cfg->shape, "dir").ok());
  // config.json, when present, is the one read.
  test::write_text(dir.path / "config.json", released_flash().dump(2));
  REQUIRE(io::config_path(dir.path).ok());
  CHECK(*io::config_path(dir.path) == dir.path / "config.json");
  test::scratch_dir empty("hf_config_empty_dir");
  auto none = io::read_hf_config(empty.path);
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.error().message(), Contains("holds neither config.json nor inference/config.json"));
}
