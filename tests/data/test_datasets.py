"""Every dataset layout on tiny fake trees, the bad-input errors, and the real CamVid data."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyperseg.classes import CITYSCAPES_CLASSES, VOC_CLASSES, VOC_PALETTE, default_palette
from hyperseg.data import DATASETS, DataError, build_dataset
from hyperseg.data.ade20k import ADE20K
from hyperseg.data.camvid import CamVid, CamVidColour
from hyperseg.data.cityscapes import Cityscapes
from hyperseg.data.folder import FolderDataset
from hyperseg.data.voc import VOCAug

H, W = 16, 24


def names(path: Path) -> str:
    """A pytest ``match`` pattern for a path appearing in the message."""
    return re.escape(str(path))


def write_image(path: Path, *, size: tuple[int, int] = (H, W), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    rng = np.random.default_rng(len(str(path)))
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    elif mode == "I;16":
        arr = np.zeros((h, w), dtype=np.uint16)
        arr[0, 0] = 65535
        arr[0, 1] = 0
        img = Image.fromarray(arr)
    else:
        raise ValueError(mode)
    img.save(path)
    return path


def write_label(path: Path, values, *, size: tuple[int, int] = (H, W), palette_mode: bool = False) -> Path:
    """An index PNG whose first pixels hold ``values``; the rest is ``values[0]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    flat = np.full(h * w, values[0], dtype=np.uint8)
    flat[: len(values)] = values
    if palette_mode:  # as VOC ships its labels: palette PNG, the stored indices are the classes
        img = Image.frombytes("P", (w, h), flat.reshape(h, w).tobytes())
        img.putpalette([c for rgb in VOC_PALETTE for c in rgb] + [224, 224, 192] * (256 - len(VOC_PALETTE)))
    else:
        img = Image.fromarray(flat.reshape(h, w))
    img.save(path)
    return path


