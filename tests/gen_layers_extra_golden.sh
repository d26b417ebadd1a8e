#!/bin/bash
# gen_layers_extra_golden.sh - regenerates tests/data/layers/extra.safetensors
# (the golden file of test_layers_extra.c) with PyTorch:
#   avg_a_*  F.avg_pool2d, x (2, 3, 6, 7), kernel 2, stride 2
#   avg_b_*  F.avg_pool2d, x (1, 2, 7, 6), kernel 3, stride 2 (overlapping)
#   gelu_*   F.gelu (exact erf form), x (64,) with |x| up to 30
# each with _x (input), _y (forward output), _dy (output gradient) and _dx
# (input gradient from autograd), all F32. Written by hand (u64 header
# length, JSON header, raw little-endian data): no safetensors package.
# Usage: tests/gen_layers_extra_golden.sh   (needs python3-torch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$here/data/layers"
/usr/bin/python3 - "$here/data/layers/extra.safetensors" "$here" <<'PY'
import json, struct, sys
import numpy as np
import torch
import torch.nn.functional as F

rng = np.random.default_rng(7)
out = {}

def case(prefix, x, f):
    x = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    y = f(x)
    dy = torch.tensor(rng.uniform(-1, 1, size=tuple(y.shape)), dtype=torch.float32)
    y.backward(dy)
    for k, t in (("x", x), ("y", y), ("dy", dy), ("dx", x.grad)):
        out[f"{prefix}_{k}"] = t.detach().contiguous()

case("avg_a", rng.uniform(-1, 1, size=(2, 3, 6, 7)), lambda x: F.avg_pool2d(x, 2, 2))
case("avg_b", rng.uniform(-1, 1, size=(1, 2, 7, 6)), lambda x: F.avg_pool2d(x, 3, 2))
gx = np.concatenate([np.linspace(-6, 6, 41), rng.normal(0, 2, size=16),
                     [-30, -12, -9, 0, 9, 12, 30]])
case("gelu", gx, F.gelu)

sys.path.insert(0, sys.argv[2])
from torch_model import st_save  # noqa: E402
st_save(sys.argv[1], {k: v.float() for k, v in out.items()})
print(f"{sys.argv[1]}: {len(out)} tensors")
PY
