"""From a source to the manifest and the train/<class>/ layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionlib import dataset, images, synthetic
from lesionlib.taxonomy import CLASSES


@pytest.fixture
def smoke(make_settings):
    settings = make_settings(profile="smoke")
    return settings, dataset.prepare(settings, progress=False)


def test_smoke_set_is_checked_converted_and_laid_out(smoke):
    settings, built = smoke
    assert sorted(built.rejected["reason"]) == sorted([
        dataset.MISSING, images.EMPTY, images.TRUNCATED, images.NOT_AN_IMAGE, images.TOO_LARGE,
        images.DUPLICATE])
    assert built.manifest["image_id"].str.contains("16bit|cmyk|rgba|palette|grayscale|exif").sum() == 6
    for row in built.manifest.itertuples():
        assert row.path == settings.train_dir / row.label / f"{row.image_id}.jpg"
        with Image.open(row.path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (row.width, row.height))
    on_disk = {p for p in settings.train_dir.rglob("*") if p.is_file()}
    assert on_disk == set(built.manifest["path"])
    assert set(built.manifest["label"]) == set(CLASSES)
    assert built.manifest["sha256"].is_unique


def test_manifest_files_are_written_and_reloaded(smoke):
    settings, built = smoke
    stored = pd.read_csv(settings.manifest_path)
    assert list(stored.columns) == dataset.MANIFEST_COLUMNS
    assert stored["path"].str.startswith("train/").all()  # relative: the home can move
    reloaded = dataset.load_manifest(settings)
    assert reloaded["path"].tolist() == built.manifest["path"].tolist()
    info = json.loads(settings.dataset_info_path.read_text())
    assert info["counts"] == built.manifest["label"].value_counts().to_dict()
    assert len(pd.read_csv(settings.rejected_path)) == len(built.rejected) == info["rejected"]


def test_rerun_places_nothing_again(smoke, monkeypatch):
    settings, built = smoke
    placed = []
    monkeypatch.setattr(dataset, "_place", lambda checked, target: placed.append(target))
    again = dataset.prepare(settings, progress=False)
    assert placed == []
    assert again.manifest.equals(built.manifest)


def test_a_changed_source_image_is_placed_again(smoke):
    settings, built = smoke
    row = built.manifest.iloc[0]
    replacement = synthetic.draw_lesion("malignant", np.random.default_rng(7))
    replacement.save(row.original_path, "JPEG")
    again = dataset.prepare(settings, progress=False)
    new_row = again.manifest.set_index("image_id").loc[row.image_id]
    assert new_row["sha256"] != row.sha256
    assert images.sha256_of(new_row["path"]) == new_row["sha256"]


def test_load_manifest_refuses_other_settings(smoke, make_settings, cc0_sample):
    other = make_settings(data_source=cc0_sample)
    with pytest.raises(dataset.ManifestError, match="Run notebook 01"):
        dataset.load_manifest(other)


def test_load_manifest_without_a_build_says_what_to_run(make_settings):
    with pytest.raises(dataset.ManifestError, match="notebook 01"):
        dataset.load_manifest(make_settings(profile="smoke"))


def test_switching_source_removes_stale_images(smoke, make_settings, cc0_sample):
    settings, _ = smoke
    switched = make_settings(data_source=cc0_sample)
    built = dataset.prepare(switched, progress=False)
    on_disk = {p for p in settings.train_dir.rglob("*") if p.is_file()}
    assert on_disk == set(built.manifest["path"])
    assert not any("SYN_" in p.name for p in on_disk)


def _frame(groups: dict[str, int], label: str = "benign") -> pd.DataFrame:
    rows = [{"image_id": f"{lesion}-{n}", "lesion_id": lesion, "label": label}
            for lesion, size in groups.items() for n in range(size)]
    return pd.DataFrame(rows)


def test_selection_keeps_lesions_whole_and_respects_the_cap():
    frame = _frame({f"L{i}": 1 + i % 3 for i in range(40)})
    chosen = dataset.select_per_class(frame, limit=25, seed=1)
    assert len(chosen) == 25
    sizes = frame.groupby("lesion_id").size()
    assert (chosen.groupby("lesion_id").size() == sizes[chosen["lesion_id"].unique()]).all()


def test_selection_is_deterministic_for_a_seed():
    frame = _frame({f"L{i}": 1 for i in range(50)})
    first = dataset.select_per_class(frame, 10, seed=3)["image_id"].tolist()
    assert first == dataset.select_per_class(frame.sample(frac=1, random_state=0), 10, 3)["image_id"].tolist()
    assert first != dataset.select_per_class(frame, 10, seed=4)["image_id"].tolist()


def test_no_cap_keeps_everything():
    frame = _frame({"A": 2, "B": 3})
    assert len(dataset.select_per_class(frame, None, seed=0)) == 5


def test_ham10000_workshop_import(ham10000, make_settings):
    settings = make_settings(data_source=ham10000)
    built = dataset.prepare(settings, progress=False)
    counts = built.manifest["label"].value_counts().to_dict()
    assert counts == {"benign": 500, "malignant": 500, "indeterminate": 327}
    assert set(built.rejected["reason"]) == {images.DUPLICATE}  # HAM10000 has exact duplicates
    assert built.manifest["width"].eq(200).all() and built.manifest["height"].eq(150).all()
    assert len(list(settings.train_dir.glob("*/*.jpg"))) == len(built.manifest)
