"""The committed notebooks: numbered, uniform first cells, clean of outputs nbval does not check."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

import lesionlib
from lesionlib.notebook import COLAB_HOME, launch_code

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
GITHUB = REPOSITORY.removeprefix("https://github.com/")


def test_notebooks_are_numbered_from_01_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opening_cells_are_the_course_format(path):
    notebook = nbformat.read(path, as_version=4)
    title = notebook.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {path.name[:2]} · ")
    assert f"colab.research.google.com/github/{GITHUB}/blob/main/notebooks/{path.name}" in title.source
    assert f"mybinder.org/v2/gh/{GITHUB}/main?urlpath=lab/tree/notebooks/{path.name}" in title.source
    assert "Not a diagnosis" in title.source
    launch, setup = [c for c in notebook.cells if c.cell_type == "code"][:2]
    assert launch.source == launch_code(REPOSITORY).rstrip("\n")  # run tools/refresh_notebooks.py
    # Folded: a form showing its title on Colab, a hidden source in JupyterLab.
    assert launch.metadata["cellView"] == "form" and launch.metadata["jupyter"]["source_hidden"]
    assert "notebook.setup()" in setup.source


def test_readme_badges_follow_the_repository_setting():
    readme = (ROOT / "README.md").read_text()
    assert f"mybinder.org/v2/gh/{GITHUB}/main" in readme
    for path in NOTEBOOKS:
        assert f"colab.research.google.com/github/{GITHUB}/blob/main/notebooks/{path.name}" in readme


def test_the_launch_lines_on_colab_install_lesionlib_and_replace_nothing(tmp_path):
    """Run the launch lines in IPython as Colab would (google.colab imported, its Drive faked),
    with this clone as the repository and pip in --dry-run mode: lesionlib is all pip would
    install, since every pinned package here, like Colab's own, satisfies lesionlib's ranges."""
    launch = launch_code(f"file://{ROOT}").replace("%pip install --quiet", "%pip install --dry-run")
    script = tmp_path / "colab.py"
    script.write_text(
        "import os, sys, types\n"
        "sys.modules['google'] = types.ModuleType('google')\n"
        "colab = sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
        "colab.drive = sys.modules['google.colab.drive'] = types.ModuleType('google.colab.drive')\n"
        "colab.drive.mount = lambda path: print('mounted', path)\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        f"result = InteractiveShell.instance().run_cell({launch!r})\n"
        "print('home', os.environ['LESIONLIB_HOME'])\n"
        "sys.exit(0 if result.success else 1)\n")
    env = {name: value for name, value in os.environ.items() if name != "LESIONLIB_HOME"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    would = [line for line in run.stdout.splitlines() if line.startswith("Would install")]
    assert would == [f"Would install lesionlib-{lesionlib.__version__}"], run.stdout
    # Each Colab notebook has a machine of its own: the course's files live on the Drive.
    assert "mounted /content/drive" in run.stdout and f"home {COLAB_HOME}" in run.stdout


def test_the_launch_lines_do_nothing_off_colab():
    namespace: dict = {}
    code = launch_code(REPOSITORY).replace("%pip install", "raise SystemExit #")  # valid Python
    exec(compile(code, "launch", "exec"), namespace)  # no google.colab here: the branch is skipped
    assert "keep" not in namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_keep_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert "widgets" not in notebook.metadata  # no saved widget state either: run tools/refresh_notebooks.py
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        checked = "nbval-check-output" in cell.metadata.get("tags", [])
        assert bool(cell.outputs) == checked, cell.source  # run tools/refresh_notebooks.py
        assert (cell.execution_count is not None) == checked, cell.source


def _exercises(path: Path) -> list[list[nbformat.NotebookNode]]:
    """The cells after "## Exercises", one list per exercise (its heading first)."""
    cells = nbformat.read(path, as_version=4).cells
    start = next(i for i, c in enumerate(cells)
                 if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
    blocks: list[list[nbformat.NotebookNode]] = []
    for cell in cells[start + 1:]:
        if cell.cell_type == "markdown" and cell.source.startswith("### Exercise"):
            blocks.append([])
        assert blocks, "the Exercises section starts with an exercise"
        blocks[-1].append(cell)
    return blocks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_ends_with_exercises_checks_and_folded_solutions(path):
    blocks = _exercises(path)
    assert len(blocks) >= 2
    for number, block in enumerate(blocks, 1):
        assert [c.cell_type for c in block] == ["markdown", "code", "code", "code"]
        heading, answer, check, solution = block
        assert heading.source.startswith(f"### Exercise {number} · ")
        # The learner's cell: a placeholder to replace, which the check recognises as unanswered.
        assert "exercise" in answer.metadata["tags"] and "..." in answer.source
        # The check the learner runs, and which the solution runs too (so CI proves it right).
        assert "check" in check.metadata["tags"] and check.source.startswith("check.")
        assert solution.source.startswith(f"#@title Solution {number}\n")
        assert "solution" in solution.metadata["tags"]
        assert check.source.strip() in solution.source
        last = solution.source.strip().splitlines()[-1]
        assert last.startswith("# ") and last.endswith("."), "a solution ends with what it shows"
        # Folded in JupyterLab (source_hidden) and on Colab (a form shows its title only).
        assert solution.metadata["jupyter"]["source_hidden"] and solution.metadata["cellView"] == "form"


def test_the_course_has_a_dozen_exercises_that_write_code():
    assert sum(len(_exercises(path)) for path in NOTEBOOKS) >= 12


@pytest.mark.parametrize("name, calls", [
    ("03", [".map(", ".batch(", ".prefetch(", "hub.load(", "keras.layers.Normalization", "keras.layers.Dropout",
            "keras.layers.Dense", "kernel_regularizer", ".summary()", ".compile(", ".fit(", ".trainable",
            "EarlyStopping", "keras.applications.MobileNetV2"]),
    ("04", ["np.diag(", ".sum(axis=1)", "rng.integers(", "np.nanpercentile("]),
    ("05", ["ExportArchive", "tf.saved_model.load(", "TFLiteConverter", ".invoke()"]),
])
def test_the_model_is_written_out_in_the_lessons(name, calls):
    """The lesson's own TensorFlow (and numpy) is in cells a learner reads, not in lesionlib:
    every call below appears in a code cell that is not an exercise's solution."""
    path = next(p for p in NOTEBOOKS if p.name.startswith(name))
    shown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                      if c.cell_type == "code" and "solution" not in c.metadata.get("tags", []))
    assert [call for call in calls if call not in shown] == []
