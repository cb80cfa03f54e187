"""Importing TensorFlow without its start-up noise in a lesson's output.

On import and on its first operation TensorFlow's C++ core prints lines such as "oneDNN custom
operations are on", "Could not find cuda drivers" and "failed call to cuInit". Some are
written before its logging is configured, so no environment variable hides them, and
ipykernel shows whatever C code writes to stderr. So the import runs with stderr captured in
a file; afterwards, every line that is not such known noise is printed after all.

If TensorFlow ends the process while importing (a CPU it was not built for, for example),
nothing can be printed then: the file stays behind, and the next import prints it first.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

NOISE = re.compile(
    r"oneDNN custom operations|cuda|cuInit|TF-TRT|cpu_feature_guard|rebuild TensorFlow|"
    r"To enable the following instructions|absl::InitializeLog|Unable to register cu"
)


def _crash_log() -> Path:
    return Path(tempfile.gettempdir()) / f"lesionlib-tensorflow-import-{getpass.getuser()}.log"


def import_tensorflow() -> ModuleType:
    """``tensorflow``, imported (once) with its C++ start-up noise left out of the output."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    log = _crash_log()
    if log.exists():  # the last import ended the process: say what it printed
        print("The last import of TensorFlow ended the program. It printed:\n"
              + log.read_text(errors="replace"), file=sys.stderr)
        log.unlink()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later INFO and WARNING lines too
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with log.open("w+b") as capture:
            os.dup2(capture.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()  # the GPU probe prints the CUDA lines
            finally:
                os.dup2(saved, 2)
                capture.seek(0)
                printed = capture.read().decode(errors="replace")
    finally:
        os.close(saved)
        log.unlink(missing_ok=True)
    kept = [line for line in printed.splitlines() if line.strip() and not NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    return tf
