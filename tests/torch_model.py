#!/usr/bin/python3
"""torch_model.py - an independent PyTorch builder of fedloha model descriptions.

A description ("format": "fedloha-model/1") lists modules in order; this
script turns it into an nn.Module whose state_dict() keys are exactly the
description's parameter names (<name>.weight, <name>.bias; names may hold
dots such as "layers.3.fc1": the leaves hang in a tree of plain modules), so
a model.safetensors saved by fedloha loads with load_state_dict(strict=True).

Ops, with PyTorch's defaults: linear (in, out, bias=true), conv2d (in, out,
kernel, stride=1, padding=0, bias=true), relu, gelu (exact erf form),
maxpool2d / avgpool2d (kernel, stride=kernel; no padding, floor mode),
flatten (x.flatten(1)), dropout (p=0.5; training only), residual (modules:
x + f(x)), sequential (modules). Any other op is refused.

Commands:
  check --model FILE.json --weights model.safetensors
      builds the module, loads the weights with strict=True and prints the
      parameter count as JSON.
  eval --model FILE.json --weights model.safetensors --data DIR_OR_NAME
       [--limit N] [--train-limit N]
      prints the test accuracy and mean cross-entropy as JSON. Inputs are
      normalised as fedloha does: per-channel mean and population std of
      pixel/255 (U8) or of the value (F32) over the training split (its first
      --train-limit samples when given; a channel with std 0 gets std 1),
      held as float32, applied to the test split (its first --limit samples).
      Data: a folder of IDX files (train-images-idx3-ubyte[.gz] etc.), a
      folder with train.safetensors / test.safetensors (x U8 or F32, y I32 or
      I64), or the name fashion-mnist / mnist (Debian's packages).

Exit 0 on success, 1 on a failed load, 2 on bad usage or input, 77 when
python3-torch is missing. IDX files are read with torch_check.py's
reader. Reads and writes safetensors with the
`safetensors` package when present, else by hand.
"""
import argparse
import json
import os
import struct
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch_model: python3-torch is not installed", file=sys.stderr)
    sys.exit(77)

from torch_check import read_idx  # IDX files, plain or gzip  # noqa: E402

DATA_NAMES = {"fashion-mnist": "/usr/share/datasets/fashion-mnist",
              "mnist": "/usr/share/datasets/mnist"}
ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
             "U8": torch.uint8, "I8": torch.int8}


class DescriptionError(ValueError):
    """A model description this builder cannot turn into a module."""


# ---- safetensors ----

def st_load(path):
    """A safetensors file as {name: tensor}."""
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        pass
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] not in ST_DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {v['dtype']}")
        s, e = v["data_offsets"]
        raw = bytearray(b[8 + n + s:8 + n + e])
        dt = ST_DTYPES[v["dtype"]]
        t = torch.frombuffer(raw, dtype=dt) if raw else torch.empty(0, dtype=dt)
        out[name] = t.reshape(v["shape"]).clone()
    return out


def st_save(path, tensors):
    """Writes {name: tensor} as a safetensors file."""
    try:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        return
    except ImportError:
        pass
    names = {v: k for k, v in ST_DTYPES.items()}
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape),
                     "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- the model ----

OPS = {  # op: (required arguments, optional arguments with defaults)
    "linear": (("name", "in", "out"), {"bias": True}),
    "conv2d": (("name", "in", "out", "kernel"), {"stride": 1, "padding": 0, "bias": True}),
    "relu": ((), {}),
    "gelu": ((), {}),
    "maxpool2d": (("kernel",), {"stride": None}),
    "avgpool2d": (("kernel",), {"stride": None}),
    "flatten": ((), {}),
    "dropout": ((), {"p": 0.5}),
    "residual": (("modules",), {}),
    "sequential": (("modules",), {}),
}


def op_args(m, where):
    """The op's arguments with defaults filled in; refuses unknown ops and keys."""
    if not isinstance(m, dict) or "op" not in m:
        raise DescriptionError(f"{where}: a module must be an object with an 'op'")
    op = m["op"]
    if op not in OPS:
        raise DescriptionError(f"{where}: op '{op}' is not supported by torch_model.py "
                               f"(supported: {', '.join(sorted(OPS))})")
    need, opt = OPS[op]
    a = dict(opt)
    for k, v in m.items():
        if k == "op" or (k == "name" and "name" not in need):
            continue
        if k not in need and k not in opt:
            raise DescriptionError(f"{where}: {op}: unknown argument '{k}'")
        a[k] = v
    for k in need:
        if k not in m:
            raise DescriptionError(f"{where}: {op}: missing argument '{k}'")
    if a.get("stride", 0) is None:
        a["stride"] = a["kernel"]
    return op, a


