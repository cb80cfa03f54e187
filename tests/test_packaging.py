"""The install paths agree: pyproject.toml, requirements.txt, environment.yml and postBuild
(Binder), the Makefile, CI and the README."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    """requirements.txt as ``{name: version}``; every line must be an exact pin."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line), line
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _ranges() -> list[Requirement]:
    project = _pyproject()["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_range_is_pinned_to_a_version_inside_it():
    pins = _pins()
    for requirement in _ranges():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} has a range in pyproject.toml but no pin in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"


def _supported() -> list[str]:
    """The Python versions the Makefile accepts, newest first (``SUPPORTED := 3.13 ...``)."""
    found = re.search(r"^SUPPORTED := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile names the supported Python versions in SUPPORTED"
    return found[1].split()


def test_binder_environment_pins_the_same_set_and_postbuild_installs_lesionlib():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    pythons = [d.removeprefix("python=") for d in conda if d.startswith("python=")]
    assert len(pythons) == 1 and pythons[0] in _supported() and "pip" in conda
    # repo2docker builds environment.yml before the repository is copied in: no local paths.
    assert {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pip} == _pins()
    post_build = ROOT / "postBuild"
    assert os.access(post_build, os.X_OK), "postBuild must be executable for repo2docker"
    assert re.search(r"^python -m pip install --no-deps -e \.$", post_build.read_text(), re.MULTILINE)


def test_python_versions_admit_every_supported_one_and_colabs():
    allowed = SpecifierSet(_pyproject()["project"]["requires-python"])
    supported = _supported()
    assert supported == sorted(supported, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    assert "3.12" in supported  # Colab's
    assert all(version in allowed for version in supported)


def test_tensorflow_not_tensorflow_cpu():
    names = set(_pins())
    assert {"tensorflow", "tensorflow-hub", "tf-keras"} <= names
    assert "tensorflow-cpu" not in names


def test_make_installs_the_pins_with_uv_or_pip_and_ci_checks_them_for_every_python():
    makefile = (ROOT / "Makefile").read_text()
    lines = [line for line in makefile.splitlines() if re.match(r"\t\$\((UV|BIN)\)\S* (pip|-m pip) install", line)]
    assert len(lines) == 3, lines  # uv's; pip's (after upgrading pip itself)
    assert all(line.endswith('-r requirements.txt -e ".[course,test]"') for line in lines if "--upgrade" not in line)
    assert re.search(r"^test: pins$", makefile, re.MULTILINE)  # CI runs make test: the pins are checked first
    pins = makefile.split("\npins:", 1)[1].split("\n\n", 1)[0]
    assert "for v in $(SUPPORTED)" in pins and "for p in $(PLATFORMS)" in pins
    assert "--python-version $$0 --python-platform $$1" in pins
    assert "pip compile" in pins and "--only-binary :all:" in pins and "requirements.txt" in pins and "exit 1" in pins
    platforms = re.search(r"^PLATFORMS := (.+)$", makefile, re.MULTILINE)[1].split()
    assert {"x86_64-pc-windows-msvc", "aarch64-apple-darwin"} <= set(platforms)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec make test$", ci, re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(make \w+)$", readme, re.MULTILINE)
    assert commands == ["make course", "make test"]
