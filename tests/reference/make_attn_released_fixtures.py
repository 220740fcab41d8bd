"""Golden fixture for the released numerics of a whole attention layer (tests/attn/
attn_released_test.cpp): a plain PyTorch emulation of the official inference code's Attention,
Compressor and Indexer forward passes, one token at a time (the decode path), for each layer kind
(sliding window, CSA, HCA). Independent of dsv4 and of transformers, which runs no BF16/FP8/FP4
path; every rounding follows spec §13 and §18.3:

  x                BF16 (the output of attn_norm)
  qr = q_norm(linear(x, wq_a))         FP8 linear: act_quant(x) 1x128, fp32 sums, BF16 out;
                                       RMSNorm: bf16(w * (x * rsqrt(mean(x^2) + eps)))
  q  = linear(qr, wq_b) per head       then the per-head norm in BF16 arithmetic, RoPE (fp32), BF16
  kv = kv_norm(linear(x, wkv))         RoPE, BF16, act_quant of the 64 NoPE dims in 1x64 tiles
  compressor       fp32 projections of x and fp32 pooling; the entry cast to BF16, normed, RoPE at
                   the block start, BF16, then act_quant 1x64 of the NoPE dims (main) or Hadamard,
                   BF16 and the FP4 simulation (the indexer's keys)
  indexer          q = linear(qr, wq_b), RoPE, Hadamard, BF16, FP4; w = bf16(bf16(x . weights_proj)
                   * c_I^-1/2 n_I^-1/2); per head bf16(q_h . k), ReLU, bf16(w_h * .), fp32 sum over
                   heads, BF16; top k by score, ties to the lower index
  core             fp32 logits of the BF16 q and rows, times 1/sqrt(c); softmax with the sink in the
                   denominator; probabilities cast to BF16 before they weight the rows; BF16 out;
                   the rope dims de-rotated by -t, BF16
  wo_a             BF16 weights (the reference dequantizes the FP8 checkpoint), BF16 einsum
  y  = linear(u, wo_b)                 FP8 linear, BF16 out

The weights come from the integer hash of released_ops.py (tests/hashed_weights.hpp rebuilds
them); the fixture stores their seeds and the outputs y of every token, one (S, d) block per
layer kind. The shapes keep V4's 128-wide tiles: d = q_lora_rank = head_dim = c_I = 128.

Run from the repository root: python3 tests/reference/make_attn_released_fixtures.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import write_fixture  # noqa: E402
from released_ops import (  # noqa: E402
    act_quant, bf16, fp4_simulate, hadamard, hashed_fp8, hashed_grid, inv_freq, linear, rope)

D, H, C, ROPE, DC, G, DG = 128, 2, 128, 64, 128, 1, 128
WINDOW, CSA_RATIO, HCA_RATIO, NI, CI, TOP_K = 16, 4, 16, 2, 128, 4
TOKENS, EPS = 40, 1e-6
THETA, COMPRESS_THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW = 10000.0, 160000.0, 16.0, 65536, 32.0, 1.0

# (rows, cols, seed, typical exponent) of the FP8 linears; (shape, seed, center, exponent) of the rest.
FP8 = {"wq_a": (DC, D, 300, -5), "wq_b": (H * C, DC, 301, -5), "wkv": (C, D, 302, -5),
       "wo_a": (G * DG, H * C // G, 303, -6), "wo_b": (D, G * DG, 304, -5),
       "indexer.wq_b": (NI * CI, DC, 305, -5)}
GRID = {"x": ((TOKENS, D), 399, 0.0, -6), "q_norm": ((DC,), 320, 1.0, -7), "kv_norm": ((C,), 321, 1.0, -7),
        "attn_sink": ((H,), 333, 0.0, -7),
        "csa.wkv": ((2 * C, D), 310, 0.0, -10), "csa.wgate": ((2 * C, D), 311, 0.0, -10),
        "csa.ape": ((CSA_RATIO, 2 * C), 330, 0.0, -7), "csa.norm": ((C,), 322, 1.0, -7),
        "hca.wkv": ((C, D), 312, 0.0, -10), "hca.wgate": ((C, D), 313, 0.0, -10),
        "hca.ape": ((HCA_RATIO, C), 331, 0.0, -7), "hca.norm": ((C,), 323, 1.0, -7),
        "indexer.wkv": ((2 * CI, D), 314, 0.0, -10), "indexer.wgate": ((2 * CI, D), 315, 0.0, -10),
        "indexer.ape": ((CSA_RATIO, 2 * CI), 332, 0.0, -7), "indexer.norm": ((CI,), 324, 1.0, -7),
        "indexer.weights_proj": ((NI, D), 316, 0.0, -10)}


def rms_norm(x, w):
    """The reference RMSNorm on a BF16 tensor: fp32 norm, the weight applied in fp32, BF16 out."""
    return bf16(w * (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + EPS)))


def head_norm(q):
    """The reference's per-head q norm, q *= rsqrt(q.square().mean(-1) + eps) on BF16 tensors, as a
    GPU runs each BF16 op: computed in fp32, rounded to BF16 once (the mean sums in fp32). Written
    out because PyTorch's CPU rsqrt of a BF16 tensor rounds the square root to BF16 first."""
    mean = bf16(bf16(q * q).sum(-1, keepdim=True) / q.shape[-1])
    r = bf16(torch.rsqrt(bf16(mean + EPS)))
    return bf16(q * r)


