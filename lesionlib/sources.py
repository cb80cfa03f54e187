"""Importers: turn a folder of data that a learner already has into one table of candidates.

Four layouts are recognised, by :func:`detect_layout`:

``isic-download``  ``metadata.csv`` + ``<isic_id>.jpg``, as ``isic image download`` (isic-cli)
                   and :mod:`lesionlib.isic_archive` write it
``ham10000``       ``HAM10000_metadata.csv`` + ``ISIC_*.jpg`` anywhere below the folder
``isic-json``      one ISIC Archive JSON record per image, ``<name>.json`` beside the image
``class-folders``  ``train/<class>/*.jpg`` or ``<class>/*.jpg`` (the original project's layout)

Every importer returns the same columns (:data:`COLUMNS`), plus :data:`PROBLEM_COLUMNS`; the
images are not opened here. An id is never trusted as a path: it must follow the layout's id
grammar (:func:`id_problem`), and every image path must resolve (symbolic links followed) to a
file inside the folder read. A row that breaks either rule keeps its metadata for the report but
gets a ``reject_reason`` (:data:`UNUSABLE_ID` or :data:`OUTSIDE`) and a ``reject_detail`` that
says what to fix, and its ``source_path`` is the folder itself, which is no file: it is never read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from . import LesionlibError
from .taxonomy import class_of_diagnosis_1, class_of_term

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

COLUMNS = ["image_id", "source_path", "label", "diagnosis", "lesion_id", "patient_id",
           "age", "sex", "site", "license", "attribution"]
# Why a row must be rejected before any file is opened (None: nothing wrong), and the fix.
PROBLEM_COLUMNS = ["reject_reason", "reject_detail"]
UNUSABLE_ID = "unusable image id"
OUTSIDE = "file outside the collection folder"

ISIC_ID = re.compile(r"ISIC_\d{7}")  # the ISIC Archive's ids, e.g. ISIC_0024306
MAX_ID_LENGTH = 200


HAM10000_ATTRIBUTION = ("HAM10000 (Tschandl, Rosendahl, Kittler 2018), ViDIR Group, "
                        "Medical University of Vienna")


class SourceError(LesionlibError, ValueError):
    """A folder is not a dataset the importers recognise, or its metadata is unusable."""


def _shown(value: object, limit: int = 80) -> str:
    """``value`` for a message, cut short: an id can be a whole file's worth of text."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def id_problem(value: object, isic: bool = False) -> str | None:
    """Why ``value`` cannot be an image id, or None if it can.

    An id names one file: a plain file name, without ``/`` or ``\\``, ``..``, a leading dot,
    control characters (NUL included), or more than :data:`MAX_ID_LENGTH` characters. With
    ``isic``, it must be an ISIC Archive id (``ISIC_`` and 7 digits).
    """
    if not isinstance(value, str) or not value:
        return "is empty" if value in ("", None) else "is not text"
    if isic:
        return None if ISIC_ID.fullmatch(value) else "is not an ISIC id (ISIC_ and 7 digits)"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if "/" in value or "\\" in value:
        return "holds a path separator (an id is a file name, not a path)"
    if ".." in value or value.startswith("."):
        return "holds '..' or starts with a dot"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "holds a control character"
    return None


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symbolic links followed) to somewhere inside ``root`` (resolved)."""
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop, an unreadable component
        return False


def _guarded(rows: list[dict], folder: Path, id_field: str | None, isic: bool = False) -> list[dict]:
    """``rows`` with every id (unless ``id_field`` is None: ids taken from file names found) and
    every path checked: a row breaking a rule is marked, and its file is never read."""
    root = Path(folder).resolve()
    for row in rows:
        row["reject_reason"] = row["reject_detail"] = None
        problem = id_problem(row["image_id"], isic) if id_field else None
        if problem is not None:
            row["reject_reason"] = UNUSABLE_ID
            row["reject_detail"] = (f"{id_field} {_shown(row['image_id'])} {problem}: correct it in "
                                    "the metadata (ids name files inside the collection folder)")
            value = row["image_id"]
            row["image_id"] = value if value is None else str(value)[:120]
        elif not _inside(row["source_path"], root):
            row["reject_reason"] = OUTSIDE
            row["reject_detail"] = (f"{_shown(str(row['source_path']), 160)} leads outside {root} "
                                    "(a symbolic link?): copy the image into the folder instead")
        if row["reject_reason"] is not None:
            row["source_path"] = Path(folder)  # a folder, not a file: nothing outside is ever read
    return rows


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


def site_of(fields: dict) -> str | None:
    """The broad anatomic site of a record: ``anatom_site_1`` (head and neck, trunk, upper or
    lower extremity, anogenital region), the archive's field since May 2026, or the
    ``anatom_site_general`` it replaced, which older downloads and records carry."""
    return fields.get("anatom_site_1") or fields.get("anatom_site_general") or None


def _frame(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=COLUMNS + PROBLEM_COLUMNS)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    text = [c for c in COLUMNS + PROBLEM_COLUMNS if c not in ("age", "source_path")]
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
            # Only a checked id becomes a path (see _guarded); others get the folder itself.
            "source_path": files.get(isic_id) or (folder / f"{isic_id}.jpg" if id_problem(isic_id) is None
                                                  else folder),
            "label": class_of_diagnosis_1(diagnosis),
            "diagnosis": next((d for d in finest if d), diagnosis) or None,
            "lesion_id": record.get("lesion_id") or None,
            "patient_id": record.get("patient_id") or None,
            "age": record.get("age_approx"),
            "sex": record.get("sex") or None,
            "site": site_of(record),
            "license": record.get("copyright_license") or None,
            "attribution": record.get("attribution") or None,
        })
    # Packs and the synthetic set use this layout with ids of their own (file names, not only
    # ISIC_0000000): the plain-file-name grammar, not the ISIC one.
    return _frame(_guarded(rows, folder, "isic_id"))


def read_ham10000(folder: Path) -> pd.DataFrame:
    """HAM10000 as distributed: ``HAM10000_metadata.csv`` and the ``ISIC_*.jpg`` images."""
    metadata = _read_csv(folder / "HAM10000_metadata.csv")
    missing = {"lesion_id", "image_id", "dx"} - set(metadata.columns)
    if missing:
        raise SourceError(f"{folder / 'HAM10000_metadata.csv'} lacks the columns {sorted(missing)}")
    files = _image_files(folder)
    rows = []
    for record in metadata.to_dict("records"):
        image_id = record["image_id"]
        rows.append({
            "image_id": image_id,
            "source_path": files.get(image_id) or (folder / f"{image_id}.jpg" if id_problem(image_id) is None
                                                   else folder),
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
    return _frame(_guarded(rows, folder, "image_id"))


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
    found = files.get(image_id) if isinstance(image_id, str) else None
    return {
        "image_id": image_id,
        "source_path": found or files.get(json_path.stem, json_path.with_suffix(".jpg")),
        "label": label,
        "diagnosis": finest,
        "lesion_id": clinical.get("lesion_id") or record.get("lesion_id"),
        "patient_id": clinical.get("patient_id") or record.get("patient_id"),
        "age": clinical.get("age_approx"),
        "sex": clinical.get("sex"),
        "site": site_of(clinical),
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
    return _frame(_guarded(rows, folder, "isic_id", isic=True))


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
    return _frame(_guarded(rows, folder, None))


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
