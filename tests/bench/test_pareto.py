"""benchmarks/pareto.py: the JSON it writes (its schema, not its timings), on a tiny image."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pareto_json_schema(tmp_path):
    out = tmp_path / "pareto.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pareto.py"), "--runtimes", "torch:fp32",
                           "--only", "camvid,lite0_4lv@0.8,peer:lraspp_mobilenet_v3_large", "--rounds", "1",
                           "--warmup", "0", "--size", "64x96", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == 1 and result["size"] == [64, 96] and result["runtimes"] == ["torch:fp32"]
    assert {"cpu", "cores", "versions"} <= set(result["machine"])
    assert result["date"] and "--runtimes torch:fp32 --only camvid," in result["command"]
    assert result["candidates"] == ["camvid", "lite0_4lv@0.8", "peer:lraspp_mobilenet_v3_large"]
    rows = {r["candidate"]: r for r in result["rows"]}
    assert set(rows) == set(result["candidates"])
    for row in rows.values():
        assert row["runtime"] == "torch" and row["precision"] == "fp32"
        assert {"end_to_end_ms", "end_to_end_min_ms", "model_ms", "gmacs", "params_m", "seen_size"} <= set(row)
        assert row["end_to_end_ms"] > 0 and row["gmacs"] > 0
    assert rows["lite0_4lv@0.8"]["seen_size"] == [51, 77]  # the size the network sees: 0.8 of 64x96
    assert rows["camvid"]["seen_size"] == [64, 96] and rows["camvid"]["params_m"] > rows["lite0_4lv@0.8"]["params_m"]
    assert result["specs"]["lite0_4lv@0.8"]["options"]["decoder_kernel_sizes"] == [1, 1, 1, 3]
    fastest = result["fastest"]
    assert fastest["camvid"]["vs_reference"] == 1.0 and fastest["camvid"]["runtime"] == "torch fp32"
    assert "| camvid | hyperseg |" in done.stdout and "| peer:lraspp_mobilenet_v3_large | peer |" in done.stdout


def test_pareto_refuses_unknown_candidates():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pareto.py"), "--only", "lite9_7lv"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown candidate(s) ['lite9_7lv']" in done.stderr


def test_pareto_keeps_an_existing_json_unless_overwrite(tmp_path):
    out = tmp_path / "pareto.json"
    out.write_text("an earlier machine's numbers")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pareto.py"), "--only", "camvid", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and out.read_text() == "an earlier machine's numbers"
    assert done.stderr.strip().splitlines()[-1] == f"error: {out} already exists; choose another name or pass --overwrite"
