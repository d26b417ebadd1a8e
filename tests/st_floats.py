"""st_floats.py - float32 safetensors files read with the standard library
only (no numpy, no torch), for the checks of the command-line tests:
load(path) gives {name: (shape, array("f"))}, the metadata left out."""
import json
import struct
from array import array


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        a = array("f")
        a.frombytes(b[8 + n + s:8 + n + e])
        out[k] = (v["shape"], a)
    return out
