#!/usr/bin/env python3
"""Reference outputs of softmax cross-entropy GHM, evaluated in float64 with numpy.

An independent evaluation of the formulas (not of the library's code): per sample
p = softmax(x), g = 1 - p[y], CE = -log p[y]; bins k / bins (the last edge 1 + 1e-6), counts
of the valid samples (label in 0..C, weight > 0), the EMA acc = mmt * acc + (1 - mmt) * count
over the batches, w_k = tot / (acc_k or count_k) / nonempty, tot = max(valid, 1); the loss
loss_weight * sum(w * CE) / tot (MEAN; SUM without / tot), the per-sample loss
loss_weight * w * CE, the gradient grad_scale * loss_weight * w * (p - onehot) (/ tot), and each sample's factor
grad_scale * loss_weight * w (/ tot).
NONE reduces like SUM (the library returns the sum; the per-sample losses are the output).

Inputs are float32, stored with 9 significant digits (which read back as float32 give the
same value); outputs with 10 (the tests' tolerances are far wider). No valid
sample's g lies within 1e-4 of an inner bin edge (such samples are drawn again), so float32
and float64 agree on every bin. Run from the repository root:

    python3 tests/data/softmax/generate.py        # numpy >= 1.20; writes tests/data/softmax/*.json
"""
import json
import os

import numpy as np

OUT = os.path.dirname(os.path.abspath(__file__))


def softmax_rows(x):
    """p, g-input: f64 softmax of float32 rows (exactly widened), max-subtracted."""
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    return e / s, np.log(s[:, 0]), m[:, 0]


def draw(rng, n, c, bins, sat, ignore, zero_w):
    """A batch: float32 logits [n][c], labels, weights (or None)."""
    x = np.zeros((n, c), np.float32)
    labels = rng.integers(0, c, n).astype(np.int64)
    for a in range(n):
        if rng.random() < ignore:
            labels[a] = -1 - int(rng.integers(0, 3)) if rng.random() < 0.5 else c + int(rng.integers(0, 3))
        while True:
            scale = [0.5, 2.0, 6.0, 20.0][int(rng.integers(0, 4))]
            row = (rng.standard_normal(c) * scale).astype(np.float32)
            if sat:
                hit = rng.random(c) < 0.05
                row[hit] = np.where(rng.random(hit.sum()) < 0.5, 1e4, -1e4).astype(np.float32)
            y = labels[a]
            if 0 <= y < c:
                if rng.random() < 0.3:
                    row[y] = np.float32(row[y] + np.float32(4.0))
                p, _, _ = softmax_rows(row[None, :])
                q = (1.0 - p[0, y]) * bins
                if abs(q - round(q)) < 1e-4 * bins and 0 < round(q) < bins:
                    continue
            x[a] = row
            break
    w = None
    if zero_w:
        w = np.where(rng.random(n) < zero_w, 0.0, 1.0).astype(np.float32)
    return x, labels, w


def f9(v):
    return float("%.9g" % v)


def f10(v):
    return float("%.10g" % v)


def reference(x, labels, w, cfg, ema):
    n, c = x.shape
    bins = cfg["bins"]
    valid = (labels >= 0) & (labels < c)
    if w is not None:
        valid &= w > 0
    p, log_s, m = softmax_rows(x)
    idx = np.where(valid, labels, 0)
    py = p[np.arange(n), idx]
    g = 1.0 - py
    ce = log_s - (x.astype(np.float64)[np.arange(n), idx] - m)
    k = np.minimum(np.floor(g * bins).astype(np.int64), bins - 1)
    counts = np.array([int(np.sum(valid & (k == b))) for b in range(bins)])
    tot = max(float(valid.sum()), 1.0)
    nonempty = float((counts > 0).sum())
    wk = np.zeros(bins)
    for b in range(bins):
        if counts[b] == 0:
            continue
        if ema is not None:
            ema[b] = cfg["momentum"] * ema[b] + (1 - cfg["momentum"]) * counts[b]
            density = ema[b]
        else:
            density = counts[b]
        wk[b] = tot / density / nonempty
    norm = 1.0 / tot if cfg["reduction"] == "mean" else 1.0
    lw, gs = cfg["loss_weight"], cfg["grad_scale"]
    ws = np.where(valid, wk[k], 0.0)
    onehot = np.zeros((n, c))
    onehot[np.arange(n)[valid], labels[valid]] = 1.0
    grad = (gs * lw * norm * ws)[:, None] * (p - onehot)
    return {
        "loss": f10(lw * np.sum(ws * np.where(valid, ce, 0.0)) * norm),
        "sample_loss": [f10(v) for v in lw * ws * np.where(valid, ce, 0.0)],
        "grad": [f10(v) for v in grad.ravel()],
        "factor": [f10(v) for v in gs * lw * norm * ws],
        "counts": [int(v) for v in counts],
        "ema": None if ema is None else [f10(v) for v in ema],
    }


def case(name, seed, c, ns, bins=10, momentum=0.0, reduction="mean", lw=1.0, gs=1.0,
         sat=False, ignore=0.1, zero_w=0.0):
    rng = np.random.default_rng(seed)
    cfg = {"bins": bins, "momentum": momentum, "reduction": reduction,
           "loss_weight": lw, "grad_scale": gs}
    ema = np.zeros(bins) if momentum > 0 else None
    batches = []
    for n in ns:
        x, labels, w = draw(rng, n, c, bins, sat, ignore, zero_w)
        want = reference(x, labels, w, cfg, ema)
        batches.append({
            "logits": [f9(v) for v in x.ravel()],
            "labels": [int(v) for v in labels],
            "weight": None if w is None else [float(v) for v in w],
            **want,
        })
    doc = {"classes": c, **cfg, "batches": batches}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")


def main():
    case("c1", 1, 1, [7, 33])
    case("c2_tails", 2, 2, [15, 16, 17, 31, 32, 33])
    case("c3_saturated", 3, 3, [64, 65], sat=True, lw=0.5, gs=-1.0)
    case("c80_momentum", 4, 80, [31, 32, 33], momentum=0.75, zero_w=0.2)
    case("c80_sum", 5, 80, [17], reduction="sum", sat=True)
    case("c1000", 6, 1000, [5, 4], momentum=0.5, bins=30)
    case("c17_none", 7, 17, [70], reduction="none", ignore=0.3, zero_w=0.1)


if __name__ == "__main__":
    main()
