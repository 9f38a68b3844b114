"""Examples that cannot go stale: every bash and python block of the README runs here, or carries
the reason it cannot (an HTML comment next to it: ``<!-- not-run: why -->``). ``<!-- needs: camvid -->``
runs a block only where the real CamVid data is present (``HYPERSEG_SHARED``), and skips saying so."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HYPERSEG_SHARED", REPO.parent / "shared"))
SAMPLES = sorted((REPO / "src" / "hyperseg" / "assets").glob("*.png"))
FILES = [REPO / "README.md"]
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*(not-run|needs):\s*(.+?)\s*-->\s*$")


def blocks(path: Path) -> list[dict]:
    """The fenced blocks of a Markdown file: language, code, line, and the marker before or after."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        start = _FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marks = [m for k in (i - 1, i - 2, end + 1) if 0 <= k < len(lines) and (m := _MARK.match(lines[k]))]
        found.append({"lang": start.group(1), "code": "\n".join(lines[i + 1 : end]), "line": i + 1,
                      "mark": (marks[0].group(1), marks[0].group(2)) if marks else None})
        i = end + 1
    return found


def _examples():
    for path in FILES:
        for block in blocks(path):
            if block["lang"] in ("bash", "python"):
                yield pytest.param(block, id=f"{path.name}:{block['line']}")


def test_the_readme_has_its_blocks():
    counted = list(_examples())
    assert len(counted) >= 5  # the collector finds them (a fence regex that matched nothing would pass below)


@pytest.fixture
def workspace(tmp_path):
    """A folder like a user's: photos/, frames/, street.jpg, and data/camvid when it exists."""
    for folder in ("photos", "frames"):
        (tmp_path / folder).mkdir()
        for sample in SAMPLES:
            shutil.copy(sample, tmp_path / folder / sample.name)
    from PIL import Image

    Image.open(SAMPLES[0]).convert("RGB").save(tmp_path / "street.jpg")
    if (SHARED / "data" / "camvid" / "val").is_dir():
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "camvid").symlink_to(SHARED / "data" / "camvid")
    return tmp_path


@pytest.mark.parametrize("block", list(_examples()))
def test_example_runs_or_says_why_not(block, workspace):
    mark = block["mark"]
    if mark and mark[0] == "not-run":
        assert len(mark[1]) > 10, "a not-run block needs a reason"
        pytest.skip(f"not run here: {mark[1]}")
    if mark and mark[0] == "needs" and mark[1] == "camvid" and not (workspace / "data" / "camvid").exists():
        pytest.skip(f"needs CamVid at {SHARED / 'data' / 'camvid'} (set HYPERSEG_SHARED)")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if block["lang"] == "python":
        cmd = [sys.executable, "-c", block["code"]]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", block["code"]]
    done = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"line {block['line']}:\n{done.stderr[-3000:]}"
