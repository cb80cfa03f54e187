"""How long each notebook takes a student: every notebook, in order, under the workshop profile
on real data, exercises' solutions included, from a cold start.

    .venv/bin/python benchmarks/notebooks.py [--shared ../shared] [--no-external] [--home DIR]

By default it makes a workshop pack from ``../shared/`` (HAM10000, the CC0 ISIC sample as
notebook 06's second collection, the shared MobileNet V2 and its Keras weights for
fine-tuning), unpacks it into a fresh
``LESIONLIB_HOME`` and runs the notebooks there with nothing else set: what a workshop
laptop does after ``lesionlib unpack``. Each notebook runs in its own kernel, as
``make course`` runs it, so the minutes include starting Python and TensorFlow. Prints a
Markdown table of minutes per notebook (the README's notebook map shows them) and the
machine it ran on; asserts nothing (time is measured here, never in the tests).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
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
        started = time.perf_counter()
        NotebookClient(notebook, timeout=7200, resources={"metadata": {"path": str(path.parent)}}).execute()
        minutes = (time.perf_counter() - started) / 60
        rows.append({"notebook": path.stem, "minutes": round(minutes, 1)})
        print(f"{path.stem}: {minutes:.1f} min", file=sys.stderr, flush=True)
    rows.append({"notebook": "all", "minutes": round(sum(r["minutes"] for r in rows), 1)})
    print(markdown_table(pd.DataFrame(rows).set_index("notebook"), lambda column, value: f"{value:.1f}"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kilobytes on Linux
    print(f"\nWorkshop profile, cold caches, exercises included; largest kernel: {peak:.1f} GB of "
          f"memory; {describe(import_tensorflow())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
