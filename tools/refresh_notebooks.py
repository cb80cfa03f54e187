"""Keep the committed notebooks clean: run them, keep only the outputs that nbval checks.

    .venv/bin/python tools/refresh_notebooks.py

Every notebook is executed in order under the synthetic ``smoke`` profile in a temporary home.
Each notebook's first code cell is made to open with the Colab launch lines of
``lesionlib.notebook.launch_code``, for the repository named in pyproject.toml.
Cells tagged ``nbval-check-output`` keep their outputs (nbval compares them on every test run,
so they must be the same for every data source); every other output and execution count is
removed, so a learner opens a fresh notebook and the diffs stay small.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from lesionlib.notebook import launch_code

ROOT = Path(__file__).resolve().parent.parent
CHECKED = "nbval-check-output"


def repository() -> str:
    """The course's git URL: the one setting the Colab launch lines and the badges follow."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def without_launch_code(source: str) -> str:
    """A code cell's source after its launch lines (title, comments, ``import sys``, and the
    ``if "google.colab" ...:`` block), whatever version of them it holds."""
    lines = source.split("\n")
    block = next((i for i, line in enumerate(lines) if line.startswith('if "google.colab" in sys.')), None)
    if block is None:
        return source
    end = block + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    return "\n".join(lines[end:]).strip("\n")


def with_launch_code(notebook: nbformat.NotebookNode, launch: str) -> nbformat.NotebookNode:
    """Make the first code cell ``launch`` alone, folded (a form on Colab, a hidden source in
    JupyterLab); code that followed older launch lines in that cell moves to a cell of its own."""
    position, cell = next((i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    rest = without_launch_code(cell.source)
    if rest != cell.source.strip("\n") and rest:  # an older cell: launch lines, then the setup
        notebook.cells.insert(position + 1, nbformat.v4.new_code_cell(rest))
    elif rest == cell.source.strip("\n"):  # no launch lines yet
        notebook.cells.insert(position, nbformat.v4.new_code_cell(""))
        cell = notebook.cells[position]
    cell.source = launch.rstrip("\n")
    cell.metadata.update({"cellView": "form", "jupyter": {"source_hidden": True}})
    return notebook


def clean(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    notebook.metadata.pop("widgets", None)  # the widgets' saved state: a new diff on every run, dead in a copy
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
            notebook = with_launch_code(nbformat.read(path, as_version=4), launch_code(repository()))
            resources = {"metadata": {"path": str(path.parent)}}  # run where the notebook lives
            NotebookClient(notebook, timeout=1800, resources=resources).execute()
            nbformat.write(clean(notebook), path)
            print(f"refreshed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
