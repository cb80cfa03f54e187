"""Importing TensorFlow without its start-up noise in a lesson's output.

On import and on its first operation TensorFlow's C++ core prints lines such as "oneDNN custom
operations are on", "Could not find cuda drivers" and "failed call to cuInit". Some are
written before its logging is configured, so no environment variable hides them. They would
appear in every notebook (ipykernel shows what C code writes to stderr), so the import and
the first operation run with stderr pointed at /dev/null. Python errors are still raised.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType


def import_tensorflow() -> ModuleType:
    """``tensorflow``, imported (once) with its C++ start-up lines silenced."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later INFO and WARNING lines too
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()  # probes for GPUs: the CUDA lines come here
            tf.zeros([1]).numpy()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf
