import importlib.util
import sys
from pathlib import Path

import pytest
import torch

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
