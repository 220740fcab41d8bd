"""Golden fixtures for dsv4::mhc from the Hugging Face transformers DeepseekV4 modules.

Runs DeepseekV4HyperConnection (HC_pre: post, comb, collapsed input) and DeepseekV4HyperHead on a
tiny config with random float32 weights, and HC_post with the expression of
DeepseekV4DecoderLayer.forward (post * y + comb^T @ X). Writes tests/fixtures/mhc_*.json.

Run from anywhere: python3 tests/reference/make_mhc_fixtures.py
"""
import torch
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


if __name__ == "__main__":
    torch.manual_seed(0)
    # The released setting (20 iterations), and a short run with large logits where the order of
    # the row and column normalizations visibly changes the matrix.
    site_fixture("mhc_site_iters20.json", iters=20, logit_std=1.0, seed=1)
    site_fixture("mhc_site_iters3.json", iters=3, logit_std=4.0, seed=2)
    head_fixture("mhc_head.json", seed=3)
