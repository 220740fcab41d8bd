"""Whole-model golden fixture for the tiny checkpoint (tests/fixtures/tiny_v4_model.json).

What: transformers' own DeepseekV4ForCausalLM, loaded in float32 from tests/fixtures/tiny_v4/
(made by make_tiny_checkpoint.py: layers SWA, CSA m=4, HCA m=128, CSA; window 8; vocab 128; hash
MoE in layers 0-1; hc_mult 4), run in eval mode without gradients on fixed random prompts.
Why: the C++ model must reproduce these logits (prefill and cached decode, 1e-4 relative L2) and
transformers' greedy tokens, on the same files.

Contents:
  meta.prompt (150 ids from [2, 128), seed PROMPT_SEED): long enough to cross the window of 8,
      one HCA block of 128 tokens and 37 CSA entries (more than index_topk 4);
  tensors.prefill_logits (150, 128): one forward over the whole prompt, no cache, all positions;
  tensors.decode_logits (30, 128): forward over prompt[:120] with use_cache=True, then 30 one-token
      forwards feeding prompt[120..149] with the returned cache (meta.decode_from = 120);
      transformers' cached decode is compared with prefill_logits[120:] and the figure printed;
  meta.greedy (32 ids): model.generate on prompt[:greedy_prompt_len], greedy, exactly 32 new tokens
      (no EOS stop); meta.greedy_logits_margin: top-1 minus top-2 logit at each generated step
      (all >= MIN_MARGIN, so no step is a near-tie); the tokens are also checked against an
      argmax loop of uncached full forwards;
  meta.prompt_b (23 ids, seed PROMPT_B_SEED) and tensors.prefill_logits_b (23, 128): a second
      independent prompt for batching tests.

Index ties: with 2 indexer heads, sum_h w_h * ReLU(q_h . k_s) is exactly 0 for about a quarter of
the (query, block) pairs, so the top-4 often has to choose among equal scores. torch's CPU topk
breaks such ties in no documented order, and its choice depends on how many blocks the row holds:
stock transformers' prefill logits at position t change when later tokens are appended (the
prefix of 120 tokens and the first 120 rows of the 150-token prompt differ by up to 0.3 relative
L2), and its cached decode disagrees with its prefill. The script therefore runs the model with
the library's rule (dsv4/core/top_k.hpp: larger score first, equal scores to the lower index) in
place of Tensor.topk, which in transformers' DeepseekV4 only the indexer calls (the router calls
torch.topk, left as it is); every other step is stock transformers. With the rule, prefill is
causal and cached decode matches it (the figure is printed and kept in meta).

Run from the repository root: python3 tests/reference/make_tiny_model_fixtures.py
Written with transformers 5.25, torch 2.15 (CPU, one thread); running it again gives the same bytes.
"""
import os

import torch
import transformers
from transformers import DeepseekV4ForCausalLM

from fixture_io import FIXTURE_DIR, write_fixture

PROMPT_SEED, PROMPT_LEN, DECODE_FROM = 20261208, 150, 120
PROMPT_B_SEED, PROMPT_B_LEN = 20261209, 23
GREEDY_PROMPT_LEN, GREEDY_NEW = 40, 32
MIN_MARGIN = 1e-3


def draw_prompt(seed, n):
    return torch.randint(2, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def ranked_topk(self, k, dim=-1, largest=True, sorted=True):
    """Tensor.topk with ties to the lower index (a stable sort); indices come back in rank order."""
    order = torch.sort(self, dim=dim, descending=largest, stable=True).indices.narrow(dim, 0, k)
    return torch.return_types.topk((self.gather(dim, order), order))


def rel_l2(a, b):
    """Per-row ||a - b|| / ||b||."""
    return ((a - b).norm(dim=-1) / b.norm(dim=-1))


def logits_of(model, ids, **kw):
    return model(input_ids=torch.tensor([ids]), **kw)


def main():
    torch.set_num_threads(1)
    torch.Tensor.topk = ranked_topk
    path = os.path.join(FIXTURE_DIR, "tiny_v4")
    model = DeepseekV4ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt = draw_prompt(PROMPT_SEED, PROMPT_LEN)
    prompt_b = draw_prompt(PROMPT_B_SEED, PROMPT_B_LEN)

    with torch.no_grad():
        prefill = logits_of(model, prompt, use_cache=False).logits[0]
        prefill_b = logits_of(model, prompt_b, use_cache=False).logits[0]

        out = logits_of(model, prompt[:DECODE_FROM], use_cache=True)
        cache, steps = out.cache, []
        first_rel = rel_l2(out.logits[0], prefill[:DECODE_FROM]).max().item()
        for t in prompt[DECODE_FROM:]:
            out = logits_of(model, [t], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits[0, -1])
        decode = torch.stack(steps)
        rel = rel_l2(decode, prefill[DECODE_FROM:])
        print(f"cached prefill[:{DECODE_FROM}] vs uncached prefill: max rel L2 {first_rel:.3e}")
        print(f"cached decode vs uncached prefill[{DECODE_FROM}:]: max rel L2 {rel.max().item():.3e}, "
              f"overall {((decode - prefill[DECODE_FROM:]).norm() / prefill[DECODE_FROM:].norm()).item():.3e}")

        gen = model.generate(torch.tensor([prompt[:GREEDY_PROMPT_LEN]]), max_new_tokens=GREEDY_NEW,
                             min_new_tokens=0, do_sample=False, eos_token_id=None, pad_token_id=0,
                             return_dict_in_generate=True, output_logits=True)
        greedy = gen.sequences[0, GREEDY_PROMPT_LEN:].tolist()
        assert len(greedy) == GREEDY_NEW, len(greedy)
        top2 = torch.stack(gen.logits)[:, 0].topk(2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        assert min(margins) >= MIN_MARGIN, f"near-tie in greedy decoding: {min(margins)}"
        # The same tokens from an argmax over uncached full forwards.
        seq = prompt[:GREEDY_PROMPT_LEN]
        for _ in range(GREEDY_NEW):
            seq = seq + [int(logits_of(model, seq, use_cache=False).logits[0, -1].argmax())]
        assert seq[GREEDY_PROMPT_LEN:] == greedy, "generate disagrees with the uncached argmax loop"
        print(f"greedy: {greedy}; min top-1/top-2 margin {min(margins):.4f}")

    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "checkpoint": "tests/fixtures/tiny_v4",
        "index_topk_ties": "lower index first (Tensor.topk replaced, see the script)",
        "prompt_seed": PROMPT_SEED,
        "prompt": prompt,
        "decode_from": DECODE_FROM,
        "decode_vs_prefill_max_rel_l2": float(f"{rel.max().item():.3g}"),
        "greedy_prompt_len": GREEDY_PROMPT_LEN,
        "greedy": greedy,
        "greedy_logits_margin": [float(f"{m:.9g}") for m in margins],
        "prompt_b_seed": PROMPT_B_SEED,
        "prompt_b": prompt_b,
    }
    write_fixture("tiny_v4_model.json", meta, {
        "prefill_logits": prefill,
        "decode_logits": decode,
        "prefill_logits_b": prefill_b,
    })


if __name__ == "__main__":
    main()
