// The expected inventory against the counts of the released checkpoints (spec §11.2).
#include <catch2/catch.hpp>

#include <string>

#include "dsv4/config/presets.hpp"
#include "dsv4/io/inventory.hpp"

using namespace dsv4;

TEST_CASE("inventory: V4-Pro has the 145,116 tensors of the released checkpoint") {
  const auto pro = io::expected_tensors(io::shape_of(config::v4_pro), true);
  CHECK(pro.size() == 145116);
}

TEST_CASE("inventory: the V4-Flash MTP block has 797 weights and 778 scales") {
  const auto flash = io::expected_tensors(io::shape_of(config::v4_flash), true);
  int weights = 0, scales = 0;
  for (const auto& e : flash) {
    if (!e.name.starts_with("mtp.")) continue;
    (e.name.ends_with(".scale") ? scales : weights)++;
  }
  CHECK(weights == 797);
  CHECK(scales == 778);
  const auto without = io::expected_tensors(io::shape_of(config::v4_flash), false);
  CHECK(flash.size() - without.size() == 1575);
}

TEST_CASE("inventory: shapes and kinds of a few released tensors (spec 11.2, Flash)") {
  const auto flash = io::expected_tensors(io::shape_of(config::v4_flash), true);
  auto find = [&](const std::string& n) -> const io::expected_tensor& {
    for (const auto& e : flash)
      if (e.name == n) return e;
    FAIL("missing " << n);
    return flash.front();
  };
  using s = std::vector<std::int64_t>;
  CHECK(find("layers.2.attn.wq_a.scale").shape == s{8, 32});
  CHECK(find("layers.2.attn.wo_a.weight").shape == s{8192, 4096});
  CHECK(find("layers.2.attn.wo_a.scale").shape == s{64, 32});
  CHECK(find("layers.2.attn.compressor.ape").shape == s{4, 1024});
  CHECK(find("layers.3.attn.compressor.ape").shape == s{128, 512});
  CHECK(find("layers.2.attn.indexer.wq_b.weight").shape == s{8192, 1024});
  CHECK(find("layers.2.attn.indexer.compressor.wkv.weight").shape == s{256, 4096});
  CHECK(find("layers.0.ffn.gate.tid2eid").shape == s{129280, 6});
  CHECK(find("layers.0.ffn.gate.tid2eid").kind == io::tensor_kind::ids);
  CHECK(find("layers.5.ffn.experts.255.w1.weight").shape == s{2048, 2048});
  CHECK(find("layers.5.ffn.experts.255.w1.weight").kind == io::tensor_kind::fp4_weight);
  CHECK(find("layers.5.ffn.experts.255.w2.scale").shape == s{4096, 64});
  CHECK(find("layers.5.ffn.shared_experts.w2.scale").shape == s{32, 16});
  CHECK(find("layers.5.hc_attn_fn").shape == s{24, 16384});
  CHECK(find("hc_head_fn").shape == s{4, 16384});
  CHECK(find("mtp.0.e_proj.scale").shape == s{32, 32});
  CHECK(find("mtp.0.ffn.gate.bias").kind == io::tensor_kind::fp32);
}
