"""The package root is the one way in: every public name imports from it and is the object the
documentation describes."""
import subprocess
import sys

import numpy as np
import pytest

import hyperseg


def test_every_public_name_is_importable_from_the_root():
    from hyperseg.infer.predictor import Predictor
    from hyperseg.runtime import load_runtime

    assert hyperseg.Predictor is Predictor and hyperseg.load_runtime is load_runtime
    missing = [name for name in hyperseg.__all__ if not hasattr(hyperseg, name)]
    assert missing == []
    with pytest.raises(AttributeError, match="no attribute 'predictor'"):
        hyperseg.predictor  # noqa: B018


def test_the_root_predictor_segments_a_sample():
    image = np.zeros((64, 80, 3), np.uint8)
    labels = hyperseg.Predictor("camvid_fast", runtime="torch", precision="fp32")(image)
    assert labels.shape == (64, 80) and labels.dtype == np.uint8 and labels.max() < 11


def test_importing_the_root_does_not_load_the_inference_layer():
    code = "import sys, hyperseg; print('hyperseg.infer.predictor' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["False"], done.stderr[-2000:]
