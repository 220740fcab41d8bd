// v4_param_group: every tensor name of a released layer, the top level and the MTP block mapped
// to the rule of spec §12.3 and to the documented choices for the open cases.
#include <catch2/catch.hpp>

#include <string>
#include <utility>

#include "dsv4/config/presets.hpp"
#include "dsv4/optim/param_groups.hpp"

namespace {
using namespace dsv4::optim;

param_rule rule_of(const std::string& name) {
  const auto g = v4_param_group(name, dsv4::config::v4_flash);
  INFO(name << ": " << g.error().to_string());
  REQUIRE(g.ok());
  return g->rule;
}
}  // namespace

TEST_CASE("param groups: AdamW for embedding and head and norms and mHC biases and gates and sink and ape",
          "[optim][param_groups]") {
  for (const char* name : {"embed.weight",
                           "head.weight",
                           "norm.weight",
                           "hc_head_base",
                           "hc_head_scale",
                           "layers.0.attn_norm.weight",
                           "layers.0.ffn_norm.weight",
                           "layers.3.hc_attn_base",
                           "layers.3.hc_ffn_scale",
                           "layers.7.attn.q_norm.weight",
                           "layers.7.attn.kv_norm.weight",
                           "layers.7.attn.compressor.norm.weight",
                           "layers.7.attn.indexer.compressor.norm.weight",
                           "layers.7.attn.attn_sink",
                           "layers.7.attn.compressor.ape",
                           "layers.7.attn.indexer.compressor.ape",
                           "mtp.0.enorm.weight",
                           "mtp.0.hnorm.weight",
                           "mtp.0.norm.weight",
                           "mtp.0.hc_head_base",
                           "mtp.0.hc_attn_scale"})
    CHECK(rule_of(name) == param_rule::adamw);
}

TEST_CASE("param groups: Muon for projections and mHC dynamic matrices and router and experts",
          "[optim][param_groups]") {
  for (const char* name : {"hc_head_fn",
                           "layers.0.hc_attn_fn",
                           "layers.11.hc_ffn_fn",
                           "layers.2.attn.wq_a.weight",
                           "layers.2.attn.wq_b.weight",
                           "layers.2.attn.wkv.weight",
                           "layers.2.attn.wo_b.weight",
                           "layers.2.attn.compressor.wkv.weight",
                           "layers.2.attn.compressor.wgate.weight",
                           "layers.2.attn.indexer.wq_b.weight",
                           "layers.2.attn.indexer.weights_proj.weight",
                           "layers.2.attn.indexer.compressor.wkv.weight",
                           "layers.5.ffn.gate.weight",
                           "layers.5.ffn.experts.17.w1.weight",
                           "layers.5.ffn.experts.255.w2.weight",
                           "layers.5.ffn.shared_experts.w3.weight",
                           "mtp.0.e_proj.weight",
                           "mtp.0.h_proj.weight",
                           "mtp.0.attn.wq_a.weight",
                           "mtp.0.hc_head_fn"})
    CHECK(rule_of(name) == param_rule::muon);
}

TEST_CASE("param groups: block scales and router bias and hash table are not optimized",
          "[optim][param_groups]") {
  for (const char* name : {"layers.2.attn.wq_a.scale", "layers.5.ffn.experts.3.w1.scale",
                           "layers.5.ffn.gate.bias", "layers.0.ffn.gate.tid2eid", "mtp.0.e_proj.scale"})
    CHECK(rule_of(name) == param_rule::none);
}

TEST_CASE("param groups: wo_a splits into o_groups matrices and unknown names are errors",
          "[optim][param_groups]") {
  const auto flash = v4_param_group("layers.4.attn.wo_a.weight", dsv4::config::v4_flash);
  REQUIRE(flash.ok());
  CHECK(flash->rule == param_rule::muon);
  CHECK(flash->matrices == dsv4::config::v4_flash.o_groups);
  CHECK(v4_param_group("layers.4.attn.wo_a.weight", dsv4::config::v4_pro)->matrices == 16);
  CHECK(v4_param_group("layers.4.attn.wq_a.weight", dsv4::config::v4_pro)->matrices == 1);
  const auto unknown = v4_param_group("layers.4.attn.mystery", dsv4::config::v4_flash);
  CHECK(unknown.error().code() == dsv4::errc::invalid_argument);
  CHECK(unknown.error().message().find("layers.4.attn.mystery") != std::string::npos);
  // A block prefix needs its index: "layers.x." is not stripped, and no rule matches the rest.
  CHECK(!v4_param_group("layers.x.attn_sink", dsv4::config::v4_flash).ok());
}
