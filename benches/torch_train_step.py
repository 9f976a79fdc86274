"""PyTorch baseline for benches/train_step.rs: the spec-built iLLaMA of fixtures/gen/make_model.py
with timm's drop_path in each block, a full training step (224 px, batch 32, 1000 classes):
forward with soft mask r = 0.5, timm's SoftTargetCrossEntropy on Mixup targets, backward,
torch.optim.AdamW with the recipe's groups (no decay for 1-D, bias, pos_embed, cls_token). Prints
the median step time split into forward, backward and optimiser, and the peak RSS (and, on a GPU,
the peak of torch's allocator).

With a JPEG folder argument, also the end-to-end rate with timm 0.5.4's train transform in a
DataLoader (WORKERS worker processes) and timm's Mixup in front, as main_soft.py runs it.

    python3 benches/torch_train_step.py [tiny,small] [TRAIN_DIR WORKERS]
    python3 benches/torch_train_step.py base --device cuda --amp bf16 --batch 128 --json

--device cuda runs on the GPU (eager, no torch.compile); --amp bf16 runs the forward pass and the
loss under torch.autocast(bfloat16), the reference's mixed precision, with f32 weights and
optimiser. --json prints one JSON line per preset. Presets: tiny, small, base, or
custom:DIM,DEPTH,HEADS; --input-size changes the resolution. Without timm, its drop_path and
SoftTargetCrossEntropy are replaced by the same few lines here; without the safetensors package
(only the fixture writer needs it) make_model is imported all the same.
"""
import argparse
import json
import os
import re
import resource
import statistics
import sys
import time
import types

import torch

try:
    from timm.loss import SoftTargetCrossEntropy
    from timm.models.layers import drop_path
except ImportError:  # the same computations as timm's
    class SoftTargetCrossEntropy(torch.nn.Module):
        def forward(self, x, target):
            return torch.sum(-target * torch.nn.functional.log_softmax(x, dim=-1), dim=-1).mean()

    def drop_path(x, drop_prob=0.0, training=False):
        if drop_prob == 0.0 or not training:
            return x
        keep = 1 - drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

try:
    import safetensors.torch  # noqa: F401
except ImportError:  # make_model imports save_file, which the benchmark does not use
    st = types.ModuleType("safetensors")
    st.torch = types.ModuleType("safetensors.torch")
    st.torch.save_file = None
    sys.modules["safetensors"], sys.modules["safetensors.torch"] = st, st.torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures", "gen"))
import make_model  # noqa: E402
from make_model import ILLaMA  # noqa: E402

PRESETS = {"tiny": (192, 12, 3, 0.0), "small": (384, 12, 6, 0.1), "base": (768, 12, 12, 0.4)}


def block_forward(self, x, cos, sin, mask):
    x = x + drop_path(self.attn(self.norm1(x), cos, sin, mask), self.dp, self.training)
    return x + drop_path(self.mlp(self.norm2(x)), self.dp, self.training)


