"""hyperseg.bench.child: a measurement in its own process, its JSON result, and its failure in one line."""
import sys

import pytest

from hyperseg.bench import ChildFailed, alternating, run_child, run_command
from hyperseg.errors import HypersegError


def test_the_result_is_the_last_json_line_the_child_printed():
    code = "print('a library talking'); print('{\"rows\": [1, 2]}'); print('{\"ms\": 4.5}')"
    assert run_child([sys.executable, "-c", code]) == {"ms": 4.5}


def test_the_child_side_sends_what_the_parent_reads():
    code = "from hyperseg.bench import send_result; send_result([{'candidate': 'x', 'ms': 1.0}])"
    assert run_child([sys.executable, "-c", code]) == [{"candidate": "x", "ms": 1.0}]


def test_a_failing_child_is_one_line_with_the_end_of_its_stderr():
    code = ("import sys; sys.stderr.write('Traceback (most recent call last):\\n  File x\\n' + 'noise\\n' * 50 + "
            "'RuntimeError: the compiler crashed\\n'); sys.exit(3)")
    with pytest.raises(ChildFailed) as info:
        run_child([sys.executable, "-c", code], label="the openvino:int8 child")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, HypersegError)
    assert message.startswith("the openvino:int8 child ended with status 3: ")
    assert message.endswith("RuntimeError: the compiler crashed")
    assert info.value.returncode == 3 and info.value.stderr.count("noise") == 50


def test_a_child_without_a_result_says_so():
    with pytest.raises(ChildFailed, match=r"^probe printed no JSON result; stderr: only a warning$"):
        run_child([sys.executable, "-c", "import sys; print('done'); sys.stderr.write('only a warning\\n')"],
                  label="probe")


def test_a_command_that_cannot_start_is_one_line():
    with pytest.raises(ChildFailed, match=r"^no-such-command-here: cannot start it"):
        run_command(["no-such-command-here"])


def test_a_child_past_its_time_is_one_line():
    with pytest.raises(ChildFailed, match=r"^slow: no result within 0.5 s"):
        run_child([sys.executable, "-c", "import time; time.sleep(30)"], label="slow", timeout=0.5)


def test_alternating_calls_every_run_once_per_round_in_alternating_order():
    calls, heard = [], []
    runs = {name: (lambda name=name: calls.append(name) or name.upper()) for name in "abc"}
    results, seconds = alternating(runs, 3, progress=lambda r, name, result: heard.append((r, name, result)))
    assert calls == list("abc") + list("cba") + list("abc")
    assert results == {"a": ["A"] * 3, "b": ["B"] * 3, "c": ["C"] * 3}
    assert {name: len(times) for name, times in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert heard[:4] == [(1, "a", "A"), (1, "b", "B"), (1, "c", "C"), (2, "c", "C")]
