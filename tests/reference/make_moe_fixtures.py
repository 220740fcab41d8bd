"""Golden fixtures for the MoE tests (tests/moe/fixtures_test.cpp), made by the Hugging Face
transformers DeepseekV4 modules: DeepseekV4TopKRouter, DeepseekV4HashRouter, DeepseekV4Experts,
DeepseekV4MLP (the shared expert) and DeepseekV4SparseMoeBlock, on a tiny config with random float32
weights and a fixed seed.

Conventions the C++ side must know:
  * experts.gate_up_proj is (E, 2I, d): rows [0, I) are w1 (gate), rows [I, 2I) are w3 (up).
  * HF renormalizes with +1e-20 and applies the routing weight after down_proj; the library follows
    the released model (no epsilon, weight before w2). Both are far below the 1e-5 tolerance.
  * topk(sorted=False) returns the experts in no particular order, so each token's (index, weight)
    pairs are written sorted by expert id.
  * Inputs are scaled so that the SwiGLU clamp (limit 10) is active for many units.

The second fixture, moe_released.json, is the released model's numerics (spec §18.3): a plain
PyTorch emulation of the official inference code's Expert and MoE.forward (its `linear()` with
act_quant FP8 1x128 inputs and FP8/FP4 weights, BF16 tensors between the steps, fp32 routing),
independent of transformers, which has no FP8 path. Its weights are too large to store as JSON, so
both sides generate them from the integer hash below (hashed_codes); the fixture stores the inputs,
the generator's seeds and the outputs.

Run: python3 tests/reference/make_moe_fixtures.py   (writes tests/fixtures/moe_*.json)
"""
import torch
from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

from fixture_io import write_fixture
from released_ops import act_quant, hashed_fp4, hashed_fp8, linear

D, I, E, K, VOCAB, N = 32, 16, 6, 2, 16, 5
ROUTE_SCALE, LIMIT = 1.5, 10.0


def config(layer_type):
    return DeepseekV4Config(
        vocab_size=VOCAB,
        hidden_size=D,
        moe_intermediate_size=I,
        n_routed_experts=E,
        num_experts_per_tok=K,
        routed_scaling_factor=ROUTE_SCALE,
        swiglu_limit=LIMIT,
        num_hidden_layers=1,
        mlp_layer_types=[layer_type],
    )


def sorted_routes(weights, indices):
    order = torch.argsort(indices, dim=-1)
    return torch.gather(weights, 1, order), torch.gather(indices, 1, order)


def main():
    torch.manual_seed(20260428)
    score_block = m.DeepseekV4SparseMoeBlock(config("moe"), 0).float()
    hash_block = m.DeepseekV4SparseMoeBlock(config("hash_moe"), 0).float()
    with torch.no_grad():
        gate_w = torch.randn(E, D) * 0.4
        bias = torch.randn(E) * 0.5  # large enough to change some selections
        gate_up = torch.randn(E, 2 * I, D) * 0.5
        down = torch.randn(E, D, I) * 0.3
        tid2eid = torch.stack([torch.randperm(E)[:K] for _ in range(VOCAB)])
        for blk in (score_block, hash_block):
            blk.gate.weight.copy_(gate_w)
            blk.experts.gate_up_proj.copy_(gate_up)
            blk.experts.down_proj.copy_(down)
            for p in blk.shared_experts.parameters():
                p.copy_(torch.randn_like(p) * 0.4)
        hash_block.shared_experts.load_state_dict(score_block.shared_experts.state_dict())
        score_block.gate.e_score_correction_bias.copy_(bias)
        hash_block.gate.tid2eid.copy_(tid2eid)

        x = torch.randn(1, N, D) * 3.0
        ids = torch.randint(0, VOCAB, (1, N))

        logits, w_score, i_score = score_block.gate(x)
        _, w_hash, i_hash = hash_block.gate(x, ids)
        unbiased_top = torch.topk(score_block.gate.score_fn(logits), K, dim=-1).indices
        differs = int((torch.sort(unbiased_top).values != torch.sort(i_score).values).any(dim=-1).sum())
        assert differs > 0, "the bias must change at least one token's selection"

        flat = x.view(-1, D)
        routed = score_block.experts(flat, i_score, w_score)
        shared = score_block.shared_experts(flat)
        out_score = score_block(x)
        out_hash = hash_block(x, ids)
        gu = torch.einsum("eid,nd->nei", gate_up, flat)
        clamped = int((gu[..., :I] > LIMIT).sum() + (gu[..., I:].abs() > LIMIT).sum())
        assert clamped > 10, "the clamp must be exercised"

    w_score, i_score = sorted_routes(w_score, i_score)
    w_hash, i_hash = sorted_routes(w_hash, i_hash)
    sh = score_block.shared_experts
    meta = {
        "source": "transformers " + __import__("transformers").__version__ + " DeepseekV4SparseMoeBlock",
        "d": D, "inter": I, "n_experts": E, "top_k": K, "vocab": VOCAB, "tokens": N,
        "route_scale": ROUTE_SCALE, "swiglu_limit": LIMIT,
        "tokens_whose_bias_changes_selection": differs, "clamped_units": clamped,
    }
    write_fixture("moe_block.json", meta, {
        "x": flat, "token_ids": ids.view(-1).float(),
        "gate.weight": gate_w, "gate.bias": bias, "gate.tid2eid": tid2eid.float(),
        "experts.gate_up_proj": gate_up, "experts.down_proj": down,
        "shared.gate_proj": sh.gate_proj.weight, "shared.up_proj": sh.up_proj.weight,
        "shared.down_proj": sh.down_proj.weight,
        "score.logits": logits, "score.weights": w_score, "score.indices": i_score.float(),
        "hash.weights": w_hash, "hash.indices": i_hash.float(),
        "routed_out": routed, "shared_out": shared,
        "score.out": out_score.view(-1, D), "hash.out": out_hash.view(-1, D),
    })