class Compressor:
    """The reference Compressor's decode path: (coff*m, coff*c) kv and score state in fp32."""

    def __init__(self, w, prefix, ratio, dim, overlap, freqs, rotate):
        self.wkv, self.wgate, self.ape, self.norm = (w[prefix + s] for s in (".wkv", ".wgate", ".ape", ".norm"))
        self.m, self.c, self.overlap, self.freqs, self.rotate = ratio, dim, overlap, freqs, rotate
        coff = 2 if overlap else 1
        self.kv = torch.zeros(coff * ratio, coff * dim)
        self.score = torch.full((coff * ratio, coff * dim), float("-inf"))

    def step(self, x, t):
        m, c = self.m, self.c
        kv, score = x @ self.wkv.T, x @ self.wgate.T + self.ape[t % m]
        row = (m if self.overlap else 0) + t % m
        self.kv[row], self.score[row] = kv, score
        if (t + 1) % m:
            return None
        if self.overlap:
            kv_s = torch.cat([self.kv[:m, :c], self.kv[m:, c:]], dim=0)
            sc_s = torch.cat([self.score[:m, :c], self.score[m:, c:]], dim=0)
        else:
            kv_s, sc_s = self.kv, self.score
        entry = (kv_s * sc_s.softmax(dim=0)).sum(dim=0)
        if self.overlap:
            self.kv[:m], self.score[:m] = self.kv[m:].clone(), self.score[m:].clone()
        entry = rms_norm(bf16(entry), self.norm)
        entry = bf16(rope(entry, t + 1 - m, self.freqs))
        if self.rotate:
            return fp4_simulate(bf16(hadamard(entry)))
        return torch.cat([act_quant(entry[:-ROPE], 64), entry[-ROPE:]])


def core(q, rows, sink):
    """Sparse attention of one token: q (H, C), rows (n, C) BF16 values, all in one block."""
    logits = (q @ rows.T) * torch.tensor(C ** -0.5, dtype=torch.float32)
    mx = logits.max(dim=-1, keepdim=True).values
    p = torch.exp(logits - mx)
    denom = p.sum(dim=-1, keepdim=True) + torch.exp(sink[:, None] - mx)
    return bf16((bf16(p) @ rows) / denom)


