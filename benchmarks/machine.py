"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "unknown CPU")


def describe(tf) -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_name()}, "
            f"TensorFlow {tf.__version__}")
