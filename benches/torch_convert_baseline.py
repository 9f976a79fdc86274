"""The Python baseline for `convert` .pth -> safetensors: torch.load + safetensors.torch.save_file.

    python benches/torch_convert_baseline.py SHARD.bin OUT.safetensors

One shard per process (benches/run.sh runs it once per shard so that peak RSS is per shard).
"""

import sys
import time

import torch
from safetensors.torch import save_file

t0 = time.perf_counter()
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
t1 = time.perf_counter()
save_file(sd, sys.argv[2], metadata={"format": "pt"})
t2 = time.perf_counter()
print(f"{sys.argv[1]}: torch.load {t1 - t0:.2f} s, save_file {t2 - t1:.2f} s", file=sys.stderr)
