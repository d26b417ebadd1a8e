#!/bin/bash
# gen_layers_seq_golden.sh - regenerates tests/data/layers/seq.safetensors
# (the golden file of test_layers_seq.c) with PyTorch 1.13:
#   ln_*      nn.LayerNorm(12), x (3, 5, 12), random weight and bias
#   gn2_*     nn.GroupNorm(2, 6), x (2, 6, 3, 4), random weight and bias
#   gn3_*     nn.GroupNorm(3, 6), the same shapes
#   emb_*     nn.Embedding(7, 5), ids (2, 6) with repeats (x holds the ids)
#   tok_*     x.flatten(2).transpose(1, 2), x (2, 3, 2, 3)
#   pos_*     x + p, x (2, 7, 8), p (1, 7, 8)
#   att1_*    attention core, 1 head, q, k, v (2, 7, 12)
#   att4_*    attention core, 4 heads (hd 3), q, k, v (2, 7, 12)
#   mean_*    x.mean(1), x (3, 7, 5)
# each with _x (input), _y (forward output), _dy (output gradient) and the
# gradients from autograd: _dx, and _w/_b with _dw/_db for parameters (_p
# and _dp for position; _q, _k, _v with _dq, _dk, _dv for attention, whose
# input is q, k, v). Attention is written out as the math
# (F.scaled_dot_product_attention is not in 1.13):
#   o_h = softmax(q_h k_h^T / sqrt(hd)) v_h, heads concatenated.
# All F32. Written by hand (u64 header length, JSON header, raw
# little-endian data): no safetensors package.
# Usage: tests/gen_layers_seq_golden.sh   (needs python3-torch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$here/data/layers"
/usr/bin/python3 - "$here/data/layers/seq.safetensors" "$here" <<'PY'
import json, struct, sys
import numpy as np
import torch
import torch.nn as nn

torch.manual_seed(11)
rng = np.random.default_rng(11)
out = {}

def t(shape, scale=1.0, shift=0.0):
    a = rng.uniform(-1, 1, size=shape) * scale + shift
    return torch.tensor(a, dtype=torch.float32, requires_grad=True)

def run(prefix, inputs, f, params=()):
    """inputs: name -> leaf tensor; params: name -> parameter."""
    y = f()
    dy = torch.tensor(rng.uniform(-1, 1, size=tuple(y.shape)), dtype=torch.float32)
    y.backward(dy)
    out[f"{prefix}_y"] = y.detach()
    out[f"{prefix}_dy"] = dy
    for name, v in list(inputs.items()) + list(params):
        out[f"{prefix}_{name}"] = v.detach().float()
        if v.grad is not None:
            out[f"{prefix}_d{name}"] = v.grad.detach()

def affine(m):
    with torch.no_grad():
        m.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, size=m.weight.shape)))
        m.bias.copy_(torch.tensor(rng.uniform(-0.5, 0.5, size=m.bias.shape)))
    return (("w", m.weight), ("b", m.bias))

ln = nn.LayerNorm(12)
x = t((3, 5, 12), 2.0, 0.5)
run("ln", {"x": x}, lambda: ln(x), affine(ln))
for g in (2, 3):
    gn = nn.GroupNorm(g, 6)
    x = t((2, 6, 3, 4), 1.5, -0.3)
    run(f"gn{g}", {"x": x}, lambda: gn(x), affine(gn))

emb = nn.Embedding(7, 5)
ids = torch.tensor([[0, 3, 3, 6, 1, 3], [2, 6, 0, 5, 5, 4]])
run("emb", {}, lambda: emb(ids), (("w", emb.weight),))
out["emb_x"] = ids.float()

x = t((2, 3, 2, 3))
run("tok", {"x": x}, lambda: x.flatten(2).transpose(1, 2))
x, p = t((2, 7, 8)), t((1, 7, 8))
run("pos", {"x": x, "p": p}, lambda: x + p)

def attention(q, k, v, heads):
    b, n, d = q.shape
    hd = d // heads
    split = lambda a: a.reshape(b, n, heads, hd).transpose(1, 2)
    s = split(q) @ split(k).transpose(-2, -1) / hd ** 0.5
    o = torch.softmax(s, dim=-1) @ split(v)
    return o.transpose(1, 2).reshape(b, n, d)

for h in (1, 4):
    q, k, v = t((2, 7, 12), 1.5), t((2, 7, 12), 1.5), t((2, 7, 12))
    run(f"att{h}", {"q": q, "k": k, "v": v}, lambda: attention(q, k, v, h))

x = t((3, 7, 5))
run("mean", {"x": x}, lambda: x.mean(1))

sys.path.insert(0, sys.argv[2])
from torch_model import st_save  # noqa: E402
st_save(sys.argv[1], {k: v.float() for k, v in out.items()})
print(f"{sys.argv[1]}: {len(out)} tensors")
PY
