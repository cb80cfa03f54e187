"""From a data source to one manifest: check every image, drop duplicates, choose, lay out.

The manifest (``data/manifest.csv``) has one row per usable image: its path (relative to
``data/``), label, diagnosis, lesion and patient ids where known, content hash, size and
source. The images themselves are laid out as ``data/train/<class>/<image_id>.jpg``, the
original project's layout, as upright 8-bit RGB JPEGs. Files that cannot be used are listed
in ``data/rejected.csv`` with the reason.

Several sources (``LESIONLIB_DATA_SOURCE=a,b``) are each built that way in
``data/sources/<name>/``; ``data/manifest.csv`` then lists them all (:func:`build_combined`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text: it stays readable in executed notebooks

from . import LesionlibError, fsutil, images, isic_archive, sources, synthetic
from .settings import SYNTHETIC, SYNTHETIC_OTHER_CLINIC, Settings, is_isic_archive, isic_collection
from .taxonomy import CLASSES

# sha256: the hash of the file at `path` (what the bottleneck cache is keyed by);
# source_sha256: the hash of the original file (the same unless the image was converted).
MANIFEST_COLUMNS = ["image_id", "path", "label", "diagnosis", "lesion_id", "patient_id",
                    "age", "sex", "site", "sha256", "width", "height", "source",
                    "license", "attribution", "original_path", "source_sha256"]
REJECTED_COLUMNS = ["image_id", "label", "lesion_id", "original_path", "reason", "detail"]
DUPLICATE_COLUMNS = ["image_id", "label", "lesion_id", "kept", "kept_label", "kept_lesion_id",
                     "kept_in_use"]
NO_CLASS = "diagnosis outside the three classes"
MISSING = "missing file"
NOT_LAID_OUT = "could not be laid out as a JPEG"
NOT_LAID_OUT_FIX = "convert it to an 8-bit RGB JPEG yourself, or leave it out"


class ManifestError(LesionlibError):
    """The manifest is missing or was built for other settings; the message says what to run."""


@dataclass(frozen=True)
class Dataset:
    """What one build produced: the manifest, the rejected files and where the data came from."""

    manifest: pd.DataFrame
    rejected: pd.DataFrame
    duplicates: pd.DataFrame  # each duplicate left out, beside the image that was kept
    available: pd.Series  # usable images per class before the per-class cap
    source: str
    layout: str
    parts: tuple[Dataset, ...] = ()  # for several sources: each one's own build


def raw_folder(settings: Settings, progress: bool = True) -> Path:
    """The folder to import: the given one, the synthetic set, or the ISIC download cache.
    For one source: with several, call it for each of ``settings.parts()``."""
    if len(settings.data_sources) > 1:
        raise ValueError(f"{settings.data_source} holds {len(settings.data_sources)} sources: "
                         "get each of settings.parts() on its own.")
    if settings.data_source == SYNTHETIC:
        return synthetic.generate(settings.downloads_dir / "synthetic", seed=settings.seed)
    if settings.data_source == SYNTHETIC_OTHER_CLINIC:
        return synthetic.generate(settings.downloads_dir / SYNTHETIC_OTHER_CLINIC, seed=settings.seed + 1,
                                  other_clinic=True)
    if is_isic_archive(settings.data_source):
        collection = isic_collection(settings.data_source)
        if settings.per_class_limit is None and collection is None:
            raise ManifestError("The full profile takes every image of its sources, and all of the "
                                "archive is far too many: name collections instead "
                                "(LESIONLIB_DATA_SOURCE=isic-archive:collection=212,"
                                "isic-archive:collection=249), or download once with isic-cli "
                                "(`isic image download --search 'diagnosis_1:\"Malignant\"' DIR`) "
                                "and set LESIONLIB_DATA_SOURCE=DIR.")
        folder = isic_archive.download_classes(
            settings.isic_api, settings.downloads_dir / settings.source_name,
            per_class=settings.per_class_limit or isic_archive.MAX_PER_CLASS,
            file_kind=settings.isic_file, progress=progress, seed=settings.seed, collection=collection)
        if settings.per_class_limit is None:  # "every image": say so if it could not be
            _warn_if_sampled(settings, folder)
        return folder
    return Path(settings.data_source)


def _warn_if_sampled(settings: Settings, folder: Path) -> None:
    """Warn that a class of the download in ``folder`` held more images than were taken."""
    drawn = json.loads((folder / isic_archive.DOWNLOAD_FILE).read_text(encoding="utf-8"))["classes"]
    over = {label: how["matching"] for label, how in drawn.items()
            if how.get("matching", 0) > isic_archive.MAX_PER_CLASS}
    if over:
        warnings.warn(f"{settings.data_source} holds more images than one search reads: "
                      + ", ".join(f"{n:,} {label}" for label, n in over.items())
                      + f"; a seeded sample of {isic_archive.MAX_PER_CLASS:,} of each was taken, "
                      "not every image.", stacklevel=3)


def _inspect_all(paths: list[Path], max_pixels: int, progress: bool) -> list:
    # Decoding releases the GIL, so a few threads keep both cores busy; the images being
    # decoded at once share one memory budget (images.MAX_DECODE_BYTES).
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(lambda p: images.inspect_image(p, max_pixels), paths)
        return list(tqdm(results, total=len(paths), desc="checking images", disable=not progress,
                         mininterval=2))


def _group_order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def select_per_class(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """Up to ``limit`` images per class, whole lesions at a time, in a seeded order."""
    if limit is None or frame.empty:
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


class _NotLaidOut(Exception):
    """One image could not be written as a JPEG: a rejected row, not the end of the import."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _place(checked: images.Checked, target: Path) -> str:
    """Write one accepted image as an upright RGB JPEG at ``target``; return the file's SHA-256.

    A file that already is one is copied byte for byte (never linked: an edit in ``train/``
    must not reach the learner's original); any other is converted. Raises :class:`_NotLaidOut`
    when this image cannot be (its file gone, a conversion or encoding failing); an error of
    the disk being written to (full, read-only) is raised as it is, and stops the import.
    """
    try:
        if not checked.needs_conversion:
            fsutil.copy_atomic(checked.path, target)
            return checked.sha256
        rgb = images.load_rgb(checked.path, checked.scale)
    except OSError as error:
        if error.errno is not None and error.filename not in (None, str(checked.path)):
            raise  # the target, not the image
        if error.errno is not None:
            raise _NotLaidOut(images.UNREADABLE, f"{error.strerror or error}; "
                                                 f"{images.FIXES[images.UNREADABLE]}") from None
        raise _NotLaidOut(NOT_LAID_OUT, f"{type(error).__name__}: {error}; {NOT_LAID_OUT_FIX}") from None
    except Exception as error:  # noqa: BLE001  decoders raise many kinds of errors on bad input
        raise _NotLaidOut(NOT_LAID_OUT, f"{type(error).__name__}: {error}; {NOT_LAID_OUT_FIX}") from None
    try:
        with fsutil.atomic_path(target) as temporary:
            rgb.save(temporary, "JPEG", quality=95)
    except OSError as error:
        if error.errno is not None:
            raise
        raise _NotLaidOut(NOT_LAID_OUT, f"{type(error).__name__}: {error}; {NOT_LAID_OUT_FIX}") from None
    except Exception as error:  # noqa: BLE001  e.g. a size the JPEG encoder refuses
        raise _NotLaidOut(NOT_LAID_OUT, f"{type(error).__name__}: {error}; {NOT_LAID_OUT_FIX}") from None
    return images.sha256_of(target)


