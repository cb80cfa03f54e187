"""Keep the committed notebooks clean: run them, keep only the outputs that nbval checks.

    .venv/bin/python tools/refresh_notebooks.py

Every notebook is executed in order under the synthetic ``smoke`` profile in a temporary home.
Cells tagged ``nbval-check-output`` keep their outputs (nbval compares them on every test run,
so they must be the same for every data source); every other output and execution count is
removed, so a learner opens a fresh notebook and the diffs stay small.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHECKED = "nbval-check-output"


def clean(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if CHECKED not in cell.metadata.get("tags", []):  # nbval needs the count of checked cells
            cell.outputs = []
            cell.execution_count = None
    return notebook


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="refresh-notebooks-") as home:
        os.environ.update({"LESIONLIB_PROFILE": "smoke", "LESIONLIB_HOME": home,
                           "LESIONLIB_DATA_SOURCE": "", "LESIONLIB_BACKBONE": ""})
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
            notebook = nbformat.read(path, as_version=4)
            resources = {"metadata": {"path": str(path.parent)}}  # run where the notebook lives
            NotebookClient(notebook, timeout=1800, resources=resources).execute()
            nbformat.write(clean(notebook), path)
            print(f"refreshed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
