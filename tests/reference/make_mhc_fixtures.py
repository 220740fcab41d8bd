"""Golden fixtures for dsv4::mhc from the Hugging Face transformers DeepseekV4 modules.

Runs DeepseekV4HyperConnection (HC_pre: post, comb, collapsed input) and DeepseekV4HyperHead on a
tiny config with random float32 weights, and HC_post with the expression of
DeepseekV4DecoderLayer.forward (post * y + comb^T @ X). Writes tests/fixtures/mhc_*.json.

mhc_released.json is the released model's BF16 stream path (spec §18.3 "mHC layout and
precision"): a plain PyTorch emulation of the official inference code's Block.hc_pre, Block.hc_post
and ParallelHead.hc_head on BF16 streams (fp32 mixing, Sinkhorn and sums, one BF16 cast per output),
next to the same Hugging Face modules run on the BF16 streams (HF casts post and comb to BF16 and
computes HC_post in BF16 arithmetic; HC_pre and the head agree with the official code).

Run from anywhere: python3 tests/reference/make_mhc_fixtures.py
"""
import torch
import torch.nn.functional as F
from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config
from transformers.models.deepseek_v4.modeling_deepseek_v4 import (
    DeepseekV4HyperConnection,
    DeepseekV4HyperHead,
)

from fixture_io import write_fixture

HIDDEN, HC, BATCH, SEQ = 16, 4, 2, 3


def tiny_config(iters):
    return DeepseekV4Config(
        hidden_size=HIDDEN, hc_mult=HC, hc_sinkhorn_iters=iters, hc_eps=1e-6, rms_norm_eps=1e-6
    )


def streams(gen):
    # Streams of different scales and signs, so the RMS and the collapse are not trivial.
    x = torch.randn(BATCH, SEQ, HC, HIDDEN, generator=gen)
    return x * torch.linspace(0.5, 2.0, HC).view(1, 1, HC, 1)


def site_fixture(name, iters, logit_std, seed):
    gen = torch.Generator().manual_seed(seed)
    hc = DeepseekV4HyperConnection(tiny_config(iters)).float()
    width = HC * HIDDEN
    with torch.no_grad():
        # The normalized x has norm sqrt(width), so fn entries of standard deviation
        # logit_std / sqrt(width) give mixes of standard deviation ~ logit_std.
        hc.fn.copy_(torch.randn(hc.fn.shape, generator=gen) * logit_std / width**0.5)
        hc.base.copy_(torch.randn(hc.base.shape, generator=gen) * 0.5)
        hc.scale.copy_(torch.rand(3, generator=gen) + 0.5)
        x = streams(gen)
        post, comb, collapsed = hc(x)
        y = torch.randn(BATCH, SEQ, HIDDEN, generator=gen)
        # DeepseekV4DecoderLayer.forward, float32 (the .to(dtype) casts are no-ops).
        x_next = post.unsqueeze(-1) * y.unsqueeze(-2) + torch.matmul(comb.transpose(-1, -2), x)
    meta = {
        "source": "transformers DeepseekV4HyperConnection + DeepseekV4DecoderLayer HC_post expression",
        "transformers": __import__("transformers").__version__,
        "hidden_size": HIDDEN,
        "hc_mult": HC,
        "hc_sinkhorn_iters": iters,
        "hc_eps": 1e-6,
        "rms_norm_eps": 1e-6,
        "tokens": BATCH * SEQ,
    }
    tokens = BATCH * SEQ
    write_fixture(
        name,
        meta,
        {
            "x": x.reshape(tokens, HC, HIDDEN),
            "fn": hc.fn,
            "base": hc.base,
            "scale": hc.scale,
            "post": post.reshape(tokens, HC),
            "comb": comb.reshape(tokens, HC, HC),
            "collapsed": collapsed.reshape(tokens, HIDDEN),
            "y": y.reshape(tokens, HIDDEN),
            "x_next": x_next.reshape(tokens, HC, HIDDEN),
        },
    )


def head_fixture(name, seed):
    gen = torch.Generator().manual_seed(seed)
    head = DeepseekV4HyperHead(tiny_config(20)).float()
    with torch.no_grad():
        head.hc_fn.copy_(torch.randn(head.hc_fn.shape, generator=gen) * 0.2)
        head.hc_base.copy_(torch.randn(head.hc_base.shape, generator=gen) * 0.5)
        head.hc_scale.copy_(torch.rand(1, generator=gen) + 0.5)
        x = streams(gen)
        h = head(x)
    tokens = BATCH * SEQ
    write_fixture(
        name,
        {
            "source": "transformers DeepseekV4HyperHead",
            "transformers": __import__("transformers").__version__,
            "hidden_size": HIDDEN,
            "hc_mult": HC,
            "hc_eps": 1e-6,
            "rms_norm_eps": 1e-6,
            "tokens": tokens,
        },
        {
            "x": x.reshape(tokens, HC, HIDDEN),
            "fn": head.hc_fn,
            "base": head.hc_base,
            "scale": head.hc_scale,
            "h": h.reshape(tokens, HIDDEN),
        },
    )


def split_sinkhorn(mixes, scale, base, iters, eps):
    """The official hc_split_sinkhorn (kernel order: row softmax + eps, columns, (rows, columns))."""
    pre = torch.sigmoid(mixes[..., :HC] * scale[0] + base[:HC]) + eps
    post = 2 * torch.sigmoid(mixes[..., HC:2 * HC] * scale[1] + base[HC:2 * HC])
    comb = mixes[..., 2 * HC:].unflatten(-1, (HC, HC)) * scale[2] + base[2 * HC:].view(HC, HC)
    comb = torch.softmax(comb, dim=-1) + eps
    comb = comb / (comb.sum(-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + eps)
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
    return pre, post, comb


def mix(x, fn, eps):
    """Block.hc_pre's mixes: fp32 streams, RMS factor applied after the matmul."""
    xf = x.flatten(2).float()
    return F.linear(xf, fn) * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)


