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
x + f(x)), sequential (modules), and the transformer ops: groupnorm (name,
groups, channels, eps=1e-5; nn.GroupNorm on (C,H,W)), layernorm (name, dim,
eps=1e-5; nn.LayerNorm(dim) over the last dimension), embedding (name, num,
dim; nn.Embedding on the ids of a token input, num >= vocab), tokens
((C,H,W) -> (H*W,C): x.flatten(2).transpose(1,2)), position (name, tokens,
dim; adds a learned <name>.weight (1,tokens,dim), zeros at init), attention
(name, dim, heads; multi-head self-attention without mask through
<name>.q_proj/k_proj/v_proj/out_proj, nn.Linear(dim, dim) each, written
out: softmax(Q K^T / sqrt(dim/heads)) V per head, heads concatenated, then
out_proj) and mean_tokens ((T,D) -> (D): x.mean(1)). linear works on the
last dimension of any shape. Any other op is refused.

Inputs: {"shape": [C,H,W]} or {"shape": [F]} (float), or {"tokens": L,
"vocab": V}: a LongTensor of ids (B, L) in [0, V) whose first module must be
an embedding (possibly inside sequential).

Commands:
  check --model FILE.json [--weights model.safetensors]
      builds the module, loads the weights with strict=True (when given) and
      prints the parameter count as JSON.
  eval --model FILE.json --weights model.safetensors --data DIR_OR_NAME
       [--limit N] [--train-limit N]
      prints the test accuracy and mean cross-entropy as JSON. Inputs are
      normalised as fedloha does: per-channel mean and population std of
      pixel/255 (U8) or of the value (F32) over the training split (its first
      --train-limit samples when given; a channel with std 0 gets std 1),
      held as float32, applied to the test split (its first --limit samples).
      Data: a folder of IDX files (train-images-idx3-ubyte[.gz] etc.), a
      folder with train.safetensors / test.safetensors (x U8 or F32, y I32 or
      I64), or the name fashion-mnist / mnist (Debian's packages). A model
      with token inputs reads a safetensors folder whose x is I32 or I64
      ids (N, L), used as they are (no normalisation).
  logits --model FILE.json --weights model.safetensors --data DIR_OR_NAME
         [--limit N] [--train-limit N] [--against FILE] [--tol T]
      the logits of the same test samples as eval; with --against (the
      file of `fedloha-client eval --dump-logits`: logits (N, classes) and
      labels y), compares them: exit 1 unless every
      |torch - fedloha| <= T * (1 + |fedloha|) (T 1e-4) and the labels agree.
      Prints the sample count and the largest difference as JSON.

Exit 0 on success, 1 on a failed load or logits that differ, 2 on bad usage or input, 77 when
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
    from idx_to_st import write_stdlib
    names = {v: k for k, v in ST_DTYPES.items()}
    raw = {}
    for k, t in tensors.items():
        t = t.contiguous()
        b = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        raw[k] = (names[t.dtype], tuple(t.shape), b)
    write_stdlib(path, raw)


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
    "groupnorm": (("name", "groups", "channels"), {"eps": 1e-5}),
    "layernorm": (("name", "dim"), {"eps": 1e-5}),
    "embedding": (("name", "num", "dim"), {}),
    "tokens": ((), {}),
    "position": (("name", "tokens", "dim"), {}),
    "attention": (("name", "dim", "heads"), {}),
    "mean_tokens": ((), {}),
}


class Ids(tuple):
    """The shape (L,) of a token input: integer ids in [0, vocab)."""

    def __new__(cls, length, vocab):
        t = super().__new__(cls, (length,))
        t.vocab = vocab
        return t


class Position(nn.Module):
    """x + weight, a learned (1, tokens, dim) table (zeros at init)."""

    def __init__(self, tokens, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, tokens, dim))

    def forward(self, x):
        return x + self.weight


