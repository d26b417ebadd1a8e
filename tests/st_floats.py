"""st_floats.py - safetensors files read with the standard library only (no
numpy, no torch), for the checks of the command-line tests and of
torch_check.py: entries(path) gives (name, dtype, shape, raw bytes) for each
tensor, load(path) gives {name: (shape, array("f"))} for a float32 file; the
metadata is left out."""
import json
import struct
from array import array


def entries(path):
    """Each tensor of a safetensors file as (name, dtype, shape, bytes)."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        yield k, v["dtype"], v["shape"], b[8 + n + s:8 + n + e]


def load(path):
    out = {}
    for k, _, shape, raw in entries(path):
        a = array("f")
        a.frombytes(raw)
        out[k] = (shape, a)
    return out
