"""Every script in benchmarks/ and experiments/ starts and answers --help (their measurements are
too long for a test; tests/bench/test_pareto.py runs pareto.py on a tiny image)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "experiments").glob("*.py")])
# these import torch or the package before parsing their arguments (a model class defined at the
# top, a default read from torch), which takes seconds
SLOW = {"pareto.py", "ddrnet.py", "dpwconv.py", "ablation.py"}


def test_the_folders_hold_the_scripts_the_readmes_list():
    for folder in ("benchmarks", "experiments"):
        readme = (REPO / folder / "README.md").read_text()
        names = {p.name for p in (REPO / folder).glob("*.py")}
        assert names and all(f"`{name}`" in readme for name in names), folder


@pytest.mark.parametrize("script", [pytest.param(s, id=f"{s.parent.name}/{s.name}",
                                                 marks=[pytest.mark.slow] if s.name in SLOW else [])
                                    for s in SCRIPTS])
def test_each_script_answers_help(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ")
