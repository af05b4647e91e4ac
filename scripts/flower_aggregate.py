#!/usr/bin/python3
"""Baseline for scripts/bench-aggregate.sh: Flower's FedAvg `aggregate` in numpy.

Flower's server computes FedAvg (flwr/server/strategy/aggregate.py,
`aggregate`) over in-memory lists of numpy layers: every client's layers are
multiplied by its example count, the products are summed layer by layer and
the sum is divided by the total count. This is that computation, written
afresh. The inputs are safetensors update files (F32 tensors, the example
count in the metadata key "num_samples"), loaded fully into memory first; only
the aggregation is timed, best of --reps runs. Prints
"numpy_flower <GB/s> GB/s", GB/s = input bytes / time.

usage: flower_aggregate.py [--reps N] FILE...
"""

import argparse
import functools
import json
import struct
import sys
import time

import numpy as np


def load(path):
    """Return (layers in name order, example count) of one update file."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    meta = header.pop("__metadata__", {}) or {}
    count = int(float(meta["num_samples"]))
    base = 8 + hlen
    layers = []
    for name in sorted(header):
        entry = header[name]
        if entry["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name}: dtype {entry['dtype']}, want F32")
        begin, end = entry["data_offsets"]
        arr = np.fromfile(path, dtype="<f4", count=(end - begin) // 4, offset=base + begin)
        layers.append(arr.reshape(entry["shape"]))
    return layers, count


def fedavg(results):
    """Weighted average of the clients' layers by their example counts."""
    total = sum(count for _, count in results)
    scaled = [[layer * count for layer in layers] for layers, count in results]
    return [functools.reduce(np.add, per_client) / total for per_client in zip(*scaled)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    results = [load(p) for p in args.files]
    nbytes = sum(layer.nbytes for layers, _ in results for layer in layers)
    best = float("inf")
    for _ in range(args.reps):
        start = time.perf_counter()
        out = fedavg(results)
        best = min(best, time.perf_counter() - start)
        del out
    print(f"numpy flower: {len(results)} inputs, {nbytes} bytes, numpy {np.__version__}, best {best:.3f}s", file=sys.stderr)
    print(f"numpy_flower {nbytes / best / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