def write_colour_label(path: Path, colours, *, size: tuple[int, int] = (H, W)) -> Path:
    """An RGB PNG whose first pixels hold ``colours``; the rest is ``colours[0]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    flat = np.tile(np.array(colours[0], dtype=np.uint8), (h * w, 1))
    flat[: len(colours)] = np.array(colours, dtype=np.uint8)
    Image.fromarray(flat.reshape(h, w, 3)).save(path)
    return path


def first(label: torch.Tensor, n: int) -> list[int]:
    return label.flatten()[:n].tolist()


def check_sample(ds, index: int = 0, size: tuple[int, int] = (H, W)) -> tuple[torch.Tensor, torch.Tensor]:
    image, label = ds[index]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, *size)
    assert label.dtype == torch.int64 and tuple(label.shape) == size
    return image, label


# --------------------------------------------------------------------------- fake trees

def camvid_tree(root: Path, n: int = 2, split: str = "train") -> Path:
    for i in range(n):
        write_image(root / split / f"f{i}.png")
        write_label(root / f"{split}annot" / f"f{i}.png", [0, 3, 10, 11])
    return root


def camvid32_tree(root: Path, split: str = "train") -> Path:
    write_image(root / split / "0001TP_006690.png")
    write_colour_label(root / f"{split}_labels" / "0001TP_006690_L.png",
                       [(128, 128, 128), (0, 0, 192), (64, 192, 0), (0, 128, 192), (0, 0, 0)])
    return root


def cityscapes_tree(root: Path, split: str = "train") -> Path:
    for city, stem in [("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")]:
        write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        write_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                    [7, 26, 0, 33, 8, 31, 255, 34, 1, 6])
    return root


def voc_pairs_tree(root: Path) -> Path:
    lines = []
    for image_id in ["2007_000032", "2008_000002"]:
        write_image(root / "JPEGImages" / f"{image_id}.png").rename(root / "JPEGImages" / f"{image_id}.jpg")
        write_label(root / "SegmentationClassAug" / f"{image_id}.png", [0, 1, 15, 20, 255])
        lines.append(f"/JPEGImages/{image_id}.jpg /SegmentationClassAug/{image_id}.png")
    (root / "train_aug.txt").write_text("\n".join(lines) + "\n")
    return root


def voc_ids_tree(root: Path) -> Path:
    ids = ["2007_000033", "2007_000042"]
    for image_id in ids:
        write_image(root / "JPEGImages" / f"{image_id}.png").rename(root / "JPEGImages" / f"{image_id}.jpg")
    # One in SegmentationClassAug, one only in SegmentationClass (palette PNG, as VOC ships it).
    write_label(root / "SegmentationClassAug" / f"{ids[0]}.png", [0, 7, 255])
    write_label(root / "SegmentationClass" / f"{ids[1]}.png", [0, 12, 255], palette_mode=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n\n")
    return root


def ade_tree(root: Path, split: str = "training") -> Path:
    for stem in ["ADE_train_00000001", "ADE_train_00000002"]:
        write_image(root / "images" / split / f"{stem}.png").rename(root / "images" / split / f"{stem}.jpg")
        write_label(root / "annotations" / split / f"{stem}.png", [0, 1, 2, 150])
    return root


def folder_tree(root: Path, *, split: str | None = None, classes_yaml: str | None = "- bg\n- road\n- car\n") -> Path:
    base = root / split if split else root
    for stem in ["a", "b", "c"]:
        write_image(base / "images" / f"{stem}.jpg")
        write_label(base / "masks" / f"{stem}.png", [0, 1, 2, 255])
    if classes_yaml is not None:
        (root / "classes.yaml").write_text(classes_yaml)
    return root


def folder_rgb_tree(root: Path) -> Path:
    write_image(root / "images" / "x.png")
    write_colour_label(root / "masks" / "x.png", [(0, 0, 0), (255, 0, 0), (0, 255, 0), (1, 2, 3)])
    (root / "classes.yaml").write_text(
        "classes: [background, tumour, vessel]\npalette: [[0, 0, 0], [255, 0, 0], [0, 255, 0]]\n"
    )
    return root


# --------------------------------------------------------------------------- layouts

def test_registry_names():
    assert set(DATASETS) == {"camvid", "camvid32", "cityscapes", "voc", "ade20k", "folder"}
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("nope", ".", "train")


def test_camvid_segnet(tmp_path):
    ds = build_dataset("camvid", camvid_tree(tmp_path), "train")
    assert isinstance(ds, CamVid) and len(ds) == 2 and ds.num_classes == 11
    _, label = check_sample(ds, 1)
    assert first(label, 5) == [0, 3, 10, 255, 0]


def test_camvid_colour(tmp_path):
    ds = build_dataset("camvid32", camvid32_tree(tmp_path), "train")
    assert isinstance(ds, CamVidColour) and len(ds) == 1
    _, label = check_sample(ds)
    # sky, sidewalk (32-class colour), an unlisted 32-class colour, bicyclist, void
    assert first(label, 5) == [0, 4, 255, 10, 255]


def test_cityscapes(tmp_path):
    ds = build_dataset("cityscapes", cityscapes_tree(tmp_path), "train")
    assert isinstance(ds, Cityscapes) and len(ds) == 2
    assert ds.classes == CITYSCAPES_CLASSES and ds.num_classes == 19
    assert ds.samples[0][0].parent.name == "aachen" and ds.samples[1][0].parent.name == "bremen"
    _, label = check_sample(ds)
    assert first(label, 10) == [0, 13, 255, 18, 1, 16, 255, 255, 255, 255]


def test_cityscapes_lookup_table():
    from hyperseg.data.cityscapes import LABEL_TO_TRAIN_ID

    assert LABEL_TO_TRAIN_ID.shape == (256,)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(256):
        assert LABEL_TO_TRAIN_ID[label_id] == expected.get(label_id, 255)


def test_voc_pairs(tmp_path):
    ds = build_dataset("voc", voc_pairs_tree(tmp_path), "train_aug")
    assert isinstance(ds, VOCAug) and len(ds) == 2 and ds.classes == VOC_CLASSES and ds.num_classes == 21
    _, label = check_sample(ds)
    assert first(label, 5) == [0, 1, 15, 20, 255]


def test_voc_ids_with_fallback(tmp_path):
    ds = VOCAug(voc_ids_tree(tmp_path), "val")
    assert len(ds) == 2
    assert ds.samples[0][1].parent.name == "SegmentationClassAug"
    assert ds.samples[1][1].parent.name == "SegmentationClass"
    assert Image.open(ds.samples[1][1]).mode == "P"
    assert first(check_sample(ds, 0)[1], 3) == [0, 7, 255]
    assert first(check_sample(ds, 1)[1], 3) == [0, 12, 255]


def test_voc_list_in_segmentation_aug(tmp_path):
    voc_ids_tree(tmp_path)
    aug = tmp_path / "ImageSets" / "SegmentationAug"
    aug.mkdir(parents=True)
    (aug / "train_aug.txt").write_text("2007_000033\n")
    assert len(VOCAug(tmp_path)) == 1


def test_voc_missing_list(tmp_path):
    voc_pairs_tree(tmp_path)
    with pytest.raises(DataError, match=names(tmp_path / "ImageSets" / "Segmentation" / "nope.txt")):
        VOCAug(tmp_path, "nope")


def test_voc_bad_line(tmp_path):
    voc_pairs_tree(tmp_path)
    (tmp_path / "bad.txt").write_text("a b c\n")
    with pytest.raises(DataError, match=names(tmp_path / "bad.txt") + ":1"):
        VOCAug(tmp_path, "bad")


def test_voc_missing_label(tmp_path):
    voc_ids_tree(tmp_path)
    (tmp_path / "SegmentationClass" / "2007_000042.png").unlink()
    with pytest.raises(DataError, match=names(tmp_path / "SegmentationClassAug" / "2007_000042.png")):
        VOCAug(tmp_path, "val")


@pytest.mark.parametrize("split", ["training", "train"])
def test_ade20k(tmp_path, split):
    ds = build_dataset("ade20k", ade_tree(tmp_path), split)
    assert isinstance(ds, ADE20K) and ds.split == "training" and len(ds) == 2
    assert ds.num_classes == 150 and len(ds.palette) == 150
    _, label = check_sample(ds)
    assert first(label, 4) == [255, 0, 1, 149]


def test_ade20k_val_alias(tmp_path):
    ade_tree(tmp_path, "validation")
    assert len(ADE20K(tmp_path, "val")) == 2


def test_ade20k_value_out_of_range(tmp_path):
    ade_tree(tmp_path)
    bad = write_label(tmp_path / "annotations" / "training" / "ADE_train_00000001.png", [0, 151])
    with pytest.raises(DataError, match=names(bad) + r".*\[150\] are outside 0\.\.149 \(the 150 classes\)"):
        ADE20K(tmp_path)[0]


def test_folder_index_masks(tmp_path):
    ds = build_dataset("folder", folder_tree(tmp_path), None)
    assert isinstance(ds, FolderDataset) and len(ds) == 3
    assert ds.classes == ("bg", "road", "car") and ds.num_classes == 3
    assert [tuple(c) for c in ds.palette] == default_palette(3)
    _, label = check_sample(ds)
    assert first(label, 4) == [0, 1, 2, 255]


def test_folder_split_and_classes_file(tmp_path):
    folder_tree(tmp_path, split="val", classes_yaml=None)
    classes = tmp_path / "elsewhere.yaml"
    classes.write_text("classes: [bg, road, car]\nignore_index: 2\n")
    ds = build_dataset("folder", tmp_path, "val", classes_file=str(classes))
    assert len(ds) == 3 and ds.samples[0][0].parent == tmp_path / "val" / "images"
    assert first(check_sample(ds)[1], 4) == [0, 1, 255, 255]


def test_folder_split_falls_back_to_root(tmp_path):
    folder_tree(tmp_path)
    assert len(FolderDataset(tmp_path, "train")) == 3


def test_folder_rgb_masks(tmp_path):
    ds = build_dataset("folder", folder_rgb_tree(tmp_path), None)
    assert [tuple(c) for c in ds.palette] == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    _, label = check_sample(ds)
    assert first(label, 5) == [0, 1, 2, 255, 0]


def test_folder_classes_are_per_instance(tmp_path):
    a = FolderDataset(folder_tree(tmp_path / "a"))
    b = FolderDataset(folder_rgb_tree(tmp_path / "b"))
    assert a.classes != b.classes and "classes" in vars(a) and "palette" in vars(a)


def test_folder_rgb_mask_without_palette(tmp_path):
    folder_rgb_tree(tmp_path)
    (tmp_path / "classes.yaml").write_text("[background, tumour, vessel]\n")
    ds = FolderDataset(tmp_path)
    with pytest.raises(DataError, match=names(tmp_path / "masks" / "x.png") + ".*palette"):
        ds[0]


def test_folder_missing_classes_file(tmp_path):
    folder_tree(tmp_path, classes_yaml=None)
    with pytest.raises(DataError, match=names(tmp_path / "classes.yaml") + r"(.|\n)*classes:"):
        FolderDataset(tmp_path)


@pytest.mark.parametrize("text", ["classes: []\n", "foo: 1\n", "classes: [a, b]\npalette: [[0, 0, 0]]\n", "[a, b\n"])
def test_folder_bad_classes_file(tmp_path, text):
    folder_tree(tmp_path, classes_yaml=text)
    with pytest.raises(DataError, match=names(tmp_path / "classes.yaml")):
        FolderDataset(tmp_path)


def test_folder_missing_masks_folder(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    (tmp_path / "classes.yaml").write_text("[a, b]\n")
    with pytest.raises(DataError, match=names(tmp_path / "masks")):
        FolderDataset(tmp_path)


def test_transform_is_applied(tmp_path):
    ds = CamVid(camvid_tree(tmp_path), "train", transform=lambda image, label: (image.float(), label + 1))
    image, label = ds[0]
    assert image.dtype == torch.float32 and first(label, 4) == [1, 4, 11, 256]


# --------------------------------------------------------------------------- bad input

# (dataset name, tree builder, split, image of sample 0, its label) for the shared error checks.
def _layouts():
    return {
        "camvid": (camvid_tree, "train", "train/f0.png", "trainannot/f0.png"),
        "camvid32": (camvid32_tree, "train", "train/0001TP_006690.png", "train_labels/0001TP_006690_L.png"),
        "cityscapes": (cityscapes_tree, "train", "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                       "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"),
        "voc": (voc_pairs_tree, "train_aug", "JPEGImages/2007_000032.jpg", "SegmentationClassAug/2007_000032.png"),
        "ade20k": (ade_tree, "training", "images/training/ADE_train_00000001.jpg",
                   "annotations/training/ADE_train_00000001.png"),
        "folder": (folder_tree, None, "images/a.jpg", "masks/a.png"),
    }


LAYOUTS = sorted(_layouts())


def _build(name, root):
    builder, split, image, label = _layouts()[name]
    builder(root)
    return split, root / image, root / label


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("which, content", [(1, b"\x89PNG\r\n\x1a\n this is not an image"), (2, b"garbage")],
                         ids=["image", "label"])
def test_corrupt_image_or_label(tmp_path, name, which, content):
    built = _build(name, tmp_path)
    broken = built[which]
    broken.write_bytes(content)
    ds = build_dataset(name, tmp_path, built[0])
    with pytest.raises(DataError, match=names(broken) + ": cannot read"):
        ds[0]


@pytest.mark.parametrize("name", LAYOUTS)
def test_missing_label(tmp_path, name):
    split, _, label = _build(name, tmp_path)
    label.unlink()
    with pytest.raises(DataError, match=names(label) + ".*not found"):
        build_dataset(name, tmp_path, split)


@pytest.mark.parametrize("name", LAYOUTS)
def test_size_mismatch(tmp_path, name):
    split, image, label = _build(name, tmp_path)
    if name == "camvid32":
        write_colour_label(label, [(128, 128, 128)], size=(H + 2, W))
    else:
        write_label(label, [0], size=(H + 2, W))
    ds = build_dataset(name, tmp_path, split)
    with pytest.raises(DataError, match=names(label) + f": label size {W}x{H + 2} differs from image "
                       + re.escape(image.name) + f" size {W}x{H}"):
        ds[0]


@pytest.mark.parametrize("name,value", [("camvid", 12), ("voc", 21), ("voc", 254), ("folder", 3), ("folder", 7)])
def test_label_values_out_of_range(tmp_path, name, value):
    split, _, label = _build(name, tmp_path)
    write_label(label, [0, value, 255])
    ds = build_dataset(name, tmp_path, split)
    with pytest.raises(DataError, match=names(label) + rf": label values \[{value}\] are outside 0\.\."):
        ds[0]


def test_label_values_that_decode_negative_are_refused(tmp_path):
    """A decoder that maps stored ids to negative train ids (Cityscapes' -1) is caught by the range check."""
    split, _, label = _build("camvid", tmp_path)
    write_label(label, [0, 1, 2])

    class Shifted(CamVid):
        def decode_label(self, raw, path):
            return super().decode_label(raw, path) - 1  # 0 -> -1

    with pytest.raises(DataError, match=r"label values \[-1\] are outside 0\.\.10"):
        Shifted(tmp_path, split)[0]


@pytest.mark.parametrize("name", ["camvid", "cityscapes", "ade20k", "folder"])
def test_rgb_label_where_index_expected(tmp_path, name):
    split, _, label = _build(name, tmp_path)
    write_colour_label(label, [(0, 0, 0)])
    ds = build_dataset(name, tmp_path, split)
    # The folder tree's classes.yaml has no palette, so an RGB mask there is the palette error.
    expected = names(label) + (": RGB colour mask" if name == "folder" else ": got an RGB label map")
    with pytest.raises(DataError, match=expected):
        ds[0]


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_image_modes_become_rgb(tmp_path, name, mode):
    split, image, _ = _build(name, tmp_path)
    write_image(image.with_suffix(".png"), mode=mode).replace(image)
    ds = build_dataset(name, tmp_path, split)
    assert Image.open(image).mode.startswith(mode[0])
    pixels, _ = check_sample(ds)
    if mode == "I;16":
        assert pixels[:, 0, 0].tolist() == [255, 255, 255]
        assert pixels[:, 0, 1].tolist() == [0, 0, 0]
    if mode == "L":
        assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])


