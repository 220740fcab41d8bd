// Naming schemes: the canonical (official) names against transformers' module names and what
// save_pretrained writes; pairs from spec §11.3 checked one by one, then round trips over whole
// inventories, then scheme detection.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/io/inventory.hpp"
#include "dsv4/io/naming.hpp"

using namespace dsv4;
using io::naming_scheme;

namespace {
std::string in_scheme(const std::string& canonical, naming_scheme s) {
  auto n = io::to_scheme(canonical, s);
  return n ? n->name : std::string("<none>");
}
}  // namespace

TEST_CASE("naming: spec 11.3 pairs, official to transformers modules") {
  const auto m = naming_scheme::hf_modules;
  CHECK(in_scheme("embed.weight", m) == "model.embed_tokens.weight");
  CHECK(in_scheme("head.weight", m) == "lm_head.weight");
  CHECK(in_scheme("norm.weight", m) == "model.norm.weight");
  CHECK(in_scheme("hc_head_fn", m) == "model.hc_head.hc_fn");
  CHECK(in_scheme("layers.7.attn_norm.weight", m) == "model.layers.7.input_layernorm.weight");
  CHECK(in_scheme("layers.7.ffn_norm.weight", m) == "model.layers.7.post_attention_layernorm.weight");
  CHECK(in_scheme("layers.7.hc_attn_fn", m) == "model.layers.7.attn_hc.fn");
  CHECK(in_scheme("layers.7.hc_ffn_scale", m) == "model.layers.7.ffn_hc.scale");
  CHECK(in_scheme("layers.7.attn.wq_a.weight", m) == "model.layers.7.self_attn.q_a_proj.weight");
  CHECK(in_scheme("layers.7.attn.wq_a.scale", m) == "model.layers.7.self_attn.q_a_proj.weight_scale_inv");
  CHECK(in_scheme("layers.7.attn.q_norm.weight", m) == "model.layers.7.self_attn.q_a_norm.weight");
  CHECK(in_scheme("layers.7.attn.wkv.weight", m) == "model.layers.7.self_attn.kv_proj.weight");
  CHECK(in_scheme("layers.7.attn.kv_norm.weight", m) == "model.layers.7.self_attn.kv_norm.weight");
  CHECK(in_scheme("layers.7.attn.wo_b.weight", m) == "model.layers.7.self_attn.o_b_proj.weight");
  CHECK(in_scheme("layers.7.attn.attn_sink", m) == "model.layers.7.self_attn.sinks");
  CHECK(in_scheme("layers.7.attn.compressor.ape", m) == "model.layers.7.self_attn.compressor.position_bias");
  CHECK(in_scheme("layers.7.attn.compressor.norm.weight", m) ==
        "model.layers.7.self_attn.compressor.kv_norm.weight");
  CHECK(in_scheme("layers.7.attn.indexer.compressor.wgate.weight", m) ==
        "model.layers.7.self_attn.compressor.indexer.gate_proj.weight");
  CHECK(in_scheme("layers.7.attn.indexer.wq_b.weight", m) ==
        "model.layers.7.self_attn.compressor.indexer.q_b_proj.weight");
  CHECK(in_scheme("layers.7.attn.indexer.weights_proj.weight", m) ==
        "model.layers.7.self_attn.compressor.indexer.scorer.weights_proj.weight");
  CHECK(in_scheme("layers.7.ffn.gate.bias", m) == "model.layers.7.mlp.gate.e_score_correction_bias");
  CHECK(in_scheme("layers.7.ffn.gate.tid2eid", m) == "model.layers.7.mlp.gate.tid2eid");
  CHECK(in_scheme("layers.7.ffn.shared_experts.w3.weight", m) ==
        "model.layers.7.mlp.shared_experts.up_proj.weight");
  const auto w3 = io::to_scheme("layers.7.ffn.experts.12.w3.weight", m);
  REQUIRE(w3);
  CHECK(w3->name == "model.layers.7.mlp.experts.gate_up_proj");
  CHECK(w3->part == io::fused_part::up_rows);
  CHECK(w3->expert == 12);
  const auto w2 = io::to_scheme("layers.7.ffn.experts.0.w2.weight", m);
  REQUIRE(w2);
  CHECK(w2->name == "model.layers.7.mlp.experts.down_proj");
  CHECK(w2->part == io::fused_part::expert);
  CHECK(in_scheme("layers.7.ffn.experts.0.w2.scale", m) ==
        "model.layers.7.mlp.experts.down_proj_scale_inv");  // transformers' FP8Experts
  CHECK(in_scheme("mtp.0.e_proj.weight", m) == "mtp.0.e_proj.weight");
  CHECK_FALSE(io::to_scheme("layers.7.attn.nonsense.weight", m));
}