def storable(value: object) -> object:
    """``value`` as text that can be written as UTF-8: a file name that is not valid UTF-8
    (Python holds its bytes as lone surrogates) has those bytes escaped, ``\\xe9``."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable_frame(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype):
            frame[column] = frame[column].map(storable, na_action="ignore")
    return frame


def _reject(rows: pd.DataFrame, reason: str, detail: Callable[[pd.Series], str]) -> list[dict]:
    return [{"image_id": r.image_id, "label": r.label, "lesion_id": r.lesion_id,
             "original_path": str(r.source_path), "reason": reason, "detail": detail(r)}
            for r in rows.itertuples()]


def _check(candidates: pd.DataFrame, max_pixels: int, progress: bool):
    """Inspect every candidate: ``(accepted frame, their Checked results, rejected, duplicates)``."""
    rejected: list[dict] = []
    # An id that is a path, a file outside the collection: never opened (sources.py decides).
    unsafe = candidates["reject_reason"].notna().to_numpy(dtype=bool)
    rejected += [{"image_id": r.image_id, "label": r.label, "lesion_id": r.lesion_id,
                  "original_path": str(r.source_path), "reason": r.reject_reason,
                  "detail": r.reject_detail} for r in candidates.loc[unsafe].itertuples()]
    candidates = candidates.loc[~unsafe]
    no_class = candidates["label"].isna().to_numpy(dtype=bool)
    rejected += _reject(candidates.loc[no_class], NO_CLASS, lambda r: f"diagnosis {r.diagnosis!r}")
    candidates = candidates.loc[~no_class]
    exists = np.array([Path(p).is_file() for p in candidates["source_path"]], dtype=bool)
    rejected += _reject(candidates.loc[~exists], MISSING, lambda r: "listed in the metadata, no file found")
    candidates = candidates.loc[exists].reset_index(drop=True)

    results = _inspect_all([Path(p) for p in candidates["source_path"]], max_pixels, progress)
    accepted_rows, accepted, first_of_hash, duplicates = [], [], {}, []
    for row, result in zip(candidates.itertuples(index=False), results):
        own = {"image_id": row.image_id, "label": row.label, "lesion_id": row.lesion_id,
               "original_path": str(result.path)}
        if isinstance(result, images.Rejected):
            rejected.append({**own, "reason": result.reason, "detail": result.detail})
        elif result.sha256 in first_of_hash:
            kept = first_of_hash[result.sha256]
            rejected.append({**own, "reason": images.DUPLICATE,
                             "detail": f"same bytes as {kept.image_id}"})
            duplicates.append({"image_id": row.image_id, "label": row.label,
                               "lesion_id": row.lesion_id, "kept": kept.image_id,
                               "kept_label": kept.label, "kept_lesion_id": kept.lesion_id})
        else:
            first_of_hash[result.sha256] = row
            accepted_rows.append(row._asdict())
            accepted.append(result)
    frame = pd.DataFrame(accepted_rows, columns=sources.COLUMNS)
    frame["source_sha256"] = [c.sha256 for c in accepted]
    frame["width"] = [c.width for c in accepted]
    frame["height"] = [c.height for c in accepted]
    return (frame, accepted, pd.DataFrame(rejected, columns=REJECTED_COLUMNS),
            pd.DataFrame(duplicates, columns=DUPLICATE_COLUMNS))


def _file_names(frame: pd.DataFrame) -> list[str]:
    """A safe, unique file name per image: its id, cleaned, plus a hash suffix on a clash."""
    names = [fsutil.safe_name(i) for i in frame["image_id"]]
    clash = pd.Series(names).str.lower().duplicated(keep=False).to_numpy()  # e.g. x.jpg and x.png
    return [f"{n}-{h[:8]}" if c else n for n, h, c in zip(names, frame["source_sha256"], clash)]


def build_manifest(candidates: pd.DataFrame, settings: Settings, source: str, layout: str,
                   progress: bool = True) -> Dataset:
    """Check, de-duplicate, choose and lay out ``candidates``; write manifest, rejects and info."""
    if settings.whole_dir is not None:  # one of several sources: their manifest vouches no more
        (settings.whole_dir / settings.dataset_info_path.name).unlink(missing_ok=True)
    frame, accepted, rejected, duplicates = _check(candidates, settings.max_image_pixels, progress)
    frame["image_id"] = _file_names(frame)
    checked_by_id = dict(zip(frame["image_id"], accepted))
    available = frame["label"].value_counts().reindex(CLASSES, fill_value=0)
    frame = select_per_class(frame, settings.per_class_limit, settings.seed)
    rejected = _storable_frame(rejected)
    if frame.empty:
        fsutil.write_atomic(settings.rejected_path, lambda out: rejected.to_csv(out, index=False))
        raise ManifestError(f"No usable image in {source}: all {len(rejected)} files were left "
                            f"out; {settings.rejected_path} lists each with the reason.")

    frame["path"] = [f"train/{label}/{name}.jpg" for label, name in zip(frame["label"], frame["image_id"])]
    frame["source"] = source
    frame["original_path"] = frame["source_path"].astype(str)
    # Files already placed by the last complete build are kept. Everything else is written
    # into a staging folder first, with the new tables: until all of it is there, the previous
    # manifest and train/ are untouched (a failure or an interruption leaves them usable).
    placed = _previous_placement(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for leftover in settings.data_dir.glob(".build-*"):  # of a build that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=settings.data_dir, prefix=".build-"))
    try:
        hashes, moves, failed = [], [], []
        rows = list(zip(frame["path"], frame["image_id"], frame["source_sha256"]))
        for rel, image_id, source_sha in tqdm(rows, desc="laying out", disable=not progress, mininterval=2):
            target = settings.data_dir / rel
            previous = placed.get(rel)
            if previous and previous[0] == source_sha and target.is_file():
                hashes.append(previous[1])
                continue
            try:
                hashes.append(_place(checked_by_id[image_id], staging / rel))
                moves.append((staging / rel, target))
            except _NotLaidOut as failure:
                hashes.append(None)
                failed.append({"image_id": image_id, "reason": failure.reason, "detail": failure.detail})
        frame["sha256"] = hashes
        if failed:
            gone = frame.set_index("image_id").loc[[f["image_id"] for f in failed]]
            rejected = pd.concat([rejected, _storable_frame(pd.DataFrame([
                {"image_id": f["image_id"], "label": gone.at[f["image_id"], "label"],
                 "lesion_id": gone.at[f["image_id"], "lesion_id"],
                 "original_path": str(gone.at[f["image_id"], "source_path"]),
                 "reason": f["reason"], "detail": f["detail"]} for f in failed],
                columns=REJECTED_COLUMNS))], ignore_index=True)
            frame = frame[frame["sha256"].notna()]
        if frame.empty:
            fsutil.write_atomic(settings.rejected_path, lambda out: rejected.to_csv(out, index=False))
            raise ManifestError(f"No usable image in {source}: all {len(rejected)} files were left "
                                f"out; {settings.rejected_path} lists each with the reason.")

        manifest = _storable_frame(frame[MANIFEST_COLUMNS].reset_index(drop=True))
        duplicates = _storable_frame(duplicates)
        duplicates["kept_in_use"] = duplicates["kept"].isin(set(manifest["image_id"]))
        tables = {settings.rejected_path: rejected, settings.duplicates_path: duplicates,
                  settings.manifest_path: manifest}
        for path, table in tables.items():
            fsutil.write_atomic(staging / path.name, lambda out, table=table: table.to_csv(out, index=False))

        # Everything is written: swap it in, by renames only. dataset.json goes first and comes
        # back last, so that no manifest vouches for train/ while files are being moved.
        settings.dataset_info_path.unlink(missing_ok=True)
        os.replace(staging / settings.manifest_path.name, settings.manifest_path)
        for staged, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        _remove_stale(settings.train_dir, {settings.data_dir / p for p in frame["path"]})
        for path in (settings.rejected_path, settings.duplicates_path):
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_info(settings, layout, manifest, available, rejected)
    return Dataset(_with_absolute_paths(manifest, settings), rejected, duplicates, available,
                   source, layout)


def _write_info(settings: Settings, layout: str, manifest: pd.DataFrame, available: pd.Series,
                rejected: pd.DataFrame, **more) -> None:
    """``dataset.json``, written last: it marks a build complete (:func:`_built_info`)."""
    fsutil.write_json_atomic(settings.dataset_info_path, {
        "source": str(settings.data_source), "layout": layout, "profile": settings.profile,
        "per_class_limit": settings.per_class_limit, "seed": settings.seed,
        "counts": manifest["label"].value_counts().reindex(CLASSES, fill_value=0).to_dict(),
        "available": available.to_dict(), "rejected": len(rejected), **more,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def _previous_placement(settings: Settings) -> dict[str, tuple[str, str]]:
    """``{path: (source_sha256, sha256)}`` of the last complete build (its ``dataset.json``
    written last); empty if there is none or it is unusable."""
    if not settings.dataset_info_path.is_file():
        return {}
    try:
        previous = pd.read_csv(settings.manifest_path, usecols=["path", "source_sha256", "sha256"], dtype=str)
    except (OSError, ValueError, pd.errors.ParserError):
        return {}
    return {p: (s, h) for p, s, h in zip(previous["path"], previous["source_sha256"], previous["sha256"])}


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
    """The whole of notebook 01 in one call: fetch or find the data, import it, build the
    manifest; for several sources, each of them, then one manifest of all."""
    if len(settings.data_sources) > 1:
        return build_combined(settings, [prepare(part, progress) for part in settings.parts()])
    folder = raw_folder(settings, progress)
    layout, candidates = sources.read_source(folder)
    return build_manifest(candidates, settings, settings.source_name, layout, progress)


def combine(manifests: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several sources' manifests as one, for training on several sources at once.

    Lesion and patient ids are prefixed with their source, so that two collections' "L001"
    are not taken for one lesion (an id prefixed already, by an earlier combination, is kept).
    An image already seen in an earlier manifest, by its ISIC id (HAM10000 is also in the ISIC
    Archive, resized) or by its bytes, is kept once: the later copy is left out **with every
    image of its lesion and patient** in that later source, since those are the same lesion as
    images kept; all left out are the second table. Two other ids that clash ("img001" in two
    folders, different images) are both kept, the later one's id prefixed with its source.
    """
    frames, seen = [], set()
    for manifest in manifests:
        again = seen & set(manifest["source"])
        if again:  # its ids, prefixed already, would make it a repeat of itself: all left out
            raise ValueError(f"{sorted(again)[0]} is in two of the manifests combined: give each "
                             "source once.")
        seen |= set(manifest["source"])
        frame = manifest.copy()
        for column in ("lesion_id", "patient_id"):
            text = frame[column].map(lambda value: "" if pd.isna(value) else str(value))
            known = (text != "") & ~pd.Series(
                [value.startswith(f"{source}:") for value, source in zip(text, frame["source"])],
                index=frame.index, dtype=bool)
            prefixed = frame["source"] + ":" + text
            frame[column] = frame[column].astype(object).where(~known, prefixed)
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True)
    same_bytes = combined["source_sha256"].duplicated(keep="first")
    clash = combined["image_id"].duplicated(keep="first")
    isic = combined["image_id"].astype(str).str.fullmatch(sources.ISIC_ID.pattern)
    renamed = clash & ~isic & ~same_bytes
    combined.loc[renamed, "image_id"] = combined["source"] + ":" + combined["image_id"].astype(str)
    repeated = (clash & ~renamed) | same_bytes
    for column in ("lesion_id", "patient_id"):  # the rest of each repeated image's lesion
        ids = set(combined.loc[repeated, column].dropna()) - {""}
        repeated |= combined[column].isin(ids)
    return combined[~repeated].reset_index(drop=True), combined[repeated].reset_index(drop=True)


