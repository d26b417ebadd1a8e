#!/usr/bin/python3
"""torch_check.py - checks a fedloha model folder against PyTorch.

For each folder saved by `fedloha-client train --out DIR`:
  1. defines the PyTorch module of the architecture (DESIGN.md section 2:
     2nn, cnn, mlp with names fc1, conv1, ...), loads model.safetensors with
     load_state_dict(strict=True), evaluates it on the test set the folder
     was evaluated on (Fashion-MNIST / MNIST IDX or CIFAR-10 binary from
     --data-path, first meta.test_samples samples, normalised with
     meta.norm or else the statistics of the first meta.train_samples
     (default all) training samples) and compares the
     accuracy with meta.test_accuracy: |difference| <= --tol (default
     0.0005, i.e. the same predictions up to float rounding);
  2. for adapter folders (adapter_model.safetensors + adapter_config.json +
     base_model.safetensors) rebuilds the PEFT merge in torch (LoHa: linear,
     reshaped and Tucker convs, rank_pattern / alpha_pattern, modules_to_save;
     pFedPara's P1 * (P2 + 1); LoRA for the low-rank baseline) and checks
     that it equals model.safetensors within 1e-5 relative (max |diff| over
     max |value| per tensor).
Exit 0 when every check passes, 1 when one fails, 2 on bad usage or input.
Needs python3-torch; reads safetensors with st_floats.py (no other package).
"""
import argparse
import gzip
import json
import os
import re
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import st_floats

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}


def st_load(path):
    """A safetensors file as {name: tensor} (little-endian host assumed)."""
    out = {}
    for name, dtype, shape, raw in st_floats.entries(path):
        raw = bytearray(raw)
        t = torch.frombuffer(raw, dtype=DTYPES[dtype]) if raw else torch.empty(0, dtype=DTYPES[dtype])
        out[name] = t.reshape(shape).clone()
    return out


# ---- the reference architectures (DESIGN.md section 2) ----

class Net2NN(nn.Module):
    def __init__(self, c, h, w, classes):
        super().__init__()
        self.fc1 = nn.Linear(c * h * w, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class NetCNN(nn.Module):
    def __init__(self, c, h, w, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * (h // 2 // 2) * (w // 2 // 2), 512)
        self.fc2 = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class NetMLP(nn.Module):
    def __init__(self, c, h, w, classes):
        super().__init__()
        self.fc1 = nn.Linear(c * h * w, 256)
        self.fc2 = nn.Linear(256, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


ARCHES = {"2nn": Net2NN, "cnn": NetCNN, "mlp": NetMLP}


# ---- data ----

def read_idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with (gzip.open(p) if p.endswith(".gz") else open(p, "rb")) as f:
                data = f.read()
            magic = struct.unpack(">I", data[:4])[0]
            nd = magic & 0xFF
            dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
            t = torch.frombuffer(bytearray(data[4 + 4 * nd:]), dtype=torch.uint8)
            return t.reshape(dims)
    raise FileNotFoundError(path + "[.gz]")


def load_split(name, folder, train):
    """uint8 pixels (n, c, h, w) and int64 labels."""
    if name in ("fashion-mnist", "mnist"):
        pre = "train" if train else "t10k"
        x = read_idx(os.path.join(folder, pre + "-images-idx3-ubyte"))
        y = read_idx(os.path.join(folder, pre + "-labels-idx1-ubyte"))
        return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2]), y.long()
    if name == "cifar10":
        if os.path.isdir(os.path.join(folder, "cifar-10-batches-bin")):
            folder = os.path.join(folder, "cifar-10-batches-bin")
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        raw = b"".join(open(os.path.join(folder, f), "rb").read() for f in files)
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, 3073)
        return t[:, 1:].reshape(-1, 3, 32, 32), t[:, 0].long()
    raise ValueError(f"unknown data set '{name}'")


def normalise(x, mean, std):
    """(pixel / 255 - mean[ch]) / std[ch] in float32, as fedloha's table."""
    v = x.float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return (v - m) / s


def train_stats(name, folder, limit=None):
    """Per-channel mean and population std of pixel/255 over the first
    `limit` training samples (fedloha computes them after --limit)."""
    x, _ = load_split(name, folder, True)
    if limit:
        x = x[:limit]
    v = x.double() / 255.0
    mean = v.mean(dim=(0, 2, 3))
    std = v.std(dim=(0, 2, 3), unbiased=False)
    std[std == 0] = 1
    return mean.tolist(), std.tolist()


# ---- the PEFT merge ----

def pattern_value(patterns, module, default):
    """rank_pattern / alpha_pattern: key k applies when (.*\\.)?(k)$ matches
    the module name from its start; the first such key wins."""
    for k, v in (patterns or {}).items():
        if re.match(r"(.*\.)?(" + k + r")$", module):
            return v
    return default


def loha_factor(t, wb, wa):
    return torch.einsum("i j k l, j r, i p -> p r k l", t, wb, wa)


def merge(folder):
    """{name: tensor}: base_model.safetensors with the adapter merged in."""
    cfg = json.load(open(os.path.join(folder, "adapter_config.json")))
    base = st_load(os.path.join(folder, "base_model.safetensors"))
    ad = st_load(os.path.join(folder, "adapter_model.safetensors"))
    prefix = "base_model.model."
    kind = cfg.get("peft_type")
    param = cfg.get("fedloha_parameterization", "loha")
    modules = {}
    for key in ad:
        if not key.startswith(prefix):
            raise ValueError(f"adapter key {key} lacks {prefix}")
        rest = key[len(prefix):]
        m = re.match(r"(.*)\.(hada_w1_a|hada_w1_b|hada_w2_a|hada_w2_b|hada_t1|hada_t2|"
                     r"lora_A\.weight|lora_B\.weight)$", rest)
        if m:
            modules.setdefault(m.group(1), {})[m.group(2)] = ad[key].double()
        else:
            base[rest] = ad[key]  # modules_to_save
    out = dict(base)
    for mod, f in modules.items():
        w0 = base[mod + ".weight"]
        if kind == "LORA":
            r = pattern_value(cfg.get("rank_pattern"), mod, cfg["r"])
            alpha = pattern_value(cfg.get("alpha_pattern"), mod, cfg["lora_alpha"])
            a, b = f["lora_A.weight"], f["lora_B.weight"]
            dw = (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)) * (alpha / r)
        else:
            r = pattern_value(cfg.get("rank_pattern"), mod, cfg["r"])
            alpha = pattern_value(cfg.get("alpha_pattern"), mod, cfg["alpha"])
            s = alpha / r
            if "hada_t1" in f:
                p1 = loha_factor(f["hada_t1"], f["hada_w1_b"], f["hada_w1_a"])
                p2 = loha_factor(f["hada_t2"], f["hada_w2_b"], f["hada_w2_a"])
            else:
                p1 = f["hada_w1_a"] @ f["hada_w1_b"]
                p2 = f["hada_w2_a"] @ f["hada_w2_b"]
            dw = (p1 * (p2 + 1) if param == "pfedpara" else p1 * p2) * s
        out[mod + ".weight"] = (w0.double() + dw.reshape(w0.shape)).float()
    return out, param, len(modules)


