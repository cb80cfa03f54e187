"""From a source to the manifest and the train/<class>/ layout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionlib import dataset, images, synthetic
from lesionlib.taxonomy import CLASSES
from tests.test_images import _grey_png


@pytest.fixture
def smoke(make_settings):
    settings = make_settings(profile="smoke")
    return settings, dataset.prepare(settings, progress=False)


def test_smoke_set_is_checked_converted_and_laid_out(smoke):
    settings, built = smoke
    assert sorted(built.rejected["reason"]) == sorted([
        dataset.MISSING, images.EMPTY, images.TRUNCATED, images.NOT_AN_IMAGE, images.TOO_LARGE,
        images.STREAKED, images.DUPLICATE])
    assert built.manifest["image_id"].str.contains("16bit|cmyk|rgba|palette|grayscale|exif").sum() == 6
    for row in built.manifest.itertuples():
        assert row.path == settings.train_dir / row.label / f"{row.image_id}.jpg"
        with Image.open(row.path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (row.width, row.height))
    on_disk = {p for p in settings.train_dir.rglob("*") if p.is_file()}
    assert on_disk == set(built.manifest["path"])
    assert set(built.manifest["label"]) == set(CLASSES)
    assert built.manifest["sha256"].is_unique


def test_duplicates_are_listed_beside_the_kept_image(smoke):
    settings, built = smoke
    duplicates = dataset.load_duplicates(settings)
    assert duplicates.to_dict("records") == [{
        "image_id": "SYN_00097_duplicate", "label": "benign", "lesion_id": "SYN_L_dup",
        "kept": "SYN_00001", "kept_label": "benign", "kept_lesion_id": "SYN_L_b001",
        "kept_in_use": True}]
    assert built.duplicates.equals(duplicates)


def test_manifest_files_are_written_and_reloaded(smoke):
    settings, built = smoke
    stored = pd.read_csv(settings.manifest_path)
    assert list(stored.columns) == dataset.MANIFEST_COLUMNS
    assert stored["path"].str.startswith("train/").all()  # relative: the home can move
    reloaded = dataset.load_manifest(settings)
    assert reloaded["path"].tolist() == built.manifest["path"].tolist()
    info = dataset.dataset_info(settings)
    assert info["counts"] == built.manifest["label"].value_counts().to_dict()
    assert info["available"] == built.available.to_dict() == info["counts"]  # all under the cap
    assert len(pd.read_csv(settings.rejected_path)) == len(built.rejected) == info["rejected"]


def test_rerun_places_nothing_again(smoke, monkeypatch):
    settings, built = smoke
    placed = []
    monkeypatch.setattr(dataset, "_place", lambda checked, target: placed.append(target))
    again = dataset.prepare(settings, progress=False)
    assert placed == []
    assert again.manifest.equals(built.manifest)


def test_a_changed_source_image_is_placed_again(smoke, tmp_path):
    settings, built = smoke
    row = built.manifest.iloc[0]
    replacement = tmp_path / "replacement.jpg"
    synthetic.draw_lesion("malignant", np.random.default_rng(7)).save(replacement, "JPEG")
    os.replace(replacement, row.original_path)  # a new file under the old name
    again = dataset.prepare(settings, progress=False)
    new_row = again.manifest.set_index("image_id").loc[row.image_id]
    assert new_row["sha256"] != row.sha256
    assert images.sha256_of(new_row["path"]) == new_row["sha256"]


def test_every_manifest_hash_is_the_hash_of_the_file_in_train(smoke):
    _, built = smoke
    for row in built.manifest.itertuples():
        assert images.sha256_of(row.path) == row.sha256
    converted = built.manifest[built.manifest["sha256"] != built.manifest["source_sha256"]]
    assert len(converted) == 6  # the grayscale, palette, CMYK, RGBA, 16-bit and rotated ones


def test_editing_a_file_in_train_never_touches_the_original(smoke):
    _, built = smoke
    row = built.manifest.iloc[0]
    before = Path(row.original_path).read_bytes()
    Path(row.path).write_bytes(b"edited")
    assert Path(row.original_path).read_bytes() == before


def _intact(settings, built) -> None:
    """The manifest of ``built`` still loads, and every file it lists is the one it vouches for."""
    reloaded = dataset.load_manifest(settings)
    assert reloaded["path"].tolist() == built.manifest["path"].tolist()
    for row in reloaded.itertuples():
        assert images.sha256_of(row.path) == row.sha256
    assert not list(settings.data_dir.glob(".build-*"))  # no staging folder left behind


def test_an_interrupted_rebuild_leaves_the_previous_build_usable(smoke, make_settings, cc0_sample,
                                                                 monkeypatch):
    settings, built = smoke
    other = make_settings(data_source=cc0_sample, profile="smoke")
    real_place, count = dataset._place, {"n": 0}

    def place_then_crash(checked, target):
        count["n"] += 1
        if count["n"] > 5:
            raise KeyboardInterrupt
        return real_place(checked, target)

    monkeypatch.setattr(dataset, "_place", place_then_crash)
    with pytest.raises(KeyboardInterrupt):
        dataset.prepare(other, progress=False)
    assert count["n"] == 6
    _intact(settings, built)
    monkeypatch.setattr(dataset, "_place", real_place)
    rebuilt = dataset.prepare(other, progress=False)
    for row in rebuilt.manifest.itertuples():
        assert images.sha256_of(row.path) == row.sha256


def _class_folders(root: Path, names: dict[str, list]) -> Path:
    """Class folders of drawn lesions; ``names`` are str or bytes (a name that is not UTF-8)."""
    for n, (label, files) in enumerate(names.items()):
        folder = root / label
        folder.mkdir(parents=True)
        for m, name in enumerate(files):
            path = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
            synthetic.draw_lesion(label, np.random.default_rng(10 * n + m)).save(path, "JPEG")
    return root


def test_a_file_name_that_is_not_utf8_is_stored_escaped(make_settings, tmp_path):
    source = _class_folders(tmp_path / "clinic", {"benign": [b"caf\xe9.jpg", "b1.jpg"],
                                                  "malignant": [b"na\xefve.jpg", "m1.jpg"]})
    (source / "benign" / os.fsdecode(b"vide\xe9.jpg")).write_bytes(b"")  # and a rejected one
    settings = make_settings(data_source=source)
    built = dataset.prepare(settings, progress=False)
    assert len(built.manifest) == 4
    text = settings.manifest_path.read_bytes().decode("utf-8")  # strict: it must be UTF-8
    assert "caf\\xe9.jpg" in text and "na\\xefve.jpg" in text
    assert "vide\\xe9.jpg" in settings.rejected_path.read_bytes().decode("utf-8")
    assert dataset.load_manifest(settings)["original_path"].str.contains("caf\\xe9", regex=False).sum() == 1
    for row in built.manifest.itertuples():
        assert images.sha256_of(row.path) == row.sha256 and row.path.name.isascii()


def test_a_manifest_that_cannot_be_written_keeps_the_previous_one(smoke, make_settings, tmp_path,
                                                                  monkeypatch):
    settings, built = smoke
    source = _class_folders(tmp_path / "clinic", {"benign": [b"caf\xe9.jpg", "b1.jpg"]})
    monkeypatch.setattr(dataset, "_storable_frame", lambda frame: frame)  # names as they were
    with pytest.raises(UnicodeEncodeError):
        dataset.prepare(make_settings(data_source=source), progress=False)
    _intact(settings, built)


def test_an_image_too_wide_for_a_jpeg_is_a_rejected_row(smoke, make_settings, tmp_path):
    source = _class_folders(tmp_path / "clinic", {"benign": ["b1.jpg", "b2.jpg"]})
    _grey_png(source / "benign" / "panorama.png", 70_000, 600)
    settings = make_settings(data_source=source)
    built = dataset.prepare(settings, progress=False)
    assert len(built.manifest) == 2
    [row] = built.rejected.to_dict("records")
    assert row["image_id"] == "panorama" and row["reason"] == images.TOO_WIDE
    assert "70000x600" in row["detail"] and images.FIXES[images.TOO_WIDE] in row["detail"]
    _intact(settings, built)  # the new build, complete


def test_an_image_that_cannot_be_saved_as_jpeg_is_a_rejected_row(smoke, make_settings, tmp_path,
                                                                   monkeypatch):
    source = _class_folders(tmp_path / "clinic", {"benign": ["b1.jpg", "b2.jpg"]})
    _grey_png(source / "benign" / "strip.png", 66_000, 8)
    monkeypatch.setattr(images, "JPEG_MAX_SIDE", 10**6)  # let it past the check: the encoder refuses it
    settings = make_settings(data_source=source)
    built = dataset.prepare(settings, progress=False)
    assert len(built.manifest) == 2
    [row] = built.rejected.to_dict("records")
    assert row["image_id"] == "strip" and row["reason"] == dataset.NOT_LAID_OUT
    assert dataset.NOT_LAID_OUT_FIX in row["detail"]
    assert pd.read_csv(settings.rejected_path)["reason"].tolist() == [dataset.NOT_LAID_OUT]
    _intact(settings, built)


def test_a_source_with_no_usable_image_is_a_clear_error(make_settings, tmp_path):
    source = tmp_path / "broken"
    (source / "benign").mkdir(parents=True)
    (source / "benign" / "a.jpg").write_bytes(b"")
    (source / "malignant").mkdir()
    (source / "malignant" / "b.jpg").write_text("not a picture")
    settings = make_settings(data_source=source)
    with pytest.raises(dataset.ManifestError, match="No usable image") as raised:
        dataset.prepare(settings, progress=False)
    assert str(settings.rejected_path) in str(raised.value)
    assert len(dataset.pd.read_csv(settings.rejected_path)) == 2


def test_same_name_in_two_class_folders_keeps_both(make_settings, tmp_path, cc0_sample):
    source = tmp_path / "folders"
    for label, picture in (("benign", "ISIC_0000300"), ("malignant", "ISIC_0000301")):
        (source / label).mkdir(parents=True)
        shutil.copy(cc0_sample / f"{picture}.jpg", source / label / "x.jpg")
    Image.open(cc0_sample / "ISIC_0000303.jpg").save(source / "benign" / "x.png")
    built = dataset.prepare(make_settings(data_source=source), progress=False)
    assert len(built.manifest) == 3
    assert built.manifest["path"].map(lambda p: p.name).is_unique
    for row in built.manifest.itertuples():
        assert images.sha256_of(row.path) == row.sha256 and row.label in row.path.parts


def test_a_source_inside_data_is_refused(make_settings, smoke):
    settings, _ = smoke
    with pytest.raises(dataset.LesionlibError, match="overlaps"):
        make_settings(data_source=settings.train_dir)


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
    assert built.available.to_dict() == {"benign": 8061 - 2, "indeterminate": 327, "malignant": 1627}
    assert set(built.rejected["reason"]) == {images.DUPLICATE}  # HAM10000 has exact duplicates
    assert built.manifest["width"].eq(200).all() and built.manifest["height"].eq(150).all()
    assert len(list(settings.train_dir.glob("*/*.jpg"))) == len(built.manifest)
