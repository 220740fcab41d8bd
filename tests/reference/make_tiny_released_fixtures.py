"""A tiny DeepSeek-V4 checkpoint in the OFFICIAL released layout, and the logits of a plain-PyTorch
emulation of the official inference code's released numerics on it.

Writes
  tests/fixtures/tiny_v4_released/config.json        released spelling (compress_ratios,
                                                      quantization_config fp8 [128, 128],
                                                      expert_dtype fp4, rope_scaling yarn, ...)
  tests/fixtures/tiny_v4_released/model.safetensors  official tensor names (embed.weight,
                                                      layers.{l}.*, mtp.0.*, head.weight, ...)
  tests/fixtures/tiny_v4_released.json               fixture_io layout: prefill_logits (P, V),
                                                      mtp_logits (P - 1, V), greedy_logits (16, V),
                                                      hidden (P, hc_mult, d): the final streams H_t

The model (tiny_v4_released): vocab 128, d 128, 4 layers with compress_ratios [0, 4, 128, 4, 0]
(SWA, CSA, HCA, CSA; the trailing 0 is the MTP block), 2 heads of 128 (64 rope + 64 nope),
q_lora 128, o_groups 1, o_lora 128, window 8, indexer 2 heads x 128, top-4, hc_mult 4, Sinkhorn 20,
4 routed experts of width 32, top-2, 1 shared expert, layers 0-1 hash-routed, one MTP block.

Storage (as released, spec §11.1): attention linears wq_a/wq_b/wkv/wo_a/wo_b, shared experts,
indexer wq_b, MTP e_proj/h_proj: `X.weight` F8_E4M3 + `X.scale` F8_E8M0 (128x128 blocks); routed
experts: `X.weight` I8 (out, in/2), two E2M1 codes a byte, low nibble = even column, + `X.scale`
F8_E8M0 (out, in/32); embed, head, all norm weights, gate.weight, compressor wkv/wgate, indexer
weights_proj: BF16; hc_*, attn_sink, compressor ape, gate.bias: F32; gate.tid2eid: I64.
Quantization of the random float weights: per block the smallest power-of-two scale with
amax / scale <= 448 (FP8) or 6 (FP4) (amax / max rounded in fp32, then rounded up to a power of
two), elements rounded to nearest even (include/dsv4/core/weight_quant.hpp). Negative values that
round to zero keep the sign bit (E2M1 code 8).

Emulated numerics (official inference/model.py + kernel.py, current revision, spec §13 / §18.3).
Every prompt, prefill included, runs as a sequence of one-token decode steps (start_pos = t), as
the official decode path and the C++ do. "BF16" below means the value is rounded to BF16 (nearest
even) and carried on as that value.
  embedding     the BF16 row, copied into the 4 streams (streams are BF16)
  HC_pre        fp32: rho = rsqrt(mean(x^2) + rms_norm_eps) over the flattened 4*d streams,
                mixes = (x . fn^T) * rho; pre = sigmoid + hc_eps, post = 2 sigmoid, comb = row
                softmax + hc_eps, column-normalised, then 19 x (rows, columns); collapsed input
                sum_j pre_j X_j in fp32, BF16
  HC_post       X'_j = post_j * y + sum_i comb_ij X_i in fp32, BF16 once
  attn_norm, ffn_norm (and every RMSNorm)  bf16(w * (x * rsqrt(mean(x^2) + eps))) in fp32
  attention     make_attn_released_fixtures.py (imported: rms_norm, head_norm, Compressor, core):
                FP8 linears with act_quant inputs and BF16 outputs, per-head q norm in BF16
                arithmetic, RoPE in fp32 then BF16 (theta 10000 for SWA; 160000 with YaRN 16 /
                65536 / 32 / 1 for compressed layers), window entries with the 64 NoPE dims
                FP8-simulated in 1x64 tiles, compressors in fp32 (entry cast to BF16, normed, RoPE
                at the block start, BF16, then 1x64 FP8 of the NoPE dims, or for the indexer's keys
                Hadamard, BF16 and the 1x32 FP4 simulation), index scores all BF16 (q.k per head,
                ReLU, times the BF16 weights, fp32 sum over heads, BF16), top-k by score with ties
                to the lower entry index (a stable sort; see meta "index_ties"), core attention
                with fp32 logits * 128^-1/2, the sink in the denominator, probabilities cast to
                BF16, BF16 output, inverse RoPE, BF16; wo_a dequantized to BF16 (exact) and a BF16
                matmul; wo_b FP8 linear
  MoE           router in fp32 on the BF16 input: s = sqrt(softplus(x . gate^T)); score layers
                select the top 2 of s + bias, hash layers take tid2eid[token]; weights = s of the
                chosen / their sum * 1.5. Experts: w1/w3 FP8-act x FP4-weight linears with BF16
                outputs, fp32 clamp (up to [-10, 10], gate <= 10), silu(gate) * up times the
                routing weight in fp32, cast to BF16, w2 (act_quant input) BF16 out; routed
                outputs summed in fp32 in increasing expert id, then the shared expert (FP8,
                clamped, no weight) added, BF16 once
  act_quant     1x128 tiles; an input of fewer than 128 (the experts' w2 input, width 32) is one
                tile of its own. (The official act_quant asserts K % 128 == 0, so the official
                code cannot run width-32 experts at all; this is the C++ rule, core/quant.hpp.)
  head          HC head in fp32 (sigmoid(mixes * scale + base) + hc_eps, sum, BF16), final norm
                BF16, logits in fp32 against the BF16 head weight

MTP block (mtp.0, layer id 4, SWA, score-routed), for main-model position t = 0 .. P-2, run as
its own sequence of decode steps at start_pos = t (its RoPE position is t, theta 10000 without
YaRN; its window cache holds its own entries of positions t-7 .. t):
  H_t           the main model's final residual streams at position t (4 x d, BF16, before the
                HC head)
  e             = enorm(embed[tok_{t+1}])                     RMSNorm as above, BF16
  h             = hnorm(H_t) per stream                      RMSNorm over d for each stream, BF16
  ep            = e_proj(e)                                   act_quant(e) 1x128, FP8 weight,
                                                              fp32 sum, BF16
  hp_j          = h_proj(h_j) per stream j                    same, per stream, BF16
  X0_j          = bf16(ep + hp_j)                             the official BF16 tensor add: the
                                                              sum of the two BF16 values in fp32,
                                                              rounded to BF16 once
  X1            = Block(X0) with token tok_{t+1} as the block's input id (irrelevant: score
                routing), exactly as a main block
  logits        = head(mtp.0.norm(HC_head_mtp(X1)))          mtp.0.hc_head_*, mtp.0.norm.weight,
                                                              the shared BF16 head.weight, fp32

Where PyTorch's CPU kernels differ from a GPU (cos/sin, rsqrt, silu, fp32 summation order) the
emulation keeps fp32 and the difference stays at the ulp level; the C++ test compares with a
tolerance.

Comparing with it (meta "order_check"). The emulation's sums run in PyTorch's fp32 order, an
implementation's in its own. Where an fp32 sum lies within an ulp of a BF16 rounding midpoint (about
one rounding in 10^4-10^5: HC_post's new streams, the bf16(p) of the attention core, a norm), the two
round it to neighbouring BF16 values; that one ulp is no error. Usually it stays an ulp (a logits
difference of 1e-7 .. 4e-4 at that position, gone at the next), but the FP8 act_quant and the FP4
index query downstream can amplify it into a different top-k choice of an indexer, and from then on
the caches differ and the logits diverge by percents. The script measures this on itself: the same
emulation with only the mHC mixing dot products summed in another order (float64, rounded once)
diverges from position order_check.first_divergence on (39: an ulp of layer 0's HC_post at position
39 becomes a different top-k of layer 1's indexer at 39), with an ulp-level difference before it at
ulp_positions_before ([21]). The C++ model under released_policies shows the same pattern. A test
therefore compares
  positions t < first_divergence   per position rel L2 <= 1e-3, argmax equal, and all but a few
                                   positions at <= 1e-6 (prefill and MTP);
  the MTP block at every position  teacher-forced: run it on hidden[t] (the emulation's H_t) rather
                                   than on the model's own streams, rel L2 <= 1e-5 overall;
  positions t >= first_divergence  loosely (overall rel L2 and argmax agreement of the order of the
                                   order_check figures), a check of sanity, not of the numerics.

Prompt: one prompt of 140 tokens from [2, 128) (seeded), long enough to cross the window of 8 and
to close one HCA block of 128 (layer 2 sees its entry from position 127 on). Greedy: 16 tokens
greedily decoded by the emulation after the first 20 prompt tokens (fresh caches), with each
step's top-1 / top-2 logit margin (all >= 1e-3).

Run from the repository root: python3 tests/reference/make_tiny_released_fixtures.py
Running it twice gives byte-identical files.
"""
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_attn_released_fixtures as attn_ref  # noqa: E402
import safetensors  # noqa: E402
from fixture_io import FIXTURE_DIR, write_fixture  # noqa: E402
from make_attn_released_fixtures import Compressor, core, head_norm, rms_norm  # noqa: E402
from released_ops import act_quant, bf16, e2m1_round, fp4_simulate, hadamard, inv_freq, rope  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

