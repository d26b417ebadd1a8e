#!/usr/bin/python3
"""bench_torch.py - fl-bench-train's PyTorch peer: training samples/s of a
model description (built by tests/torch_model.py, so the network is the
same) with plain SGD, for the same batch and thread count fedloha is timed
at.

One repeat trains --batches mini-batches of --batch samples: forward,
cross-entropy, backward, SGD step (lr 0.01, no momentum), as
fl_trainer_epoch does. Inputs are synthetic: per-pixel values drawn from a
seeded generator as uint8 and normalised like fedloha's synthetic data
(throughput does not depend on the values). --warmup batches run first and
are not timed. The figure is the median over --repeats repeats.

Dense only: PyTorch has no FedPara layer, and this script does not build
one.

Usage: bench_torch.py --model FILE.json --batch B --threads T
           [--batches N] [--repeats R] [--warmup W]
Prints one JSON object: samples_per_s, ms_per_batch, parameters, torch.
Exit 77 without python3-torch, 2 on bad usage or a description it refuses.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import DescriptionError, Described, F, torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    try:
        with open(a.model) as f:
            net = Described(json.load(f))
    except (OSError, ValueError, DescriptionError) as e:
        print(f"bench_torch: {a.model}: {e}", file=sys.stderr)
        return 2
    if not isinstance(net._fl_in_shape, tuple):
        print("bench_torch: token inputs are not benchmarked", file=sys.stderr)
        return 2
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(5)
    n = a.batches * a.batch
    x = torch.randint(0, 256, (n,) + net._fl_in_shape, generator=g, dtype=torch.uint8)
    x = (x.float() / 255.0 - 0.5) / 0.29
    y = torch.randint(0, net._fl_classes, (n,), generator=g)

    def step(i):
        xb, yb = x[i * a.batch:(i + 1) * a.batch], y[i * a.batch:(i + 1) * a.batch]
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(a.warmup):
        step(i % a.batches)
    v = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for i in range(a.batches):
            step(i)
        v.append(n / (time.perf_counter() - t0))
    sps = statistics.median(v)
    print(json.dumps({"samples_per_s": round(sps, 1), "ms_per_batch": round(1e3 * a.batch / sps, 3),
                      "parameters": sum(p.numel() for p in net.parameters()),
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
