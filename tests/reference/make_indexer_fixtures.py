"""Golden fixture for the released numerics of the Lightning Indexer's score path
(tests/attn/indexer_released_test.cpp): a plain PyTorch emulation of what spec §7.2 and §18.3 say
the official inference code does, independent of dsv4 and of transformers (which computes the
index scores in float32, without the Hadamard rotation or any FP4 simulation).

Per query token at position t, with q (n_I, c_I) the BF16 output of wq_b and w (n_I) that of
weights_proj:
  1. RoPE on the last 64 dims of each head (interleaved pairs, fp32 angles t * f_i, YaRN table at
     theta 160,000), result BF16;
  2. Hadamard rotation of each head (Sylvester order, butterflies in fp32, scaled by 128^-1/2),
     result BF16; then FP4 simulation in 1 x 32 tiles;
  3. weights: BF16(w * c_I^-1/2 * n_I^-1/2);
  4. keys: the compressor's BF16 output, rotated the same way, BF16, FP4-simulated;
  5. scores: per head BF16(q_h . k) (an fp32 sum of exact products), ReLU, BF16(w_h * relu),
     summed over the heads in fp32, BF16; top-k by score, ties to the lower index.

Run from the repository root: python3 tests/reference/make_indexer_fixtures.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import write_fixture  # noqa: E402
from released_ops import bf16, fp4_simulate, hadamard, inv_freq, rope  # noqa: E402

HEADS, DIM, ROPE, KEYS, TOP_K, POS = 8, 128, 64, 64, 16, 803
# V4-Flash's compressed-layer RoPE (spec §4.3): theta 160,000, YaRN factor 16 over 65,536.
THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW = 160000.0, 16.0, 65536, 32.0, 1.0


def main():
    gen = torch.Generator().manual_seed(20261128)
    freqs = inv_freq(ROPE, THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW)
    for attempt in range(100):
        q_in = bf16(torch.randn(HEADS, DIM, generator=gen))
        w_in = bf16(torch.randn(HEADS, generator=gen))
        keys_in = bf16(torch.randn(KEYS, DIM, generator=gen))

        q = bf16(rope(q_in, POS, freqs))
        q = fp4_simulate(bf16(hadamard(q)))
        w = bf16(w_in * (DIM ** -0.5 * HEADS ** -0.5))
        keys = fp4_simulate(bf16(hadamard(keys_in)))

        per_head = bf16(q @ keys.T)  # (heads, keys)
        terms = bf16(w[:, None] * torch.relu(per_head))
        scores = bf16(terms.sum(dim=0))
        order = sorted(range(KEYS), key=lambda i: (-scores[i].item(), i))
        # a tie at the k-th place is decided by the index rule, which the official top-k need not
        # share: keep a seed whose k-th and (k+1)-th scores differ
        if scores[order[TOP_K - 1]] == scores[order[TOP_K]]:
            continue
        selected = torch.tensor(sorted(order[:TOP_K]), dtype=torch.float32)
        meta = {
            "source": "plain PyTorch " + torch.__version__ + " emulation of the released index-score path",
            "position": POS,
            "top_k": TOP_K,
            "attempt": attempt,
        }
        write_fixture(
            "indexer_released.json",
            meta,
            {
                "rope.inv_freq": freqs,
                "q_in": q_in,
                "w_in": w_in,
                "keys_in": keys_in,
                "q": q,
                "w": w,
                "keys": keys,
                "scores": scores,
                "selected": selected,
            },
        )
        return
    raise RuntimeError("no seed without a tie at the k-th score")


if __name__ == "__main__":
    main()
