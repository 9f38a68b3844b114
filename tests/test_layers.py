"""The package's layers: a lower layer never imports a higher one, and infer/ and train/ never import each other.

Every module's imports are read with ``ast`` (absolute ``hyperseg.`` imports and relative ones, at
module level and inside functions) and checked against the table below, written here rather than
derived from the code, so that the code cannot drift and still pass.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Which area each module belongs to, by its longest matching prefix.
AREAS = {
    "hyperseg.errors": "base", "hyperseg.classes": "base", "hyperseg.safe_load": "base",
    "hyperseg.meta_schema": "base", "hyperseg.validate": "base", "hyperseg.device": "base", "hyperseg._alias": "base",
    "hyperseg.model": "model", "hyperseg.fuse": "model", "hyperseg.profile": "model",
    "hyperseg.data": "data",
    "hyperseg.process": "process",
    "hyperseg.hub": "hub",
    "hyperseg.runtime": "runtime",
    "hyperseg.infer": "infer",
    "hyperseg.train": "train",
    "hyperseg.bench": "bench",
    "hyperseg.serve": "serve",
    "hyperseg.cli": "cli", "hyperseg.__main__": "cli",
}

# What each area may import (itself included). Low to high: base, model/data, process, hub, runtime,
# infer and train (peers that never meet), bench, serve, cli.
MAY_IMPORT = {
    "base": {"base"},
    "model": {"base", "model"},
    "data": {"base", "data"},
    "process": {"base", "process"},
    "hub": {"base", "model", "hub"},
    "runtime": {"base", "model", "data", "hub", "runtime"},
    "infer": {"base", "model", "data", "process", "hub", "runtime", "infer"},
    "train": {"base", "model", "data", "process", "hub", "train"},
    "bench": {"base", "model", "data", "hub", "runtime", "infer", "bench"},
    "serve": {"base", "model", "data", "hub", "runtime", "infer", "serve"},
    "cli": {"base", "model", "data", "process", "hub", "runtime", "infer", "train", "bench", "serve", "cli"},
}

# train/ reaches models through hub/; these are the places where it runs a runtime as well.
TRAIN_RUNTIME_USES = {
    # `hyperseg eval` scores any runtime (an ONNX file in OpenVINO too), through the shared TTA and labels step
    ("hyperseg.train.evaluate", "hyperseg.runtime.inference"),
    # the distillation teacher runs on the torch runtime's prepared path (BatchNorm fused, bf16 autocast)
    ("hyperseg.train.distill", "hyperseg.runtime"),
}

# Old import paths, kept as aliases of the modules that now hold the code: nothing inside the package uses them.
ALIASES = {"hyperseg.engine", "hyperseg.pretrained", "hyperseg.checkpoint", "hyperseg.official",
           "hyperseg.runtime.resolve"}


def area(module: str) -> Optional[str]:
    best = max((prefix for prefix in AREAS if module == prefix or module.startswith(prefix + ".")), key=len,
               default=None)
    return AREAS[best] if best else None


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((SRC / "hyperseg").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_of(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every hyperseg module ``path`` imports, wherever the import statement is."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "hyperseg")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "hyperseg":
                continue
            if node.module is None:  # `from . import x`: x is a submodule or a name of the package
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    is_module = (SRC / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                        (SRC / Path(*sub.split("."))).is_dir()
                    yield node.lineno, sub if is_module else target
            else:
                yield node.lineno, target


def violations(modules: Iterator[tuple[str, Path]]) -> list[str]:
    found = []
    for module, path in modules:
        if module == "hyperseg" or module in ALIASES or any(module.startswith(a + ".") for a in ALIASES):
            continue  # the root is the facade over every layer; aliases point at the new modules
        mine = area(module)
        if mine is None:
            found.append(f"{module}: in no area of the table; add it to AREAS")
            continue
        for line, target in imports_of(module, path):
            if target == "hyperseg":
                continue  # the root package: `from .. import __version__`
            if target in ALIASES or any(target.startswith(a + ".") for a in ALIASES):
                found.append(f"{path.name}:{line}: {module} imports the old path {target}")
                continue
            theirs = area(target)
            if theirs is None:
                found.append(f"{path.name}:{line}: {module} imports {target}, in no area of the table")
            elif theirs not in MAY_IMPORT[mine] and not any(
                    module == who and (target == what or target.startswith(what + "."))
                    for who, what in TRAIN_RUNTIME_USES):
                found.append(f"{path.name}:{line}: {module} ({mine}) imports {target} ({theirs})")
    return found


def test_no_module_imports_a_layer_above_it_or_a_peer():
    assert violations(_modules()) == []


def test_the_trainer_reaches_models_through_the_hub():
    trainer = SRC / "hyperseg" / "train" / "trainer.py"
    targets = {target for _, target in imports_of("hyperseg.train.trainer", trainer)}
    assert "hyperseg.hub.resolve" in targets
    assert not {t for t in targets if area(t) in ("runtime", "infer")}


@pytest.mark.parametrize("source, expected", [
    # a function-level absolute import of a higher layer
    ("def f():\n    import hyperseg.cli\n", "imports hyperseg.cli (cli)"),
    # a relative import of a peer
    ("from ..infer.predictor import Predictor\n", "imports hyperseg.infer.predictor (infer)"),
    # `from .. import runtime` names a package above train's imports
    ("def f():\n    from .. import runtime\n", "imports hyperseg.runtime (runtime)"),
    # an old import path
    ("from ..pretrained import DEFAULT_MODEL\n", "imports the old path hyperseg.pretrained"),
])
def test_a_violation_is_caught(tmp_path, source, expected):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    found = violations(iter([("hyperseg.train.bad", bad)]))
    assert len(found) == 1 and expected in found[0], found


def test_old_import_paths_are_the_new_modules():
    import importlib

    import hyperseg.engine
    from hyperseg.engine.predict import Predictor
    from hyperseg.infer.predictor import Predictor as Now

    assert Predictor is Now and hyperseg.engine.Predictor is Now
    pairs = {"hyperseg.engine.trainer": "hyperseg.train.trainer", "hyperseg.engine.predict_job": "hyperseg.infer.jobs",
             "hyperseg.engine.runlock": "hyperseg.process.runlock", "hyperseg.engine.bench": "hyperseg.bench.harness",
             "hyperseg.engine.inference": "hyperseg.runtime.inference", "hyperseg.pretrained": "hyperseg.hub.weights",
             "hyperseg.checkpoint": "hyperseg.hub.checkpoint", "hyperseg.official": "hyperseg.hub.official",
             "hyperseg.runtime.resolve": "hyperseg.hub.resolve"}
    for old, new in pairs.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from hyperseg.engine import evaluate  # the function, as this package always exported it
    from hyperseg.train.evaluate import evaluate as now

    assert evaluate is now
