"""From a data source to one manifest: check every image, drop duplicates, choose, lay out.

The manifest (``data/manifest.csv``) has one row per usable image: its path (relative to
``data/``), label, diagnosis, lesion and patient ids where known, content hash, size and
source. The images themselves are laid out as ``data/train/<class>/<image_id>.jpg``, the
original project's layout, as upright 8-bit RGB JPEGs. Files that cannot be used are listed
in ``data/rejected.csv`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import LesionlibError, fsutil, images, isic_archive, sources, synthetic
from .settings import ISIC_ARCHIVE, SYNTHETIC, Settings
from .taxonomy import CLASSES

MANIFEST_COLUMNS = ["image_id", "path", "label", "diagnosis", "lesion_id", "patient_id",
                    "age", "sex", "site", "sha256", "width", "height", "source",
                    "license", "attribution", "original_path"]
REJECTED_COLUMNS = ["image_id", "original_path", "reason", "detail"]
NO_CLASS = "diagnosis outside the three classes"
MISSING = "missing file"


class ManifestError(LesionlibError):
    """The manifest is missing or was built for other settings; the message says what to run."""


@dataclass(frozen=True)
class Dataset:
    """What one build produced: the manifest, the rejected files and where the data came from."""

    manifest: pd.DataFrame
    rejected: pd.DataFrame
    source: str
    layout: str


def raw_folder(settings: Settings, progress: bool = True) -> Path:
    """The folder to import: the given one, the synthetic set, or the ISIC download cache."""
    if settings.data_source == SYNTHETIC:
        return synthetic.generate(settings.downloads_dir / "synthetic", seed=settings.seed)
    if settings.data_source == ISIC_ARCHIVE:
        if settings.per_class_limit is None:
            raise ManifestError("The full profile downloads every image of the archive; do that "
                                "once with isic-cli (`isic image download --search "
                                "'diagnosis_1:\"Malignant\"' DIR`) and set LESIONLIB_DATA_SOURCE=DIR.")
        return isic_archive.download_classes(
            settings.isic_api, settings.downloads_dir / "isic-archive",
            per_class=settings.per_class_limit, file_kind=settings.isic_file, progress=progress)
    return Path(settings.data_source)


def _inspect_all(paths: list[Path], max_pixels: int, progress: bool) -> list:
    # Decoding releases the GIL, so a few threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(lambda p: images.inspect_image(p, max_pixels), paths)
        return list(tqdm(results, total=len(paths), desc="checking images", disable=not progress))


def _group_order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def select_per_class(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """Up to ``limit`` images per class, whole lesions at a time, in a seeded order."""
    if limit is None:
        return frame
    group = frame["lesion_id"].fillna(frame["image_id"]).astype(str)
    chosen = []
    for _, members in frame.assign(_group=group).groupby("label", sort=True):
        sizes = members.groupby("_group").size()
        order = sorted(sizes.index, key=lambda g: _group_order(g, seed))
        taken: list[str] = []
        count = 0
        for name in order:
            if count + sizes[name] <= limit:
                taken.append(name)
                count += sizes[name]
            if count == limit:
                break
        chosen.append(members[members["_group"].isin(taken)])
    return pd.concat(chosen).drop(columns="_group").sort_values("image_id", ignore_index=True)


def _place(checked: images.Checked, target: Path) -> None:
    """Write one accepted image as an upright RGB JPEG at ``target`` (link it if it already is one)."""
    if not checked.needs_conversion:
        fsutil.link_or_copy(checked.path, target)
        return
    rgb = images.load_rgb(checked.path)
    with fsutil.atomic_path(target) as temporary:
        rgb.save(temporary, "JPEG", quality=95)


def _reject(rows: pd.DataFrame, reason: str, detail: Callable[[pd.Series], str]) -> list[dict]:
    return [{"image_id": r.image_id, "original_path": str(r.source_path), "reason": reason,
             "detail": detail(r)} for r in rows.itertuples()]


def build_manifest(candidates: pd.DataFrame, settings: Settings, source: str, layout: str,
                   progress: bool = True) -> Dataset:
    """Check, de-duplicate, choose and lay out ``candidates``; write manifest, rejects and info."""
    rejected: list[dict] = []
    no_class = candidates["label"].isna()
    rejected += _reject(candidates[no_class], NO_CLASS, lambda r: f"diagnosis {r.diagnosis!r}")
    candidates = candidates[~no_class]
    exists = candidates["source_path"].map(lambda p: Path(p).is_file())
    rejected += _reject(candidates[~exists], MISSING, lambda r: "listed in the metadata, no file found")
    candidates = candidates[exists].reset_index(drop=True)

    results = _inspect_all([Path(p) for p in candidates["source_path"]],
                           settings.max_image_pixels, progress)
    accepted_rows, accepted, first_of_hash = [], [], {}
    for row, result in zip(candidates.itertuples(index=False), results):
        if isinstance(result, images.Rejected):
            rejected.append({"image_id": row.image_id, "original_path": str(result.path),
                             "reason": result.reason, "detail": result.detail})
        elif result.sha256 in first_of_hash:
            rejected.append({"image_id": row.image_id, "original_path": str(result.path),
                             "reason": images.DUPLICATE,
                             "detail": f"same bytes as {first_of_hash[result.sha256]}"})
        else:
            first_of_hash[result.sha256] = row.image_id
            accepted_rows.append(row._asdict())
            accepted.append(result)

    frame = pd.DataFrame(accepted_rows, columns=sources.COLUMNS)
    frame["sha256"] = [c.sha256 for c in accepted]
    frame["width"] = [c.width for c in accepted]
    frame["height"] = [c.height for c in accepted]
    clash = frame["image_id"].duplicated(keep=False)  # e.g. one name in two class folders
    frame.loc[clash, "image_id"] = frame.loc[clash, "image_id"] + "-" + frame.loc[clash, "sha256"].str[:8]
    checked_by_id = dict(zip(frame["image_id"], accepted))
    frame = select_per_class(frame, settings.per_class_limit, settings.seed)

    frame["path"] = [f"train/{label}/{image_id}.jpg"
                     for label, image_id in zip(frame["label"], frame["image_id"])]
    frame["source"] = source
    frame["original_path"] = frame["source_path"].astype(str)
    placed = _previous_hashes(settings.manifest_path)
    for rel, image_id, sha in tqdm(list(zip(frame["path"], frame["image_id"], frame["sha256"])),
                                   desc="laying out", disable=not progress):
        target = settings.data_dir / rel
        if placed.get(rel) != sha or not target.is_file():  # re-runs place nothing twice
            _place(checked_by_id[image_id], target)
    _remove_stale(settings.train_dir, {settings.data_dir / p for p in frame["path"]})

    manifest = frame[MANIFEST_COLUMNS].reset_index(drop=True)
    rejected_frame = pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
    fsutil.write_atomic(settings.manifest_path, lambda out: manifest.to_csv(out, index=False))
    fsutil.write_atomic(settings.rejected_path, lambda out: rejected_frame.to_csv(out, index=False))
    fsutil.write_json_atomic(settings.dataset_info_path, {
        "source": str(settings.data_source), "layout": layout, "profile": settings.profile,
        "per_class_limit": settings.per_class_limit, "seed": settings.seed,
        "counts": manifest["label"].value_counts().reindex(CLASSES, fill_value=0).to_dict(),
        "rejected": len(rejected_frame),
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    return Dataset(_with_absolute_paths(manifest, settings), rejected_frame, source, layout)


def _previous_hashes(manifest_path: Path) -> dict[str, str]:
    """``{path: sha256}`` of the last manifest, to skip files already in place; empty if unusable."""
    try:
        previous = pd.read_csv(manifest_path, usecols=["path", "sha256"], dtype=str)
    except (OSError, ValueError, pd.errors.ParserError):
        return {}
    return dict(zip(previous["path"], previous["sha256"]))


def _remove_stale(train_dir: Path, keep: set[Path]) -> None:
    """Delete files under ``train/`` that are not in the new manifest (another source, a cap)."""
    if not train_dir.is_dir():
        return
    for path in train_dir.rglob("*"):
        if path.is_file() and path not in keep:
            path.unlink()


def _with_absolute_paths(manifest: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    return manifest.assign(path=[settings.data_dir / p for p in manifest["path"]])


def prepare(settings: Settings, progress: bool = True) -> Dataset:
    """The whole of notebook 01 in one call: fetch or find the data, import it, build the manifest."""
    folder = raw_folder(settings, progress)
    layout, candidates = sources.read_source(folder)
    return build_manifest(candidates, settings, settings.source_name, layout, progress)


def load_manifest(settings: Settings) -> pd.DataFrame:
    """The manifest built by notebook 01 for these settings, with absolute image paths."""
    info_path = settings.dataset_info_path
    if not settings.manifest_path.is_file() or not info_path.is_file():
        raise ManifestError(f"No manifest at {settings.manifest_path}. Run notebook 01 "
                            "(or `lesionlib data`) first to collect the images.")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info["source"] != str(settings.data_source) or info["profile"] != settings.profile:
        raise ManifestError(
            f"The manifest in {settings.data_dir} was built from {info['source']} "
            f"(profile {info['profile']}), but these settings ask for {settings.data_source} "
            f"(profile {settings.profile}). Run notebook 01 (or `lesionlib data`) again.")
    manifest = pd.read_csv(settings.manifest_path, dtype={"lesion_id": "string",
                           "patient_id": "string", "image_id": "string", "sex": "string",
                           "site": "string", "diagnosis": "string", "sha256": "string"})
    return _with_absolute_paths(manifest, settings)


def load_rejected(settings: Settings) -> pd.DataFrame:
    """The files notebook 01 left out, with the reason (written beside the manifest)."""
    load_manifest(settings)  # the same checks: built, and for these settings
    return pd.read_csv(settings.rejected_path, dtype=str, keep_default_na=False)
