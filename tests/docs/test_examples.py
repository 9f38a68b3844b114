"""Examples that cannot go stale: every bash and python block of the README and of the docs site runs
here, or carries the reason it cannot (an HTML comment next to it: ``<!-- not-run: why -->``).
``<!-- needs: camvid -->`` runs a block only where the real CamVid data is present (``HYPERSEG_SHARED``)
and skips saying so; ``<!-- slow: why -->`` runs it only with ``-m slow`` (exports, benchmarks, a full
evaluation). Markers sit on the lines right above the fence (several allowed) or on the line right after it."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("HYPERSEG_SHARED", REPO.parent / "shared"))
SAMPLES = sorted((REPO / "src" / "hyperseg" / "assets").glob("*.png"))
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*(not-run|needs|slow):\s*(.+?)\s*-->\s*$")


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
        above = i - 1  # the markers right above the fence, up to the first line that is not one
        while above >= 0 and _MARK.match(lines[above]):
            above -= 1
        marks = {m.group(1): m.group(2) for k in (*range(above + 1, i), end + 1)
                 if k < len(lines) and (m := _MARK.match(lines[k]))}
        found.append({"lang": start.group(1), "code": "\n".join(lines[i + 1 : end]), "line": i + 1,
                      "marks": marks})
        i = end + 1
    return found


def _examples():
    for path in FILES:
        for block in blocks(path):
            if block["lang"] in ("bash", "python"):
                slow = [pytest.mark.slow] if "slow" in block["marks"] else []
                yield pytest.param(block, id=f"{path.name}:{block['line']}", marks=slow)


def test_the_collector_finds_the_blocks_of_every_page():
    counted = [p.id.split(":")[0] for p in _examples()]
    # a fence regex that matched nothing would let every test below pass
    assert counted.count("README.md") >= 4 and counted.count("deployment.md") >= 5 and len(counted) >= 30


def test_marker_lines_are_read_before_and_after_a_fence(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- needs: camvid -->\n<!-- slow: a full evaluation -->\n```bash\necho hi\n```\n"
                    "\n```python\nprint(1)\n```\n<!-- not-run: needs your own data -->\n\n```bash\nls\n```\n")
    assert [b["marks"] for b in blocks(page)] == [
        {"needs": "camvid", "slow": "a full evaluation"}, {"not-run": "needs your own data"}, {}]


def test_every_marker_is_one_the_collector_knows():
    for path in FILES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("<!--") and any(k in line for k in ("run", "needs", "slow")):
                assert _MARK.match(line), f"{path.name}:{n}: unknown example marker {line!r}"


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
    marks = block["marks"]
    if "not-run" in marks:
        assert len(marks["not-run"]) > 10, "a not-run block needs a reason"
        pytest.skip(f"not run here: {marks['not-run']}")
    assert marks.get("needs", "camvid") == "camvid", f"line {block['line']}: unknown need {marks['needs']!r}"
    if "needs" in marks and not (workspace / "data" / "camvid").exists():
        pytest.skip(f"needs CamVid at {SHARED / 'data' / 'camvid'} (set HYPERSEG_SHARED)")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if block["lang"] == "python":
        cmd = [sys.executable, "-c", block["code"]]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", block["code"]]
    done = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"line {block['line']}:\n{done.stderr[-3000:]}"
