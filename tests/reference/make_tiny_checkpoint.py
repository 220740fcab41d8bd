"""A tiny random DeepSeek-V4 checkpoint as Hugging Face transformers writes it (tests/fixtures/tiny_v4/).

The model is transformers' own DeepseekV4ForCausalLM on a tiny config with random float32 weights
(fixed seed), saved with save_pretrained's defaults: config.json and model.safetensors exactly as
transformers writes them, so the C++ loader is tested on the real "save_pretrained" naming (official
leaf names under model.layers.N., model.embed_tokens.weight, head.weight, experts one by one) and a
later whole-model test can compare logits against transformers on the same files.

What the config exercises:
  * all three attention kinds: layer_types = [SWA, CSA, HCA, CSA] (compress ratios 0, 4, 128, 4);
  * hash-routed MoE in layers 0-1 (tid2eid filled with random valid expert ids), score-routed in 2-3;
  * hc_mult 4, a sliding window of 8 tokens (a short prompt crosses it), YaRN on compressed layers;
  * num_nextn_predict_layers 1 in config.json, but transformers builds no MTP block, so the file
    holds no mtp.* tensors.
Every parameter is drawn at random (also the ones transformers initializes to zeros or ones:
sinks, position biases, mHC base/scale, norm weights, e_score_correction_bias), so that a fidelity
test would notice a tensor loaded into the wrong place.

Run from the repository root: python3 tests/reference/make_tiny_checkpoint.py
Written with transformers 5.25, torch 2.15 (the generator is torch.manual_seed(SEED) on CPU).
"""
import json
import os
import struct
import sys
import tempfile

import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

SEED = 20261207
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tiny_v4")
# The header (names, dtypes, shapes; no data) of the same model saved with
# save_original_format=False, i.e. under transformers' module names with fused experts: the C++
# naming tests check their table against it.
MODULE_NAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "io",
                            "tiny_v4_module_names.json")


def tiny_config():
    return DeepseekV4Config(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        partial_rotary_factor=0.5,  # rope dims = 16 of 32
        q_lora_rank=32,
        o_groups=2,
        o_lora_rank=16,
        sliding_window=8,
        layer_types=[
            "sliding_attention",
            "compressed_sparse_attention",
            "heavily_compressed_attention",
            "compressed_sparse_attention",
        ],
        mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"],
        index_n_heads=2,
        index_head_dim=16,
        index_topk=4,
        hc_mult=4,
        hc_sinkhorn_iters=20,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        routed_scaling_factor=1.5,
        swiglu_limit=10.0,
        num_nextn_predict_layers=1,
        rope_theta=10000.0,
        compress_rope_theta=160000.0,
        rope_parameters={
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 65536,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
        },
        max_position_embeddings=1048576,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )


def randomize(model, config):
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".scale") or name.endswith("hc_scale"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.dim() >= 2 else 8
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
        for name, b in sorted(model.named_buffers()):
            if name.endswith("tid2eid"):
                # Distinct experts per token: a random permutation's first top_k entries.
                rows = [torch.randperm(config.n_routed_experts, generator=g)[: config.num_experts_per_tok]
                        for _ in range(config.vocab_size)]
                b.copy_(torch.stack(rows).to(b.dtype))
            elif name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def main():
    torch.manual_seed(SEED)
    config = tiny_config()
    model = DeepseekV4ForCausalLM(config).float().eval()
    randomize(model, config)
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)  # save_pretrained's defaults: one shard, safetensors
    for f in os.listdir(OUT):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(OUT, f))  # generation_config.json is not needed
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT}: {total} bytes", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, save_original_format=False)
        with open(os.path.join(tmp, "model.safetensors"), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
    listing = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in sorted(header.items()) if k != "__metadata__"}
    os.makedirs(os.path.dirname(MODULE_NAMES), exist_ok=True)
    with open(MODULE_NAMES, "w") as f:
        json.dump({"transformers": "5.25", "tensors": listing}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {MODULE_NAMES}: {len(listing)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
