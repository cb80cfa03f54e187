"""What every notebook does in its first cell, and small helpers for showing things in a lesson."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from . import DISCLAIMER, LesionlibError, fsutil
from .settings import Settings, load_settings

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


def _show_lesson_error(shell, kind, error, traceback, tb_offset=None) -> None:
    """Show a :class:`LesionlibError` as its message only: it says what to do, a traceback doesn't."""
    print(f"{kind.__name__}: {error}", file=sys.stderr)


def setup() -> Settings:
    """Settings, versions and plotting style for a notebook; errors the learner can fix shown plainly."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 (defined in IPython)
        shell.set_custom_exc((LesionlibError,), _show_lesson_error)
    except NameError:  # plain Python: ordinary tracebacks
        pass
    import matplotlib
    import seaborn as sns

    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120})
    sns.set_theme(context="notebook", style="whitegrid")
    settings = load_settings()
    print("  ".join(f"{name} {version}" for name, version in versions().items()))
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
