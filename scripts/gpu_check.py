"""Helpers of scripts/gpu-check.sh, in plain Python (no numpy, safetensors or PIL needed; PIL is
used for the JPEGs when present).

    gpu_check.py input CASES KEY OUT            write CASES[KEY] as OUT's `pixel_values` (f32)
    gpu_check.py compare GOT CASES KEY          max |GOT.logits - CASES[KEY]| as JSON
    gpu_check.py images DIR N                   N JPEGs in an ImageFolder DIR
    gpu_check.py libdirs                        the nvidia/*/lib folders of this Python's packages
    gpu_check.py samples CSV [BASELINE_MIB]     peak memory and mean utilisation of nvidia-smi samples
    gpu_check.py report RESULTS_JSONL OUT_DIR   results.json and results.md from the step records
"""
import glob
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[base + a:base + b]
        dt = info["dtype"]
        if dt == "F32":
            vals = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        elif dt == "F16":
            vals = list(struct.unpack(f"<{len(raw) // 2}e", raw))
        elif dt == "BF16":
            halves = struct.unpack(f"<{len(raw) // 2}H", raw)
            vals = list(struct.unpack(f"<{len(halves)}f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))))
        else:
            raise SystemExit(f"{path}: {name} has dtype {dt}, expected F32, F16 or BF16")
        out[name] = (info["shape"], vals)
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (shape, vals) in tensors.items():
        blob = struct.pack(f"<{len(vals)}f", *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def cmd_input(cases, key, out):
    shape, vals = read_safetensors(cases)[key]
    write_safetensors(out, {"pixel_values": (shape, vals)})


def cmd_compare(got_path, cases, key):
    got_shape, got = read_safetensors(got_path)["logits"]
    want_shape, want = read_safetensors(cases)[key]
    if got_shape != want_shape:
        raise SystemExit(f"logits are {got_shape}, the fixture's {want_shape}")
    diff = max(abs(a - b) for a, b in zip(got, want))
    largest = max(abs(b) for b in want)
    print(json.dumps({"max_abs_diff": diff, "largest_logit": largest, "relative": diff / largest}))


def cmd_images(out, n):
    n = int(n)
    try:
        import PIL  # noqa: F401
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "make_val_images.py"), out, str(n)],
                       check=True)
        return
    except ImportError:
        pass
    # Without PIL: copies of the fixture photographs (real JPEG decoding, fewer distinct images).
    src = sorted(glob.glob(os.path.join(ROOT, "fixtures", "images", "val", "*", "*")))
    src = [s for s in src if s.lower().endswith((".jpeg", ".jpg"))]
    if not src:
        raise SystemExit("no PIL and no fixture JPEGs to copy")
    for i in range(n):
        s = src[i % len(src)]
        d = os.path.join(out, os.path.basename(os.path.dirname(s)))
        os.makedirs(d, exist_ok=True)
        shutil.copyfile(s, os.path.join(d, f"img_{i:05d}.JPEG"))
    print(f"wrote {n} copies of {len(src)} fixture JPEGs to {out} (no PIL here)")


def cmd_libdirs():
    dirs = []
    for p in sys.path:
        for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))):
            if d not in dirs:
                dirs.append(d)
    print(":".join(dirs))