def model_forward(self, img):
    """make_model's forward with the mask and the RoPE tables made on the input's device."""
    x = self.patch_embed(img)
    x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], dim=1) + self.pos_embed
    n = x.shape[1]
    r = self.soft_mask_rate
    ones = torch.ones(n, n, device=x.device)
    mask = r * ones + (1 - r) * torch.tril(ones)
    cos, sin = (t.to(x.device) for t in make_model.rope_tables(self.dim // self.heads, n))
    for blk in self.blocks:
        x = blk(x, cos, sin, mask)
    return self.head(self.norm(x)[:, -1])


make_model.Block.forward = block_forward
make_model.ILLaMA.forward = model_forward


def spec(name):
    if name.startswith("custom:"):
        dim, depth, heads = (int(v) for v in name[len("custom:"):].split(",")[:3])
        return dim, depth, heads, 0.0
    return PRESETS[name]


def build(name, img_size=224, device="cpu"):
    dim, depth, heads, dp = spec(name)
    model = ILLaMA(dim, depth, heads, img_size=img_size)
    for i, blk in enumerate(model.blocks):
        blk.dp = dp * i / max(depth - 1, 1)
    model.soft_mask_rate = 0.5
    model = model.to(device)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith(".bias") or n in ("pos_embed", "cls_token") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    return model.train(), opt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("presets", nargs="?", default=os.environ.get("ILLAMA_BENCH_PRESETS", "tiny,small"))
    ap.add_argument("train_dir", nargs="?")
    ap.add_argument("workers", nargs="?", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--batch", type=int, default=int(os.environ.get("ILLAMA_BENCH_BATCH", 32)))
    ap.add_argument("--iters", type=int, default=int(os.environ.get("ILLAMA_BENCH_ITERS", 5)))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    batch, iters, dev, size = a.batch, a.iters, torch.device(a.device), a.input_size
    cuda = dev.type == "cuda"
    if not cuda:
        torch.set_num_threads(os.cpu_count())
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if not a.json:
        print(f"threads {torch.get_num_threads()} batch {batch} iters {iters} torch {torch.__version__} "
              f"device {dev} amp {a.amp}")
    criterion = SoftTargetCrossEntropy()
    for name in re.split(r",(?=[a-z])", a.presets):  # custom:DIM,DEPTH,HEADS keeps its commas
        model, opt = build(name, size, dev)
        x = torch.randn(batch, 3, size, size, device=dev)
        t = torch.full((batch, 1000), 0.1 / 1000)
        t[torch.arange(batch), torch.arange(batch) * 37 % 1000] += 0.9 * 0.7
        t[torch.arange(batch), torch.arange(batch).flip(0) * 37 % 1000] += 0.9 * 0.3
        t = t.to(dev)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        fwd, bwd, upd = [], [], []
        for i in range(iters + a.warmup):
            start = time.perf_counter()
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.amp == "bf16"):
                loss = criterion(model(x), t)
            loss.item()
            f = time.perf_counter() - start
            loss.backward()
            sync()
            b = time.perf_counter() - start - f
            opt.step()
            opt.zero_grad()
            sync()
            u = time.perf_counter() - start - f - b
            if i >= a.warmup:
                fwd.append(f), bwd.append(b), upd.append(u)
        step = statistics.median([p + q + r for p, q, r in zip(fwd, bwd, upd)])
        peak = torch.cuda.max_memory_allocated(dev) if cuda else None
        if a.json:
            print(json.dumps({
                "model": name, "device": str(dev), "precision": "bf16" if a.amp == "bf16" else "f32",
                "batch_size": batch, "input_size": size, "steps": iters, "warmup": a.warmup,
                "step_seconds": step, "forward_seconds": statistics.median(fwd),
                "backward_seconds": statistics.median(bwd), "optimiser_seconds": statistics.median(upd),
                "images_per_second": batch / step, "last_loss": loss.item(),
                "torch_peak_allocated_mib": None if peak is None else peak / 2**20,
                "torch": torch.__version__,
            }), flush=True)
        else:
            print(f"torch  {name:<5} step {step:.3f} s ({batch / step:.1f} images/s): forward "
                  f"{statistics.median(fwd):.3f} backward {statistics.median(bwd):.3f} "
                  f"optimiser {statistics.median(upd):.3f}"
                  + ("" if peak is None else f", peak allocated {peak / 2**20:.0f} MiB"))
        if a.train_dir and a.workers is not None:
            rate = with_loader(model, opt, criterion, a.train_dir, a.workers, batch)
            print(f"torch  {name:<5} with the input pipeline ({a.workers} workers): {rate:.1f} images/s")
        del model, opt
        if cuda:
            torch.cuda.empty_cache()
    if not a.json:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


def with_loader(model, opt, criterion, root, workers, batch):
    from PIL import Image, ImageOps
    from timm.data import Mixup, create_transform
    from torchvision import datasets

    posterize = ImageOps.posterize
    ImageOps.posterize = lambda img, bits: Image.new(img.mode, img.size) if bits <= 0 else posterize(img, bits)
    tf = create_transform(224, is_training=True, color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1",
                          interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1)
    ds = datasets.ImageFolder(root, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=True,
                                         drop_last=True, persistent_workers=workers > 0)
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1,
                num_classes=1000)
    rates = []
    for epoch in range(3):  # one warm-up epoch, then the median of two
        start, n = time.perf_counter(), 0
        for x, y in loader:
            x, y = mix(x, y)
            loss = criterion(model(x), y)
            loss.item()
            loss.backward()
            opt.step()
            opt.zero_grad()
            n += len(x)
        if epoch > 0:
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


if __name__ == "__main__":
    main()
