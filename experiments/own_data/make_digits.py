"""Writes scikit-learn's bundled handwritten digits (load_digits: 1,797 images of 8x8 pixels,
16 grey levels, 10 classes) as dark-on-white PNG files plus a manifest (image,label), for
scoring an Omniglot model on another source's handwriting (`mmfsl eval --data`).

    python experiments/own_data/make_digits.py DIR      # needs `pip install scikit-learn`
"""
import csv
import pathlib
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(directory: str) -> None:
  root = pathlib.Path(directory)
  (root / "images").mkdir(parents=True, exist_ok=True)
  digits = load_digits()
  with (root / "manifest.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "label"])
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
      ink = np.asarray(image, np.float64) / 16.0       # 0 = paper .. 1 = full ink
      paper = np.round(255 * (1.0 - ink)).astype(np.uint8)
      Image.fromarray(paper, mode="L").save(root / "images" / f"{i:04d}.png")
      writer.writerow([f"images/{i:04d}.png", f"digit {label}"])
  print(f"wrote {len(digits.images)} images of {len(set(digits.target))} classes to {root}")


if __name__ == "__main__":
  main(sys.argv[1])
