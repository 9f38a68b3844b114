"""hyperseg: HyperSeg (CVPR 2021) patch-wise hypernetworks for real-time semantic segmentation."""
from .hub.checkpoint import load_model, save_model
from .fuse import fuse_bn
from .model import HyperSeg, HyperSegConfig, create_model, list_models, model_cfg
from .hub.official import from_official
from .hub.weights import Weights, get_weights, list_weights, register_weights
from .profile import profile

__version__ = "0.1.0"
__all__ = [
    "HyperSeg", "HyperSegConfig", "create_model", "list_models", "model_cfg",
    "from_official", "load_model", "save_model", "fuse_bn", "profile",
    "Weights", "get_weights", "list_weights", "register_weights",
    "Predictor", "load_runtime", "RuntimeOptions",
]


def __getattr__(name: str):
    # the inference layer loads on first use: `import hyperseg` for a model alone stays light
    if name == "Predictor":
        from .infer.predictor import Predictor

        return Predictor
    if name == "load_runtime":
        from .runtime import load_runtime

        return load_runtime
    if name == "RuntimeOptions":
        from .runtime.options import RuntimeOptions

        return RuntimeOptions
    raise AttributeError(f"module 'hyperseg' has no attribute {name!r}")