@pytest.mark.parametrize("name", LAYOUTS)
def test_empty_split(tmp_path, name):
    split, image, label = _build(name, tmp_path)
    folder = image.parent.parent if name == "cityscapes" else image.parent
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    if name == "voc":
        (tmp_path / "train_aug.txt").write_text("\n")
        folder = tmp_path / "train_aug.txt"
    with pytest.raises(DataError, match=names(folder) + ": no images found"):
        build_dataset(name, tmp_path, split)


@pytest.mark.parametrize("name", LAYOUTS)
def test_missing_split_folder(tmp_path, name):
    split, image, _ = _build(name, tmp_path)
    missing = {
        "camvid": ("test", tmp_path / "test"),
        "camvid32": ("test", tmp_path / "test"),
        "cityscapes": ("test", tmp_path / "leftImg8bit" / "test"),
        "voc": (None, tmp_path / "missing"),
        "ade20k": ("validation", tmp_path / "images" / "validation"),
        "folder": (None, tmp_path / "missing" / "images"),
    }[name]
    split, folder = missing
    root = tmp_path / "missing" if name in ("voc", "folder") else tmp_path
    if name == "folder":
        (root / "masks").mkdir(parents=True)
        (root / "classes.yaml").write_text("[a]\n")
    with pytest.raises(DataError, match=names(folder) + ".*not found"):
        build_dataset(name, root, split or "train_aug")


