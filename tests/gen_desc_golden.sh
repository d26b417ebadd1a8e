#!/bin/bash
# gen_desc_golden.sh - regenerates tests/data/model_desc/every_op.safetensors,
# the golden file of test_model_desc_run.c: the description
# tests/data/model_desc/every_op.json built by tests/torch_model.py (PyTorch,
# independent of fedloha's loader) with torch.manual_seed(3) initial weights,
# in eval mode. Holds every weight and bias by its state_dict name, "input"
# (5, 2, 8, 8) uniform in [-2, 2) and "logits" (5, 3), all F32.
# Usage: tests/gen_desc_golden.sh   (needs python3-torch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
/usr/bin/python3 - "$here" <<'PY'
import json, os, sys
here = sys.argv[1]
sys.path.insert(0, here)
import torch
from torch_model import Described, st_save

src = os.path.join(here, "data", "model_desc", "every_op.json")
dst = os.path.join(here, "data", "model_desc", "every_op.safetensors")
torch.manual_seed(3)
with open(src) as f:
    net = Described(json.load(f)).eval()
x = torch.rand(5, 2, 8, 8) * 4 - 2
with torch.no_grad():
    logits = net(x)
out = {k: v.detach().clone() for k, v in net.state_dict().items()}
out["input"] = x
out["logits"] = logits
st_save(dst, out)
print(f"{dst}: {len(out)} tensors; logits[0] = {logits[0].tolist()}")
PY
