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
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import write_fixture  # noqa: E402

HEADS, DIM, ROPE, KEYS, TOP_K, POS = 8, 128, 64, 64, 16, 803
# V4-Flash's compressed-layer RoPE (spec §4.3): theta 160,000, YaRN factor 16 over 65,536.
THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW = 160000.0, 16.0, 65536, 32.0, 1.0


def bf16(x):
    return x.to(torch.bfloat16).to(torch.float32)


def yarn_inv_freq():
    f = 1.0 / (THETA ** (torch.arange(0, ROPE, 2, dtype=torch.float32) / ROPE))

    def corr(rot):
        return ROPE * math.log(ORIGINAL / (rot * 2 * math.pi)) / (2 * math.log(THETA))

    lo = max(math.floor(corr(BETA_FAST)), 0)
    hi = min(math.ceil(corr(BETA_SLOW)), ROPE - 1)
    ramp = torch.clamp((torch.arange(ROPE // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
    return f / FACTOR * ramp + f * (1 - ramp)


def rope(x, pos, inv_freq):
    angle = torch.tensor(float(pos), dtype=torch.float32) * inv_freq
    c, s = torch.cos(angle), torch.sin(angle)
    r = x[..., -ROPE:].reshape(*x.shape[:-1], ROPE // 2, 2)
    a, b = r[..., 0], r[..., 1]
    out = torch.stack((a * c - b * s, b * c + a * s), dim=-1).reshape(*x.shape[:-1], ROPE)
    return torch.cat((x[..., :-ROPE], out), dim=-1)


def hadamard(x):
    y = x.clone()
    n = y.shape[-1]
    h = 1
    while h < n:
        y = y.reshape(*x.shape[:-1], n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).reshape(*x.shape[:-1], n)
        h *= 2
    return y * torch.tensor(n ** -0.5, dtype=torch.float32)


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def e2m1_round(v):
    """Round to the nearest E2M1 value, ties to the even code (v already clamped to [-6, 6])."""
    mag = v.abs().unsqueeze(-1)
    dist = (mag - E2M1).abs()
    best = dist.min(dim=-1, keepdim=True).values
    # among the nearest codes take the even one (codes 0, 2, 4, 6 have an even mantissa)
    tied = dist == best
    code = torch.where(tied & (torch.arange(8) % 2 == 0), torch.arange(8), torch.full((8,), 99)).min(-1).values
    code = torch.where(tied.sum(-1) > 1, code, tied.to(torch.int64).argmax(-1))
    return torch.sign(v) * E2M1[code]


def fp4_simulate(x):
    t = x.reshape(*x.shape[:-1], -1, 32)
    amax = torch.clamp(t.abs().amax(dim=-1, keepdim=True), min=6.0 * 2.0 ** -126)
    s = torch.exp2(torch.ceil(torch.log2(amax / 6.0)))
    q = e2m1_round(torch.clamp(t / s, -6.0, 6.0))
    return (q * s).reshape(x.shape)


def main():
    gen = torch.Generator().manual_seed(20261128)
    inv_freq = yarn_inv_freq()
    for attempt in range(100):
        q_in = bf16(torch.randn(HEADS, DIM, generator=gen))
        w_in = bf16(torch.randn(HEADS, generator=gen))
        keys_in = bf16(torch.randn(KEYS, DIM, generator=gen))

        q = bf16(rope(q_in, POS, inv_freq))
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
                "rope.inv_freq": inv_freq,
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
