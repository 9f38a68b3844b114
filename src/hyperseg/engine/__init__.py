"""The old import path of the training, evaluation and prediction modules, kept as aliases.

``hyperseg.engine.<name>`` is the module that now holds the code (``hyperseg.engine.predict`` is
:mod:`hyperseg.infer.predictor`, ``hyperseg.engine.trainer`` is :mod:`hyperseg.train.trainer`), and
the names this package exported stay importable from it.
"""
from .._alias import alias

_MODULES = {
    "allocator": "hyperseg.train.allocator",
    "bench": "hyperseg.bench.harness",
    "config": "hyperseg.train.config",
    "distill": "hyperseg.train.distill",
    "distributed": "hyperseg.process.distributed",
    "evaluate": "hyperseg.train.evaluate",
    "inference": "hyperseg.runtime.inference",
    "interrupt": "hyperseg.train.interrupt",
    "losses": "hyperseg.train.losses",
    "metrics": "hyperseg.train.metrics",
    "plots": "hyperseg.train.plots",
    "predict": "hyperseg.infer.predictor",
    "predict_job": "hyperseg.infer.jobs",
    "predict_manifest": "hyperseg.infer.manifest",
    "runlock": "hyperseg.process.runlock",
    "trainer": "hyperseg.train.trainer",
}
for _name, _target in _MODULES.items():
    globals()[_name] = alias(f"{__name__}.{_name}", _target)

# the names this package exported. The attribute `evaluate` is the function, replacing the module
# bound above, because `from hyperseg.engine import evaluate` names the function that callers run;
# `import hyperseg.engine.evaluate` still finds the module, since imports look in sys.modules
from ..infer.predictor import Predictor  # noqa: E402
from ..train.config import RunConfig, load_config  # noqa: E402
from ..train.evaluate import evaluate  # noqa: E402
from ..train.losses import BootstrappedCrossEntropy, build_loss  # noqa: E402
from ..train.metrics import ConfusionMatrix  # noqa: E402
from ..train.trainer import train  # noqa: E402

__all__ = ["RunConfig", "load_config", "train", "evaluate", "Predictor", "ConfusionMatrix",
           "BootstrappedCrossEntropy", "build_loss"]
