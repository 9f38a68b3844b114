"""hyperseg.bench.record: a result file says where, when and how it was measured, and never replaces
a file nobody asked it to."""
import json
import sys

import pytest

from hyperseg.bench import check_record_path, provenance, write_record
from hyperseg.errors import HypersegError, OutputExistsError


def test_a_record_carries_the_machine_the_date_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/pareto.py", "--only", "camvid,lite0_4lv@0.8", "--json", "a b.json"])
    path = write_record(tmp_path / "deep" / "pareto.json", {"schema": 1, "rows": [{"ms": 1.5}]})
    record = json.loads(path.read_text())
    assert record["rows"] == [{"ms": 1.5}] and record["schema"] == 1
    assert {"cpu", "cores", "versions"} <= set(record["machine"])
    assert len(record["date"]) == 10 and record["date"][4] == "-"
    assert record["command"] == "benchmarks/pareto.py --only camvid,lite0_4lv@0.8 --json 'a b.json'"
    assert [p.name for p in path.parent.iterdir()] == ["pareto.json"]  # no temporary file left beside it


def test_what_the_result_says_itself_wins(tmp_path):
    record = json.loads(write_record(tmp_path / "r.json", {"date": "2026-01-02", "rows": []}).read_text())
    assert record["date"] == "2026-01-02" and set(provenance()) <= set(record)


def test_an_existing_file_is_not_replaced_unless_asked(tmp_path):
    path = tmp_path / "notes.json"
    path.write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.json already exists; choose another name or pass --overwrite"):
        write_record(path, {"rows": []})
    assert path.read_text() == "mine"
    with pytest.raises(OutputExistsError):
        check_record_path(path)
    write_record(path, {"rows": []}, overwrite=True)
    assert json.loads(path.read_text())["rows"] == []


def test_a_folder_is_refused_and_no_path_passes(tmp_path):
    with pytest.raises(HypersegError, match="is a folder"):
        check_record_path(tmp_path, overwrite=True)
    check_record_path(None)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "pareto.json"
    write_record(path, {"rows": [1]})
    before = path.read_text()
    with pytest.raises(TypeError):
        write_record(path, {"rows": [object()]}, overwrite=True)  # not JSON: fails before anything is written
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["pareto.json"]
