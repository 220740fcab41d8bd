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

// ---- bytes read per decoded token ----------------------------------------------------------------

namespace {

// Two layers (SWA hash-routed, CSA score-routed) and an MTP block, FP8 linears, FP4 experts, BF16
// others and a BF16 cache: every kind of stored size, at dims small enough to count by hand.
constexpr model_config read_bytes_micro = [] {
  model_config c;
  c.family = attention_family::v4_hybrid;
  c.vocab_size = 64;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 2;
  c.head_dim = 32;
  c.rope_dim = 16;
  c.nope_dim = 16;
  c.q_lora_rank = 32;
  c.o_groups = 1;
  c.o_lora_rank = 16;
  c.window = 4;
  c.csa_ratio = 4;
  c.hca_ratio = 8;
  c.compress_ratios[0] = 0;  // layer 0: SWA
  c.compress_ratios[1] = 4;  // layer 1: CSA
  c.compress_ratios[2] = 0;  // the MTP block: SWA
  c.n_schedule = 3;
  c.index_n_heads = 2;
  c.index_head_dim = 16;
  c.index_topk = 2;
  c.hc_mult = 2;
  c.hc_sinkhorn_iters = 1;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.n_experts_per_tok = 2;
  c.moe_inter_dim = 32;
  c.n_hash_layers = 1;
  c.n_mtp_layers = 1;
  c.linear_format = weight_format::fp8_e4m3_block128;
  c.expert_format = weight_format::fp4_e2m1_block32;
  c.other_format = weight_format::bf16;
  c.cache_format = kv_format::bf16;
  return c;
}();
static_assert(is_valid_config<read_bytes_micro>);

}  // namespace

TEST_CASE("decode_read_bytes: the weights a token touches and the cache it holds, counted by hand") {
  // Stored sizes: FP8 (r, c) with r, c <= 128 is r*c bytes + one E8M0 scale; FP4 (r, c) is
  // r*c/2 bytes + r*c/32 scales; BF16 2 bytes, F32 4 bytes an element.
  // Top level: one embedding row 64*2 = 128, head 64*64*2 = 8192, norm 128, HC head fn (2, 128)
  // F32 1024, base 8, scale 4.
  const std::int64_t top = 128 + 8192 + 128 + 1024 + 8 + 4;
  // Each layer: attn_norm, ffn_norm 128 each; mHC sites attn and ffn, fn (8, 128) F32 4096, base 32,
  // scale 12 each; attention wq_a (32, 64) 2049, q_norm 64, wq_b (64, 32) 2049, wkv (32, 64) 2049,
  // kv_norm 64, wo_a (16, 64) 1025, wo_b (64, 16) 1025, attn_sink 8.
  const std::int64_t norms = 256, mhc = 2 * (4096 + 32 + 12);
  const std::int64_t attention = 2049 + 64 + 2049 + 2049 + 64 + 1025 + 1025 + 8;
  // FFN: gate (4, 64) BF16 512; two of the four FP4 experts, w1 and w3 (32, 64) 1024 + 64 each,
  // w2 (64, 32) 1024 + 64; the shared FP8 expert w1, w3 (32, 64), w2 (64, 32) 2049 each.
  const std::int64_t experts = 2 * 3 * 1088, shared = 3 * 2049;
  // Layer 0 (hash-routed): one tid2eid row of 2 int64; layer 1: the gate bias (4) F32.
  const std::int64_t layer0 = norms + mhc + attention + 512 + 16 + experts + shared;
  // Layer 1 (CSA): compressor wkv, wgate (64, 64) BF16 8192 each, ape (4, 64) F32 1024, norm 64;
  // indexer wq_b (32, 32) FP8 1025, weights_proj (2, 64) BF16 256, its compressor wkv, wgate
  // (32, 64) 4096 each, ape (4, 32) 512, norm 32.
  const std::int64_t csa = 8192 + 8192 + 1024 + 64 + 1025 + 256 + 4096 + 4096 + 512 + 32;
  const std::int64_t layer1 = norms + mhc + attention + csa + 512 + 16 + experts + shared;
  CHECK(top == 9484);
  CHECK(layer0 == 30072);
  CHECK(layer1 == 57561);
  // KV at 10 tokens, BF16 entries of 32 dims (64 B) and index keys of 16 (32 B): layer 0 its window
  // of 4 entries; layer 1 its window, floor(10 / 4) = 2 entries and 2 keys, and the two
  // compressors' fp32 kv and score state, (2*4, 2*32) and (2*4, 2*16): 2 * 4 * 8 * 96 B.
  const std::int64_t kv10 = 4 * 64 + (4 * 64 + 2 * 64 + 2 * 32 + 2 * 4 * 8 * 96);
  CHECK(kv10 == 6848);

  constexpr token_read_bytes at10 = decode_read_bytes(read_bytes_micro, 10);
  STATIC_REQUIRE(at10.weights == 97117.0);  // top + layer0 + layer1: the MTP block is left out
  CHECK(at10.weights == static_cast<double>(top + layer0 + layer1));
  CHECK(at10.kv == kv10);
  CHECK(at10.total() == static_cast<double>(top + layer0 + layer1 + kv10));
  // With no token yet the cache holds only the compressors' state; the weights do not change.
  const token_read_bytes at0 = decode_read_bytes(read_bytes_micro, 0);
  CHECK(at0.weights == at10.weights);
  CHECK(at0.kv == 2 * 4 * 8 * 96);
  // Routing one more expert per token reads one more expert (3264 B) in each layer, and one more
  // int64 in the hash layer's tid2eid row.
  model_config more = read_bytes_micro;
  more.n_experts_per_tok = 3;
  CHECK(decode_read_bytes(more, 10).weights == at10.weights + 2 * 3264.0 + 8.0);
}
