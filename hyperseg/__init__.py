"""hyperseg: HyperSeg (CVPR 2021) patch-wise hypernetworks for real-time semantic segmentation."""
from .model import HyperSeg, HyperSegConfig, create_model, list_models, model_cfg

__version__ = "0.1.0"
__all__ = ["HyperSeg", "HyperSegConfig", "create_model", "list_models", "model_cfg"]
