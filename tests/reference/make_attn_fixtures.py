"""Golden fixtures for tests/attn: the Hugging Face transformers DeepseekV4Attention module on a tiny
config with random weights, one fixture per layer kind (sliding, CSA, HCA).

The tiny config matches `fixture_config` in tests/attn/attn_fixture_test.cpp. Each fixture holds the
input x (S, d), every weight under the checkpoint's names (attn.* as in spec §11), the HF RoPE
inverse frequencies of the layer, and the HF output y (S, d) of one prefill from position 0.

Differences between HF and the released model (spec §16, §18): HF runs no QAT simulation (no FP8
rounding of the KV NoPE dims, no Hadamard + FP4 on the indexer) and computes everything here in
float32; the dsv4 exact path does the same, so the comparison needs no switch.

Top-k ties: a tie at the k-th best index score would let HF and dsv4 pick different (equally
valid) entries, so the script rejects seeds whose scores have a near-tie at the selection boundary.

Run from the repository root: python3 tests/reference/make_attn_fixtures.py
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import write_fixture  # noqa: E402

from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config  # noqa: E402
from transformers.models.deepseek_v4.modeling_deepseek_v4 import (  # noqa: E402
    DeepseekV4Attention,
    DeepseekV4RotaryEmbedding,
)

LAYER_TYPES = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]
KIND = {"sliding_attention": "swa", "compressed_sparse_attention": "csa", "heavily_compressed_attention": "hca"}
WINDOW = 8
CSA_RATIO, HCA_RATIO = 4, 16


def make_config():
    return DeepseekV4Config(
        vocab_size=256,
        hidden_size=32,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        head_dim=16,
        partial_rotary_factor=0.5,  # rope_dim 8 of 16
        q_lora_rank=16,
        o_groups=2,
        o_lora_rank=8,
        sliding_window=WINDOW,
        layer_types=LAYER_TYPES,
        compress_rates={"compressed_sparse_attention": CSA_RATIO, "heavily_compressed_attention": HCA_RATIO},
        index_n_heads=4,
        index_head_dim=8,
        index_topk=3,
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
        rms_norm_eps=1e-6,
        n_routed_experts=4,
        num_experts_per_tok=2,
    )


# HF parameter name -> checkpoint name (spec §11.2).
NAMES = {
    "q_a_proj.weight": "attn.wq_a.weight",
    "q_a_norm.weight": "attn.q_norm.weight",
    "q_b_proj.weight": "attn.wq_b.weight",
    "kv_proj.weight": "attn.wkv.weight",
    "kv_norm.weight": "attn.kv_norm.weight",
    "o_a_proj.weight": "attn.wo_a.weight",
    "o_b_proj.weight": "attn.wo_b.weight",
    "sinks": "attn.attn_sink",
    "compressor.kv_proj.weight": "attn.compressor.wkv.weight",
    "compressor.gate_proj.weight": "attn.compressor.wgate.weight",
    "compressor.position_bias": "attn.compressor.ape",
    "compressor.kv_norm.weight": "attn.compressor.norm.weight",
    "compressor.indexer.q_b_proj.weight": "attn.indexer.wq_b.weight",
    "compressor.indexer.scorer.weights_proj.weight": "attn.indexer.weights_proj.weight",
    "compressor.indexer.kv_proj.weight": "attn.indexer.compressor.wkv.weight",
    "compressor.indexer.gate_proj.weight": "attn.indexer.compressor.wgate.weight",
    "compressor.indexer.position_bias": "attn.indexer.compressor.ape",
    "compressor.indexer.kv_norm.weight": "attn.indexer.compressor.norm.weight",
}


def randomize(module, gen):
    for name, p in module.named_parameters():
        with torch.no_grad():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("proj.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
            else:  # sinks, position biases
                p.copy_(torch.randn(p.shape, generator=gen))


def window_mask(seq_len):
    t = torch.arange(seq_len)
    diff = t[:, None] - t[None, :]
    allowed = (diff >= 0) & (diff < WINDOW)
    mask = torch.zeros(seq_len, seq_len).masked_fill(~allowed, float("-inf"))
    return mask[None, None]


def boundary_gap(scores, position_ids, k):
    """Smallest gap between the k-th and (k+1)-th visible index score over all queries."""
    gap = math.inf
    for t in range(scores.shape[1]):
        visible = (t + 1) // CSA_RATIO
        if visible <= k:
            continue
        s = torch.sort(scores[0, t, :visible], descending=True).values
        gap = min(gap, float(s[k - 1] - s[k]))
    return gap


def make(layer_idx, seq_len, seed):
    config = make_config()
    layer_type = LAYER_TYPES[layer_idx]
    config._attn_implementation = "eager"
    for attempt in range(100):
        gen = torch.Generator().manual_seed(seed + attempt)
        attn = DeepseekV4Attention(config, layer_idx).eval()
        randomize(attn, gen)
        x = torch.randn(1, seq_len, config.hidden_size, generator=gen)
        position_ids = torch.arange(seq_len)[None]
        rotary = DeepseekV4RotaryEmbedding(config)
        embeddings = {k: rotary(x, position_ids=position_ids, layer_type=k) for k in ("main", "compress")}
        recorded = []
        if layer_type == "compressed_sparse_attention":
            scorer = attn.compressor.indexer.scorer
            original = scorer.forward
            scorer.forward = lambda *a, **kw: recorded.append(original(*a, **kw)) or recorded[-1]
        with torch.no_grad():
            y, _ = attn(x, embeddings, position_ids, window_mask(seq_len))
        if recorded and boundary_gap(recorded[0], position_ids, config.index_topk) < 1e-3:
            continue
        rope_kind = "main" if layer_type == "sliding_attention" else "compress"
        tensors = {"x": x[0], "y": y[0], "rope.inv_freq": getattr(rotary, f"{rope_kind}_inv_freq")}
        for name, p in attn.named_parameters():
            tensors[NAMES[name]] = p
        meta = {
            "source": "transformers " + __import__("transformers").__version__ + " DeepseekV4Attention",
            "layer_type": layer_type,
            "seq_len": seq_len,
            "seed": seed + attempt,
        }
        write_fixture(f"attn_{KIND[layer_type]}.json", meta, tensors)
        return
    raise RuntimeError("no seed without a top-k tie")


if __name__ == "__main__":
    torch.set_default_dtype(torch.float32)
    make(0, 24, 100)
    make(1, 40, 200)
    make(2, 50, 300)
