"""Round-trip check for benches/run.sh: every tensor of the original safetensors directory equals
the one in the directory converted safetensors -> .pth -> safetensors (names, dtypes, bytes).

    python benches/check_roundtrip.py ORIGINAL_DIR ROUNDTRIP_DIR
"""

import glob
import os
import sys

import torch
from safetensors import safe_open


def tensors(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, framework="pt") as s:
            for k in s.keys():
                out[k] = f
    return out


def main():
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    if set(a) != set(b):
        print(f"MISMATCH: names differ ({sorted(set(a) ^ set(b))[:5]})")
        sys.exit(1)
    n = 0
    for k in sorted(a):
        with safe_open(a[k], framework="pt") as s, safe_open(b[k], framework="pt") as t:
            x, y = s.get_tensor(k), t.get_tensor(k)
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
                print(f"MISMATCH: {k}")
                sys.exit(1)
        n += 1
    print(f"round trip safetensors -> .pth -> safetensors: {n} tensors identical (names, dtypes, shapes, bytes)")


if __name__ == "__main__":
    main()
