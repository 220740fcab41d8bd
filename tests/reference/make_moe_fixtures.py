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

Run: python3 tests/reference/make_moe_fixtures.py   (writes tests/fixtures/moe_*.json)
"""
import torch
from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

from fixture_io import write_fixture

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


if __name__ == "__main__":
    main()