def test_cityscapes_missing_gtfine(tmp_path):
    cityscapes_tree(tmp_path, "val")
    (tmp_path / "gtFine" / "val").rename(tmp_path / "gtFine" / "other")
    with pytest.raises(DataError, match=names(tmp_path / "gtFine" / "val") + ".*not found"):
        Cityscapes(tmp_path, "val")


def test_ade20k_missing_annotations(tmp_path):
    ade_tree(tmp_path)
    (tmp_path / "annotations" / "training").rename(tmp_path / "annotations" / "x")
    with pytest.raises(DataError, match=names(tmp_path / "annotations" / "training") + ".*not found"):
        ADE20K(tmp_path, "train")


# --------------------------------------------------------------------------- real data

def test_real_camvid(camvid_root):
    train = build_dataset("camvid", camvid_root, "train")
    assert len(train) == 367
    assert len(CamVid(camvid_root, "val")) == 101
    image, label = check_sample(train, 0, size=(360, 480))
    values = set(torch.unique(label).tolist())
    assert values <= set(range(11)) | {255}


def test_folder_example_script_maps_camvid_to_three_classes(tiny_camvid, tmp_path):
    """scripts/make_folder_example.py (the README's own-data walk-through): road and car keep their
    pixels, everything else is background, void is ignored; the result loads as a `folder` dataset."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_folder_example.py"
    out = tmp_path / "mydata"
    done = subprocess.run([sys.executable, str(script), str(tiny_camvid), str(out), "--train", "4", "--val", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dataset = build_dataset("folder", out, "train")
    assert list(dataset.classes) == ["background", "road", "car"] and len(dataset) == 4
    for index, stem in enumerate(sorted(p.stem for p in (tiny_camvid / "train").glob("*.png"))[:4]):
        camvid = np.asarray(Image.open(tiny_camvid / "trainannot" / f"{stem}.png")).astype(np.int64)
        expected = np.where(camvid == 3, 1, np.where(camvid == 8, 2, 0))
        expected[camvid == 11] = 255
        _, label = dataset[index]
        assert np.array_equal(np.asarray(label), expected), stem
    again = subprocess.run([sys.executable, str(script), str(tiny_camvid), str(out)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr  # never writes into an existing folder


@pytest.mark.parametrize("split", ["+", "train+", "+val", "train++val", "train+ "])
def test_a_joined_split_with_an_empty_part_is_refused(tmp_path, split):
    """``train+val`` joins splits; an empty part is a one-line error naming the value, not an IndexError
    nor a part silently dropped."""
    from hyperseg.errors import HypersegError

    camvid_tree(tmp_path, split="train")
    camvid_tree(tmp_path, split="val")
    assert len(build_dataset("camvid", tmp_path, "train+val")) == 4  # 2 + 2 pairs
    with pytest.raises(HypersegError) as err:
        build_dataset("camvid", tmp_path, split)
    text = str(err.value)
    assert f"split={split!r}" in text and "empty split name" in text and "\n" not in text
