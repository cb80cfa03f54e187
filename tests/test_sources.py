"""Importers, on the real data in ../shared/ and on small folders built here."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from lesionlib import sources


def test_ham10000_as_distributed(ham10000):
    layout, frame = sources.read_source(ham10000)
    assert layout == "ham10000"
    assert len(frame) == 10_015
    assert list(frame.columns) == sources.COLUMNS
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
