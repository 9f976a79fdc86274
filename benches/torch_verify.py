"""PyTorch baseline for end-to-end `verify` throughput: torchvision ImageFolder + DataLoader
(the reference eval transform, same worker count) + the spec-built iLLaMA of
fixtures/gen/make_model.py with the given safetensors weights. Prints images/s and top-1.

    python benches/torch_verify.py VAL_DIR WEIGHTS PRESET WORKERS [BATCH]
"""
import os
import sys
import time

import torch
from safetensors.torch import load_file
from torchvision import datasets, transforms

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures", "gen"))
from make_model import ILLaMA  # noqa: E402

PRESETS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


def main():
    val, weights, preset, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    torch.set_num_threads(os.cpu_count())
    model = ILLaMA(*PRESETS[preset]).eval()
    model.load_state_dict({k: v.float() for k, v in load_file(weights).items()})
    t = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ds = datasets.ImageFolder(val, transform=t)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    start, n, correct = time.perf_counter(), 0, 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    secs = time.perf_counter() - start
    print(f"torch verify: {n} images in {secs:.2f} s, {n / secs:.1f} images/s, top-1 {100 * correct / n:.2f}")


if __name__ == "__main__":
    main()
