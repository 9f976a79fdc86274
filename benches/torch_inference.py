"""PyTorch baseline for benches/inference.rs: the spec-built iLLaMA of fixtures/gen/make_model.py,
batch 32, 224px, f32, CPU, all cores, eval mode, no grad. Prints images/s per preset."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures", "gen"))
from make_model import ILLaMA  # noqa: E402

PRESETS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def main():
    batch = int(os.environ.get("ILLAMA_BENCH_BATCH", 32))
    iters = int(os.environ.get("ILLAMA_BENCH_ITERS", 5))
    names = os.environ.get("ILLAMA_BENCH_PRESETS", "tiny,base").split(",")
    torch.set_num_threads(os.cpu_count())
    print(f"threads {torch.get_num_threads()} batch {batch} iters {iters} torch {torch.__version__}")
    for name in names:
        model = ILLaMA(*PRESETS[name]).eval()
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            model(x)
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
        median = statistics.median(times)
        print(f"torch  {name:<5} median {median:.3f} s/batch  {batch / median:.1f} images/s")


if __name__ == "__main__":
    main()
