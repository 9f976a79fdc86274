"""Makes an ImageNet-train-shaped tree of empty files for benches/listing.rs:
DIR/n00000000 .. DIR/n00000999, each holding 1,281 empty .JPEG files (1.28M in all)."""
import os
import sys

root = sys.argv[1]
classes = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
per_class = int(sys.argv[3]) if len(sys.argv) > 3 else 1281
os.makedirs(root, exist_ok=True)
for c in range(classes):
    d = os.path.join(root, f"n{c:08d}")
    os.makedirs(d, exist_ok=True)
    for i in range(per_class):
        os.close(os.open(os.path.join(d, f"n{c:08d}_{i}.JPEG"), os.O_CREAT | os.O_WRONLY, 0o644))