def layer(w, kind):
    compressed = kind != "swa"
    freqs = inv_freq(ROPE, COMPRESS_THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW) if compressed \
        else inv_freq(ROPE, THETA)
    ratio = {"swa": 0, "csa": CSA_RATIO, "hca": HCA_RATIO}[kind]
    main = Compressor(w, kind, ratio, C, kind == "csa", freqs, False) if compressed else None
    keys = Compressor(w, "indexer", CSA_RATIO, CI, True, freqs, True) if kind == "csa" else None
    window, entries, index_keys, ys, selections = {}, [], [], [], []
    for t in range(TOKENS):
        x = w["x"][t]
        qr = rms_norm(linear(x, w["wq_a"], True), w["q_norm"])
        q = head_norm(linear(qr, w["wq_b"], True).reshape(H, C))
        q = bf16(rope(q, t, freqs))
        kv = rms_norm(linear(x, w["wkv"], True), w["kv_norm"])
        kv = bf16(rope(kv, t, freqs))
        window[t % WINDOW] = torch.cat([act_quant(kv[:-ROPE], 64), kv[-ROPE:]])
        rows = [window[p % WINDOW] for p in range(max(0, t - WINDOW + 1), t + 1)]
        if compressed:
            e = main.step(x, t)
            if e is not None:
                entries.append(e)
        if kind == "csa":
            k = keys.step(x, t)
            if k is not None:
                index_keys.append(k)
            iq = linear(qr, w["indexer.wq_b"], True).reshape(NI, CI)
            iq = fp4_simulate(bf16(hadamard(bf16(rope(iq, t, freqs)))))
            iw = linear(x, w["indexer.weights_proj"], False)
            iw = bf16(iw * (CI ** -0.5 * NI ** -0.5))
            visible = (t + 1) // CSA_RATIO
            if visible:
                per_head = bf16(iq @ torch.stack(index_keys[:visible]).T)  # (NI, visible)
                scores = bf16((bf16(iw[:, None] * torch.relu(per_head))).sum(dim=0))
                order = sorted(range(visible), key=lambda i: (-scores[i].item(), i))
                chosen = sorted(order[:TOP_K])
                if visible > TOP_K:
                    selections.append((t, scores[order[TOP_K - 1]].item(), scores[order[TOP_K]].item()))
                rows += [entries[i] for i in chosen]
        elif kind == "hca":
            rows += entries[:(t + 1) // HCA_RATIO]
        o = core(q, torch.stack(rows), w["attn_sink"])
        o = bf16(rope(o, t, freqs, inverse=True))
        u = bf16(o.reshape(G, -1)[0] @ w["wo_a"].T)  # BF16 einsum (one group)
        ys.append(linear(u, w["wo_b"], True))
    return torch.stack(ys), selections


def main():
    w = {name: hashed_fp8(r, c, seed, typ) for name, (r, c, seed, typ) in FP8.items()}
    w["wo_a"] = bf16(w["wo_a"])  # dequantized to BF16 at conversion (exact)
    w.update({name: hashed_grid(shape, seed, center, e) for name, (shape, seed, center, e) in GRID.items()})
    meta = {
        "source": "plain PyTorch " + torch.__version__ + " emulation of the released attention layer",
        "tokens": TOKENS,
        "fp8": {k: list(v) for k, v in FP8.items()},
        "grid": {k: [list(v[0]), v[1], v[2], v[3]] for k, v in GRID.items()},
    }
    tensors = {}
    for kind in ("swa", "csa", "hca"):
        y, selections = layer(w, kind)
        tensors[kind + ".y"] = y
        if kind == "csa":
            # the k-th and (k+1)-th scores of every selection that dropped an entry: a tie there
            # would make the choice depend on the tie rule
            ties = [s for s in selections if s[1] == s[2]]
            meta["csa_selections"] = len(selections)
            meta["csa_kth_ties"] = len(ties)
    write_fixture("attn_released.json", meta, tensors)


if __name__ == "__main__":
    main()
