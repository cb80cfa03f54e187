"""The install paths agree: pyproject.toml, environment.yml, the Makefile, CI and the README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_dependency_is_pinned_exactly():
    for requirement in _pyproject()["project"]["dependencies"]:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", requirement), requirement


def test_environment_yml_pins_the_same_set():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in conda
    assert sorted(p for p in pip if p != "-e .") == sorted(_pyproject()["project"]["dependencies"])
    assert "-e ." in pip  # lesionlib itself, so notebooks can import it


def test_python_version_agrees():
    assert _pyproject()["project"]["requires-python"] == ">=3.11,<3.12"


def test_tensorflow_not_tensorflow_cpu():
    names = {r.split("==")[0] for r in _pyproject()["project"]["dependencies"]}
    assert {"tensorflow", "tensorflow-hub", "tf-keras"} <= names
    assert "tensorflow-cpu" not in names


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec make test$", ci, re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(make \w+)$", readme, re.MULTILINE)
    assert commands == ["make course", "make test"]
