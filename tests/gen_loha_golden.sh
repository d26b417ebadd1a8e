#!/bin/bash
# gen_loha_golden.sh - regenerates tests/data/loha/ (golden files of
# test_loha_golden.c) with the PyTorch reference:
#   <case>/inputs.safetensors    hada_* factors (F32), grad_out, scale
#   <case>/expected.safetensors  reference output (`grads`: delta and
#                                grad_hada_*; `pfedpara`: weight)
# Cases: linear, conv_reshape (conv kernel as O x I*K1*K2), tucker
# (effective conv2d), pfedpara (linear, W1 * (W2 + 1)).
# Usage: tests/gen_loha_golden.sh [REFERENCE.py]   (needs python3-torch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ref="${1:-/work/shared/tools/loha_reference.py}"
out="$here/data/loha"
py=/usr/bin/python3
mkdir -p "$out"

# Inputs are written with the reference's own st_save.
"$py" - "$ref" "$out" <<'PY'
import importlib.util, os, sys
import numpy as np
spec = importlib.util.spec_from_file_location("loha_reference", sys.argv[1])
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
out = sys.argv[2]

def u(rng, *shape):
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)

def case(name, seed, o, i, k1, k2, r, scale, tucker):
    rng = np.random.default_rng(seed)
    t = {}
    if tucker:
        t["hada_t1"] = u(rng, r, r, k1, k2)
        t["hada_w1_a"] = u(rng, r, o)
        t["hada_w1_b"] = u(rng, r, i)
        t["hada_t2"] = u(rng, r, r, k1, k2)
        t["hada_w2_a"] = u(rng, r, o)
        t["hada_w2_b"] = u(rng, r, i)
    else:
        n = i * k1 * k2
        t["hada_w1_a"] = u(rng, o, r)
        t["hada_w1_b"] = u(rng, r, n)
        t["hada_w2_a"] = u(rng, o, r)
        t["hada_w2_b"] = u(rng, r, n)
    t["grad_out"] = u(rng, o, i, k1, k2) if k1 * k2 > 1 else u(rng, o, i)
    t["scale"] = np.array([scale], dtype=np.float32)
    os.makedirs(os.path.join(out, name), exist_ok=True)
    ref.st_save(os.path.join(out, name, "inputs.safetensors"), t)

case("linear", 1, 7, 11, 1, 1, 3, 0.75, False)
case("conv_reshape", 2, 5, 3, 3, 3, 2, 1.5, False)
case("tucker", 3, 6, 4, 3, 3, 3, 0.5, True)
case("pfedpara", 4, 9, 13, 1, 1, 4, 1.0, False)
PY

for c in linear conv_reshape tucker; do
	"$py" "$ref" grads "$out/$c" "$out/$c/expected.safetensors"
done
"$py" "$ref" pfedpara "$out/pfedpara" "$out/pfedpara/expected.safetensors"
ls -l "$out"/*/
