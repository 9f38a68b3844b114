"""Measuring speed: the interleaved timing harness behind ``hyperseg bench``, and what the scripts in
``benchmarks/`` and ``experiments/`` share (a process per measurement, result files that say where
and how they were taken, a server under load) instead of each inventing its own."""
from .child import ChildFailed, alternating, run_child, run_command, send_result
from .harness import benchmark, format_report, interleaved, machine_info
from .load import load_phase
from .record import check_record_path, provenance, write_record
from .script import run_script
from .server import ServerProcess, free_port, rss_mb, served

__all__ = ["benchmark", "machine_info", "format_report", "interleaved",
           "ChildFailed", "run_command", "run_child", "send_result", "alternating",
           "provenance", "check_record_path", "write_record", "run_script",
           "ServerProcess", "served", "free_port", "rss_mb", "load_phase"]
