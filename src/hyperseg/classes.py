"""Class names and colour palettes of the datasets the paper's models were trained on."""
from __future__ import annotations

__all__ = [
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE",
    "CAMVID_CLASSES", "CAMVID_PALETTE",
    "VOC_CLASSES", "VOC_PALETTE",
    "IMAGENET_MEAN", "IMAGENET_STD",
    "default_palette",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# The 11 SegNet CamVid classes; the authors' checkpoints add "void" as a 12th output.
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign/symbol", "fence", "car",
    "pedestrian", "bicyclist",
)
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def _voc_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    # The standard VOC bit-interleaved colour map.
    colours = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


VOC_PALETTE = _voc_palette(len(VOC_CLASSES))


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A distinct colour per class for datasets that bring none (the VOC colour map, extended)."""
    return [tuple(c) for c in _voc_palette(num_classes + 1)[1:]]
