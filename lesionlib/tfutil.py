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

import ctypes
import gc
import getpass
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .fsutil import process_alive

NOISE = re.compile(
    r"oneDNN custom operations|cuda|cuInit|TF-TRT|cpu_feature_guard|rebuild TensorFlow|"
    r"To enable the following instructions|absl::InitializeLog|Unable to register cu|"
    r"Created TensorFlow Lite XNNPACK delegate|fully_quantize: "
)


def _crash_log(pid: int | str = "*") -> Path:
    """The capture file of the import in process ``pid`` (one per process: kernels and
    commands often import TensorFlow at the same moment)."""
    return Path(tempfile.gettempdir()) / f"lesionlib-tensorflow-import-{getpass.getuser()}-{pid}.log"


def _crashed_imports() -> list[Path]:
    """Capture files left by imports whose process has ended: those imports killed it."""
    found = []
    for path in _crash_log().parent.glob(_crash_log().name):
        pid = path.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            found.append(path)
    return found


@contextmanager
def native_output_filtered(log: Path | None = None) -> Iterator[None]:
    """Run a block with file descriptors 1 and 2 (where C++ code writes) captured; afterwards
    print every captured line that is not known noise to stderr. ``log`` keeps the capture on
    disk until the block ends, so a crash inside it leaves the lines behind."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    if log is None:
        handle, name = tempfile.mkstemp(prefix="lesionlib-output-", suffix=".log")
        os.close(handle)
        log = Path(name)
    printed = ""
    try:
        with log.open("w+b") as capture:
            for fd in saved:
                os.dup2(capture.fileno(), fd)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, original in saved.items():
                    os.dup2(original, fd)
                capture.seek(0)
                printed = capture.read().decode(errors="replace")
    finally:
        for original in saved.values():
            os.close(original)
        log.unlink(missing_ok=True)
        # Printed even when the block failed: then the native lines may say why.
        kept = [line for line in printed.splitlines() if line.strip() and not NOISE.search(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


def import_tensorflow() -> ModuleType:
    """``tensorflow``, imported (once) with its C++ start-up noise left out of the output."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    for crashed in _crashed_imports():  # an earlier import ended its process: say what it printed
        print("An earlier import of TensorFlow ended its program. It printed:\n"
              + crashed.read_text(errors="replace"), file=sys.stderr)
        crashed.unlink(missing_ok=True)
    log = _crash_log(os.getpid())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later INFO and WARNING lines too
    with native_output_filtered(log):
        import tensorflow as tf

        tf.config.list_physical_devices()  # the GPU probe prints the CUDA lines
    tf.get_logger().setLevel("WARNING")  # not "INFO: Assets written to ..." after every tf.saved_model.save
    return tf


def release_memory() -> None:
    """Give back to the system the memory Python and TensorFlow have freed. A conversion or a
    SavedModel load frees its graphs when done, but glibc's allocator keeps the freed pages
    (about 0.2 GB per TFLite conversion of MobileNet V2): conversion after conversion, a
    1-2 GB Binder session would fill up. Elsewhere than glibc (macOS, Windows) it only
    collects Python's garbage."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc's, among the symbols of this process
    except (AttributeError, OSError, TypeError):
        return
    trim(0)


@contextmanager
def converting() -> Iterator[None]:
    """Run a TFLite conversion (``converter.convert()``) with the converter's log lines kept
    out of the notebook, and its working memory given back afterwards (:func:`release_memory`)."""
    try:
        with native_output_filtered():
            yield
    finally:
        release_memory()