VOCAB, D, N_LAYERS, HEADS, C, ROPE = 128, 128, 4, 2, 128, 64
Q_LORA, O_GROUPS, O_LORA, WINDOW = 128, 1, 128, 8
RATIOS = [0, 4, 128, 4, 0]  # the last entry is the MTP block's
CSA, HCA = 4, 128
NI, CI, TOP_K = 2, 128, 4
HC, ITERS = 4, 20
E, INTER, K, N_SHARED, N_HASH = 4, 32, 2, 1, 2
EPS, HC_EPS = 1e-6, 1e-6
THETA, COMPRESS_THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW = 10000.0, 160000.0, 16.0, 65536, 32, 1
ROUTE_SCALE, LIMIT = 1.5, 10.0
BOS, EOS = 0, 1
PROMPT_LEN, DECODE_FROM, GREEDY = 140, 20, 16
WEIGHT_SEED, PROMPT_SEED = 2035, 7
COMMON, LEAN, LEAN_Q = 2.0, 2.0, 0.5

# The imported attention helpers use their own module constants: they must be these.
assert (attn_ref.C, attn_ref.ROPE, attn_ref.EPS) == (C, ROPE, EPS)

OUT_DIR = os.path.join(FIXTURE_DIR, "tiny_v4_released")


# ---- storage formats ------------------------------------------------------------------------

