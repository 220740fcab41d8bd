"""Writes golden fixtures in the JSON layout tests/fixture.hpp reads.

{"meta": {...}, "tensors": {"<name>": {"shape": [...], "data": [row-major floats]}}}
Floats are written with 9 significant digits, which reads back as the exact float32 value.
"""
import json
import os

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def _flat(t):
    import torch

    t = t.detach().to(torch.float32).contiguous().reshape(-1)
    return [float(f"{v:.9g}") for v in t.tolist()]


def write_fixture(name, meta, tensors):
    """name: file name under tests/fixtures/; tensors: {name: torch tensor}."""
    doc = {
        "meta": meta,
        "tensors": {k: {"shape": list(v.shape), "data": _flat(v)} for k, v in tensors.items()},
    }
    path = os.path.join(FIXTURE_DIR, name)
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")
