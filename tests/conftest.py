"""Shared fixtures: isolated settings, the real data in ../shared/, a loopback ISIC Archive."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from lesionlib.settings import Settings, load_settings
from lesionlib.synthetic import draw_lesion
from tests.isic_server import ArchiveImage, FakeArchive, images_from_shared

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LESIONLIB_SHARED", ROOT.parent / "shared")).resolve()
HAM10000 = SHARED / "data" / "ham10000"
CC0_SAMPLE = SHARED / "data" / "isic-cc0-sample"


@pytest.fixture
def ham10000() -> Path:
    if not (HAM10000 / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found at {HAM10000}")
    return HAM10000


@pytest.fixture
def cc0_sample() -> Path:
    if not CC0_SAMPLE.is_dir():
        pytest.skip(f"CC0 ISIC sample not found at {CC0_SAMPLE}")
    return CC0_SAMPLE


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from the given LESIONLIB_* values only, with a fresh home under tmp_path."""

    def make(**env: str) -> Settings:
        values = {"LESIONLIB_HOME": str(tmp_path / "home")}
        values.update({f"LESIONLIB_{key.upper()}": str(value) for key, value in env.items()})
        return load_settings(values)

    return make


def _jpeg(seed: int, label: str) -> bytes:
    buffer = io.BytesIO()
    draw_lesion(label, np.random.default_rng(seed)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def archive() -> Iterator[FakeArchive]:
    """A loopback ISIC Archive serving the real CC0 sample (or drawn images without ../shared)."""
    if CC0_SAMPLE.is_dir():
        found = images_from_shared(CC0_SAMPLE)
    else:
        labels = ["benign"] * 40 + ["malignant"] * 15
        found = [ArchiveImage(f"ISIC_{9000000 + n}", label.capitalize(), _jpeg(n, label))
                 for n, label in enumerate(labels)]
    server = FakeArchive(found).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_smoke(tmp_path_factory):
    """A smoke-profile home with a manifest, the tiny backbone, bottlenecks, a split and a head."""
    from lesionlib import backbones, dataset, features, splits, training
    from lesionlib.settings import load_settings

    settings = load_settings({"LESIONLIB_HOME": str(tmp_path_factory.mktemp("home")),
                              "LESIONLIB_PROFILE": "smoke"})
    manifest = dataset.prepare(settings, progress=False).manifest
    backbone = backbones.load(settings)
    bottlenecks = features.extract(manifest, backbone, settings.bottleneck_dir, progress=False)
    part = splits.grouped_split(manifest, seed=settings.seed)
    head = training.train_head(training.arrays(bottlenecks, manifest, part, "train"),
                               training.arrays(bottlenecks, manifest, part, "validation"))
    return settings, manifest, backbone, bottlenecks, part, head
