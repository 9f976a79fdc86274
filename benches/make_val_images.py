"""Writes N full-size JPEGs (ImageNet-like sizes, 333-500 px per side, quality 90) into an
ImageFolder for the end-to-end `verify` benchmark, from the fixture photographs.

    python benches/make_val_images.py OUT_DIR [N]
"""
import os
import random
import sys

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 512
    rng = random.Random(0)
    src = []
    for root, _, files in os.walk(os.path.join(HERE, "..", "fixtures", "images", "val")):
        for f in files:
            img = Image.open(os.path.join(root, f)).convert("RGB")
            if min(img.size) >= 200:
                src.append(img)
    classes = ["n01440764", "n02123045", "n07920052", "n04266014"]
    for i in range(n):
        img = rng.choice(src)
        w, h = rng.choice([(500, 375), (375, 500), (500, 333), (400, 400), (500, 500)])
        x0, y0 = rng.randint(0, img.width // 4), rng.randint(0, img.height // 4)
        crop = img.crop((x0, y0, img.width - rng.randint(0, img.width // 4), img.height - rng.randint(0, img.height // 4)))
        d = os.path.join(out, classes[i % len(classes)])
        os.makedirs(d, exist_ok=True)
        crop.resize((w, h), Image.BICUBIC).save(os.path.join(d, f"img_{i:05d}.JPEG"), quality=90)
    print(f"wrote {n} images to {out}")


if __name__ == "__main__":
    main()
