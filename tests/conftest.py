import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("HYPERSEG_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
CAMVID = SHARED / "data" / "camvid"


@pytest.fixture(autouse=True, scope="session")
def _converted_model_cache(tmp_path_factory):
    """Models converted for onnxruntime/OpenVINO go to a temporary cache, not the user's ~/.cache."""
    import os

    old = os.environ.get("HYPERSEG_CACHE")
    os.environ["HYPERSEG_CACHE"] = str(tmp_path_factory.mktemp("hyperseg-cache"))
    yield
    if old is None:
        os.environ.pop("HYPERSEG_CACHE", None)
    else:
        os.environ["HYPERSEG_CACHE"] = old


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fill():
    """The authors' equivalence fixtures (../shared/reference/fill.py)."""
    path = REFERENCE / "fill.py"
    if not path.is_file():
        pytest.skip(f"equivalence fixtures not found at {REFERENCE} (set HYPERSEG_SHARED to the shared/ folder)")
    spec = importlib.util.spec_from_file_location("hyperseg_reference_fill", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def camvid_root():
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid data not found at {CAMVID} (set HYPERSEG_SHARED to the shared/ folder)")
    return CAMVID


@pytest.fixture(scope="session")
def tiny_camvid(tmp_path_factory):
    """A CamVid-layout folder of 6 train and 2 val images, 96x64, with blocky random labels."""
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for i in range(n):
            label = rng.integers(0, 12, size=(4, 6)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
            image = np.stack([label * 20, 255 - label * 20, (label * 7) % 255], -1).astype(np.uint8)
            image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / f"{i:03d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{i:03d}.png")
    return root


class FileOpens:
    """The files this process opens while :meth:`watch` is on, from the interpreter's "open" audit
    event: builtins.open, io.open and os.open raise it, and so does everything built on them
    (tempfile, Pillow, torch.load, Starlette's spooled uploads), whatever module imported them how."""

    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def __init__(self) -> None:
        self.on = False
        self.events: list = []
        sys.addaudithook(self._hook)  # a hook cannot be removed: it records only while `on`

    def _hook(self, event: str, args: tuple) -> None:
        if self.on and event == "open":
            self.events.append(args[:3])  # (path or fd, mode string or None, os flags)

    @contextlib.contextmanager
    def watch(self):
        self.events = []
        self.on = True
        try:
            yield self
        finally:
            self.on = False

    def paths(self) -> list:
        return [path for path, _, _ in self.events]

    def writes(self) -> list:
        """(path, mode, flags) of the opens that may write, create or truncate a file."""
        return [(path, mode, flags) for path, mode, flags in self.events
                if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & self._WRITE_FLAGS]


@pytest.fixture(scope="session")
def file_opens() -> FileOpens:
    return FileOpens()


def system_chromium() -> str:
    """Debian's Chromium (or another installed Chrome), which Playwright drives; skips without one."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium found: install Debian's browser (apt-get install chromium) to run the browser tests")
