"""The interleaved timing harness behind ``hyperseg bench`` and the scripts in ``benchmarks/``."""
from .harness import benchmark, format_report, interleaved, machine_info

__all__ = ["benchmark", "machine_info", "format_report", "interleaved"]
