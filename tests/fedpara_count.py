#!/usr/bin/python3
"""fedpara_count.py - the parameter count of a model description under
FedPara (FedPara paper, arXiv 2108.06098, §3.1) for a range of gamma, an
independent cross-check of fedloha's C implementation.

The rank rule is common/math/loha_init.c's, reproduced here:
  r_min = max(1, min(ceil(sqrt(m)), ceil(sqrt(n)))), m = out and n = in
          (Tucker form) or in*k*k (linear form);
  r_max = the largest r whose factor count does not exceed the dense count
          out*in*k*k (>= 1);
  r     = round half up of (1-gamma) r_min + gamma r_max (>= 1).
Factor counts: Tucker form 2r(out + in + r k^2) (hada_w1_a/b, hada_w2_a/b,
hada_t1/t2); linear form 2r(out + in k^2).

By default every conv2d layer is factorised in the Tucker form and every
linear layer stays dense, as in the paper's VGG16 (Table 5). With --linear,
linear layers other than the output layer (the last layer with weights)
are factorised too, in the linear form. Biases, normalisation weights,
embeddings, position tables and attention projections stay dense. The
dense part is counted from the PyTorch module tests/torch_model.py builds.

Usage: fedpara_count.py MODEL.json [--gamma G ...] [--conv-form tucker|linear]
                        [--linear] [--layers]
Prints one line per gamma: gamma, total, and the total in millions; with
--layers, each factorised layer's rank and count. Exit 77 without torch.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import Described  # noqa: E402  (exits 77 without torch)


def ceil_sqrt(x):
    r = math.isqrt(x)
    return r if r * r == x else r + 1


def params_at(out, inp, kk, r, tucker):
    return 2 * r * (out + inp + r * kk) if tucker else 2 * r * (out + inp * kk)


def rank_min(out, inp, kk, tucker):
    n = inp if tucker else inp * kk
    return max(1, min(ceil_sqrt(out), ceil_sqrt(n)))


def rank_max(out, inp, kk, tucker):
    """Closed form, then the exact integer walk of fl_loha_rank_max."""
    dense = out * inp * kk
    if tucker:
        b, a = float(out + inp), float(kk)
        est = (-b + math.sqrt(b * b + 2.0 * a * a * out * inp)) / (2.0 * a)
    else:
        est = dense / (2.0 * (out + inp * kk))
    r = int(est) if est > 1.0 else 1
    while r > 1 and params_at(out, inp, kk, r, tucker) > dense:
        r -= 1
    while params_at(out, inp, kk, r + 1, tucker) <= dense:
        r += 1
    return r


def rank_from_gamma(out, inp, kk, tucker, gamma):
    gamma = min(max(gamma, 0.0), 1.0)
    x = (1.0 - gamma) * rank_min(out, inp, kk, tucker) + gamma * rank_max(out, inp, kk, tucker)
    return max(1, int(math.floor(x + 0.5 + 1e-9)))


def weighted_layers(modules, out):
    """[(op, name, in, out, kernel)] of the linear and conv2d layers, in order."""
    for m in modules:
        if m["op"] in ("linear", "conv2d"):
            out.append((m["op"], m["name"], m["in"], m["out"], m.get("kernel", 1)))
        elif m["op"] in ("residual", "sequential"):
            weighted_layers(m["modules"], out)
    return out


def count(desc, net_params, gamma, conv_tucker, linear):
    """(total, [(name, form, r, factors, dense)]) at gamma."""
    layers = weighted_layers(desc["modules"], [])
    last = layers[-1][1] if layers else None
    total, rows = net_params, []
    for op, name, inp, out, k in layers:
        if op == "linear" and (not linear or name == last):
            continue
        tucker = op == "conv2d" and conv_tucker
        kk = k * k
        r = rank_from_gamma(out, inp, kk, tucker, gamma)
        n = params_at(out, inp, kk, r, tucker)
        total += n - out * inp * kk
        rows.append((name, "tucker" if tucker else "linear", r, n, out * inp * kk))
    return total, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--gamma", type=float, nargs="*",
                    default=[round(0.1 * i, 1) for i in range(1, 10)])
    ap.add_argument("--conv-form", choices=("tucker", "linear"), default="tucker")
    ap.add_argument("--linear", action="store_true",
                    help="factorise linear layers too (not the output layer)")
    ap.add_argument("--layers", action="store_true", help="print each layer's rank")
    a = ap.parse_args()
    with open(a.model) as f:
        desc = json.load(f)
    dense = sum(p.numel() for p in Described(desc).parameters())
    print(f"dense {dense} ({dense / 1e6:.2f}M)")
    for g in a.gamma:
        total, rows = count(desc, dense, g, a.conv_form == "tucker", a.linear)
        print(f"gamma {g:g} {total} ({total / 1e6:.2f}M)")
        if a.layers:
            for name, form, r, n, d in rows:
                print(f"    {name} {form} r={r} {n} (dense {d})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
