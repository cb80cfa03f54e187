"""What the benchmarks print about the machine they ran on, and what a run cost it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from lesionlib.backbones import cpu_name


def describe(tf) -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_name()}, "
            f"TensorFlow {tf.__version__}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was (2 cores: above 2 is busy)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def peak_memory_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB; NaN where /proc is not there.

    Not ``ru_maxrss``: that one also counts children and, on Linux, survives ``exec``."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    kib = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmHWM:")), None)
    return float("nan") if kib is None else kib / 1024