def cmd_samples(csv, baseline=None):
    """nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits lines."""
    util, mem = [], []
    with open(csv) as f:
        for line in f:
            parts = [p.strip() for p in line.split(",")]
            try:
                u, m = float(parts[-2]), float(parts[-1])
            except (ValueError, IndexError):
                continue
            util.append(u)
            mem.append(m)
    if not util:
        print(json.dumps({"samples": 0}))
        return
    base = float(baseline) if baseline is not None else None
    busy = [u for u in util if u > 0]
    print(json.dumps({
        "samples": len(util),
        "gpu_util_mean": sum(util) / len(util),
        "gpu_util_mean_while_busy": sum(busy) / len(busy) if busy else 0.0,
        "gpu_util_max": max(util),
        "memory_used_peak_mib": max(mem),
        "memory_peak_over_baseline_mib": None if base is None else max(mem) - base,
    }))


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def cmd_report(jsonl, out_dir):
    records = []
    with open(jsonl) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    records.append({"step": "?", "status": "unparsable record", "raw": line})
    failed = [r for r in records if r.get("status") != "ok"]
    summary = {"records": records, "steps": len(records), "failed": len(failed)}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = ["# GPU check results", ""]
    env = [r for r in records if r.get("kind") == "env"]
    for r in env:
        md += [f"- {k}: {v}" for k, v in r.items() if k not in ("kind", "step", "status")]
    md.append("")
    parity = [r for r in records if r.get("kind") == "parity"]
    if parity:
        md += ["## Logits parity against the PyTorch fixtures", "",
               "| case | precision | max abs diff | relative to largest logit | bound | pass |",
               "| --- | --- | --- | --- | --- | --- |"]
        for r in parity:
            md.append(f"| {r['case']} | {r.get('precision', '-')} | {fmt(r.get('max_abs_diff'), 6)} | "
                      f"{fmt(r.get('relative'), 5)} | {r.get('bound', '-')} | {r.get('pass', r.get('status'))} |")
        md.append("")
    verify = [r for r in records if r.get("kind") == "verify"]
    if verify:
        md += ["## verify", "", "| model | precision | images | images/s | GPU util mean (%) | status |",
               "| --- | --- | --- | --- | --- | --- |"]
        for r in verify:
            md.append(f"| {r.get('model')} | {r.get('precision')} | {r.get('images', '-')} | "
                      f"{fmt(r.get('images_per_second'))} | {fmt(r.get('gpu_util_mean'))} | {r['status']} |")
        md.append("")
    train = [r for r in records if r.get("kind") == "train"]
    if train:
        md += ["## Training steps (synthetic data, same recipe step)", "",
               "| model | precision | impl | batch | images/s | step s | peak GPU MiB (nvidia-smi, over idle) "
               "| torch peak allocated MiB | GPU util mean (%) | status |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in train:
            md.append(f"| {r.get('model')} | {r.get('precision')} | {r.get('impl')} | {r.get('batch_size', '-')} | "
                      f"{fmt(r.get('images_per_second'))} | {fmt(r.get('step_seconds'), 4)} | "
                      f"{fmt(r.get('memory_peak_over_baseline_mib'), 0)} | {fmt(r.get('torch_peak_allocated_mib'), 0)} | "
                      f"{fmt(r.get('gpu_util_mean'))} | {r['status']} |")
        ratios = []
        for r in train:
            if r.get("impl") != "illama-tools" or r.get("images_per_second") is None:
                continue
            for t in train:
                if (t.get("impl") == "pytorch" and t.get("model") == r.get("model")
                        and t.get("precision") == r.get("precision") and t.get("images_per_second")):
                    ratios.append((r["model"], r["precision"], r["images_per_second"] / t["images_per_second"]))
        if ratios:
            md += ["", "| model | precision | ours / PyTorch eager |", "| --- | --- | --- |"]
            md += [f"| {m} | {p} | {x:.2f}x |" for m, p, x in ratios]
        md.append("")
    e2e = [r for r in records if r.get("kind") == "finetune"]
    if e2e:
        md += ["## finetune end to end (JPEG loading and augmentation in front)", "",
               "| model | precision | workers | images | images/s | GPU util mean (%) | status |",
               "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in e2e:
            md.append(f"| {r.get('model')} | {r.get('precision')} | {r.get('workers')} | {r.get('images', '-')} | "
                      f"{fmt(r.get('images_per_second'))} | {fmt(r.get('gpu_util_mean'))} | {r['status']} |")
        md.append("")
    if failed:
        md += ["## Steps that did not pass", ""]
        md += [f"- {r.get('step')}: {r.get('status')} {r.get('error', '')}".rstrip() for r in failed]
        md.append("")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(md))
    print(f"{len(records)} records, {len(failed)} not ok: {out_dir}/results.json, {out_dir}/results.md")


def main():
    cmds = {"input": cmd_input, "compare": cmd_compare, "images": cmd_images, "libdirs": cmd_libdirs,
            "samples": cmd_samples, "report": cmd_report}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        raise SystemExit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
