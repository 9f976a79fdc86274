"""Baseline for the training input pipeline: timm 0.5.4's train transform (the recipe's
arguments: RandomResizedCrop 224 bicubic, flip, rand-m9-mstd0.5-inc1, normalize, RandomErasing
0.25 pixel) in a torch DataLoader (shuffle, drop_last, the given worker count), with timm's Mixup
(0.8 / 1.0, smoothing 0.1) applied to each batch in the main process, as main_soft.py does.
Prints the median images/s of three passes after a warm-up pass.

    python benches/timm_train_loader.py TRAIN_DIR WORKERS [BATCH]
"""
import sys
import time

import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from torchvision import datasets

# Magnitude 10 makes PosterizeIncreasing keep 0 bits: the Pillow of the reference returned a black
# image, Pillow >= 12 raises. Restore the reference's behaviour (as our RandAugment does).
_posterize = ImageOps.posterize


def _posterize_like_the_reference(img, bits):
    return Image.new(img.mode, img.size) if bits <= 0 else _posterize(img, bits)


ImageOps.posterize = _posterize_like_the_reference


def main():
    root, workers = sys.argv[1], int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    torch.set_num_threads(1)
    t = create_transform(
        224, is_training=True, color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1)
    ds = datasets.ImageFolder(root, transform=t)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, num_workers=workers, shuffle=True, drop_last=True,
        persistent_workers=workers > 0)
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
                label_smoothing=0.1, num_classes=len(ds.classes))
    rates = []
    for rnd in range(4):  # one warm-up pass, then the median of three
        start, n = time.perf_counter(), 0
        for x, y in loader:
            x, y = mix(x, y)
            n += len(x)
        if rnd > 0:
            rates.append(n / (time.perf_counter() - start))
    rates.sort()
    print(f"timm train loader: workers {workers}, {n} images per pass, median {rates[1]:.1f} images/s "
          f"({', '.join(f'{r:.1f}' for r in rates)})")


if __name__ == "__main__":
    main()