def ceil_pow2_exponent(v):
    """Exponent e of the smallest power of two >= v (v > 0, float32 tensor)."""
    m, e = torch.frexp(v)  # v = m 2^e, m in [0.5, 1)
    return e - (m == 0.5).int()


def quantize_fp8(w):
    """(out, in) float -> F8_E4M3 values, F8_E8M0 scales (128 x 128 blocks), dequantized fp32."""
    rows, cols = w.shape
    br, bc = -(-rows // 128), -(-cols // 128)
    pad = torch.zeros(br * 128, bc * 128)
    pad[:rows, :cols] = w
    amax = pad.reshape(br, 128, bc, 128).abs().amax(dim=(1, 3))
    e = ceil_pow2_exponent(amax / 448.0)
    s = torch.exp2(e.float()).repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
    q = (w / s).to(torch.float8_e4m3fn)
    scale = (e + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    return q, scale, q.float() * s


def quantize_fp4(w):
    """(out, in) float -> I8 packed E2M1 (low nibble = even column), F8_E8M0 1x32 scales, fp32."""
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // 32, 32)
    e = ceil_pow2_exponent(blocks.abs().amax(-1) / 6.0)
    s = torch.exp2(e.float()).unsqueeze(-1)
    v = e2m1_round(blocks / s)
    mags = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    code = (v.abs().unsqueeze(-1) == mags).int().argmax(-1) | ((blocks < 0).int() << 3)
    code = code.reshape(rows, cols)
    packed = (code[:, 0::2] | (code[:, 1::2] << 4)).to(torch.uint8).view(torch.int8)
    scale = (e + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    return packed, scale, (v * s).reshape(rows, cols)


class Builder:
    """Draws every parameter (fixed seed) and keeps both the stored tensors and the values the
    emulation computes with."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.stored, self.w = {}, {}

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.gen)

    def fp8(self, name, rows, cols, std, lean=0.0):
        q, s, deq = quantize_fp8(self.randn(rows, cols) * std + lean)
        self.stored[name + ".weight"], self.stored[name + ".scale"] = q, s
        self.w[name] = deq

    def fp4(self, name, rows, cols, std):
        q, s, deq = quantize_fp4(self.randn(rows, cols) * std)
        self.stored[name + ".weight"], self.stored[name + ".scale"] = q, s
        self.w[name] = deq

    def bf16(self, name, value):
        self.stored[name] = value.to(torch.bfloat16)
        self.w[name] = bf16(value)

    def f32(self, name, value):
        self.stored[name] = value.float().contiguous()
        self.w[name] = value.float()

    def norm(self, name, n):
        self.bf16(name, 1.0 + 0.1 * self.randn(n))

    def hc(self, prefix, rows):
        width = HC * D
        self.f32(prefix + "_fn", self.randn(rows, width) * (0.5 / width ** 0.5))
        self.f32(prefix + "_base", self.randn(rows) * 0.3)
        self.f32(prefix + "_scale", 0.25 + 0.5 * torch.rand(3 if rows != HC else 1, generator=self.gen))

    def block(self, p, layer, mtp):
        ratio = RATIOS[layer]
        self.norm(p + "attn_norm.weight", D)
        self.norm(p + "ffn_norm.weight", D)
        self.hc(p + "hc_attn", (2 + HC) * HC)
        self.hc(p + "hc_ffn", (2 + HC) * HC)
        a = p + "attn."
        self.fp8(a + "wq_a", Q_LORA, D, D ** -0.5)
        self.norm(a + "q_norm.weight", Q_LORA)
        self.fp8(a + "wq_b", HEADS * C, Q_LORA, Q_LORA ** -0.5)
        self.fp8(a + "wkv", C, D, D ** -0.5)
        self.norm(a + "kv_norm.weight", C)
        self.fp8(a + "wo_a", O_GROUPS * O_LORA, HEADS * C // O_GROUPS, (HEADS * C // O_GROUPS) ** -0.5)
        self.w[a + "wo_a"] = bf16(self.w[a + "wo_a"])  # the reference converts it to BF16 (exact)
        self.fp8(a + "wo_b", D, O_GROUPS * O_LORA, (O_GROUPS * O_LORA) ** -0.5)
        self.f32(a + "attn_sink", self.randn(HEADS))
        if ratio:
            k = 2 if ratio == CSA else 1
            self.compressor(a + "compressor.", ratio, k * C, C)
            if ratio == CSA:
                self.indexer(p, a + "indexer.", ratio)
        f = p + "ffn."
        self.bf16(f + "gate.weight", self.randn(E, D) * (2.0 * D ** -0.5))
        if not mtp and layer < N_HASH:
            tid2eid = torch.stack([torch.randperm(E, generator=self.gen)[:K] for _ in range(VOCAB)])
            self.stored[f + "gate.tid2eid"] = tid2eid.to(torch.int64)
            self.w[f + "gate.tid2eid"] = tid2eid
        else:
            self.f32(f + "gate.bias", self.randn(E) * 0.3)
        for e in range(E):
            ep = f + "experts." + str(e) + "."
            self.fp4(ep + "w1", INTER, D, 2.0 * D ** -0.5)
            self.fp4(ep + "w2", D, INTER, INTER ** -0.5)
            self.fp4(ep + "w3", INTER, D, 2.0 * D ** -0.5)
        sw = N_SHARED * INTER
        self.fp8(f + "shared_experts.w1", sw, D, 2.0 * D ** -0.5)
        self.fp8(f + "shared_experts.w2", D, sw, sw ** -0.5)
        self.fp8(f + "shared_experts.w3", sw, D, 2.0 * D ** -0.5)
        if mtp:
            self.fp8(p + "e_proj", D, D, D ** -0.5)
            self.fp8(p + "h_proj", D, D, D ** -0.5)
            self.norm(p + "enorm.weight", D)
            self.norm(p + "hnorm.weight", D)
            self.head(p)

    def indexer(self, p, a, ratio):
        """The indexer's weights, leaning on the shared embedding direction m: weights_proj rows
        towards m (index weights mostly positive), and wq_b so that each head's query has a
        component along the keys' typical NoPE direction (q . k mostly positive). Both estimated
        from m alone: x ~ m * attn_norm, qr ~ q_norm * (wq_a x), key ~ norm * (wkv x)[:CI]."""
        self.compressor(a + "compressor.", ratio, 2 * CI, CI)
        x0 = self.common * self.w[p + "attn_norm.weight"]
        r0 = self.w[p + "attn.q_norm.weight"] * (self.w[p + "attn.wq_a"] @ x0)
        k0 = self.w[a + "compressor.norm.weight"] * ((self.w[a + "compressor.wkv.weight"][:CI] + self.w[a + "compressor.wkv.weight"][CI:]) @ x0)
        k0[-ROPE:] = 0  # the rope dims rotate with the position: no fixed direction
        lean_q = torch.outer(k0 / k0.norm(), r0 / r0.norm()).repeat(NI, 1) * LEAN_Q
        self.fp8(a + "wq_b", NI * CI, Q_LORA, Q_LORA ** -0.5, lean_q)
        lean_w = LEAN * self.common / self.common.norm()
        self.bf16(a + "weights_proj.weight", lean_w + self.randn(NI, D) * D ** -0.5)

    def compressor(self, p, ratio, rows, c):
        self.bf16(p + "wkv.weight", self.randn(rows, D) * D ** -0.5)
        self.bf16(p + "wgate.weight", self.randn(rows, D) * D ** -0.5)
        self.f32(p + "ape", self.randn(ratio, rows) * 0.5)
        self.norm(p + "norm.weight", c)

    def head(self, p):
        self.norm(p + "norm.weight", D)
        self.hc(p + "hc_head", HC)


def build_weights():
    b = Builder(WEIGHT_SEED)
    # A direction every embedding row shares, which the residual streams keep: the indexer's
    # weights_proj rows lean on it, so that the index weights are mostly positive and the BF16
    # index scores rarely tie at the top-k cut-off (see meta "index_ties").
    b.common = b.randn(D)
    b.bf16("embed.weight", COMMON * b.common + b.randn(VOCAB, D))
    b.bf16("head.weight", b.randn(VOCAB, D) * (3.0 * D ** -0.5))
    b.head("")
    for layer in range(N_LAYERS):
        b.block("layers." + str(layer) + ".", layer, False)
    b.block("mtp.0.", N_LAYERS, True)
    return b.stored, b.w


# ---- emulation ---------------------------------------------------------------------------------

def act_quant_any(x):
    """act_quant in 1x128 tiles, a trailing partial tile as one tile of its own."""
    n = x.shape[-1]
    full = n - n % 128
    parts = [act_quant(x[..., :full])] if full else []
    if n % 128:
        parts.append(act_quant(x[..., full:], block=n % 128))
    return torch.cat(parts, dim=-1)


def linear(x, w):
    """The reference linear() of an FP8/FP4 weight: act_quant(x), fp32 sums, BF16 out."""
    return bf16(act_quant_any(x) @ w.T)


def split_sinkhorn(mixes, scale, base):
    pre = torch.sigmoid(mixes[:HC] * scale[0] + base[:HC]) + HC_EPS
    post = 2 * torch.sigmoid(mixes[HC:2 * HC] * scale[1] + base[HC:2 * HC])
    comb = (mixes[2 * HC:] * scale[2] + base[2 * HC:]).view(HC, HC)
    comb = torch.softmax(comb, dim=-1) + HC_EPS
    comb = comb / (comb.sum(-2, keepdim=True) + HC_EPS)
    for _ in range(ITERS - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + HC_EPS)
        comb = comb / (comb.sum(-2, keepdim=True) + HC_EPS)
    return pre, post, comb


# The fp32 summation order of the mHC mixing dot products (4 d = 512 terms): "torch" is PyTorch's own;
# "float64" sums exactly and rounds once, an equally valid order that only the order check of main()
# uses (see meta "order_check").
MIX_ORDER = "torch"


def hc_mixes(X, fn):
    x = X.reshape(-1)
    dots = (fn.double() @ x.double()).float() if MIX_ORDER == "float64" else fn @ x
    return dots * torch.rsqrt(x.square().mean() + EPS)


def hc_pre(X, w, p):
    pre, post, comb = split_sinkhorn(hc_mixes(X, w[p + "_fn"]), w[p + "_scale"], w[p + "_base"])
    return bf16((pre[:, None] * X).sum(0)), post, comb


def hc_post(y, X, post, comb):
    return bf16(post[:, None] * y[None, :] + (comb[:, :, None] * X[:, None, :]).sum(0))


def hc_head(X, w, p):
    a = torch.sigmoid(hc_mixes(X, w[p + "hc_head_fn"]) * w[p + "hc_head_scale"] + w[p + "hc_head_base"]) + HC_EPS
    return bf16((a[:, None] * X).sum(0))


class Attention:
    """One layer's attention and its caches, stepped one token at a time (the decode path)."""

    def __init__(self, w, p, ratio, stats):
        self.w, self.p, self.ratio, self.stats = w, p, ratio, stats
        self.freqs = inv_freq(ROPE, COMPRESS_THETA, FACTOR, ORIGINAL, BETA_FAST, BETA_SLOW) if ratio \
            else inv_freq(ROPE, THETA)
        a = p + "attn."

        def comp(prefix, r, dim, rotate):
            sub = {"c.wkv": w[prefix + "wkv.weight"], "c.wgate": w[prefix + "wgate.weight"],
                   "c.ape": w[prefix + "ape"], "c.norm": w[prefix + "norm.weight"]}
            return Compressor(sub, "c", r, dim, r == CSA, self.freqs, rotate)

        self.main = comp(a + "compressor.", ratio, C, False) if ratio else None
        self.keys = comp(a + "indexer.compressor.", ratio, CI, True) if ratio == CSA else None
        self.window, self.entries, self.index_keys = {}, [], []

    def step(self, x, t):
        w, a = self.w, self.p + "attn."
        qr = rms_norm(linear(x, w[a + "wq_a"]), w[a + "q_norm.weight"])
        q = head_norm(linear(qr, w[a + "wq_b"]).reshape(HEADS, C))
        q = bf16(rope(q, t, self.freqs))
        kv = rms_norm(linear(x, w[a + "wkv"]), w[a + "kv_norm.weight"])
        kv = bf16(rope(kv, t, self.freqs))
        self.window[t % WINDOW] = torch.cat([act_quant(kv[:-ROPE], 64), kv[-ROPE:]])
        rows = [self.window[s % WINDOW] for s in range(max(0, t - WINDOW + 1), t + 1)]
        if self.ratio == CSA:
            k = self.keys.step(x, t)  # the indexer (and its compressor) runs before the main one
            if k is not None:
                self.index_keys.append(k)
        if self.ratio:
            e = self.main.step(x, t)
            if e is not None:
                self.entries.append(e)
        if self.ratio == CSA:
            iq = linear(qr, w[a + "indexer.wq_b"]).reshape(NI, CI)
            iq = fp4_simulate(bf16(hadamard(bf16(rope(iq, t, self.freqs)))))
            iw = bf16(x @ w[a + "indexer.weights_proj.weight"].T)
            iw = bf16(iw * (CI ** -0.5 * NI ** -0.5))
            visible = (t + 1) // CSA
            if visible:
                per_head = bf16(iq @ torch.stack(self.index_keys[:visible]).T)  # (NI, visible)
                scores = bf16(bf16(iw[:, None] * torch.relu(per_head)).sum(dim=0))
                # ties to the lower entry index: a stable sort by descending score
                order = sorted(range(visible), key=lambda i: (-scores[i].item(), i))
                if visible > TOP_K:
                    self.stats.append((self.p, t, scores[order[TOP_K - 1]].item(), scores[order[TOP_K]].item(),
                                       int((scores == 0).sum())))
                rows += [self.entries[i] for i in sorted(order[:TOP_K])]
        elif self.ratio == HCA:
            rows += self.entries[:(t + 1) // HCA]
        o = core(q, torch.stack(rows), w[a + "attn_sink"])
        o = bf16(rope(o, t, self.freqs, inverse=True))
        u = bf16(o.reshape(O_GROUPS, -1)[0] @ w[a + "wo_a"].T)  # BF16 einsum, one group
        return linear(u, w[a + "wo_b"])


def expert(x, w, p, weight=None):
    gate = linear(x, w[p + "w1"])
    up = linear(x, w[p + "w3"])
    up = torch.clamp(up, min=-LIMIT, max=LIMIT)
    gate = torch.clamp(gate, max=LIMIT)
    h = F.silu(gate) * up
    if weight is not None:
        h = weight * h
    return linear(bf16(h), w[p + "w2"])


def moe(x, w, p, tok, hashed):
    f = p + "ffn."
    scores = F.softplus(x @ w[f + "gate.weight"].T).sqrt()
    if hashed:
        idx = w[f + "gate.tid2eid"][tok]
    else:
        idx = (scores + w[f + "gate.bias"]).topk(K).indices
    weights = scores[idx]
    weights = weights / weights.sum() * ROUTE_SCALE
    y = torch.zeros(D)
    for e in range(E):  # increasing expert id, as the reference's loop
        hit = (idx == e).nonzero()
        if len(hit):
            y += expert(x, w, f + "experts." + str(e) + ".", weights[hit[0, 0]])
    y += expert(x, w, f + "shared_experts.")
    return bf16(y)


class Block:
    def __init__(self, w, p, layer, mtp, stats):
        self.w, self.p, self.hashed = w, p, (not mtp) and layer < N_HASH
        self.attn = Attention(w, p, RATIOS[layer], stats)

    def step(self, X, t, tok):
        w, p = self.w, self.p
        x, post, comb = hc_pre(X, w, p + "hc_attn")
        X = hc_post(self.attn.step(rms_norm(x, w[p + "attn_norm.weight"]), t), X, post, comb)
        x, post, comb = hc_pre(X, w, p + "hc_ffn")
        return hc_post(moe(rms_norm(x, w[p + "ffn_norm.weight"]), w, p, tok, self.hashed), X, post, comb)


def logits_of(X, w, p):
    h = rms_norm(hc_head(X, w, p), w[p + "norm.weight"])
    return h @ w["head.weight"].T


class Model:
    """The main model and the MTP block, each with its own caches."""

    def __init__(self, w, stats):
        self.w = w
        self.layers = [Block(w, "layers." + str(i) + ".", i, False, stats) for i in range(N_LAYERS)]
        self.mtp = Block(w, "mtp.0.", N_LAYERS, True, stats)

    def step(self, tok, t):
        """Main model at position t: (logits, final streams H_t)."""
        X = self.w["embed.weight"][tok].expand(HC, D).clone()
        for layer in self.layers:
            X = layer.step(X, t, tok)
        return logits_of(X, self.w, ""), X

    def mtp_step(self, H, next_tok, t):
        w, p = self.w, "mtp.0."
        e = rms_norm(w["embed.weight"][next_tok], w[p + "enorm.weight"])
        h = rms_norm(H, w[p + "hnorm.weight"])
        X = bf16(linear(e, w[p + "e_proj"])[None, :] + linear(h, w[p + "h_proj"]))
        X = self.mtp.step(X, t, next_tok)
        return logits_of(X, w, p)


# ---- outputs -----------------------------------------------------------------------------------

def config_json():
    return {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "vocab_size": VOCAB,
        "hidden_size": D,
        "num_hidden_layers": N_LAYERS,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 1,
        "head_dim": C,
        "qk_rope_head_dim": ROPE,
        "q_lora_rank": Q_LORA,
        "o_groups": O_GROUPS,
        "o_lora_rank": O_LORA,
        "sliding_window": WINDOW,
        "compress_ratios": RATIOS,
        "index_n_heads": NI,
        "index_head_dim": CI,
        "index_topk": TOP_K,
        "rope_theta": THETA,
        "compress_rope_theta": COMPRESS_THETA,
        "rope_scaling": {"type": "yarn", "factor": int(FACTOR), "original_max_position_embeddings": ORIGINAL,
                         "beta_fast": BETA_FAST, "beta_slow": BETA_SLOW},
        "rms_norm_eps": EPS,
        "hc_mult": HC,
        "hc_sinkhorn_iters": ITERS,
        "hc_eps": HC_EPS,
        "n_routed_experts": E,
        "n_shared_experts": N_SHARED,
        "num_experts_per_tok": K,
        "moe_intermediate_size": INTER,
        "scoring_func": "sqrtsoftplus",
        "routed_scaling_factor": ROUTE_SCALE,
        "num_hash_layers": N_HASH,
        "swiglu_limit": LIMIT,
        "num_nextn_predict_layers": 1,
        "max_position_embeddings": 1048576,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
        "expert_dtype": "fp4",
        "torch_dtype": "bfloat16",
    }


def margin(logits):
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


def run_prompt(w, prompt, stats):
    """The prompt through fresh caches: each position's logits, the MTP block's logits after each
    position but the last, and the final streams H_t of each position."""
    model = Model(w, stats)
    prefill, mtp, hidden = [], [], []
    for t, tok in enumerate(prompt):
        logits, H = model.step(tok, t)
        prefill.append(logits)
        hidden.append(H)
        if t + 1 < len(prompt):
            mtp.append(model.mtp_step(H, prompt[t + 1], t))
    return torch.stack(prefill), torch.stack(mtp), torch.stack(hidden)


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def check_order(w, prompt, prefill, mtp):
    """How far the same emulation drifts from itself under another valid fp32 summation order (the
    mHC mixing dot products summed in float64, MIX_ORDER): where a sum lies within an fp32 ulp of a
    BF16 rounding midpoint, the order decides the BF16 value; FP8/FP4 quantization downstream and the
    indexer's top-k can turn that one ulp into a different selection, after which the logits diverge
    by percents (chaos, not an error). A faithful implementation with its own summation order
    behaves the same way; its logits are comparable exactly only before the first such divergence."""
    global MIX_ORDER
    MIX_ORDER = "float64"
    try:
        p2, m2, _ = run_prompt(w, prompt, [])
    finally:
        MIX_ORDER = "torch"
    per = [rel_l2(p2[t], prefill[t]) for t in range(len(prompt))]
    first = next((t for t, r in enumerate(per) if r > 1e-3), len(prompt))
    return {
        "alternative": "the mHC mixing dot products summed in float64 and rounded to fp32 once",
        "first_divergence": first,
        "ulp_positions_before": [t for t in range(first) if per[t] > 1e-6],
        "max_rel_l2_before": max(per[:first]) if first else None,
        "prefill_rel_l2": rel_l2(p2, prefill),
        "prefill_rel_l2_from_divergence": rel_l2(p2[first:], prefill[first:]) if first < len(prompt) else 0.0,
        "prefill_argmax_agree": int((p2.argmax(1) == prefill.argmax(1)).sum()),
        "mtp_rel_l2": rel_l2(m2, mtp),
        "mtp_argmax_agree": int((m2.argmax(1) == mtp.argmax(1)).sum()),
    }


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    stored, w = build_weights()
    prompt = torch.randint(2, VOCAB, (PROMPT_LEN,), generator=torch.Generator().manual_seed(PROMPT_SEED)).tolist()

    # The prompt, one decode step a position; the MTP block after each position but the last.
    stats = []
    prefill, mtp, hidden = run_prompt(w, prompt, stats)
    order_check = check_order(w, prompt, prefill, mtp)

    # Greedy decoding after the first DECODE_FROM prompt tokens, fresh caches.
    greedy_model = Model(w, [])
    for t, tok in enumerate(prompt[:DECODE_FROM]):
        logits, _ = greedy_model.step(tok, t)
    greedy, margins, greedy_logits = [], [], []
    for i in range(GREEDY):
        greedy_logits.append(logits)
        margins.append(margin(logits))
        nxt = int(torch.argmax(logits))
        greedy.append(nxt)
        logits, _ = greedy_model.step(nxt, DECODE_FROM + i)
    assert min(margins) >= 1e-3, f"greedy margins too small: {min(margins)}"

    ties = [s for s in stats if s[2] == s[3]]
    gaps = [abs(s[2] - s[3]) for s in stats if s[2] != s[3]]
    rel_gaps = [abs(s[2] - s[3]) / max(abs(s[2]), abs(s[3])) for s in stats if s[2] != s[3]]
    prefill_m = [margin(x) for x in prefill]
    mtp_m = [margin(x) for x in mtp]

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "config.json"), "w") as f:
        json.dump(config_json(), f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in stored.items()}, os.path.join(OUT_DIR, "model.safetensors"),
              metadata={"format": "pt"})
    for name in ("config.json", "model.safetensors"):
        path = os.path.join(OUT_DIR, name)
        print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")

    meta = {
        "source": "plain PyTorch emulation of the official DeepSeek-V4 inference code (model.py, kernel.py,"
                  " current revision) under the released numerics, one decode step per position;"
                  " make_tiny_released_fixtures.py",
        "checkpoint": "tests/fixtures/tiny_v4_released (config.json, model.safetensors)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "safetensors": safetensors.__version__},
        "prompt": prompt,
        "prompt_seed": PROMPT_SEED,
        "weight_seed": WEIGHT_SEED,
        "decode_from": DECODE_FROM,
        "greedy": greedy,
        "greedy_margins": margins,
        "mtp": "mtp_logits[t] is the MTP block's output at position t (start_pos t) from the main model's"
               " final streams at t and the embedding of prompt[t + 1]",
        "index_ties": {
            "rule": "top-k by descending BF16 score, equal scores to the lower entry index (stable sort)",
            "selections": len(stats),
            "kth_ties": len(ties),
            "min_kth_gap": min(gaps) if gaps else None,
            "min_kth_relative_gap": min(rel_gaps) if rel_gaps else None,
            "max_zero_scores_in_a_row": max(s[4] for s in stats) if stats else 0,
        },
        "min_prefill_margin": min(prefill_m),
        "min_mtp_margin": min(mtp_m),
        "hidden": "hidden[t] is the main model's final residual streams at position t (hc_mult x d, BF16"
                  " values, before the HC head): the MTP block's input, to run it teacher-forced",
        "order_check": order_check,
    }
    write_fixture("tiny_v4_released.json", meta, {
        "prefill_logits": prefill,
        "mtp_logits": mtp,
        "greedy_logits": torch.stack(greedy_logits),
        "hidden": hidden,
    })
    print(json.dumps({k: meta[k] for k in ("greedy", "index_ties", "min_prefill_margin", "min_mtp_margin",
                                           "order_check")}))
    print("min greedy margin", min(margins))


if __name__ == "__main__":
    main()
