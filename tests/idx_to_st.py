"""idx_to_st.py - turns the first samples of an MNIST-style IDX folder into a
safetensors data folder (train.safetensors, test.safetensors) for the
command-line tests: idx_to_st.py IDX_DIR OUT_DIR N_TRAIN N_TEST KIND, KIND
one of u8 (x U8 (N, 1, 28, 28)), f32 (x F32 (N, 1, 28, 28) = pixel / 255)
or flat (x F32 (N, 784) = pixel / 255); y is I64. With torch and the
safetensors package it writes through safetensors.torch.save_file, the
PyTorch one-liner of docs/DATA.md, and prints "torch"; otherwise with the
standard library alone, and prints "stdlib"."""
import gzip
import json
import os
import struct
import sys
from array import array


def read_idx(path, count):
    """(dims, first count samples' bytes) of an IDX file, .gz or raw."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        dims = struct.unpack(">%dI" % (magic & 0xFF), f.read(4 * (magic & 0xFF)))
        per = 1
        for d in dims[1:]:
            per *= d
        return dims, f.read(per * count)


def find(folder, base):
    for name in (base + ".gz", base):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    sys.exit("no %s in %s" % (base, folder))


def write_stdlib(path, tensors):
    """tensors: {name: (dtype, shape, bytes)}, written in name order."""
    header, blobs, pos = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def split(idx_dir, prefix, count, kind):
    """{name: (dtype, shape, bytes)} of the split's first count samples."""
    _, pix = read_idx(find(idx_dir, prefix + "-images-idx3-ubyte"), count)
    _, lab = read_idx(find(idx_dir, prefix + "-labels-idx1-ubyte"), count)
    y = array("q", list(lab)).tobytes()
    if kind == "u8":
        return {"x": ("U8", (count, 1, 28, 28), pix), "y": ("I64", (count,), y)}
    vals = array("f", [p / 255.0 for p in pix])
    shape = (count, 784) if kind == "flat" else (count, 1, 28, 28)
    return {"x": ("F32", shape, vals.tobytes()), "y": ("I64", (count,), y)}


def write_torch(path, tensors):
    import torch
    from safetensors.torch import save_file

    dt = {"U8": torch.uint8, "F32": torch.float32, "I64": torch.int64}
    out = {}
    for name, (dtype, shape, raw) in tensors.items():
        out[name] = torch.frombuffer(bytearray(raw), dtype=dt[dtype]).reshape(shape).clone()
    save_file({"x": out["x"], "y": out["y"]}, path)


def main():
    idx_dir, out_dir, n_train, n_test, kind = sys.argv[1:6]
    os.makedirs(out_dir, exist_ok=True)
    try:
        import torch  # noqa: F401
        import safetensors.torch  # noqa: F401
        writer, how = write_torch, "torch"
    except ImportError:
        writer, how = write_stdlib, "stdlib"
    for prefix, name, count in (("train", "train", n_train), ("t10k", "test", n_test)):
        writer(os.path.join(out_dir, name + ".safetensors"), split(idx_dir, prefix, int(count), kind))
    print(how)


if __name__ == "__main__":
    main()