def check_folder(folder, a):
    """0 when every check of one folder passes, 1 on a mismatch, 2 on bad input."""
    print(f"-- {folder}")
    try:
        meta_all = json.load(open(os.path.join(folder, "fedloha.json")))
        arch = meta_all["arch"]
        c, h, w = meta_all["input"]
        classes = meta_all["classes"]
        state = st_load(os.path.join(folder, "model.safetensors"))
    except (OSError, ValueError, KeyError) as e:
        print(f"torch_check: {folder}: {e}", file=sys.stderr)
        return 2
    if arch not in ARCHES:
        print(f"torch_check: unknown arch '{arch}'", file=sys.stderr)
        return 2
    meta = meta_all.get("meta", {})
    ok = True

    net = ARCHES[arch](c, h, w, classes)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        print(f"FAIL load_state_dict(strict=True): {e}")
        return 1
    print(f"ok   {arch}: model.safetensors loads with strict=True ({len(state)} tensors)")

    if not a.no_eval:
        data = meta.get("data", "fashion-mnist")
        path = a.data_path or ("/usr/share/datasets/fashion-mnist" if data == "fashion-mnist" else None)
        if path is None:
            print(f"torch_check: data set '{data}' needs --data-path", file=sys.stderr)
            return 2
        try:
            x, y = load_split(data, path, False)
            norm = meta.get("norm")
            if norm:
                mean, std = norm["mean"], norm["std"]
            else:
                mean, std = train_stats(data, path, meta.get("train_samples"))
        except (OSError, ValueError) as e:
            print(f"torch_check: {path}: {e}", file=sys.stderr)
            return 2
        n = meta.get("test_samples", x.shape[0])
        x, y = x[:n], y[:n]
        with torch.no_grad():
            correct = 0
            for b in range(0, x.shape[0], 1000):
                logits = net(normalise(x[b:b + 1000], mean, std))
                correct += int((logits.argmax(1) == y[b:b + 1000]).sum())
        acc = correct / x.shape[0]
        want = meta.get("test_accuracy")
        if want is None:
            print(f"FAIL {arch}: torch accuracy {acc:.4f} on {n} samples; no meta.test_accuracy to compare")
            ok = False
        elif abs(acc - want) <= a.tol:
            print(f"ok   torch accuracy {acc:.4f} = fedloha {want:.4f} on {n} samples "
                  f"({'meta.norm' if norm else 'training-set statistics'})")
        else:
            print(f"FAIL torch accuracy {acc:.4f} != fedloha {want:.4f} on {n} samples (tol {a.tol})")
            ok = False

    if os.path.exists(os.path.join(folder, "adapter_model.safetensors")):
        try:
            merged, param, nmod = merge(folder)
        except (OSError, ValueError, KeyError) as e:
            print(f"FAIL adapter merge: {e}")
            return 1
        worst, worst_name = 0.0, ""
        if set(merged) != set(state):
            print(f"FAIL merge: tensors {sorted(merged)} != model.safetensors {sorted(state)}")
            return 1
        for k, v in state.items():
            if merged[k].shape != v.shape:
                print(f"FAIL merge: {k} shape {tuple(merged[k].shape)} != {tuple(v.shape)}")
                return 1
            d = (merged[k].double() - v.double()).abs().max().item()
            rel = d / max(v.double().abs().max().item(), 1e-30)
            if rel > worst:
                worst, worst_name = rel, k
        if worst <= 1e-5:
            print(f"ok   base_model + adapter ({param}, {nmod} modules) = model.safetensors "
                  f"(max rel diff {worst:.2g})")
        else:
            print(f"FAIL base_model + adapter ({param}) != model.safetensors: {worst_name} off by {worst:.3g}")
            ok = False
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", metavar="FOLDER")
    ap.add_argument("--data-path", default=None,
                    help="data set folder (default: Debian's Fashion-MNIST for fashion-mnist)")
    ap.add_argument("--tol", type=float, default=0.0005)
    ap.add_argument("--no-eval", action="store_true", help="only check the merge")
    a = ap.parse_args()
    torch.set_num_threads(2)
    return max(check_folder(f, a) for f in a.folders)


if __name__ == "__main__":
    sys.exit(main())
