"""How long each notebook takes a student: every notebook, in order, under the workshop profile
on real data, exercises' solutions included, from a cold start.

    .venv/bin/python benchmarks/notebooks.py [--shared ../shared] [--no-external] [--home DIR]

By default it makes a workshop pack from ``../shared/`` (HAM10000, the CC0 ISIC sample as
notebook 06's second collection, the shared MobileNet V2 and its Keras weights for
fine-tuning), unpacks it into a fresh
``LESIONLIB_HOME`` and runs the notebooks there with nothing else set: what a workshop
laptop does after ``lesionlib unpack``. Each notebook runs in its own kernel, as
``make course`` runs it, so the minutes include starting Python and TensorFlow. Prints a
Markdown table of minutes and memory per notebook (the README's notebook map shows them) and
the machine it ran on; asserts nothing (time is measured here, never in the tests).

Memory is the most that notebook's kernel and the processes it started held at once: what
Binder's limit counts. The kernel's own resident peak (Linux ``VmHWM``) is read after each
cell; every 0.2 s the kernel's resident memory is added to that of the processes it has
running then (a ``lesionlib predict`` of notebook 05, say), each counted without its
file-mapped pages (``RssFile``): those are TensorFlow's libraries, the very files the kernel
has mapped, held once by the system however many processes map them. Processes that run one
after the other are not added up. About 0.45 GB of the peak are those libraries (the kernel's
``RssFile``, shown beside it), which every kernel shares. ``getrusage(RUSAGE_CHILDREN)``
would not do: it keeps the largest child ever, and a kernel forked from a large process
inherits its parent's peak across ``exec``. The cells that raised each kernel's peak
most are listed on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pandas as pd
from machine import describe
from nbclient import NotebookClient

from lesionlib import packs
from lesionlib.modelcard import markdown_table
from lesionlib.settings import load_settings
from lesionlib.tfutil import import_tensorflow

ROOT = Path(__file__).resolve().parent.parent
MOBILENET = "mobilenet_v2_100_224_feature_vector"
KERAS_WEIGHTS = "mobilenet_v2_1.0_224_float_no_top.weights.h5"  # for notebook 03's fine-tuning
SAMPLE_SECONDS = 0.2


def _status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` field of /proc/<pid>/status; 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(field_name + ":")), 0)


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, their children and so on (Linux 3.5+)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    children = []
    for task in tasks:
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children + [d for child in children for d in _descendants(child)]


@dataclass
class KernelPeak:
    """The most memory, in kB, that one notebook's kernel and the processes it started held at
    once: the kernel's own high-water mark after each cell, and every :data:`SAMPLE_SECONDS`
    the kernel's resident memory plus its running children's peaks without their file-mapped
    pages (a child that lives less than that may be missed)."""

    client: NotebookClient
    kb: int = 0
    file_kb: int = 0  # the largest share of the kernel's memory mapped from files (libraries)
    children_kb: dict[int, int] = field(default_factory=dict)  # each child's own peak, files left out
    raised_by: list[tuple[int, int, str]] = field(default_factory=list)  # (kB added, cell, first line)
    _reported_kb: int = field(default=0, init=False)  # the peak when the last cell ended

    def _kernel_pid(self) -> int | None:
        provisioner = getattr(self.client.km, "provisioner", None)
        return getattr(provisioner, "pid", None)

    def _sample(self) -> None:
        """The kernel's memory now, plus that of the children running now."""
        pid = self._kernel_pid()
        if not pid:
            return
        running = 0
        for child in _descendants(pid):
            own = max(_status_kb(child, "VmHWM") - _status_kb(child, "RssFile"), 0)
            self.children_kb[child] = max(self.children_kb.get(child, 0), own)
            running += self.children_kb[child]
        self.kb = max(self.kb, _status_kb(pid, "VmRSS") + running)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Sample in the background while the block runs."""
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                self._sample()

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def after_cell(self, cell, cell_index: int, **_) -> None:
        pid = self._kernel_pid()
        self._sample()
        self.kb = max(self.kb, _status_kb(pid, "VmHWM"))
        self.file_kb = max(self.file_kb, _status_kb(pid, "RssFile"))
        if self.kb > self._reported_kb:
            first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
            self.raised_by.append((self.kb - self._reported_kb, cell_index, first_line[:70]))
            self._reported_kb = self.kb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--no-external", action="store_true", help="no second collection for notebook 06")
    parser.add_argument("--home", type=Path, help="where to run (default: a new temporary folder)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="lesion-course-timing-"))
    home.mkdir(parents=True, exist_ok=True)
    data = args.shared / "data"
    instructor = {"LESIONLIB_PROFILE": "workshop", "LESIONLIB_HOME": str(home / "instructor"),
                  "LESIONLIB_DATA_SOURCE": str(data / "ham10000"),
                  "LESIONLIB_EXTERNAL_SOURCE": "none" if args.no_external else str(data / "isic-cc0-sample"),
                  "LESIONLIB_BACKBONE": str(args.shared / "weights" / "tfhub" / MOBILENET),
                  "LESIONLIB_KERAS_WEIGHTS": str(args.shared / "weights" / "keras" / KERAS_WEIGHTS)}
    started = time.perf_counter()
    packs.make(load_settings(instructor), home / "workshop.zip", progress=False)
    packs.unpack(home / "workshop.zip", home / "student")
    print(f"pack made and unpacked in {time.perf_counter() - started:.0f} s; running in {home / 'student'}",
          file=sys.stderr)

    for name in [n for n in os.environ if n.startswith("LESIONLIB_")]:
        del os.environ[name]  # the student sets nothing: the unpacked pack decides
    os.environ["LESIONLIB_HOME"] = str(home / "student")
    rows = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(notebook, timeout=7200, resources={"metadata": {"path": str(path.parent)}})
        peak = KernelPeak(client)
        client.on_cell_executed = peak.after_cell
        started = time.perf_counter()
        with peak.sampling():
            client.execute()
        minutes = (time.perf_counter() - started) / 60
        rows.append({"notebook": path.stem, "minutes": round(minutes, 1), "peak GB": round(peak.kb / 2**20, 2),
                     "of it files GB": round(peak.file_kb / 2**20, 2)})
        cells = "; ".join(f"cell {i} +{kb / 2**20:.2f} GB ({line})" for kb, i, line in sorted(peak.raised_by)[:-4:-1])
        print(f"{path.stem}: {minutes:.1f} min, peak {peak.kb / 2**20:.2f} GB; raised most by {cells}",
              file=sys.stderr, flush=True)
    rows.append({"notebook": "all", "minutes": round(sum(r["minutes"] for r in rows), 1),
                 "peak GB": max(r["peak GB"] for r in rows), "of it files GB": max(r["of it files GB"] for r in rows)})
    print(markdown_table(pd.DataFrame(rows).set_index("notebook"),
                         lambda column, value: f"{value:.1f}" if column == "minutes" else f"{value:.2f}"))
    print(f"\nWorkshop profile, cold caches, exercises included; peak GB: the most memory each "
          f"notebook's kernel and the processes it started held at once (their shared libraries "
          f"counted once); of it files GB: the most of the kernel's memory "
          f"mapped from files (libraries: shared between kernels, and the first to go when memory is "
          f"short); load average {os.getloadavg()[0]:.1f} at the "
          f"end; {describe(import_tensorflow())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
