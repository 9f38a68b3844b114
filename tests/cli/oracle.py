"""The hand-made oracle the option tests of this folder share: the eager model run by hand (resize,
normalise, flips, scales, a sliding window written out pixel by pixel), confusion matrices counted by
hand, reading results back, and the commands run in process."""
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main

# the fast built-in weights, run in torch fp32: no conversion, and the eager model's arithmetic
MODEL = ["--model", "camvid_fast", "--runtime", "torch", "--precision", "fp32"]
SAMPLE = Path(hyperseg.__file__).parent / "assets" / "camvid_sample_1.png"
MISMATCH = 0.003  # share of pixels the command and the hand-made oracle may disagree on (float rounding)


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def read_labels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def naive_window(model, x: torch.Tensor, window) -> torch.Tensor:
    """Sliding-window logits written out pixel by pixel: every window position whose top-left corner
    is a multiple of the stride (2/3 of the window), plus windows flush with the bottom and right
    edges; each pixel's logits are the mean over the windows that cover it."""
    _, _, h, w = x.shape
    wh, ww = min(window[0], h), min(window[1], w)
    sh, sw = max(1, window[0] * 2 // 3), max(1, window[1] * 2 // 3)
    tops = sorted({t for t in range(0, h - wh + 1) if t % sh == 0} | {h - wh})
    lefts = sorted({l for l in range(0, w - ww + 1) if l % sw == 0} | {w - ww})
    total = torch.zeros(1, model.num_classes, h, w)
    hits = torch.zeros(h, w)
    for top in tops:
        for left in lefts:
            total[..., top:top + wh, left:left + ww] += model(x[..., top:top + wh, left:left + ww])
            hits[top:top + wh, left:left + ww] += 1
    assert hits.min() >= 1
    return total / hits


@torch.no_grad()
def naive_labels(model, image: np.ndarray, *, flip=False, scales=(1.0,), window=None, resize_uint8=True,
                 meta=None) -> np.ndarray:
    """Resize to the size the model sees (its input scale; predict resizes the uint8 image, eval the
    normalised one), normalise, run each scale (and its mirror image; whole, or window by window),
    average the softmax at the image's size, argmax."""
    meta = meta or model.meta
    h, w = image.shape[:2]
    s0 = meta.get("input_scale", 1.0)
    seen = (max(min(h, 32), round(h * s0)), max(min(w, 32), round(w * s0)))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    if resize_uint8 and seen != (h, w):
        x = F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=True)
    x = (x.float() / 255 - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    if not resize_uint8 and seen != (h, w):
        x = F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=True)
    total = 0
    for s in scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for mirror in ([False, True] if flip else [False]):
            inp = xs.flip(-1) if mirror else xs
            logits = naive_window(model, inp, window) if window else model(inp)
            logits = logits.flip(-1) if mirror else logits
            total = total + F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False).softmax(1)
    return total.argmax(1)[0].numpy().astype(np.uint8)


def naive_confusion(model, root: Path, split: str = "val", num_classes: int = 11, **options) -> np.ndarray:
    """Rows: true class, columns: predicted; CamVid's label 11 (void) is not scored."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for path in sorted((root / split).glob("*.png")):
        label = read_labels(root / f"{split}annot" / path.name).astype(np.int64)
        prediction = naive_labels(model, read_rgb(path), resize_uint8=False, **options).astype(np.int64)
        keep = label < num_classes
        matrix += np.bincount(label[keep] * num_classes + prediction[keep],
                              minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return matrix


def run_eval(args, out: Path, capsys=None, model=MODEL) -> dict:
    code = cli_main(["eval", *[str(a) for a in args], "--workers", "0", "--out", str(out), *map(str, model)])
    assert code == 0, capsys.readouterr().err if capsys else code
    return json.loads(out.read_text())


def run_predict(args, out: Path, capsys=None, model=MODEL) -> None:
    code = cli_main(["predict", *[str(a) for a in args], "--out", str(out), *map(str, model)])
    assert code == 0, capsys.readouterr().err if capsys else code
