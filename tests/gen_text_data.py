#!/usr/bin/python3
"""gen_text_data.py - a tiny synthetic byte-level text classification data
set for token-input models such as models/text-tiny.json.

Each sample is a line of lowercase words separated by single spaces, encoded
as bytes (ids 0-255), cut to 64 bytes or padded with byte 0 to 64. There are
4 classes, each with its own 16-word vocabulary (animals, colours and
materials, weather, tools; the four lists share no word). A sample draws
its words in random order: each word is, with probability 0.5, one of the
16 filler words shared by all classes ("the", "and", ...) and otherwise a
word of the sample's class. The class is therefore readable from the words
but not from any single byte position, which suits a small transformer
with mean pooling over tokens.

Writes DIR/train.safetensors and DIR/test.safetensors, each with x I64
(N, 64) and y I64 (N), N = --train / --test (2000 / 500), labels balanced
(sample i has class i % 4), from a seeded Python random generator
(--seed, 1): the same arguments give the same files.

Usage: gen_text_data.py DIR [--train N] [--test N] [--seed S]
Needs only the Python standard library.
"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from array import array  # noqa: E402

from idx_to_st import write_stdlib  # noqa: E402

LENGTH = 64
VOCABS = [
    "cat dog horse mouse tiger lion zebra camel otter whale eagle snake sheep goat wolf bear",
    "red green blue yellow purple orange silver golden copper bronze ivory amber scarlet violet teal cyan",
    "rain snow storm cloud wind fog hail sunny thunder drizzle frost breeze mist gale sleet humid",
    "hammer saw drill wrench chisel pliers spanner ladder shovel rake axe clamp file level brush tape",
]
FILLER = "the and of a to in is it was for on with as at by from".split()


def sample(rng, cls):
    """The ids (LENGTH) of one line of class cls."""
    words, used = [], 0
    own = VOCABS[cls].split()
    while used < LENGTH:
        w = rng.choice(FILLER) if rng.random() < 0.5 else rng.choice(own)
        words.append(w)
        used += len(w) + 1
    b = " ".join(words).encode()[:LENGTH]
    return list(b) + [0] * (LENGTH - len(b))


def split(rng, n):
    """{name: (dtype, shape, bytes)}: x I64 (n, LENGTH), y I64 (n)."""
    x = array("q", [v for i in range(n) for v in sample(rng, i % len(VOCABS))])
    y = array("q", [i % len(VOCABS) for i in range(n)])
    return {"x": ("I64", (n, LENGTH), x.tobytes()), "y": ("I64", (n,), y.tobytes())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    words = [w for v in VOCABS for w in v.split()]
    assert len(words) == len(set(words)) and not set(words) & set(FILLER)
    rng = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    write_stdlib(os.path.join(a.dir, "train.safetensors"), split(rng, a.train))
    write_stdlib(os.path.join(a.dir, "test.safetensors"), split(rng, a.test))
    print(f"{a.dir}: train {a.train}, test {a.test} samples of {LENGTH} byte ids, "
          f"{len(VOCABS)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