class Attention(nn.Module):
    """Multi-head self-attention without mask, written out (torch 1.13 has
    no F.scaled_dot_product_attention): per head h of width dim/heads,
    softmax(Q_h K_h^T / sqrt(dim/heads)) V_h, heads concatenated, out_proj."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads

        def split(y):  # (B, T, D) -> (B, heads, T, hd)
            return y.reshape(b, t, self.heads, hd).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        a = torch.softmax(q @ k.transpose(-2, -1) / (hd ** 0.5), dim=-1)
        return self.out_proj((a @ v).transpose(1, 2).reshape(b, t, d))


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
        inp = desc["input"]
        if "tokens" in inp or "vocab" in inp:
            if set(inp) != {"tokens", "vocab"} or inp["tokens"] < 1 or inp["vocab"] < 1:
                raise DescriptionError("input: a token input is {\"tokens\": L, \"vocab\": V}")
            self._fl_vocab = inp["vocab"]
            self._fl_in_shape = Ids(inp["tokens"], inp["vocab"])
        else:
            self._fl_vocab = None
            self._fl_in_shape = tuple(inp["shape"])
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
            if isinstance(shape, Ids) and op not in ("embedding", "sequential"):
                raise DescriptionError(f"{w}: {op} on token ids: a token input starts with an embedding")
            if op in ("groupnorm", "layernorm", "embedding", "tokens", "position",
                      "attention", "mean_tokens"):
                f, shape = self._build_token_op(op, a, shape, w)
            elif op == "linear":
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
            if any(not isinstance(d, int) or d < 1 for d in shape):
                raise DescriptionError(f"{w}: {op} leaves an empty shape {shape}")
            steps.append((op, f, kids))
        return steps, shape

    def _build_token_op(self, op, a, shape, w):
        """(callable or None, output shape) of the normalisation and
        transformer ops; checks their shapes."""
        label = f"{op} {a['name']}" if "name" in a else op

        def need(ok, what):
            if not ok:
                raise DescriptionError(f"{w}: {label}: {what}, "
                                       f"but the input shape is {tuple(shape)}")
        for k in ("groups", "channels", "dim", "num", "tokens", "heads"):
            if k in a and (not isinstance(a[k], int) or a[k] < 1):
                raise DescriptionError(f"{w}: {op}: {k}={a[k]!r} is not a positive integer")
        if "eps" in a and not (isinstance(a["eps"], (int, float)) and a["eps"] > 0):
            raise DescriptionError(f"{w}: {op}: eps={a['eps']!r} is not a positive number")
        if op == "groupnorm":
            need(len(shape) == 3 and shape[0] == a["channels"], f"channels={a['channels']} needs (C,H,W) with C == channels")
            need(a["channels"] % a["groups"] == 0, f"groups={a['groups']} does not divide channels={a['channels']}")
            return self._attach(a["name"], nn.GroupNorm(a["groups"], a["channels"], eps=a["eps"])), shape
        if op == "layernorm":
            need(len(shape) >= 1 and shape[-1] == a["dim"], f"dim={a['dim']} is not the last dimension")
            return self._attach(a["name"], nn.LayerNorm(a["dim"], eps=a["eps"])), shape
        if op == "embedding":
            need(isinstance(shape, Ids), "needs a token input")
            need(a["num"] >= shape.vocab, f"num={a['num']} rows for a vocab of {shape.vocab} ids")
            return self._attach(a["name"], nn.Embedding(a["num"], a["dim"])), (shape[0], a["dim"])
        if op == "tokens":
            need(len(shape) == 3, "needs (C,H,W)")
            return None, (shape[1] * shape[2], shape[0])
        if op == "position":
            need(shape == (a["tokens"], a["dim"]), f"(tokens, dim) = ({a['tokens']}, {a['dim']}) is not (T, D)")
            return self._attach(a["name"], Position(a["tokens"], a["dim"])), shape
        if op == "attention":
            need(len(shape) == 2 and shape[1] == a["dim"], f"dim={a['dim']} needs (T, D) with D == dim")
            need(a["dim"] % a["heads"] == 0, f"heads={a['heads']} does not divide dim={a['dim']}")
            return self._attach(a["name"], Attention(a["dim"], a["heads"])), shape
        need(len(shape) == 2, "needs (T, D)")  # mean_tokens
        return None, (shape[1],)

    def _run(self, steps, x):
        for op, f, kids in steps:
            if op in ("linear", "conv2d", "groupnorm", "layernorm", "embedding", "position",
                      "attention"):
                x = f(x)
            elif op == "tokens":
                x = x.flatten(2).transpose(1, 2)
            elif op == "mean_tokens":
                x = x.mean(1)
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
    """The module with the weights loaded (strict=True; PyTorch's
    initialisation without weights_path), in eval mode."""
    with open(model_path) as f:
        net = Described(json.load(f))
    if weights_path:
        net.load_state_dict(st_load(weights_path), strict=True)
    return net.eval()


# ---- data ----

def xy_tensors(path):
    """The tensors x and y of a safetensors data file."""
    t = st_load(path)
    if "x" not in t or "y" not in t:
        raise ValueError(f"{path}: needs tensors x and y")
    return t["x"], t["y"]


def load_split(folder, train, ids=False):
    """(x (n, c, h, w) U8 or F32, y (n) int64) of one split of a data folder;
    with ids, (x (n, L) int64, y) of a safetensors folder of token ids."""
    st = os.path.join(folder, ("train" if train else "test") + ".safetensors")
    if ids:
        x, y = xy_tensors(st)
        if x.dtype not in (torch.int32, torch.int64) or y.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{st}: token ids x and labels y must be I32 or I64")
        if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{st}: x {tuple(x.shape)} is not (N, L) or does not match y {tuple(y.shape)}")
        return x.long(), y.long()
    if os.path.exists(st):
        x, y = xy_tensors(st)
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


def test_inputs(net, a):
    """(inputs the model takes, labels, mean, std) of the first --limit test
    samples, normalised as fedloha does (token ids as they are)."""
    folder = DATA_NAMES.get(a.data, a.data)
    ids = net._fl_vocab is not None
    if ids:
        mean = std = torch.zeros(0, dtype=torch.float64)
    else:
        xtr, _ = load_split(folder, True)
        if a.train_limit:
            xtr = xtr[:a.train_limit]
        mean, std = norm_stats(xtr)
        del xtr
    x, y = load_split(folder, False, ids)
    if a.limit:
        x, y = x[:a.limit], y[:a.limit]
    if tuple(x.shape[1:]) != tuple(net._fl_in_shape):
        raise ValueError(f"test inputs {tuple(x.shape[1:])} != model input {tuple(net._fl_in_shape)}")
    if ids and x.numel() and (int(x.min()) < 0 or int(x.max()) >= net._fl_vocab):
        raise ValueError(f"token ids outside [0, {net._fl_vocab})")
    return (x if ids else normalise(x, mean, std)), y, mean, std


def all_logits(net, x):
    with torch.no_grad():
        return torch.cat([net(x[b:b + 1000]) for b in range(0, x.shape[0], 1000)])


def cmd_eval(a):
    net = build(a.model, a.weights)
    x, y, mean, std = test_inputs(net, a)
    logits = all_logits(net, x)
    correct = int((logits.argmax(1) == y).sum())
    loss = float(F.cross_entropy(logits.double(), y, reduction="sum"))
    n = x.shape[0]
    print(json.dumps({"accuracy": correct / n, "loss": loss / n, "correct": correct,
                      "samples": n, "mean": mean.tolist(), "std": std.tolist()}))
    return 0


def cmd_logits(a):
    net = build(a.model, a.weights)
    x, y, _, _ = test_inputs(net, a)
    got = all_logits(net, x)
    out = {"samples": x.shape[0], "classes": got.shape[1]}
    if a.against:
        t = st_load(a.against)
        want, wy = t["logits"].float(), t["y"].long()
        if want.shape != got.shape or not torch.equal(wy, y):
            raise ValueError(f"{a.against}: logits {tuple(want.shape)} and labels do not match "
                             f"the {x.shape[0]} test samples ({tuple(got.shape)})")
        diff = (got - want).abs()
        out["max_abs_diff"] = float(diff.max()) if diff.numel() else 0.0
        out["within"] = bool((diff <= a.tol * (1 + want.abs())).all())
    print(json.dumps(out))
    return 0 if out.get("within", True) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("check", "eval", "logits"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True, help="model description (JSON)")
        p.add_argument("--weights", required=name != "check", help="model.safetensors")
        if name == "logits":
            p.add_argument("--against", help="fedloha-client eval --dump-logits output")
            p.add_argument("--tol", type=float, default=1e-4,
                           help="|torch - fedloha| <= tol * (1 + |fedloha|)")
        if name != "check":
            p.add_argument("--data", required=True, help="data folder or fashion-mnist / mnist")
            p.add_argument("--limit", type=int, default=0, help="first N test samples")
            p.add_argument("--train-limit", type=int, default=0,
                           help="statistics over the first N training samples")
    a = ap.parse_args()
    torch.set_num_threads(2)
    try:
        return {"check": cmd_check, "eval": cmd_eval, "logits": cmd_logits}[a.cmd](a)
    except RuntimeError as e:  # load_state_dict(strict=True) mismatches
        print(f"torch_model: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"torch_model: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