TEST_CASE("naming: what save_pretrained writes (checked on tests/fixtures/tiny_v4)") {
  const auto s = naming_scheme::hf_saved;
  CHECK(in_scheme("embed.weight", s) == "model.embed_tokens.weight");
  CHECK(in_scheme("head.weight", s) == "head.weight");
  CHECK(in_scheme("norm.weight", s) == "model.norm.weight");
  CHECK(in_scheme("hc_head_scale", s) == "model.hc_head.hc_scale");
  CHECK(in_scheme("layers.2.attn.kv_norm.weight", s) == "model.layers.2.attn.norm.weight");
  CHECK(in_scheme("layers.2.attn.compressor.norm.weight", s) == "model.layers.2.attn.compressor.norm.weight");
  CHECK(in_scheme("layers.2.ffn.experts.3.w1.weight", s) == "model.layers.2.ffn.experts.3.w1.weight");
  CHECK(in_scheme("layers.2.hc_attn_fn", s) == "model.layers.2.hc_attn_fn");
  CHECK(io::to_canonical("model.layers.2.attn.norm.weight", s) == "layers.2.attn.kv_norm.weight");
  CHECK_FALSE(
      io::to_canonical("model.layers.2.attn.kv_norm.weight", s));  // not a name save_pretrained writes
  CHECK_FALSE(io::to_scheme("layers.2.attn.norm.weight", s));
  CHECK(in_scheme("layers.2.attn.wq_a.weight", naming_scheme::official) == "layers.2.attn.wq_a.weight");
}

TEST_CASE("naming: every tensor of V4-Flash round-trips through both transformers schemes") {
  io::model_shape flash = io::shape_of(config::v4_flash);
  const auto names = io::expected_tensors(flash, true);
  REQUIRE(names.size() > 1000);
  for (auto scheme : {naming_scheme::hf_saved, naming_scheme::hf_modules}) {
    std::vector<std::string> stored;
    for (const auto& e : names) {
      const auto n = io::to_scheme(e.name, scheme);
      const bool expert_scale = scheme == naming_scheme::hf_modules && e.name.starts_with("layers.") &&
                                e.name.find(".experts.") != std::string::npos && e.name.ends_with(".scale");
      REQUIRE(n);
      if (expert_scale) {  // transformers' FP8Experts: the fused `_scale_inv` companions
        CHECK(n->part != io::fused_part::whole);
        CHECK(n->name.ends_with("_proj_scale_inv"));
        continue;
      }
      if (n->part != io::fused_part::whole) continue;
      const auto back = io::to_canonical(n->name, scheme);
      INFO(e.name << " -> " << n->name);
      REQUIRE(back);
      CHECK(*back == e.name);
      stored.push_back(n->name);
    }
    auto detected = io::detect_scheme(stored, "flash");
    REQUIRE(detected.ok());
    CHECK(*detected == scheme);
  }
}

