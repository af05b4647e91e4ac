#!/usr/bin/env python3
"""Reference rotary inverse frequencies for model/rope_test.go.

Written from transformers' modeling_rope_utils (_compute_default_rope_parameters,
_compute_linear_scaling_rope_parameters, _compute_llama3_parameters), op by op
as torch evaluates them on float32 tensors on the CPU, with float32 rounding
emulated by struct (no numpy or torch needed):

    python3 rope_reference.py > rope_reference.json

Each case also carries the same formula in float64 ("inv_freq_f64"), so a test
can tell a rounding difference from a formula difference.
"""
import json
import math
import struct


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def default_inv(theta, dim, exact=False):
    out = []
    for i in range(0, dim, 2):
        if exact:
            out.append(1.0 / (theta ** (i / dim)))
        else:
            e = f32(f32(float(i)) / f32(float(dim)))    # arange(...).float() / dim
            p = f32(theta ** e)                          # base ** tensor (float32 pow)
            out.append(f32(f32(1.0 / p) * 1.0))          # 1.0 / tensor = reciprocal * 1.0
    return out


def linear(inv, factor, exact=False):
    if exact:
        return [x / factor for x in inv]
    return [f32(x / f32(factor)) for x in inv]


def llama3(inv, factor, low, high, old, exact=False):
    r = (lambda x: x) if exact else f32
    low_wavelen = r(old / low)
    high_wavelen = r(old / high)
    out = []
    for x in inv:
        wavelen = r(r(1.0 / x) * r(2 * math.pi))          # 2*pi / inv_freq
        y = r(x / r(factor)) if wavelen > low_wavelen else x
        if not (wavelen < high_wavelen) and not (wavelen > low_wavelen):
            s = r(r(r(r(1.0 / wavelen) * r(float(old))) - r(low)) / r(high - low))
            y = r(r(r(r(1 - s) * y) / r(factor)) + r(s * y))
        out.append(y)
    return out


CASES = [
    # name, theta, head_dim, rope_scaling
    ("llama-3.2-1b", 500000.0, 64, {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    ("llama-3.1-8b", 500000.0, 128, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    ("llama3-small", 10000.0, 16, {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    ("linear-2", 10000.0, 64, {"type": "linear", "factor": 2.0}),
    ("default", 10000.0, 64, None),
]


def compute(theta, hd, rs, exact):
    inv = default_inv(theta, hd, exact)
    if rs is None:
        return inv
    kind = rs.get("rope_type") or rs.get("type")
    if kind == "linear":
        return linear(inv, rs["factor"], exact)
    return llama3(inv, rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"],
                  rs["original_max_position_embeddings"], exact)


def main():
    out = []
    for name, theta, hd, rs in CASES:
        out.append({"name": name, "rope_theta": theta, "head_dim": hd, "rope_scaling": rs,
                    "inv_freq": compute(theta, hd, rs, False),
                    "inv_freq_f64": compute(theta, hd, rs, True)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
