"""What every notebook does in its first cell, and small helpers for showing things in a lesson."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from importlib import metadata
from pathlib import Path

from . import DISCLAIMER, LesionlibError, fsutil
from .settings import Settings, load_settings

# What pip must leave as Colab has them: replacing any of these under a running kernel breaks it.
COLAB_KEEPS = ("tensorflow", "keras", "numpy", "pandas", "ipywidgets")

PACKAGES = ("lesionlib", "tensorflow", "keras", "tensorflow-hub", "numpy", "pandas",
            "scikit-learn", "matplotlib", "seaborn", "pillow", "isic-metadata")


def versions() -> dict[str, str]:
    """Installed versions of the packages the course uses, read without importing them."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


COLAB_HOME = "/content/drive/MyDrive/lesion-course"
# The launch cell is a folded form: its title is all a learner sees, on Colab and in JupyterLab.
LAUNCH_TITLE = "#@title On Colab, run this first: it installs lesionlib (elsewhere it does nothing)"


def launch_code(repository: str) -> str:
    """The opening lines of every notebook's first cell. On Colab they install lesionlib from
    ``repository`` (a git URL, pyproject.toml's ``Repository``), keeping Colab's own
    :data:`COLAB_KEEPS`, and put ``LESIONLIB_HOME`` on the learner's Google Drive: each Colab
    notebook runs on a machine of its own, so notebook 02 finds notebook 01's images only
    there. Elsewhere lesionlib is installed already and nothing happens.

    They cannot call lesionlib (not installed yet on Colab), so tools/refresh_notebooks.py writes
    them as each notebook's first code cell, folded, and tests/test_notebooks_format.py checks
    that they are there.
    """
    return (
        f"{LAUNCH_TITLE}\n"
        "# On Colab: install lesionlib from the course's repository (keeping Colab's own\n"
        f"# {', '.join(COLAB_KEEPS)}) and keep data/ and build/ on your Google Drive,\n"
        "# where the next notebook finds them. Locally and on Binder nothing happens here.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import os\n"
        "    from importlib.metadata import version\n"
        "\n"
        "    from google.colab import drive\n"
        "\n"
        f'    keep = " ".join(f"{{name}}=={{version(name)}}" for name in {COLAB_KEEPS!r})\n'
        f'    %pip install --quiet "lesionlib @ git+{repository}" {{keep}}\n'
        '    drive.mount("/content/drive")\n'
        f'    os.environ.setdefault("LESIONLIB_HOME", "{COLAB_HOME}")\n'
    )


def where() -> str:
    """Where this notebook runs: Colab, Binder or this machine."""
    if "google.colab" in sys.modules:
        return "Colab"
    if "BINDER_LAUNCH_HOST" in os.environ or "BINDER_REPO_URL" in os.environ:
        return "Binder"
    return "this machine"


def _show_lesson_error(shell, kind, error, traceback, tb_offset=None) -> None:
    """Show a :class:`LesionlibError` as its message only: it says what to do, a traceback doesn't."""
    print(f"{kind.__name__}: {error}", file=sys.stderr)


def setup() -> Settings:
    """Settings, versions and plotting style for a notebook; errors the learner can fix shown
    plainly; TensorFlow imported quietly, so the notebook's own ``import tensorflow`` is too."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 (defined in IPython)
        shell.set_custom_exc((LesionlibError,), _show_lesson_error)
    except NameError:  # plain Python: ordinary tracebacks
        pass
    import matplotlib
    import seaborn as sns

    from .backbones import import_hub

    import_hub()  # TensorFlow and TF Hub imported once, without their start-up noise
    # Keras warns at every fit on a tf.data pipeline that its own shuffling is not used: the
    # pipelines here shuffle themselves (or must not be shuffled).
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120})
    sns.set_theme(context="notebook", style="whitegrid")
    settings = load_settings()
    print(f"running on {where()}: "
          + "  ".join(f"{name} {version}" for name, version in versions().items()))
    for key, value in settings.as_table().items():
        print(f"{key:>17}: {value}")
    print(f"\n{DISCLAIMER}")
    return settings


def save_figure(figure, settings: Settings, name: str) -> Path:
    """Save a figure as ``build/figures/<name>.png`` (atomically) and return the path."""
    return fsutil.save_figure(figure, settings.figures_dir / f"{name}.png")


def tree(folder: Path, examples: int = 3) -> str:
    """A short listing of a folder of class folders: count and first files of each."""
    folder = Path(folder)
    lines = [f"{folder}/"]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p.name for p in sub.iterdir() if p.is_file())
        shown = ", ".join(files[:examples]) + (", ..." if len(files) > examples else "")
        lines.append(f"  {sub.name}/  {len(files)} images: {shown}")
    return "\n".join(lines)
