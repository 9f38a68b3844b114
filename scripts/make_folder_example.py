"""Build a small dataset in the `folder` layout from CamVid, to try training on your own data.

    python scripts/make_folder_example.py data/camvid mydata --train 60 --val 20

It writes JPEG images and RGB colour masks with three classes (background, road, car), as a
user's own annotation tool might, plus `classes.yaml`:

    mydata/classes.yaml
    mydata/train/images/*.jpg   mydata/train/masks/*.png
    mydata/val/images/*.jpg     mydata/val/masks/*.png

CamVid's void pixels get a colour that is not in the palette, so training and evaluation
ignore them. The output folder must not exist yet.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

# CamVid SegNet label ids -> our three classes; 11 (void) -> ignored.
CLASSES = ["background", "road", "car"]
PALETTE = [[0, 0, 0], [128, 64, 128], [64, 0, 128]]
IGNORED_COLOUR = (255, 255, 255)
CAMVID_ROAD, CAMVID_CAR, CAMVID_VOID = 3, 8, 11


def colour_mask(label: np.ndarray) -> np.ndarray:
    """(H, W) CamVid ids -> (H, W, 3) RGB mask of the three-class palette."""
    classes = np.zeros(label.shape, dtype=np.int64)  # background
    classes[label == CAMVID_ROAD] = 1
    classes[label == CAMVID_CAR] = 2
    rgb = np.asarray(PALETTE, dtype=np.uint8)[classes]
    rgb[label == CAMVID_VOID] = IGNORED_COLOUR
    return rgb


def copy_split(camvid: Path, split: str, out: Path, count: int) -> int:
    images = sorted((camvid / split).glob("*.png"))[:count]
    if not images:
        sys.exit(f"make_folder_example: no images in {camvid / split}; expected the CamVid SegNet layout")
    (out / split / "images").mkdir(parents=True)
    (out / split / "masks").mkdir(parents=True)
    for image in images:
        label = np.asarray(Image.open(camvid / f"{split}annot" / image.name))
        Image.open(image).convert("RGB").save(out / split / "images" / f"{image.stem}.jpg", quality=95)
        Image.fromarray(colour_mask(label)).save(out / split / "masks" / f"{image.stem}.png")
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("camvid", type=Path, help="CamVid folder in the SegNet layout (train/, trainannot/, ...)")
    parser.add_argument("out", type=Path, help="new folder to create")
    parser.add_argument("--train", type=int, default=60, help="training images to take (default: 60)")
    parser.add_argument("--val", type=int, default=20, help="validation images to take (default: 20)")
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"make_folder_example: {args.out} exists; give a new folder")
    args.out.mkdir(parents=True)
    (args.out / "classes.yaml").write_text(yaml.safe_dump({"classes": CLASSES, "palette": PALETTE}, sort_keys=False))
    n_train = copy_split(args.camvid, "train", args.out, args.train)
    n_val = copy_split(args.camvid, "val", args.out, args.val)
    print(f"{args.out}: {n_train} train and {n_val} val images, classes {', '.join(CLASSES)}")


if __name__ == "__main__":
    main()
