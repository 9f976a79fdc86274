"""Checks that our selection equals the reference's, tensor for tensor, byte for byte.

    python benches/compare_select.py OURS.safetensors REFERENCE.pth

Same keys in the same order, same dtype and shape, identical bytes (compared as raw bytes, so
NaN payloads and signed zeros count). Exit status 0 when equal, 1 otherwise.
"""

import sys

import torch
from safetensors import safe_open


def main():
    ours_path, ref_path = sys.argv[1], sys.argv[2]
    ref = torch.load(ref_path, map_location="cpu", weights_only=True)
    bad = []
    with safe_open(ours_path, framework="pt", device="cpu") as f:
        ours_keys = list(f.keys())  # safetensors lists keys sorted
        if sorted(ours_keys) != sorted(ref.keys()):
            bad.append(f"keys differ: only ours {sorted(set(ours_keys) - set(ref))[:5]}, only reference {sorted(set(ref) - set(ours_keys))[:5]}")
        nbytes = 0
        for k, r in ref.items():
            if k not in ours_keys:
                continue
            o = f.get_tensor(k)
            if o.dtype != r.dtype or o.shape != r.shape:
                bad.append(f"{k}: ours {o.dtype} {tuple(o.shape)}, reference {r.dtype} {tuple(r.shape)}")
                continue
            ob = o.contiguous().view(torch.uint8)
            rb = r.contiguous().view(torch.uint8)
            if not torch.equal(ob, rb):
                n = int((ob != rb).sum())
                bad.append(f"{k}: {n} of {ob.numel()} bytes differ")
            nbytes += ob.numel()
    if bad:
        print(f"MISMATCH {ours_path} vs {ref_path}:")
        for b in bad[:20]:
            print("  " + b)
        sys.exit(1)
    print(f"IDENTICAL: {len(ref)} tensors, {nbytes} bytes, {ours_path} == {ref_path}")


if __name__ == "__main__":
    main()