class Described(nn.Module):
    """The module of a description: parametric leaves in a tree keyed by the
    dotted names, and the op list walked by forward()."""

    def __init__(self, desc):
        super().__init__()
        if desc.get("format") != "fedloha-model/1":
            raise DescriptionError(f"format is {desc.get('format')!r}, expected 'fedloha-model/1'")
        self._fl_in_shape = tuple(desc["input"]["shape"])
        self._fl_classes = desc.get("classes")
        self._fl_names = set()
        self._fl_steps, shape = self._build(desc["modules"], self._fl_in_shape, "modules")
        if self._fl_classes is not None and shape != (self._fl_classes,):
            raise DescriptionError(f"output shape {shape} is not (classes,) = ({self._fl_classes},)")
        self._fl_out_shape = shape

    def _attach(self, name, leaf):
        """Hangs leaf at the dotted name, creating plain parent modules."""
        if not isinstance(name, str) or not name or name in self._fl_names:
            raise DescriptionError(f"parameter name {name!r} is empty or repeated")
        self._fl_names.add(name)
        parent = self
        parts = name.split(".")
        try:
            for p in parts[:-1]:
                if p not in parent._modules:
                    parent.add_module(p, nn.Module())
                parent = parent._modules[p]
            if parts[-1] in parent._modules:
                raise KeyError("taken")
            parent.add_module(parts[-1], leaf)
        except KeyError as e:
            raise DescriptionError(f"parameter name {name!r} clashes with another module or "
                                   f"attribute ({e})") from None
        return leaf

    def _build(self, modules, shape, where):
        """[(op, callable-or-args, children)], output shape; checks shapes."""
        steps = []
        for i, m in enumerate(modules):
            w = f"{where}[{i}]"
            op, a = op_args(m, w)
            kids = None
            if op == "linear":
                if not shape or shape[-1] != a["in"]:
                    raise DescriptionError(f"{w}: linear {a['name']} in={a['in']} but input shape is {shape}")
                f = self._attach(a["name"], nn.Linear(a["in"], a["out"], bias=bool(a["bias"])))
                shape = shape[:-1] + (a["out"],)
            elif op == "conv2d":
                if len(shape) != 3 or shape[0] != a["in"]:
                    raise DescriptionError(f"{w}: conv2d {a['name']} in={a['in']} but input shape is {shape}")
                k, s, p = a["kernel"], a["stride"], a["padding"]
                f = self._attach(a["name"], nn.Conv2d(a["in"], a["out"], k, stride=s, padding=p,
                                                      bias=bool(a["bias"])))
                shape = (a["out"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
            elif op in ("maxpool2d", "avgpool2d"):
                k, s = a["kernel"], a["stride"]
                if len(shape) != 3 or k > shape[1] or k > shape[2]:
                    raise DescriptionError(f"{w}: {op} kernel {k} on input shape {shape}")
                f = (k, s)
                shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
            elif op == "flatten":
                f, n = None, 1
                for d in shape:
                    n *= d
                shape = (n,)
            elif op == "dropout":
                if not 0 <= a["p"] < 1:
                    raise DescriptionError(f"{w}: dropout p={a['p']} not in [0, 1)")
                f = float(a["p"])
            elif op in ("residual", "sequential"):
                kids, inner = self._build(a["modules"], shape, w + ".modules")
                if op == "residual" and inner != shape:
                    raise DescriptionError(f"{w}: residual branch maps {shape} to {inner}")
                f, shape = None, inner
            else:  # relu, gelu
                f = None
            if any(d < 1 for d in shape):
                raise DescriptionError(f"{w}: {op} leaves an empty shape {shape}")
            steps.append((op, f, kids))
        return steps, shape

    def _run(self, steps, x):
        for op, f, kids in steps:
            if op in ("linear", "conv2d"):
                x = f(x)
            elif op == "relu":
                x = F.relu(x)
            elif op == "gelu":
                x = F.gelu(x)
            elif op == "maxpool2d":
                x = F.max_pool2d(x, f[0], f[1])
            elif op == "avgpool2d":
                x = F.avg_pool2d(x, f[0], f[1])
            elif op == "flatten":
                x = x.flatten(1)
            elif op == "dropout":
                x = F.dropout(x, f, self.training)
            elif op == "residual":
                x = x + self._run(kids, x)
            else:  # sequential
                x = self._run(kids, x)
        return x

    def forward(self, x):
        return self._run(self._fl_steps, x)


def build(model_path, weights_path):
    """The module with the weights loaded (strict=True), in eval mode."""
    with open(model_path) as f:
        net = Described(json.load(f))
    net.load_state_dict(st_load(weights_path), strict=True)
    return net.eval()


# ---- data ----

def load_split(folder, train):
    """(x (n, c, h, w) U8 or F32, y (n) int64) of one split of a data folder."""
    st = os.path.join(folder, ("train" if train else "test") + ".safetensors")
    if os.path.exists(st):
        t = st_load(st)
        if "x" not in t or "y" not in t:
            raise ValueError(f"{st}: needs tensors x and y")
        x, y = t["x"], t["y"]
        if x.dtype not in (torch.uint8, torch.float32) or y.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{st}: x must be U8 or F32 and y I32 or I64")
    else:
        pre = "train" if train else "t10k"
        x = read_idx(os.path.join(folder, pre + "-images-idx3-ubyte"))
        y = read_idx(os.path.join(folder, pre + "-labels-idx1-ubyte"))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{folder}: x {tuple(x.shape)} and y {tuple(y.shape)} do not match")
    return x, y.long()


def norm_stats(x):
    """Per-channel mean and population std of x (U8: pixel/255), as float32
    values (std 0 becomes 1), returned as float64 tensors."""
    v = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    mean = v.mean(dim=(0, 2, 3))
    std = v.std(dim=(0, 2, 3), unbiased=False)
    std[std <= 1e-12] = 1.0
    return mean.float().double(), std.float().double()


def normalise(x, mean, std):
    v = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    return ((v - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)).float()


# ---- commands ----

def cmd_check(a):
    net = build(a.model, a.weights)
    n = sum(p.numel() for p in net.parameters())
    print(json.dumps({"parameters": n, "tensors": len(net.state_dict()),
                      "output": list(net._fl_out_shape)}))
    return 0


def cmd_eval(a):
    net = build(a.model, a.weights)
    folder = DATA_NAMES.get(a.data, a.data)
    xtr, _ = load_split(folder, True)
    if a.train_limit:
        xtr = xtr[:a.train_limit]
    mean, std = norm_stats(xtr)
    del xtr
    x, y = load_split(folder, False)
    if a.limit:
        x, y = x[:a.limit], y[:a.limit]
    if tuple(x.shape[1:]) != net._fl_in_shape:
        raise ValueError(f"test inputs {tuple(x.shape[1:])} != model input {net._fl_in_shape}")
    correct, loss = 0, 0.0
    with torch.no_grad():
        for b in range(0, x.shape[0], 1000):
            logits = net(normalise(x[b:b + 1000], mean, std))
            yb = y[b:b + 1000]
            correct += int((logits.argmax(1) == yb).sum())
            loss += float(F.cross_entropy(logits.double(), yb, reduction="sum"))
    n = x.shape[0]
    print(json.dumps({"accuracy": correct / n, "loss": loss / n, "correct": correct,
                      "samples": n, "mean": mean.tolist(), "std": std.tolist()}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("check", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True, help="model description (JSON)")
        p.add_argument("--weights", required=True, help="model.safetensors")
        if name == "eval":
            p.add_argument("--data", required=True, help="data folder or fashion-mnist / mnist")
            p.add_argument("--limit", type=int, default=0, help="first N test samples")
            p.add_argument("--train-limit", type=int, default=0,
                           help="statistics over the first N training samples")
    a = ap.parse_args()
    torch.set_num_threads(2)
    try:
        return cmd_check(a) if a.cmd == "check" else cmd_eval(a)
    except RuntimeError as e:  # load_state_dict(strict=True) mismatches
        print(f"torch_model: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"torch_model: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