def ulp_stats(a, b):
    """(share of bit-identical elements, worst difference in BF16 ulps of the row maximum)."""
    a, b = a.float().reshape(-1, a.shape[-1]), b.float().reshape(-1, b.shape[-1])
    ulp = torch.exp2(torch.floor(torch.log2(b.abs().amax(-1, keepdim=True))) - 7)
    return float((a == b).float().mean()), float(((a - b).abs() / ulp).max())


def released_fixture(name, seed, hidden=64, iters=20, eps=1e-6):
    gen = torch.Generator().manual_seed(seed)
    cfg = DeepseekV4Config(hidden_size=hidden, hc_mult=HC, hc_sinkhorn_iters=iters, hc_eps=eps, rms_norm_eps=eps)
    hc, head = DeepseekV4HyperConnection(cfg).float(), DeepseekV4HyperHead(cfg).float()
    width = HC * hidden
    with torch.no_grad():
        hc.fn.copy_(torch.randn(hc.fn.shape, generator=gen) / width**0.5)
        hc.base.copy_(torch.randn(hc.base.shape, generator=gen) * 0.5)
        hc.scale.copy_(torch.rand(3, generator=gen) + 0.5)
        head.hc_fn.copy_(torch.randn(head.hc_fn.shape, generator=gen) * 0.2)
        head.hc_base.copy_(torch.randn(head.hc_base.shape, generator=gen) * 0.5)
        head.hc_scale.copy_(torch.rand(1, generator=gen) + 0.5)
        x = (torch.randn(BATCH, SEQ, HC, hidden, generator=gen) * torch.linspace(0.5, 2.0, HC).view(1, 1, HC, 1))
        x = x.to(torch.bfloat16)  # the released streams are BF16 tensors
        y = torch.randn(BATCH, SEQ, hidden, generator=gen).to(torch.bfloat16)  # a sublayer's BF16 output

        # Official Block.hc_pre / hc_post and ParallelHead.hc_head.
        pre, post, comb = split_sinkhorn(mix(x, hc.fn, eps), hc.scale, hc.base, iters, eps)
        collapsed = torch.sum(pre.unsqueeze(-1) * x.float(), dim=2).to(torch.bfloat16)
        x_next = (post.unsqueeze(-1) * y.unsqueeze(-2)
                  + torch.sum(comb.unsqueeze(-1) * x.unsqueeze(-2), dim=2)).type_as(y)
        a = torch.sigmoid(mix(x, head.hc_fn, eps) * head.hc_scale + head.hc_base) + eps
        h = torch.sum(a.unsqueeze(-1) * x.float(), dim=2).to(torch.bfloat16)

        # Hugging Face on the same BF16 streams (DeepseekV4DecoderLayer's HC_post expression).
        hf_post, hf_comb, hf_collapsed = hc(x)
        hf_next = hf_post.to(torch.bfloat16).unsqueeze(-1) * y.unsqueeze(-2) + torch.matmul(
            hf_comb.to(torch.bfloat16).transpose(-1, -2), x)
        hf_h = head(x)
    tokens = BATCH * SEQ
    stats = {k: ulp_stats(u, v) for k, (u, v) in {
        "collapsed": (hf_collapsed, collapsed), "x_next": (hf_next, x_next), "h": (hf_h, h)}.items()}
    write_fixture(name, {
        "source": "plain PyTorch emulation of the official Block.hc_pre/hc_post and ParallelHead.hc_head"
                  " on BF16 streams; transformers DeepseekV4HyperConnection/HyperHead on the same streams",
        "transformers": __import__("transformers").__version__,
        "hidden_size": hidden, "hc_mult": HC, "hc_sinkhorn_iters": iters, "hc_eps": eps, "rms_norm_eps": eps,
        "tokens": tokens,
        "hf_vs_official": {k: {"bit_identical": v[0], "worst_row_ulps": v[1]} for k, v in stats.items()},
    }, {
        "x": x.reshape(tokens, HC, hidden), "y": y.reshape(tokens, hidden),
        "fn": hc.fn, "base": hc.base, "scale": hc.scale,
        "head_fn": head.hc_fn, "head_base": head.hc_base, "head_scale": head.hc_scale,
        "post": post.reshape(tokens, HC), "comb": comb.reshape(tokens, HC, HC),
        "collapsed": collapsed.reshape(tokens, hidden), "x_next": x_next.reshape(tokens, HC, hidden),
        "h": h.reshape(tokens, hidden),
        "hf.collapsed": hf_collapsed.reshape(tokens, hidden), "hf.x_next": hf_next.reshape(tokens, HC, hidden),
        "hf.h": hf_h.reshape(tokens, hidden),
    })
    print(stats)


if __name__ == "__main__":
    torch.manual_seed(0)
    # The released setting (20 iterations), and a short run with large logits where the order of
    # the row and column normalizations visibly changes the matrix.
    site_fixture("mhc_site_iters20.json", iters=20, logit_std=1.0, seed=1)
    site_fixture("mhc_site_iters3.json", iters=3, logit_std=4.0, seed=2)
    head_fixture("mhc_head.json", seed=3)
    released_fixture("mhc_released.json", seed=4)
