"""Training, evaluation and prediction on top of the model library."""
from .config import RunConfig, load_config
from .evaluate import evaluate
from .losses import BootstrappedCrossEntropy, build_loss
from .metrics import ConfusionMatrix
from .predict import Predictor
from .trainer import train

__all__ = ["RunConfig", "load_config", "train", "evaluate", "Predictor", "ConfusionMatrix",
           "BootstrappedCrossEntropy", "build_loss"]
