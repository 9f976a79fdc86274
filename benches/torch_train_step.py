"""PyTorch baseline for benches/train_step.rs: the spec-built iLLaMA of fixtures/gen/make_model.py
with timm's drop_path in each block, a full training step on the CPU (f32, 224 px, batch 32, 1000
classes): forward with soft mask r = 0.5, timm's SoftTargetCrossEntropy on Mixup targets, backward,
torch.optim.AdamW with the recipe's groups (no decay for 1-D, bias, pos_embed, cls_token). Prints
the median step time split into forward, backward and optimiser, and the peak RSS.

With a JPEG folder argument, also the end-to-end rate with timm 0.5.4's train transform in a
DataLoader (WORKERS worker processes) and timm's Mixup in front, as main_soft.py runs it.

    python3 benches/torch_train_step.py [tiny,small] [TRAIN_DIR WORKERS]
"""
import os
import resource
import statistics
import sys
import time

import torch
from timm.loss import SoftTargetCrossEntropy
from timm.models.layers import drop_path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures", "gen"))
import make_model  # noqa: E402
from make_model import ILLaMA  # noqa: E402

PRESETS = {"tiny": (192, 12, 3, 0.0), "small": (384, 12, 6, 0.1), "base": (768, 12, 12, 0.4)}


def block_forward(self, x, cos, sin, mask):
    x = x + drop_path(self.attn(self.norm1(x), cos, sin, mask), self.dp, self.training)
    return x + drop_path(self.mlp(self.norm2(x)), self.dp, self.training)


make_model.Block.forward = block_forward


def build(name):
    dim, depth, heads, dp = PRESETS[name]
    model = ILLaMA(dim, depth, heads)
    for i, blk in enumerate(model.blocks):
        blk.dp = dp * i / (depth - 1)
    model.soft_mask_rate = 0.5
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith(".bias") or n in ("pos_embed", "cls_token") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    return model.train(), opt


def main():
    names = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ILLAMA_BENCH_PRESETS", "tiny,small")).split(",")
    batch = int(os.environ.get("ILLAMA_BENCH_BATCH", 32))
    iters = int(os.environ.get("ILLAMA_BENCH_ITERS", 5))
    torch.set_num_threads(os.cpu_count())
    print(f"threads {torch.get_num_threads()} batch {batch} iters {iters} torch {torch.__version__}")
    criterion = SoftTargetCrossEntropy()
    for name in names:
        model, opt = build(name)
        x = torch.randn(batch, 3, 224, 224)
        t = torch.full((batch, 1000), 0.1 / 1000)
        t[torch.arange(batch), torch.arange(batch) * 37 % 1000] += 0.9 * 0.7
        t[torch.arange(batch), torch.arange(batch).flip(0) * 37 % 1000] += 0.9 * 0.3
        fwd, bwd, upd = [], [], []
        for i in range(iters + 1):
            start = time.perf_counter()
            loss = criterion(model(x), t)
            loss.item()
            f = time.perf_counter() - start
            loss.backward()
            b = time.perf_counter() - start - f
            opt.step()
            opt.zero_grad()
            u = time.perf_counter() - start - f - b
            if i > 0:
                fwd.append(f), bwd.append(b), upd.append(u)
        step = statistics.median([a + b + c for a, b, c in zip(fwd, bwd, upd)])
        print(f"torch  {name:<5} step {step:.3f} s ({batch / step:.1f} images/s): forward "
              f"{statistics.median(fwd):.3f} backward {statistics.median(bwd):.3f} "
              f"optimiser {statistics.median(upd):.3f}")
        if len(sys.argv) > 3:
            rate = with_loader(model, opt, criterion, sys.argv[2], int(sys.argv[3]), batch)
            print(f"torch  {name:<5} with the input pipeline ({sys.argv[3]} workers): {rate:.1f} images/s")
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
