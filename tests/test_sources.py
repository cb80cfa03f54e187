"""Importers, on the real data in ../shared/ and on small folders built here."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from lesionlib import dataset, sources


def test_ham10000_as_distributed(ham10000):
    layout, frame = sources.read_source(ham10000)
    assert layout == "ham10000"
    assert len(frame) == 10_015
    assert list(frame.columns) == sources.COLUMNS + sources.PROBLEM_COLUMNS
    assert frame["reject_reason"].isna().all()
    assert frame["label"].value_counts().to_dict() == {
        "benign": 6705 + 1099 + 115 + 142, "malignant": 1113 + 514, "indeterminate": 327}
    assert frame["lesion_id"].nunique() == 7470
    assert frame["source_path"].map(lambda p: p.is_file()).all()
    assert frame["sex"].isin(["male", "female"]).sum() > 9_000
    assert frame["patient_id"].isna().all()


def test_isic_json_records_in_the_older_archive_format(cc0_sample):
    layout, frame = sources.read_source(cc0_sample)
    assert layout == "isic-json"
    assert len(frame) == 550
    assert frame["label"].value_counts().to_dict() == {"benign": 397, "malignant": 153}
    assert frame["license"].eq("CC-0").all()
    assert frame["diagnosis"].value_counts()["melanoma"] == 153
    first = frame.set_index("image_id").loc["ISIC_0000000"]
    assert (first["age"], first["sex"], first["label"]) == (55, "female", "benign")


def test_isic_json_records_in_the_api_v2_format(tmp_path, cc0_sample):
    shutil.copy(cc0_sample / "ISIC_0000000.jpg", tmp_path / "ISIC_0000001.jpg")
    record = {"isic_id": "ISIC_0000001", "copyright_license": "CC-BY", "attribution": "Clinic",
              "metadata": {"clinical": {"diagnosis_1": "Malignant",
                                        "diagnosis_3": "Melanoma Invasive",
                                        "lesion_id": "IL_1", "patient_id": "IP_1",
                                        "age_approx": 70, "anatom_site_general": "head/neck"}}}
    (tmp_path / "ISIC_0000001.json").write_text(json.dumps(record))
    _, frame = sources.read_source(tmp_path)
    row = frame.iloc[0]
    assert (row["label"], row["diagnosis"], row["lesion_id"], row["patient_id"], row["site"]) == (
        "malignant", "Melanoma Invasive", "IL_1", "IP_1", "head/neck")


def _value(cell):
    return None if pd.isna(cell) else cell


@pytest.mark.parametrize("fields, site", [
    ({"anatom_site_1": "Head and neck", "anatom_site_2": "Head", "anatom_site_special": ""},
     "Head and neck"),  # the archive since May 2026: the broad level
    ({"anatom_site_general": "posterior torso"}, "posterior torso"),  # an older download
    ({"anatom_site_1": "Trunk", "anatom_site_general": "anterior torso"}, "Trunk"),
    ({}, None),
], ids=["today", "before-may-2026", "both", "none"])
def test_the_site_is_read_from_todays_fields_and_from_older_downloads(tmp_path, cc0_sample,
                                                                       fields, site):
    shutil.copy(cc0_sample / "ISIC_0000000.jpg", tmp_path / "ISIC_0000000.jpg")
    pd.DataFrame([{"isic_id": "ISIC_0000000", "attribution": "A", "copyright_license": "CC-0",
                   "diagnosis_1": "Benign", **fields}]).to_csv(tmp_path / "metadata.csv", index=False)
    _, frame = sources.read_source(tmp_path)
    assert _value(frame.iloc[0]["site"]) == site
    (tmp_path / "metadata.csv").unlink()  # the same fields in an API v2 JSON record
    record = {"isic_id": "ISIC_0000000", "metadata": {"clinical": {"diagnosis_1": "Benign", **fields}}}
    (tmp_path / "ISIC_0000000.json").write_text(json.dumps(record))
    _, frame = sources.read_source(tmp_path)
    assert _value(frame.iloc[0]["site"]) == site


def test_isic_download_folder(tmp_path, cc0_sample):
    for name in ("ISIC_0000000", "ISIC_0000002"):
        shutil.copy(cc0_sample / f"{name}.jpg", tmp_path / f"{name}.jpg")
    pd.DataFrame([
        {"isic_id": "ISIC_0000000", "attribution": "A", "copyright_license": "CC-0",
         "diagnosis_1": "Benign", "diagnosis_3": "Nevus", "lesion_id": "IL_9", "age_approx": 40},
        {"isic_id": "ISIC_0000002", "attribution": "A", "copyright_license": "CC-0",
         "diagnosis_1": "Indeterminate", "lesion_id": "", "age_approx": ""},
    ]).to_csv(tmp_path / "metadata.csv", index=False)
    layout, frame = sources.read_source(tmp_path)
    assert layout == "isic-download"
    assert frame["label"].tolist() == ["benign", "indeterminate"]
    assert frame["diagnosis"].tolist() == ["Nevus", "Indeterminate"]
    assert frame["lesion_id"].iloc[0] == "IL_9" and pd.isna(frame["lesion_id"].iloc[1])
    assert frame["age"].iloc[0] == 40 and pd.isna(frame["age"].iloc[1])


@pytest.mark.parametrize("with_train", [True, False])
def test_class_folders(tmp_path, cc0_sample, with_train):
    root = tmp_path / "train" if with_train else tmp_path
    for label, name in [("benign", "ISIC_0000000"), ("Intermediate", "ISIC_0000001"),
                        ("malignant", "ISIC_0000002"), ("notes", "ISIC_0000003")]:
        (root / label).mkdir(parents=True)
        shutil.copy(cc0_sample / f"{name}.jpg", root / label / f"{name}.jpg")
    layout, frame = sources.read_source(tmp_path)
    assert layout == "class-folders"
    labels = dict(zip(frame["image_id"], frame["label"]))
    assert labels["ISIC_0000000"] == "benign"
    assert labels["ISIC_0000001"] == "indeterminate"
    assert labels["ISIC_0000002"] == "malignant"
    assert pd.isna(labels["ISIC_0000003"])  # a folder that is no class: left for the report


def test_an_unknown_folder_says_what_it_looked_for(tmp_path):
    (tmp_path / "holiday.txt").write_text("nothing here")
    with pytest.raises(sources.SourceError, match="metadata.csv") as raised:
        sources.read_source(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_a_broken_json_record_names_the_file(tmp_path):
    (tmp_path / "ISIC_1.json").write_text("{not json")
    with pytest.raises(sources.SourceError, match="ISIC_1.json"):
        sources.read_source(tmp_path)


def test_metadata_without_isic_id_is_refused(tmp_path):
    (tmp_path / "metadata.csv").write_text("name,diagnosis\nx,nevus\n")
    with pytest.raises(sources.SourceError, match="isic_id"):
        sources.read_source(tmp_path)


@pytest.mark.parametrize("content", [b"", "isic_id,diagnosis_1\nISIC_1,B\xe9nin\n".encode("cp1252")])
def test_an_unreadable_metadata_csv_names_the_file(tmp_path, content):
    (tmp_path / "metadata.csv").write_bytes(content)
    with pytest.raises(sources.SourceError, match="metadata.csv could not be read"):
        sources.read_source(tmp_path)


def test_odd_json_files_are_handled(tmp_path, cc0_sample):
    shutil.copy(cc0_sample / "ISIC_0000000.jpg", tmp_path / "ISIC_0000000.jpg")
    (tmp_path / "ISIC_0000000.json").write_text(json.dumps(
        {"name": "ISIC_0000000", "meta": None}))  # a record without metadata
    (tmp_path / "notes.json").write_text(json.dumps(["not", "a", "record"]))
    (tmp_path / "ATTRIBUTION.txt").write_text("\n")
    layout, frame = sources.read_source(tmp_path)
    assert layout == "isic-json" and len(frame) == 1
    assert pd.isna(frame["label"].iloc[0]) and pd.isna(frame["attribution"].iloc[0])


def test_hidden_folders_are_skipped(tmp_path, cc0_sample):
    for folder in ("benign", "benign/.ipynb_checkpoints"):
        (tmp_path / folder).mkdir(parents=True)
        shutil.copy(cc0_sample / "ISIC_0000000.jpg", tmp_path / folder / "a.jpg")
    _, frame = sources.read_source(tmp_path)
    assert len(frame) == 1


# Issue 14, case 1: ids are never trusted as paths ------------------------------------------

HOSTILE_IDS = ["../outside/secret", "a/b", "..\\outside\\secret", "", "ISIC_1\x00", "/etc/passwd"]


def _collection_beside_a_secret(tmp_path, cc0_sample):
    """``tmp_path/collection`` (one good image) beside ``tmp_path/outside/secret.jpg``, a real
    JPEG that no importer may read."""
    (tmp_path / "outside").mkdir()
    shutil.copy(cc0_sample / "ISIC_0000001.jpg", tmp_path / "outside" / "secret.jpg")
    collection = tmp_path / "collection"
    collection.mkdir()
    shutil.copy(cc0_sample / "ISIC_0000000.jpg", collection / "ISIC_0000000.jpg")
    return collection


def _write_layout(collection, layout, bad_id):
    if layout == "isic-download":
        pd.DataFrame([{"isic_id": i, "diagnosis_1": "Benign"} for i in ("ISIC_0000000", bad_id)]
                     ).to_csv(collection / "metadata.csv", index=False)
    elif layout == "ham10000":
        pd.DataFrame([{"lesion_id": "L1", "image_id": i, "dx": "nv"} for i in ("ISIC_0000000", bad_id)]
                     ).to_csv(collection / "HAM10000_metadata.csv", index=False)
    else:
        for name, isic_id in [("ISIC_0000000", "ISIC_0000000"), ("record", bad_id)]:
            (collection / f"{name}.json").write_text(json.dumps(
                {"isic_id": isic_id, "metadata": {"clinical": {"diagnosis_1": "Benign"}}}))


def _assert_guarded(frame, collection, bad_id):
    assert list(frame.columns) == sources.COLUMNS + sources.PROBLEM_COLUMNS
    good, bad = frame.iloc[0], frame.iloc[1]
    assert pd.isna(good["reject_reason"]) and good["source_path"] == collection / "ISIC_0000000.jpg"
    assert bad["reject_reason"] == sources.UNUSABLE_ID
    assert "correct it in the metadata" in bad["reject_detail"] and len(bad["reject_detail"]) < 300
    assert bad["source_path"] == collection and not bad["source_path"].is_file()  # never read
    assert bad["image_id"] == bad_id[:120]


@pytest.mark.parametrize("layout", ["isic-download", "ham10000", "isic-json"])
@pytest.mark.parametrize("bad_id", HOSTILE_IDS)
def test_an_id_that_is_a_path_is_a_reported_row_never_a_file(tmp_path, cc0_sample, layout, bad_id):
    collection = _collection_beside_a_secret(tmp_path, cc0_sample)
    _write_layout(collection, layout, bad_id)
    found, frame = sources.read_source(collection)
    assert found == layout and len(frame) == 2
    _assert_guarded(frame, collection, bad_id or ("record" if layout == "isic-json" else ""))


def test_isic_json_ids_follow_the_isic_grammar_and_a_huge_id_is_cut_short(tmp_path, cc0_sample):
    collection = _collection_beside_a_secret(tmp_path, cc0_sample)
    _write_layout(collection, "isic-json", "ISIC_0000001_x")  # harmless, but no ISIC id
    _, frame = sources.read_source(collection)
    assert frame["reject_detail"].iloc[1].endswith("ISIC_ and 7 digits): correct it in the metadata "
                                                   "(ids name files inside the collection folder)")
    _write_layout(collection, "isic-download", "x" * 1_000_000)
    (collection / "ISIC_0000000.json").unlink(), (collection / "record.json").unlink()
    _, frame = sources.read_source(collection)
    assert "longer than 200" in frame["reject_detail"].iloc[1] and len(frame["reject_detail"].iloc[1]) < 300


@pytest.mark.parametrize("layout", ["isic-download", "class-folders"])
def test_a_symbolic_link_out_of_the_folder_is_a_reported_row(tmp_path, cc0_sample, layout):
    collection = _collection_beside_a_secret(tmp_path, cc0_sample)
    folder = collection / "benign" if layout == "class-folders" else collection
    folder.mkdir(exist_ok=True)
    (folder / "ISIC_0000001.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    (folder / "ISIC_0000009.jpg").symlink_to(collection / "ISIC_0000000.jpg")  # inside: fine
    if layout == "isic-download":
        _write_layout(collection, layout, "ISIC_0000001")
        with open(collection / "metadata.csv", "a") as out:
            out.write("ISIC_0000009,Benign\n")
    _, frame = sources.read_source(collection)
    rows = frame.set_index("image_id")
    assert rows.loc["ISIC_0000001", "reject_reason"] == sources.OUTSIDE
    assert "leads outside" in rows.loc["ISIC_0000001", "reject_detail"]
    assert not Path(rows.loc["ISIC_0000001", "source_path"]).is_file()
    assert pd.isna(rows.loc["ISIC_0000009", "reject_reason"])


@pytest.fixture
def opened_files():
    """Every path the process opens while the test runs (an audit hook: sees threads, PIL, all)."""
    seen: list[str] = []
    _AUDIT.append(seen)
    yield seen
    _AUDIT.remove(seen)


_AUDIT: list[list[str]] = []


def _audit(event, args):
    if event == "open" and _AUDIT and isinstance(args[0], (str, bytes, os.PathLike)):
        _AUDIT[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _usable_image(ham10000, collection):
    """A HAM10000 image as the collection's good one (the CC0 sample's 250 px thumbnails are
    rejected as streaked by images.inspect_image)."""
    shutil.copy(next((ham10000 / "images").rglob("ISIC_*.jpg")), collection / "ISIC_0000000.jpg")


def _import(make_settings, collection):
    settings = make_settings(profile="smoke", data_source=str(collection), external_source="none")
    return settings, dataset.prepare(settings, progress=False)


@pytest.mark.parametrize("layout", ["isic-download", "ham10000", "isic-json"])
def test_the_importer_never_reads_a_file_outside_the_collection(tmp_path, cc0_sample, ham10000,
                                                                make_settings, opened_files, layout):
    collection = _collection_beside_a_secret(tmp_path, cc0_sample)
    _usable_image(ham10000, collection)
    _write_layout(collection, layout, "../outside/secret")
    secret = (tmp_path / "outside" / "secret.jpg").read_bytes()
    opened_files.clear()
    settings, built = _import(make_settings, collection)
    assert not [p for p in opened_files if "outside" in p]
    assert built.manifest["image_id"].tolist() == ["ISIC_0000000"]
    assert not [p for p in settings.data_dir.rglob("*") if p.is_file() and p.read_bytes() == secret]
    row = built.rejected.set_index("image_id").loc["../outside/secret"]
    assert row["original_path"] == str(collection)


def test_the_rejected_list_gives_the_reason_and_the_fix(tmp_path, cc0_sample, ham10000, make_settings):
    collection = _collection_beside_a_secret(tmp_path, cc0_sample)
    _usable_image(ham10000, collection)
    _write_layout(collection, "isic-download", "a/b")
    settings, built = _import(make_settings, collection)
    row = built.rejected.set_index("image_id").loc["a/b"]
    assert row["reason"] == sources.UNUSABLE_ID and "correct it in the metadata" in row["detail"]
    assert "a/b" in pd.read_csv(settings.rejected_path)["image_id"].tolist()