REPEATED = "also in an earlier source"


def build_combined(settings: Settings, built: list[Dataset]) -> Dataset:
    """One manifest of several sources' builds (one per ``settings.parts()``, in that order), in
    ``data/``, as :func:`combine` joins them; each source's rejects and duplicates, and the images
    left out as repeats, in ``data/rejected.csv`` and ``data/duplicates.csv``."""
    parts = [part.manifest.assign(path=[Path(p).relative_to(settings.data_dir).as_posix()
                                        for p in part.manifest["path"]]) for part in built]
    manifest, repeated = combine(parts)
    rejected = pd.concat([part.rejected for part in built] + [pd.DataFrame(
        {"image_id": repeated["image_id"], "label": repeated["label"], "lesion_id": repeated["lesion_id"],
         "original_path": repeated["original_path"], "reason": REPEATED,
         "detail": [f"{source}: the same image (ISIC id or bytes), or another of its lesion or "
                    "patient, is in an earlier source, and is kept there once" for source in repeated["source"]]},
        columns=REJECTED_COLUMNS)], ignore_index=True)
    duplicates = pd.concat([part.duplicates for part in built], ignore_index=True)
    duplicates["kept_in_use"] = duplicates["kept"].isin(set(manifest["image_id"]))
    available = sum((part.available for part in built), pd.Series(0, index=CLASSES))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.dataset_info_path.unlink(missing_ok=True)  # no manifest vouches for half a build
    for path, table in {settings.rejected_path: rejected, settings.duplicates_path: duplicates,
                        settings.manifest_path: manifest}.items():
        fsutil.write_atomic(path, lambda out, table=table: table.to_csv(out, index=False))
    _remove_stale(settings.train_dir, set())  # a one-source build's images: this one has none there
    layout = "+".join(part.layout for part in built)
    _write_info(settings, layout, manifest, available, rejected,  # images in use per source, and
                sources={part.source: int((manifest["source"] == part.source).sum()) for part in built},
                repeated=len(repeated))  # those left out as repeats
    return Dataset(_with_absolute_paths(manifest, settings), rejected, duplicates, available,
                   settings.source_name, layout, tuple(built))


def _built_info(settings: Settings) -> dict:
    """``dataset.json`` of a complete build for these settings, or a :class:`ManifestError`."""
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
    return info


def load_manifest(settings: Settings) -> pd.DataFrame:
    """The manifest built by notebook 01 for these settings, with absolute image paths."""
    _built_info(settings)
    manifest = pd.read_csv(settings.manifest_path, dtype={"lesion_id": "string",
                           "patient_id": "string", "image_id": "string", "sex": "string",
                           "site": "string", "diagnosis": "string", "sha256": "string"})
    return _with_absolute_paths(manifest, settings)


def dataset_info(settings: Settings) -> dict:
    """What notebook 01 recorded: source, counts in use and available per class, and more."""
    return _built_info(settings)


def load_duplicates(settings: Settings) -> pd.DataFrame:
    """The duplicates notebook 01 left out, each beside the image that was kept."""
    _built_info(settings)
    return pd.read_csv(settings.duplicates_path, dtype={"image_id": str, "kept": str})
