"""Importers: turn a folder of data that a learner already has into one table of candidates.

Four layouts are recognised, by :func:`detect_layout`:

``isic-download``  ``metadata.csv`` + ``<isic_id>.jpg``, as ``isic image download`` (isic-cli)
                   and :mod:`lesionlib.isic_archive` write it
``ham10000``       ``HAM10000_metadata.csv`` + ``ISIC_*.jpg`` anywhere below the folder
``isic-json``      one ISIC Archive JSON record per image, ``<name>.json`` beside the image
``class-folders``  ``train/<class>/*.jpg`` or ``<class>/*.jpg`` (the original project's layout)

Every importer returns the same columns (:data:`COLUMNS`); the images are not opened here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from . import LesionlibError
from .taxonomy import class_of_diagnosis_1, class_of_term

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

COLUMNS = ["image_id", "source_path", "label", "diagnosis", "lesion_id", "patient_id",
           "age", "sex", "site", "license", "attribution"]


HAM10000_ATTRIBUTION = ("HAM10000 (Tschandl, Rosendahl, Kittler 2018), ViDIR Group, "
                        "Medical University of Vienna")


class SourceError(LesionlibError, ValueError):
    """A folder is not a dataset the importers recognise, or its metadata is unusable."""


def _image_paths(folder: Path) -> list[Path]:
    """Image files below ``folder``, sorted, skipping hidden files and folders (``.ipynb_checkpoints``)."""
    return [path for path in sorted(folder.rglob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)]


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files below ``folder`` by their stem (``ISIC_0024306`` -> path), the first if several."""
    found: dict[str, Path] = {}
    for path in _image_paths(folder):
        found.setdefault(path.stem, path)
    return found


def _read_csv(path: Path) -> pd.DataFrame:
    """A metadata CSV as text columns; an unreadable one is a :class:`SourceError` naming it."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise SourceError(f"{path} could not be read as a UTF-8 CSV table ({type(error).__name__}: "
                          f"{error}). Fix or re-export the file.") from None


def _frame(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    text = [c for c in COLUMNS if c not in ("age", "source_path")]
    frame[text] = frame[text].astype("string")
    return frame


def read_isic_download(folder: Path) -> pd.DataFrame:
    """An ISIC download: ``metadata.csv`` (one row per ``isic_id``) and the image files."""
    metadata = _read_csv(folder / "metadata.csv")
    if "isic_id" not in metadata.columns:
        raise SourceError(f"{folder / 'metadata.csv'} has no 'isic_id' column; "
                          "is it an ISIC Archive download (isic image download)?")
    files = _image_files(folder)
    rows = []
    for record in metadata.to_dict("records"):
        diagnosis = record.get("diagnosis_1") or record.get("benign_malignant") or ""
        finest = [record.get(f"diagnosis_{i}") for i in range(5, 0, -1)]
        isic_id = record["isic_id"]
        rows.append({
            "image_id": isic_id,
            "source_path": files.get(isic_id, folder / f"{isic_id}.jpg"),
            "label": class_of_diagnosis_1(diagnosis),
            "diagnosis": next((d for d in finest if d), diagnosis) or None,
            "lesion_id": record.get("lesion_id") or None,
            "patient_id": record.get("patient_id") or None,
            "age": record.get("age_approx"),
            "sex": record.get("sex") or None,
            "site": record.get("anatom_site_general") or None,
            "license": record.get("copyright_license") or None,
            "attribution": record.get("attribution") or None,
        })
    return _frame(rows)


def read_ham10000(folder: Path) -> pd.DataFrame:
    """HAM10000 as distributed: ``HAM10000_metadata.csv`` and the ``ISIC_*.jpg`` images."""
    metadata = _read_csv(folder / "HAM10000_metadata.csv")
    missing = {"lesion_id", "image_id", "dx"} - set(metadata.columns)
    if missing:
        raise SourceError(f"{folder / 'HAM10000_metadata.csv'} lacks the columns {sorted(missing)}")
    files = _image_files(folder)
    rows = []
    for record in metadata.to_dict("records"):
        rows.append({
            "image_id": record["image_id"],
            "source_path": files.get(record["image_id"], folder / f"{record['image_id']}.jpg"),
            "label": class_of_term(record["dx"]),
            "diagnosis": record["dx"],
            "lesion_id": record["lesion_id"] or None,
            "patient_id": None,  # HAM10000 does not publish patient ids
            "age": record.get("age"),
            "sex": None if record.get("sex") in ("", "unknown") else record.get("sex"),
            "site": None if record.get("localization") in ("", "unknown") else record.get("localization"),
            "license": "CC-BY-NC",
            "attribution": HAM10000_ATTRIBUTION,
        })
    return _frame(rows)


def _json_row(record: dict, json_path: Path, files: dict[str, Path]) -> dict:
    """One ISIC JSON record, in the archive's API v2 form or its older (v1) form."""
    if "metadata" in record:  # API v2: {"isic_id", "metadata": {"clinical", "acquisition"}}
        image_id = record.get("isic_id") or json_path.stem
        clinical = (record["metadata"] or {}).get("clinical") or {}
        diagnosis_1 = clinical.get("diagnosis_1")
        label = class_of_diagnosis_1(diagnosis_1)
        finest = next((clinical.get(f"diagnosis_{i}") for i in range(5, 0, -1)
                       if clinical.get(f"diagnosis_{i}")), diagnosis_1)
        license_, attribution = record.get("copyright_license"), record.get("attribution")
    else:  # v1: {"name", "meta": {"clinical": {"benign_malignant", "diagnosis", ...}}}
        image_id = record.get("name") or json_path.stem
        clinical = (record.get("meta") or {}).get("clinical") or {}
        finest = clinical.get("diagnosis")
        label = class_of_term(finest) if finest else None
        label = label or class_of_diagnosis_1(clinical.get("benign_malignant"))
        license_, attribution = record.get("license"), record.get("attribution")
    return {
        "image_id": image_id,
        "source_path": files.get(image_id, files.get(json_path.stem, json_path.with_suffix(".jpg"))),
        "label": label,
        "diagnosis": finest,
        "lesion_id": clinical.get("lesion_id") or record.get("lesion_id"),
        "patient_id": clinical.get("patient_id") or record.get("patient_id"),
        "age": clinical.get("age_approx"),
        "sex": clinical.get("sex"),
        "site": clinical.get("anatom_site_general"),
        "license": license_,
        "attribution": attribution,
    }


