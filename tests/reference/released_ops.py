"""The released model's numerics as plain PyTorch functions, shared by the fixture scripts that
emulate the official inference code (spec §13, §18.3): BF16 rounding, act_quant (FP8 e4m3 with
ue8m0 scales), the FP4 simulation, the Hadamard rotation, RoPE tables, the `linear()` of FP8/FP4
weights, and the integer-hash weight generator whose values the C++ tests rebuild
(tests/hashed_weights.hpp) so that large weights need not be stored in a fixture.
"""
import math

import torch


def bf16(x):
    """x rounded to BF16 (nearest even), returned as float32."""
    return x.to(torch.bfloat16).to(torch.float32)


# ---- weight generator -----------------------------------------------------------------------------

def hash32(v):
    """lowbias32 (C. Wellons)."""
    v &= 0xFFFFFFFF
    v ^= v >> 16
    v = (v * 0x7FEB352D) & 0xFFFFFFFF
    v ^= v >> 15
    v = (v * 0x846CA68B) & 0xFFFFFFFF
    v ^= v >> 16
    return v


def hashed(seed, count):
    base = (seed * 0x9E3779B1) & 0xFFFFFFFF
    return [hash32(base + i) for i in range(count)]


def scale_exponents(seed, count, typical):
    # 2^(typical - 1 .. typical + 1): neighbouring blocks carry different scales.
    return torch.tensor([typical - 1 + h % 3 for h in hashed(seed + 0x10000, count)], dtype=torch.float32)


def hashed_fp8(rows, cols, seed, typical):
    """(rows, cols) fp8 e4m3 codes |v| <= 16 and 128x128 ue8m0 exponents, dequantized."""
    codes = [((h & 1) << 7) | ((h >> 1) % 0x59) for h in hashed(seed, rows * cols)]
    q = torch.tensor(codes, dtype=torch.uint8).view(torch.float8_e4m3fn).reshape(rows, cols)
    sb = (-(-rows // 128), -(-cols // 128))
    e = scale_exponents(seed, sb[0] * sb[1], typical).reshape(sb)
    return q.float() * torch.exp2(e).repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]


FP4_VALUES = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])


def hashed_fp4(rows, cols, seed, typical):
    """(rows, cols) fp4 e2m1 nibbles (element i = low nibble of hash i) and 1x32 exponents."""
    nib = torch.tensor([h & 0xF for h in hashed(seed, rows * cols)], dtype=torch.long)
    e = scale_exponents(seed, rows * cols // 32, typical).reshape(rows, cols // 32)
    return FP4_VALUES[nib].reshape(rows, cols) * torch.exp2(e).repeat_interleave(32, 1)


def hashed_grid(shape, seed, center, exponent):
    """Values center + (h % 255 - 127) * 2^exponent: exact in BF16 for |center| in {0, 1} and
    exponent <= -7, so a BF16 or float32 tensor holds them without rounding."""
    n = math.prod(shape)
    v = torch.tensor([(h % 255) - 127 for h in hashed(seed, n)], dtype=torch.float32)
    return (center + v * 2.0 ** exponent).reshape(shape)


# ---- activation quantization ----------------------------------------------------------------------

def act_quant(x, block=128):
    """The reference act_quant (FP8 e4m3, 1 x block tiles, ue8m0 scales) of a BF16 tensor, dequantized:
    amax = max(|x|, 1e-4), s = 2^ceil(log2(amax / 448)), q = e4m3(clamp(x / s, -448, 448)), bf16(q s)."""
    z = x.float().reshape(*x.shape[:-1], x.shape[-1] // block, block)
    amax = z.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    m, e = torch.frexp(amax / 448.0)  # amax/448 = m 2^e, m in [0.5, 1)
    s = torch.exp2((e - (m == 0.5).int()).float())
    q = (z / s).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    return bf16(q * s).reshape(x.shape)


def linear(x, w, quantized):
    """The reference linear(): x BF16; FP8/FP4 weights take act_quant(x); fp32 accumulation; BF16 out."""
    a = act_quant(x) if quantized else x.float()
    return bf16(a @ w.T)


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
    """The reference fp4_act_quant simulation in 1 x 32 tiles with ue8m0 scales, dequantized."""
    t = x.reshape(*x.shape[:-1], -1, 32)
    amax = torch.clamp(t.abs().amax(dim=-1, keepdim=True), min=6.0 * 2.0 ** -126)
    s = torch.exp2(torch.ceil(torch.log2(amax / 6.0)))
    q = e2m1_round(torch.clamp(t / s, -6.0, 6.0))
    return (q * s).reshape(x.shape)


def hadamard(x):
    """Sylvester-order Walsh-Hadamard transform of the last dim in fp32, scaled by n^-1/2."""
    y = x.clone()
    n = y.shape[-1]
    h = 1
    while h < n:
        y = y.reshape(*x.shape[:-1], n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).reshape(*x.shape[:-1], n)
        h *= 2
    return y * torch.tensor(n ** -0.5, dtype=torch.float32)


# ---- RoPE ---------------------------------------------------------------------------------------

def inv_freq(rope_dim, theta, factor=1.0, original=0, beta_fast=32.0, beta_slow=1.0):
    """The reference's frequencies in fp32; YaRN interpolation when original > 0 (spec §4.3)."""
    f = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim))
    if original <= 0:
        return f

    def corr(rot):
        return rope_dim * math.log(original / (rot * 2 * math.pi)) / (2 * math.log(theta))

    lo = max(math.floor(corr(beta_fast)), 0)
    hi = min(math.ceil(corr(beta_slow)), rope_dim - 1)
    ramp = torch.clamp((torch.arange(rope_dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
    return f / factor * ramp + f * (1 - ramp)


def rope(x, pos, freqs, inverse=False):
    """Interleaved RoPE on the last 2 * len(freqs) dims at position pos (angles pos * f in fp32),
    by -pos when inverse; fp32 result (the caller rounds)."""
    n = 2 * freqs.shape[0]
    angle = torch.tensor(float(pos), dtype=torch.float32) * freqs
    # cos and sin of the fp32 angle, correctly rounded (PyTorch's own float32 cos and sin can be
    # an ulp off; the GPU's are within two ulps, so no fixed choice is the reference's exactly)
    c, s = torch.cos(angle.double()).float(), torch.sin(angle.double()).float()
    if inverse:
        s = -s
    r = x[..., -n:].reshape(*x.shape[:-1], n // 2, 2)
    a, b = r[..., 0], r[..., 1]
    out = torch.stack((a * c - b * s, b * c + a * s), dim=-1).reshape(*x.shape[:-1], n)
    return torch.cat((x[..., :-n], out), dim=-1)
