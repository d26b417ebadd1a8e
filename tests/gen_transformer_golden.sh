#!/bin/bash
# gen_transformer_golden.sh - regenerates the transformer goldens of
# tests/data/model_desc/: for each description transformer_ops.json (image
# inputs (2,6,6): conv2d, groupnorm, tokens, position, attention, layernorm,
# linear on tokens, gelu, mean_tokens) and transformer_tokens.json (token
# inputs, 5 ids in [0, 11): embedding, position, the same block), the file
# <name>.safetensors built by tests/torch_model.py (PyTorch, independent of
# fedloha's loader) in eval mode, holding:
#   every weight by its state_dict name (F32): torch.manual_seed(7) initial
#     weights, then position tables ~ N(0, 0.5^2), norm weights 1 + N(0, 0.3^2)
#     and norm biases N(0, 0.2^2) so that no parameter keeps a trivial value;
#   "input": the batch, (3, 2, 6, 6) F32 uniform in [-2, 2), or (3, 5) I64 ids
#     with the same ids as F32 in "input_f32";
#   "logits" (3, 3) F32;
#   "grad.<name>" for every weight: the gradient of logits.sum() (F32), and
#     "grad.input" for the image model.
# Forward and backward run in float64 from the float32 weights and inputs;
# results are rounded to F32.
# Usage: tests/gen_transformer_golden.sh   (needs python3-torch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
/usr/bin/python3 - "$here" <<'PY'
import json, os, sys
here = sys.argv[1]
sys.path.insert(0, here)
import torch
from torch_model import Described, st_save

for name in ("transformer_ops", "transformer_tokens"):
    src = os.path.join(here, "data", "model_desc", name + ".json")
    dst = os.path.join(here, "data", "model_desc", name + ".safetensors")
    torch.manual_seed(7)
    with open(src) as f:
        net = Described(json.load(f)).eval()
    with torch.no_grad():
        for k, p in net.named_parameters():
            if k == "pos.weight":
                p.copy_(torch.randn_like(p) * 0.5)
            elif k.endswith(("gn.weight", "ln1.weight", "ln2.weight", "norm.weight")):
                p.copy_(1 + torch.randn_like(p) * 0.3)
            elif k.endswith(("gn.bias", "ln1.bias", "ln2.bias", "norm.bias")):
                p.copy_(torch.randn_like(p) * 0.2)
    out = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if net._fl_vocab is None:
        x = torch.rand((3,) + tuple(net._fl_in_shape)) * 4 - 2
        out["input"] = x
        xin = x.double().requires_grad_(True)
    else:
        x = torch.randint(0, net._fl_vocab, (3,) + tuple(net._fl_in_shape), dtype=torch.int64)
        out["input"] = x
        out["input_f32"] = x.float()
        xin = x
    net = net.double()
    logits = net(xin)
    logits.sum().backward()
    out["logits"] = logits.detach().float()
    for k, p in net.named_parameters():
        out["grad." + k] = p.grad.float()
    if xin.dtype == torch.float64:
        out["grad.input"] = xin.grad.float()
    st_save(dst, out)
    print(f"{dst}: {len(out)} tensors; logits[0] = {out['logits'][0].tolist()}")
PY