TEST_CASE("naming: layer numbers are parsed strictly") {
  const auto m = naming_scheme::hf_modules;
  CHECK_FALSE(io::to_scheme("layers.01.attn.wq_a.weight", m));
  CHECK_FALSE(io::to_scheme("layers.-1.attn.wq_a.weight", m));
  CHECK_FALSE(io::to_scheme("layers.99999999999.attn.wq_a.weight", m));
  CHECK_FALSE(io::to_scheme("layers..attn.wq_a.weight", m));
  CHECK_FALSE(io::to_canonical("model.layers.x.self_attn.q_a_proj.weight", m));
  CHECK(io::to_canonical("model.layers.12.self_attn.q_a_proj.weight", m) == "layers.12.attn.wq_a.weight");
  std::int64_t layer = -1;
  bool gate_up = false;
  CHECK(io::is_fused_experts("model.layers.3.mlp.experts.gate_up_proj", m, layer, gate_up));
  CHECK((layer == 3 && gate_up));
  CHECK_FALSE(io::is_fused_experts("model.layers.3.mlp.experts.gate_up_proj", naming_scheme::hf_saved, layer,
                                   gate_up));
}

TEST_CASE("naming: scheme detection, and files that mix schemes") {
  using v = std::vector<std::string>;
  CHECK(*io::detect_scheme(v{"embed.weight", "layers.0.attn.wq_a.weight"}, "f") == naming_scheme::official);
  CHECK(*io::detect_scheme(v{"head.weight", "model.layers.0.attn.wq_a.weight"}, "f") ==
        naming_scheme::hf_saved);
  CHECK(*io::detect_scheme(v{"lm_head.weight"}, "f") == naming_scheme::hf_modules);
  CHECK(*io::detect_scheme(v{"model.layers.0.self_attn.sinks"}, "f") == naming_scheme::hf_modules);
  CHECK(*io::detect_scheme(v{}, "f") == naming_scheme::official);
  auto mixed = io::detect_scheme(v{"embed.weight", "model.layers.0.attn.wq_a.weight"}, "mixed.safetensors");
  REQUIRE_FALSE(mixed.ok());
  CHECK_THAT(mixed.error().message(), Catch::Matchers::Contains("mixed.safetensors") &&
                                          Catch::Matchers::Contains("mixes naming schemes"));
}

TEST_CASE("naming: X.weight_scale_inv is the canonical X.scale in every scheme") {
  CHECK(io::to_canonical("layers.3.attn.wq_a.weight_scale_inv", naming_scheme::official) ==
        "layers.3.attn.wq_a.scale");
  CHECK(io::to_canonical("mtp.0.e_proj.weight_scale_inv", naming_scheme::official) == "mtp.0.e_proj.scale");
  CHECK(io::to_canonical("model.layers.3.ffn.experts.5.w2.weight_scale_inv", naming_scheme::hf_saved) ==
        "layers.3.ffn.experts.5.w2.scale");
  CHECK(io::to_canonical("model.layers.3.self_attn.q_a_proj.weight_scale_inv", naming_scheme::hf_modules) ==
        "layers.3.attn.wq_a.scale");
  CHECK_FALSE(io::to_canonical(".weight_scale_inv", naming_scheme::hf_saved));
  std::int64_t layer = 0;
  bool gate_up = false, scale = false;
  CHECK(io::is_fused_experts("model.layers.2.mlp.experts.gate_up_proj_scale_inv", naming_scheme::hf_modules,
                             layer, gate_up, scale));
  CHECK((layer == 2 && gate_up && scale));
  CHECK_FALSE(io::is_fused_experts("model.layers.2.mlp.experts.down_proj_scale_inv",
                                   naming_scheme::hf_modules, layer, gate_up));  // the weights-only form
  const auto down = io::to_scheme("layers.2.ffn.experts.7.w2.scale", naming_scheme::hf_modules);
  REQUIRE(down);
  CHECK(down->name == "model.layers.2.mlp.experts.down_proj_scale_inv");
  CHECK((down->part == io::fused_part::expert && down->expert == 7));
}