# ---- released numerics (moe_released.json) ---------------------------------------------------

RD, RI, RE, RK, RN = 256, 256, 4, 2, 8  # two 128-wide FP8 tiles along both d and inter


def expert(x, w1, w3, w2, quantized, weights=None):
    """The reference Expert.forward (current revision: clamped, routed and shared alike)."""
    gate = linear(x, w1, quantized).float()
    up = linear(x, w3, quantized).float()
    up = torch.clamp(up, min=-LIMIT, max=LIMIT)
    gate = torch.clamp(gate, max=LIMIT)
    h = torch.nn.functional.silu(gate) * up
    if weights is not None:
        h = weights * h
    return linear(h.to(torch.bfloat16), w2, quantized)


def released():
    gen = torch.Generator().manual_seed(7)
    # Routed experts FP4 (expert_dtype fp4), the shared expert FP8, as released; seeds 100 + 3e + m.
    routed = [[hashed_fp4(RI, RD, 100 + 3 * e, -1), hashed_fp4(RI, RD, 101 + 3 * e, -1),
               hashed_fp4(RD, RI, 102 + 3 * e, -3)] for e in range(RE)]
    shared = [hashed_fp8(RI, RD, 200, -4), hashed_fp8(RI, RD, 201, -4), hashed_fp8(RD, RI, 202, -6)]
    x = (torch.randn(RN, RD, generator=gen) * 2.0).to(torch.bfloat16)
    gate_w = (torch.randn(RE, RD, generator=gen) * 0.1).to(torch.bfloat16)  # BF16 in the checkpoint
    bias = torch.randn(RE, generator=gen) * 3.0  # large enough to change some selections
    row_w = torch.linspace(0.3, 1.2, RN).unsqueeze(-1)

    # Gate.forward: fp32 logits, sqrt(softplus), bias selects only, renormalized * route_scale.
    scores = torch.nn.functional.softplus(x.float() @ gate_w.float().T).sqrt()
    indices = (scores + bias).topk(RK, dim=-1)[1]
    unbiased = scores.topk(RK, dim=-1)[1]
    differs = int((torch.sort(unbiased).values != torch.sort(indices).values).any(dim=-1).sum())
    assert differs >= 2, "the bias must change the selection of some tokens"
    weights = scores.gather(1, indices)
    weights = weights / weights.sum(-1, keepdim=True) * ROUTE_SCALE
    # MoE.forward: fp32 sum over experts in increasing id, then the shared expert, one BF16 cast.
    y = torch.zeros(RN, RD)
    for e in range(RE):
        idx, top = torch.where(indices == e)
        if len(idx):
            y[idx] += expert(x[idx], *routed[e], True, weights[idx, top, None]).float()
    y += expert(x, *shared, True).float()

    gu = act_quant(x) @ torch.cat([w for r in routed for w in r[:2]]).T
    clamped = int((gu.abs() > LIMIT).sum())
    assert clamped > 100, "the clamp must be exercised"
    meta = {
        "source": "plain PyTorch emulation of the official inference Expert/MoE (act_quant FP8 1x128)",
        "torch": torch.__version__, "d": RD, "inter": RI, "n_experts": RE, "top_k": RK, "tokens": RN,
        "route_scale": ROUTE_SCALE, "swiglu_limit": LIMIT, "clamped_units": clamped,
        "tokens_whose_bias_changes_selection": differs,
        "generator": "hash32(seed * 0x9E3779B1 + i) (lowbias32); FP8 code = (h & 1) << 7 | (h >> 1) % 0x59;"
                     " FP4 nibble = h & 15; scale exponent = typical - 1 + hash32((seed + 0x10000) *"
                     " 0x9E3779B1 + block) % 3",
        "routed_seeds": [100, 101, 102], "routed_seed_stride": 3, "routed_typical": [-1, -1, -3],
        "shared_seeds": [200, 201, 202], "shared_typical": [-4, -4, -6],
    }
    write_fixture("moe_released.json", meta, {
        "x": x, "gate.weight": gate_w, "gate.bias": bias, "row_weight": row_w.squeeze(-1),
        # expert 0 alone (FP4) with a routing weight per row; the shared expert alone (FP8); the
        # shared expert's weights as BF16 (no FP8 input: F.linear)
        "fp4_expert.y": expert(x, *routed[0], True, row_w),
        "fp8_expert.y": expert(x, *shared, True),
        "bf16_expert.y": expert(x, *[w.to(torch.bfloat16).float() for w in shared], False),
        "indices": indices.float(), "weights": weights,
        "block.y": y.to(torch.bfloat16),
    })


if __name__ == "__main__":
    main()
    released()
