// Parameter counts, KV-cache bytes and decode FLOPs against the spec (§8, §11.2), the report's
// claims (§8.1) and hand computations. Expected integers were computed independently from the
// per-tensor formulas of spec §11.2 (see docs/accounting.md).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/presets.hpp"

using namespace dsv4::config;

namespace {

constexpr std::int64_t one_m = 1048576;  // the 1M context of the report

double ratio(std::int64_t a, std::int64_t b) { return static_cast<double>(a) / static_cast<double>(b); }

// Relative distance, for comparisons with the rounded figures of the spec and the report.
double rel(double got, double want) { return (got - want) / want; }

}  // namespace

// ---- parameters ----------------------------------------------------------------------------------

TEST_CASE("parameter counts reproduce the independent per-tensor computation exactly") {
  STATIC_REQUIRE(count_params(v4_flash).total == 284'332'240'471);
  STATIC_REQUIRE(count_params(v4_flash).activated == 13'799'632'471);
  STATIC_REQUIRE(count_params(v4_flash, mtp_mode::include).total == 290'942'289'362);
  STATIC_REQUIRE(count_params(v4_flash, mtp_mode::include).activated == 14'118'225'362);
  STATIC_REQUIRE(count_params(v4_pro).total == 1'572'997'201'763);
  STATIC_REQUIRE(count_params(v4_pro).activated == 49'779'081'059);
  STATIC_REQUIRE(count_params(v4_pro, mtp_mode::include).total == 1'598'837'347'742);
  STATIC_REQUIRE(count_params(v4_pro, mtp_mode::include).activated == 50'648'438'174);
  STATIC_REQUIRE(count_params(v32).total == 671'877'944'064);
  STATIC_REQUIRE(count_params(v32).activated == 38'403'822'336);
}

TEST_CASE("parameter counts are within 0.5% of spec 11.2 (logical counts incl. MTP)") {
  const param_counts flash = count_params(v4_flash, mtp_mode::include);
  const param_counts pro = count_params(v4_pro, mtp_mode::include);
  CHECK(std::abs(rel(static_cast<double>(flash.total), 290.9e9)) < 0.005);
  CHECK(std::abs(rel(static_cast<double>(flash.activated), 14.1e9)) < 0.005);
  CHECK(std::abs(rel(static_cast<double>(pro.total), 1598.8e9)) < 0.005);
  CHECK(std::abs(rel(static_cast<double>(pro.activated), 50.6e9)) < 0.005);
}

TEST_CASE("the report's rounded totals: activated figures leave out the embedding table") {
  // 284B / 13B, 1.6T / 49B, V3.2 671B / 37B: totals match as they are; activated counts match once
  // the embedding lookup (no FLOPs) is left out: 13.27B, 48.85B, 37.48B.
  const auto activated_without_embedding = [](const model_config& c) {
    return static_cast<double>(count_params(c).activated - breakdown_params(c).main.embedding) / 1e9;
  };
  CHECK(static_cast<double>(count_params(v4_flash).total) / 1e9 == Approx(284.0).margin(0.5));
  CHECK(static_cast<double>(count_params(v4_pro).total) / 1e12 == Approx(1.6).margin(0.05));
  CHECK(static_cast<double>(count_params(v32).total) / 1e9 == Approx(671.0).margin(1.0));
  CHECK(activated_without_embedding(v4_flash) == Approx(13.0).margin(0.5));
  CHECK(activated_without_embedding(v4_pro) == Approx(49.0).margin(0.5));
  CHECK(activated_without_embedding(v32) == Approx(37.0).margin(0.5));
}

TEST_CASE("parameter breakdown: groups sum to the totals and match hand formulas") {
  constexpr param_breakdown b = breakdown_params(v4_flash);
  constexpr std::int64_t d = 4096, v = 129280;
  CHECK(b.main.total() == count_params(v4_flash).total);
  CHECK(b.main.total() + b.mtp.total() == count_params(v4_flash, mtp_mode::include).total);
  CHECK(b.main.embedding == v * d);
  CHECK(b.main.head == v * d);
  CHECK(b.main.routed_experts == 43 * 256 * 3 * 2048 * d);
  CHECK(b.main.shared_experts == 43 * 3 * 2048 * d);
  // gate.weight on every layer, gate.bias on the 40 score-routed ones
  CHECK(b.main.router == 43 * 256 * d + 40 * 256);
  // two sites of (24, 4d) + 24 + 3 per layer, plus the HC head (4, 4d) + 4 + 1
  CHECK(b.main.mhc == 43 * 2 * (24 * 4 * d + 24 + 3) + 4 * 4 * d + 4 + 1);
  CHECK(b.main.norms == 43 * 2 * d + d);
  CHECK(b.main.dense_ffn == 0);
  CHECK(b.main.hash_table == 3 * v * 6);  // tid2eid: reported, not counted
  CHECK(b.mtp.mtp_projections == 2 * d * d);
  CHECK(b.mtp.embedding == 0);  // the MTP shares the main embedding and head
  // The SWA-only MTP block has no compressor: its attention equals Flash layer 0's.
  constexpr auto attention_of = [](int layer) {
    std::int64_t n = 0;
    for_each_layer_tensor(v4_flash, layer, [&n](const tensor_desc& t) {
      if (t.group == tensor_group::attention) n += t.elements();
    });
    return n;
  };
  CHECK(b.mtp.attention == attention_of(0));
  // CSA adds its compressor and the indexer, HCA its compressor (spec 6.2, 7.2)
  CHECK(attention_of(2) - attention_of(0) ==
        2 * (1024 * d) + 4 * 1024 + 512 + 8192 * 1024 + 64 * d + 2 * (256 * d) + 4 * 256 + 128);
  CHECK(attention_of(3) - attention_of(0) == 2 * (512 * d) + 128 * 512 + 512);
  CHECK(breakdown_params(v32).main.dense_ffn == 3 * 3 * 18432 * std::int64_t{7168});
}

TEST_CASE("checkpoint view matches the released safetensors (spec 11.2)") {
  SECTION("Pro: 145,116 tensors, 861.6 G stored elements (FP4 as packed bytes), 805.3 GiB") {
    constexpr param_breakdown b = breakdown_params(v4_pro);
    CHECK(b.tensor_count == 145'116);
    const std::int64_t routed = b.main.routed_experts + b.mtp.routed_experts;
    const std::int64_t stored =
        b.main.total() + b.mtp.total() - routed / 2 + b.scale_elements + b.main.hash_table;
    CHECK(std::abs(rel(static_cast<double>(stored), 861.6e9)) < 1e-4);
    CHECK(std::abs(rel(static_cast<double>(b.checkpoint_bytes) / (1u << 30), 805.3)) < 1e-4);
  }
  SECTION("Flash: about 159.6 GB; the MTP shard holds 797 weights and 778 scales") {
    CHECK(std::abs(rel(static_cast<double>(breakdown_params(v4_flash).checkpoint_bytes), 159.6e9)) < 2e-4);
    std::int64_t weights = 0, scales = 0;
    const auto tally = [&](const tensor_desc& t) {
      weights += t.copies;
      scales += t.scale_elements() > 0 ? t.copies : 0;
    };
    for_each_layer_tensor(v4_flash, v4_flash.n_layers, tally);
    for_each_mtp_extra_tensor(v4_flash, tally);
    CHECK(weights == 797);
    CHECK(scales == 778);
  }
}

TEST_CASE("tiny models: activated = total - routed + top-k experts per layer") {
  for (const model_config* c : {&tiny_swa, &tiny_hybrid}) {
    const param_breakdown b = breakdown_params(*c);
    const std::int64_t per_expert = 3 * std::int64_t{c->moe_inter_dim} * c->d_model;
    CHECK(b.main.routed_experts == c->n_layers * c->n_routed_experts * per_expert);
    CHECK(count_params(*c).activated ==
          b.main.total() - b.main.routed_experts + c->n_layers * c->n_experts_per_tok * per_expert);
    CHECK(b.scale_elements == 0);  // f32 weights carry no block scales
  }
  CHECK(count_params(tiny_swa, mtp_mode::include).total == count_params(tiny_swa).total);  // no MTP
  CHECK(count_params(tiny_hybrid, mtp_mode::include).total > count_params(tiny_hybrid).total);
}

// ---- KV cache ------------------------------------------------------------------------------------

TEST_CASE("KV entry sizes per format (spec 8.2)") {
  CHECK(kv_entry_bytes(v4_flash, kv_format::fp8_released).entry == 584);     // 448 + 128 + 7 + 1
  CHECK(kv_entry_bytes(v4_flash, kv_format::fp8_released).index_key == 68);  // 64 + 4
  CHECK(kv_entry_bytes(v4_pro, kv_format::bf16).entry == 1024);
  CHECK(kv_entry_bytes(v4_pro, kv_format::bf16).index_key == 256);
  CHECK(kv_entry_bytes(v4_flash, kv_format::f32).entry == 2048);
  CHECK(kv_entry_bytes(v32, kv_format::fp8_released).entry == 656);  // 512 + 16 + 128
  CHECK(kv_entry_bytes(v32, kv_format::fp8_released).index_key == 132);
  CHECK(kv_entry_bytes(v32, kv_format::f32).entry == 4 * 576);
}

TEST_CASE("KV bytes per layer kind at 1M tokens, Flash released format") {
  constexpr kv_format f = kv_format::fp8_released;
  const kv_bytes swa = kv_layer_bytes(v4_flash, layer_kind::swa, f, one_m);
  const kv_bytes csa = kv_layer_bytes(v4_flash, layer_kind::csa, f, one_m);
  const kv_bytes hca = kv_layer_bytes(v4_flash, layer_kind::hca, f, one_m);
  CHECK(swa.window == 128 * 584);
  CHECK(swa.compressed + swa.indexer + swa.state == 0);
  CHECK(csa.window == 128 * 584);
  CHECK(csa.compressed == one_m / 4 * 584);
  CHECK(csa.indexer == one_m / 4 * 68);
  CHECK(csa.state == 2 * 4 * 8 * 1024 + 2 * 4 * 8 * 256);  // main + indexer compressor, fp32 kv + score
  CHECK(hca.compressed == one_m / 128 * 584);
  CHECK(hca.indexer == 0);
  CHECK(hca.state == 2 * 4 * 128 * 512);
  CHECK(csa.total() == csa.window + csa.compressed + csa.indexer + csa.state);
  // Compressor state is fp32 whatever the cache format.
  CHECK(kv_layer_bytes(v4_flash, layer_kind::hca, kv_format::bf16, one_m).state == hca.state);
}

TEST_CASE("KV bytes of a tiny model, by hand (f32, 37 tokens)") {
  // CSA: window 8 x 128 B; 9 entries x 128 B; 9 keys x 64 B; state 2 x 4 B x (2*4) x (2*(32+16)).
  const kv_bytes csa = kv_layer_bytes(tiny_hybrid, layer_kind::csa, kv_format::f32, 37);
  CHECK(csa.window == 1024);
  CHECK(csa.compressed == 1152);
  CHECK(csa.indexer == 576);
  CHECK(csa.state == 6144);
  // HCA: 2 entries of 16 tokens; state 2 x 4 B x 16 x 32.
  const kv_bytes hca = kv_layer_bytes(tiny_hybrid, layer_kind::hca, kv_format::f32, 37);
  CHECK(hca.compressed == 256);
  CHECK(hca.state == 4096);
  // Fewer tokens than the window: the ring holds only what exists.
  CHECK(kv_layer_bytes(tiny_hybrid, layer_kind::swa, kv_format::f32, 3).window == 3 * 128);
}

TEST_CASE("asymptotic KV bytes per token (spec 8.3)") {
  STATIC_REQUIRE(kv_bytes_per_token(v4_flash, kv_format::fp8_released) == 21 * 163 + 20 * 4.5625);  // 3514.25
  STATIC_REQUIRE(kv_bytes_per_token(v4_pro, kv_format::fp8_released) == 30 * 163 + 31 * 4.5625);  // 5031.4375
  STATIC_REQUIRE(kv_bytes_per_token(v32, kv_format::fp8_released) == 61 * (656 + 132));           // 48068
}

TEST_CASE("KV cache per sequence at 1M tokens reproduces spec 8.3 and the report's ratios") {
  constexpr kv_format f = kv_format::fp8_released;
  const kv_sequence flash = kv_sequence_bytes(v4_flash, f, one_m);
  const kv_sequence pro = kv_sequence_bytes(v4_pro, f, one_m);
  const kv_sequence v3 = kv_sequence_bytes(v32, f, one_m);
  // Asymptotic part alone: 3.685e9 and 5.276e9 B, the spec's "about 3.69 GB" and "5.28 GB".
  CHECK(std::abs(rel(kv_bytes_per_token(v4_flash, f) * one_m, 3.69e9)) < 0.002);
  CHECK(std::abs(rel(kv_bytes_per_token(v4_pro, f) * one_m, 5.28e9)) < 0.001);
  // Exact totals: windows (43 x 74,752 B) and compressor states (12.2 MB) add 0.4%.
  CHECK(flash.total() == 3'700'378'624);
  CHECK(flash.backbone().window == 43 * 74752);
  CHECK(flash.backbone().state == 21 * 81920 + 20 * 524288);
  CHECK(std::abs(rel(static_cast<double>(flash.total()), 3.69e9)) < 0.005);
  CHECK(std::abs(rel(static_cast<double>(pro.total()), 5.28e9)) < 0.005);
  CHECK(v3.total() == 48068 * one_m);  // 50.4 GB
  CHECK(ratio(flash.total(), v3.total()) == Approx(0.073).margin(0.0005));
  CHECK(ratio(pro.total(), v3.total()) == Approx(0.105).margin(0.0005));
  // The report's 7% and 10%.
  CHECK(ratio(flash.total(), v3.total()) == Approx(0.07).margin(0.005));
  CHECK(ratio(pro.total(), v3.total()) == Approx(0.10).margin(0.006));
}

TEST_CASE("KV breakdown: kinds sum to the backbone, the MTP block is separate and SWA-only") {
  const kv_sequence s = kv_sequence_bytes(v4_flash, kv_format::fp8_released, one_m);
  const auto kind = [&s](layer_kind k) { return s.by_kind[static_cast<std::size_t>(k)]; };
  CHECK(kind(layer_kind::swa).total() == 2 * 74752);
  CHECK(kind(layer_kind::csa).total() ==
        21 * kv_layer_bytes(v4_flash, layer_kind::csa, v4_flash.cache_format, one_m).total());
  CHECK(kind(layer_kind::swa).total() + kind(layer_kind::csa).total() + kind(layer_kind::hca).total() ==
        s.backbone().total());
  CHECK(s.mtp.total() == 74752);
  CHECK(s.total(mtp_mode::include) - s.total() == 74752);
  CHECK(kv_sequence_bytes(tiny_swa, kv_format::f32, 100).mtp.total() == 0);  // no MTP block
}

// ---- FLOPs ---------------------------------------------------------------------------------------

TEST_CASE("attention candidates per head (spec 8.4)") {
  CHECK(attention_candidates(v4_flash, layer_kind::swa, one_m) == 128);
  CHECK(attention_candidates(v4_flash, layer_kind::csa, one_m) == 640);
  CHECK(attention_candidates(v4_pro, layer_kind::csa, one_m) == 1152);
  CHECK(attention_candidates(v4_flash, layer_kind::hca, one_m) == 8320);
  CHECK(attention_candidates(v32, layer_kind::csa, one_m) == 2048);
  // Short contexts: the window holds all tokens, the indexer keeps what exists.
  CHECK(attention_candidates(v4_flash, layer_kind::csa, 100) == 100 + 25);
  CHECK(attention_candidates(v4_flash, layer_kind::hca, 100) == 100);
  CHECK(attention_candidates(v32, layer_kind::csa, 100) == 100);
  CHECK(attention_candidates(tiny_hybrid, layer_kind::csa, 37) == 8 + 4);
  CHECK(attention_candidates(tiny_hybrid, layer_kind::hca, 37) == 8 + 2);
}

TEST_CASE("decode FLOPs per token: components and hand formulas") {
  const token_flops f = decode_flops(v4_flash, one_m);
  constexpr std::int64_t per_entry = 2 * 64 * (512 + 512);
  CHECK(f.core_attention == per_entry * (2 * 128 + 21 * 640 + 20 * 8320));
  // 64 heads x 128 dims x 262,144 blocks: about 2.1 G MACs per CSA layer (spec 8.4)
  CHECK(f.indexer == 21 * 2 * 64 * 128 * (one_m / 4));
  CHECK(static_cast<double>(f.indexer) / 21 / 2 == Approx(2.147e9).epsilon(1e-3));
  CHECK(f.linear == 2 * (count_params(v4_flash).activated - breakdown_params(v4_flash).main.embedding));
  CHECK(f.projections == 2 * breakdown_params(v4_flash).main.attention);
  CHECK(f.projections < f.linear);
  CHECK(f.total() == f.core_attention + f.indexer + f.linear);
  CHECK(f.fp8_equivalent() == Approx(2.0 * static_cast<double>(f.core_attention) +
                                     0.5 * static_cast<double>(f.indexer) + static_cast<double>(f.linear)));
  const token_flops v = decode_flops(v32, one_m);
  CHECK(v.core_attention == 61 * 2 * 128 * (576 + 512) * std::int64_t{2048});
  CHECK(v.indexer == 61 * 2 * 64 * 128 * one_m);
  CHECK(v.fp8_equivalent() == Approx(2.0 * static_cast<double>(v.core_attention) +
                                     static_cast<double>(v.indexer) + static_cast<double>(v.linear)));
}

TEST_CASE("decode FLOPs at 1M relative to V3.2 reproduce the report's 10% and 27%") {
  const token_flops flash = decode_flops(v4_flash, one_m);
  const token_flops pro = decode_flops(v4_pro, one_m);
  const token_flops v3 = decode_flops(v32, one_m);
  // Attention alone (core + indexer), raw FLOPs.
  CHECK(ratio(flash.attention(), v3.attention()) == Approx(0.1051).margin(0.0002));
  CHECK(ratio(pro.attention(), v3.attention()) == Approx(0.1898).margin(0.0002));
  // Whole token, equivalent FP8 FLOPs.
  const double flash_eq = flash.fp8_equivalent() / v3.fp8_equivalent();
  const double pro_eq = pro.fp8_equivalent() / v3.fp8_equivalent();
  CHECK(flash_eq == Approx(0.0997).margin(0.0002));
  CHECK(pro_eq == Approx(0.2645).margin(0.0002));
  CHECK(flash_eq == Approx(0.10).margin(0.005));
  CHECK(pro_eq == Approx(0.27).margin(0.006));  // 26.5%: the report rounds up (docs/accounting.md)
}

TEST_CASE("KV bytes and FLOPs never decrease with context") {
  const std::vector<std::int64_t> contexts{1,  2,   3,   4,   5,    8,     9,      16,
                                           17, 127, 128, 129, 4096, 65536, 131072, one_m};
  for (const model_config* c : {&v4_flash, &v4_pro, &v32, &tiny_swa, &tiny_hybrid}) {
    std::int64_t kv = 0, attn = 0;
    for (std::int64_t l : contexts) {
      INFO("n_layers " << c->n_layers << ", context " << l);
      const std::int64_t kv_l = kv_sequence_bytes(*c, kv_format::bf16, l).total(mtp_mode::include);
      const std::int64_t attn_l = decode_flops(*c, l).attention();
      CHECK(kv_l >= kv);
      CHECK(attn_l >= attn);
      kv = kv_l;
      attn = attn_l;
    }
  }
}
