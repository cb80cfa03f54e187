"""The committed notebooks: numbered, uniform first cells, clean of outputs nbval does not check."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def test_notebooks_are_numbered_from_01_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opening_cells_are_the_course_format(path):
    notebook = nbformat.read(path, as_version=4)
    title = notebook.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {path.name[:2]} · ")
    assert "colab.research.google.com/github/" in title.source and path.name in title.source
    assert "mybinder.org" in title.source
    assert "Not a diagnosis" in title.source
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert "notebook.setup()" in first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_keep_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        checked = "nbval-check-output" in cell.metadata.get("tags", [])
        assert bool(cell.outputs) == checked, cell.source  # run tools/refresh_notebooks.py
        assert (cell.execution_count is not None) == checked, cell.source
