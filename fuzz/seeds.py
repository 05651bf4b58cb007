#!/usr/bin/env python3
"""Writes the seed corpora: corpus/<target>/seed-NN, small deterministic inputs.

Every target reads its input as a stream of choices (config fields, sizes, placements,
values) and continues it pseudo-randomly once it runs out, so any bytes make a full call;
these seeds only give libFuzzer a spread of lengths and first bytes to start from. Run from
fuzz/: `python3 seeds.py`. (Inputs the fuzzer found, `regress-*`, sit beside them.)
"""
import os
import random

TARGETS = ["c_dense", "c_labels", "r_dense", "phased", "blocks", "generic", "softmax", "setup", "log"]
LENGTHS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]

for t in TARGETS:
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", t)
    os.makedirs(d, exist_ok=True)
    rng = random.Random(t)
    for i, n in enumerate(LENGTHS):
        data = bytes(rng.randrange(256) for _ in range(n))
        with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
            f.write(data)
