// Presets: the released DeepSeek-V4-Flash and -Pro configs (spec §1.1, §15), DeepSeek-V3.2-Exp for
// the report's efficiency comparisons, and tiny models that exercise every layer kind in tests.
//
// The released presets copy config.json value by value so that a model built from them loads the
// official checkpoints; each preset is validated right here, so a typo fails the build.
#pragma once

#include "dsv4/config/model_config.hpp"

namespace dsv4::config {

// The storage of DeepSeek's released checkpoints (spec §11.1, §8.2): FP8 linears with 128x128
// block scales, BF16 for the rest, the FP8 KV cache layout; routed experts as the release has them.
constexpr model_config released_storage(model_config c, weight_format experts) {
  c.linear_format = weight_format::fp8_e4m3_block128;
  c.expert_format = experts;
  c.other_format = weight_format::bf16;
  c.cache_format = kv_format::fp8_released;
  return c;
}

// ---- DeepSeek-V4-Flash (284B total / 13B activated) ---------------------------------------------

// [0, 0] + [4, 128] * 20 + [4] + [0]: SWA layers 0-1, CSA even 2..42, HCA odd 3..41, SWA MTP.
inline constexpr compress_schedule v4_flash_schedule =
    compress_schedule{}.append({0, 0}).append({4, 128}, 20).append({4}).append({0});

inline constexpr model_config v4_flash = released_storage(
    {
        .family = attention_family::v4_hybrid,
        .vocab_size = 129280,
        .d_model = 4096,
        .n_layers = 43,
        .n_heads = 64,
        .head_dim = 512,
        .rope_dim = 64,
        .nope_dim = 448,
        .q_lora_rank = 1024,
        .o_groups = 8,
        .o_lora_rank = 1024,
        .window = 128,
        .csa_ratio = 4,
        .hca_ratio = 128,
        .compress_ratios = v4_flash_schedule.ratios,
        .n_schedule = v4_flash_schedule.size,
        .index_n_heads = 64,
        .index_head_dim = 128,
        .index_topk = 512,
        .hc_mult = 4,
        .hc_sinkhorn_iters = 20,
        .n_routed_experts = 256,
        .n_shared_experts = 1,
        .n_experts_per_tok = 6,
        .moe_inter_dim = 2048,
        .n_hash_layers = 3,
        .n_mtp_layers = 1,
    },
    weight_format::fp4_e2m1_block32);
static_assert(is_valid_config<v4_flash>);

inline constexpr model_params v4_flash_params{.route_scale = 1.5f};

// ---- DeepSeek-V4-Pro (1.6T total / 49B activated) -----------------------------------------------

// [128, 128] + [4, 128] * 29 + [4] + [0]: HCA layers 0-1 and odd 3..59, CSA even 2..60, SWA MTP.
inline constexpr compress_schedule v4_pro_schedule =
    compress_schedule{}.append({128, 128}).append({4, 128}, 29).append({4}).append({0});

inline constexpr model_config v4_pro = [] {
  model_config c = with_schedule(v4_flash, v4_pro_schedule);  // spec §15: the rest is identical
  c.d_model = 7168;
  c.n_layers = 61;
  c.n_heads = 128;
  c.q_lora_rank = 1536;
  c.o_groups = 16;
  c.index_topk = 1024;
  c.n_routed_experts = 384;
  c.moe_inter_dim = 3072;
  return c;
}();
static_assert(is_valid_config<v4_pro>);

inline constexpr model_params v4_pro_params{.route_scale = 2.5f};

// ---- DeepSeek-V3.2-Exp (671B / 37B per the report), the comparison baseline -----------------------

// Published config.json. Only what the accounting reads is filled in: no mHC, no schedule (every
// layer is MLA + DSA), FP8 weights including experts, FP8 KV cache (656 B entries, 132 B keys).
inline constexpr model_config v32 = released_storage(
    {
        .family = attention_family::v32_mla_dsa,
        .vocab_size = 129280,
        .d_model = 7168,
        .n_layers = 61,
        .n_heads = 128,
        .head_dim = 192,  // qk_nope_head_dim + qk_rope_head_dim
        .rope_dim = 64,
        .nope_dim = 128,
        .q_lora_rank = 1536,
        .kv_lora_rank = 512,
        .v_head_dim = 128,
        .index_n_heads = 64,
        .index_head_dim = 128,
        .index_topk = 2048,
        .n_routed_experts = 256,
        .n_shared_experts = 1,
        .n_experts_per_tok = 8,
        .moe_inter_dim = 2048,
        .first_k_dense = 3,
        .dense_inter_dim = 18432,
        .n_mtp_layers = 1,
    },
    weight_format::fp8_e4m3_block128);
static_assert(is_valid_config<v32>);

// V3.2 applies YaRN (factor 40 over 4,096 tokens) to every layer at theta 10,000; no SwiGLU clamp.
inline constexpr model_params v32_params{.compress_rope_theta = 10000.0f,
                                         .yarn_factor = 40.0f,
                                         .yarn_original_seq_len = 4096,
                                         .route_scale = 2.5f,
                                         .swiglu_limit = 0.0f,
                                         .max_seq_len = 163840};

// ---- tiny test models ----------------------------------------------------------------------------

// Small enough for exhaustive CPU tests and golden fixtures; dims keep every ratio of the real
// models that matters (head_dim = nope + rope, 2 heads per output group, window < hca_ratio).
inline constexpr compress_schedule tiny_swa_schedule = compress_schedule{}.append({0, 0}).append({0});

// Two SWA-only layers, hash-routed then score-routed, no MTP, in fp32: Flash's architecture (CSA
// ratio 4, 4 hyper-connection streams, 20 Sinkhorn iterations, one shared expert) at toy size.
inline constexpr model_config tiny_swa = [] {
  model_config c = with_schedule(v4_flash, tiny_swa_schedule);
  c.vocab_size = 256;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.head_dim = 32;
  c.rope_dim = 16;
  c.nope_dim = 16;
  c.q_lora_rank = 32;
  c.o_groups = 2;
  c.o_lora_rank = 16;
  c.window = 8;
  c.hca_ratio = 16;
  c.index_n_heads = 2;
  c.index_head_dim = 16;
  c.index_topk = 4;
  c.n_routed_experts = 8;
  c.n_experts_per_tok = 2;
  c.moe_inter_dim = 32;
  c.n_hash_layers = 1;
  c.n_mtp_layers = 0;
  c.linear_format = c.expert_format = c.other_format = weight_format::f32;
  c.cache_format = kv_format::f32;
  return c;
}();
static_assert(is_valid_config<tiny_swa>);

// Layers: 0 SWA/hash, 1 CSA/hash, 2 HCA/score, 3 CSA/score, 4 HCA/score; MTP block SWA/score.
inline constexpr compress_schedule tiny_hybrid_schedule =
    compress_schedule{}.append({0}).append({4, 16}, 2).append({0});

inline constexpr model_config tiny_hybrid = [] {
  model_config c = with_schedule(tiny_swa, tiny_hybrid_schedule);
  c.n_layers = 5;
  c.n_hash_layers = 2;
  c.n_mtp_layers = 1;
  return c;
}();
static_assert(is_valid_config<tiny_hybrid>);

inline constexpr model_params tiny_params = v4_flash_params;

// The committed tiny checkpoint (tests/fixtures/tiny_v4, a random DeepseekV4ForCausalLM saved by
// Hugging Face transformers): layers SWA, CSA, HCA (ratio 128), CSA, hash-routed then score-routed,
// 4 experts of width 16, vocabulary 128; config.json names an MTP block the file does not hold.
inline constexpr compress_schedule tiny_v4_schedule = compress_schedule{}.append({0, 4, 128, 4}).append({0});

inline constexpr model_config tiny_v4 = [] {
  model_config c = with_schedule(tiny_hybrid, tiny_v4_schedule);
  c.vocab_size = 128;
  c.n_layers = 4;
  c.hca_ratio = 128;
  c.n_routed_experts = 4;
  c.moe_inter_dim = 16;
  return c;
}();
static_assert(is_valid_config<tiny_v4>);

// The smallest dims the released storage's tiles allow (128 x 128 FP8 blocks, KV tiles of 64 NoPE
// dims, FP4 blocks of 32): d_model, q_lora_rank, o_lora_rank, head_dim and index_head_dim 128 (64
// rope dims), 2 heads in one output group, experts 32 wide. For tiny models in released storage.
constexpr model_config with_released_tiles(model_config c) {
  c.d_model = 128;
  c.n_heads = 2;
  c.head_dim = 128;
  c.rope_dim = 64;
  c.nope_dim = 64;
  c.q_lora_rank = 128;
  c.o_groups = 1;
  c.o_lora_rank = 128;
  c.index_head_dim = 128;
  c.moe_inter_dim = 32;
  return c;
}

// tiny_v4's layer schedule in the released storage (FP8 linears, FP4 experts, BF16 others, the
// FP8/FP4 KV layout), with its MTP block (tests/fixtures/tiny_v4_released).
inline constexpr model_config tiny_v4_released =
    released_storage(with_released_tiles(tiny_v4), weight_format::fp4_e2m1_block32);
static_assert(is_valid_config<tiny_v4_released>);

// ---- peer-small: the V4 shape the model benchmarks share with other engines ---------------------

// d 1024, 8 layers [0, 0, 4, 128, 4, 128, 4, 128] + MTP, 16 heads of 512 (rope 64), q_lora 512,
// 4 output groups of rank 256, window 128, indexer 16 x 128 top-512, 64 experts of width 512 top-6,
// 1 shared expert, 3 hash layers, vocabulary 256, hc 4: small enough for a CPU, with every
// structure of V4-Flash. Three storages: BF16 everywhere, the released FP8 linears with FP8
// experts, and with FP4 experts.
inline constexpr compress_schedule peer_small_schedule =
    compress_schedule{}.append({0, 0}).append({4, 128}, 3).append({0});

inline constexpr model_config peer_small_fp8 = [] {
  model_config c = with_schedule(v4_flash, peer_small_schedule);
  c.vocab_size = 256;
  c.d_model = 1024;
  c.n_layers = 8;
  c.n_heads = 16;
  c.q_lora_rank = 512;
  c.o_groups = 4;
  c.o_lora_rank = 256;
  c.index_n_heads = 16;
  c.n_routed_experts = 64;
  c.moe_inter_dim = 512;
  c.n_hash_layers = 3;
  c.expert_format = weight_format::fp8_e4m3_block128;
  return c;
}();
static_assert(is_valid_config<peer_small_fp8>);

inline constexpr model_config peer_small_fp4 =
    released_storage(peer_small_fp8, weight_format::fp4_e2m1_block32);
static_assert(is_valid_config<peer_small_fp4>);

inline constexpr model_config peer_small = [] {
  model_config c = peer_small_fp8;
  c.linear_format = c.expert_format = c.other_format = weight_format::bf16;
  c.cache_format = kv_format::bf16;
  return c;
}();
static_assert(is_valid_config<peer_small>);

}  // namespace dsv4::config
