#!/usr/bin/python3
"""torch_train_ref.py - a PyTorch reference training run of a model
description (built by tests/torch_model.py), to check that a description
learns before fedloha trains it.

Adam (--lr, 1e-3), batches of --batch (64) drawn in a seeded shuffled order
for --steps steps (300), cross-entropy, dropout active; then the test
accuracy in eval mode. Inputs as torch_model.py eval reads them: images
normalised per channel by the training split's statistics, token ids as
they are. With --out, saves the trained weights as a safetensors state dict
(loadable by torch_model.py check / eval).

Usage: torch_train_ref.py --model FILE.json --data DIR_OR_NAME
           [--steps N] [--batch B] [--lr LR] [--limit N] [--seed S] [--out FILE]
Prints JSON: parameters, steps, final training loss, test accuracy.
Exit 77 without python3-torch.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import (DATA_NAMES, Described, F, load_split, normalise,  # noqa: E402
                         norm_stats, st_save, torch)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--limit", type=int, default=0, help="first N test samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="save the trained weights here")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    with open(a.model) as f:
        net = Described(json.load(f))
    folder = DATA_NAMES.get(a.data, a.data)
    ids = net._fl_vocab is not None
    xtr, ytr = load_split(folder, True, ids)
    xte, yte = load_split(folder, False, ids)
    if a.limit:
        xte, yte = xte[:a.limit], yte[:a.limit]
    if not ids:
        mean, std = norm_stats(xtr)
        xtr, xte = normalise(xtr, mean, std), normalise(xte, mean, std)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    g = torch.Generator().manual_seed(a.seed)
    order, pos, t0, loss = torch.randperm(xtr.shape[0], generator=g), 0, time.time(), None
    net.train()
    for _ in range(a.steps):
        if pos + a.batch > order.numel():
            order, pos = torch.randperm(xtr.shape[0], generator=g), 0
        b = order[pos:pos + a.batch]
        pos += a.batch
        loss = F.cross_entropy(net(xtr[b]), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, xte.shape[0], 500):
            correct += int((net(xte[s:s + 500]).argmax(1) == yte[s:s + 500]).sum())
    if a.out:
        st_save(a.out, {k: v.detach().clone() for k, v in net.state_dict().items()})
    print(json.dumps({"parameters": sum(p.numel() for p in net.parameters()), "steps": a.steps,
                      "train_loss": float(loss), "accuracy": correct / xte.shape[0],
                      "samples": int(xte.shape[0]), "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
