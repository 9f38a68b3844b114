"""The HyperSeg network: backbone -> context head -> weight mappers -> decoder."""
from .config import HyperSegConfig
from .hyperseg import MIN_INPUT_SIZE, HyperSeg, create_model
from .registry import list_models, model_cfg

__all__ = ["HyperSeg", "HyperSegConfig", "create_model", "list_models", "model_cfg", "MIN_INPUT_SIZE"]