def _folder_license(folder: Path) -> tuple[str | None, str | None]:
    """A folder-wide licence and attribution, from ``LICENSE.txt`` / ``ATTRIBUTION.txt`` if present."""
    license_text = folder / "LICENSE.txt"
    attribution_text = folder / "ATTRIBUTION.txt"
    license_ = None
    if license_text.is_file():
        head = license_text.read_text(errors="replace")[:2000].lower()
        license_ = "CC-0" if "cc0" in head or "creative commons zero" in head else "see LICENSE.txt"
    attribution = None
    if attribution_text.is_file():
        lines = attribution_text.read_text(errors="replace").strip().splitlines()
        attribution = lines[0].strip() if lines else None
    return license_, attribution


def _is_record(data: object) -> bool:
    return isinstance(data, dict) and bool({"isic_id", "name"} & set(data)) and bool(
        {"metadata", "meta"} & set(data))


def read_isic_json(folder: Path) -> pd.DataFrame:
    """ISIC Archive JSON records (``<isic_id>.json``, one per image) beside their images.

    Other JSON files in the folder (anything that is not such a record) are ignored.
    """
    files = _image_files(folder)
    license_, attribution = _folder_license(folder)
    rows = []
    for json_path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SourceError(f"{json_path}: not a readable JSON record ({error}); "
                              "fix or remove the file") from None
        if not _is_record(record):
            continue
        row = _json_row(record, json_path, files)
        row["license"] = row["license"] or license_
        row["attribution"] = row["attribution"] or attribution
        rows.append(row)
    return _frame(rows)


def _class_root(folder: Path) -> Path:
    return folder / "train" if (folder / "train").is_dir() else folder


def read_class_folders(folder: Path) -> pd.DataFrame:
    """Plain class folders: ``[train/]<class>/<image>``, any image file type."""
    rows = []
    for class_dir in sorted(p for p in _class_root(folder).iterdir()
                            if p.is_dir() and not p.name.startswith(".")):
        label = class_of_diagnosis_1(class_dir.name)
        for path in _image_paths(class_dir):
            rows.append({"image_id": path.stem, "source_path": path, "label": label,
                         "diagnosis": class_dir.name})
    return _frame(rows)


READERS = {
    "isic-download": read_isic_download,
    "ham10000": read_ham10000,
    "isic-json": read_isic_json,
    "class-folders": read_class_folders,
}


def detect_layout(folder: Path) -> str:
    """Which of the :data:`READERS` fits ``folder``; a :class:`SourceError` names what was sought."""
    folder = Path(folder)
    if (folder / "HAM10000_metadata.csv").is_file():
        return "ham10000"
    if (folder / "metadata.csv").is_file():
        return "isic-download"
    if next(folder.glob("*.json"), None) is not None:
        return "isic-json"
    root = _class_root(folder)
    if root.is_dir() and any(class_of_diagnosis_1(p.name) for p in root.iterdir() if p.is_dir()):
        return "class-folders"
    raise SourceError(
        f"{folder} is not a dataset the course recognises. It should hold one of: "
        "metadata.csv and images (an ISIC Archive download), HAM10000_metadata.csv and "
        "images (HAM10000), <isic_id>.json records beside images (ISIC JSON), or class "
        "folders train/benign, train/malignant, ... (the original project's layout)."
    )


def read_source(folder: Path) -> tuple[str, pd.DataFrame]:
    """Detect the layout of ``folder`` and read it: ``(layout, candidates)``."""
    layout = detect_layout(folder)
    return layout, READERS[layout](Path(folder))
