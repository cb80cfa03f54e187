"""Workshop packs: the images and the network of a course run in one zip file, for laptops
on poor Wi-Fi.

    lesionlib pack --profile workshop OUT.zip    the instructor, once, with internet or a local source
    lesionlib unpack OUT.zip                     each student; no network needed from then on

A pack holds the images notebook 01 chose, in the ISIC download layout (``metadata.csv`` and
``<image_id>.jpg``, so notebook 01 imports them like any download, checks and all); the
second collection of notebook 06 if one is set; the backbone's SavedModel folder; the Keras
MobileNet V2 weights that notebook 03 fine-tunes (unless the profile uses none); ``pack.json``
(what the pack is) and ``SHA256SUMS`` (the checksum of every other file, in the format
``sha256sum -c`` reads). Unpacked into ``LESIONLIB_HOME/pack/``, it is where the settings
look when ``LESIONLIB_DATA_SOURCE``, ``LESIONLIB_BACKBONE``, ``LESIONLIB_KERAS_WEIGHTS`` and
``LESIONLIB_EXTERNAL_SOURCE`` are not set (see :mod:`lesionlib.settings`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pandas as pd

from . import LesionlibError, __version__, backbones, dataset, fsutil
from .images import sha256_of
from .settings import PACK_FILE, Settings

FORMAT = 1
SUMS_FILE = "SHA256SUMS"


class PackError(LesionlibError):
    """A pack that cannot be made or used; the message names the file and what to do."""


def _isic_metadata(manifest: pd.DataFrame) -> pd.DataFrame:
    """A manifest as an ISIC download's ``metadata.csv``, which :mod:`lesionlib.sources` reads
    back to the same class, diagnosis, lesion, patient, age, sex, site, licence and attribution."""
    return pd.DataFrame({
        "isic_id": manifest["image_id"],
        "attribution": manifest["attribution"],
        "copyright_license": manifest["license"],
        "diagnosis_1": manifest["label"].str.capitalize(),
        "diagnosis_2": manifest["diagnosis"],  # the finest diagnosis the source gave
        "lesion_id": manifest["lesion_id"],
        "patient_id": manifest["patient_id"],
        "age_approx": manifest["age"],
        "sex": manifest["sex"],
        "anatom_site_general": manifest["site"],
    })


def _write_collection(built: dataset.Dataset, folder: Path) -> dict:
    """Copy the images in use and write their ``metadata.csv``; return counts for pack.json."""
    folder.mkdir(parents=True)
    for image_id, path in zip(built.manifest["image_id"], built.manifest["path"]):
        shutil.copyfile(path, folder / f"{image_id}.jpg")
    _isic_metadata(built.manifest).to_csv(folder / "metadata.csv", index=False)
    licences = ", ".join(sorted(built.manifest["license"].dropna().astype(str).unique()))
    (folder / "README.txt").write_text(
        f"{len(built.manifest)} images from {built.source}, chosen and checked by lesion-course's "
        f"notebook 01, in the ISIC download layout.\nLicences: {licences} (per image in "
        "metadata.csv, with the attribution). CC-BY-NC images may not be used commercially.\n")
    return built.manifest["label"].value_counts().sort_index().to_dict()


def _backbone_folder(settings: Settings) -> tuple[str, Path | None]:
    """The backbone's name in the pack and the SavedModel folder to copy (None: built in)."""
    spec = backbones.resolve(settings.backbone)
    if spec.handle.startswith("builtin:"):
        return spec.name, None
    if Path(spec.handle).is_dir():
        return Path(spec.handle).name, Path(spec.handle)
    backbones.load(settings)  # downloads it into the cache, or says why it cannot
    # A registry name stays as it is (the unpacked folder is recognised by it); a handle
    # outside the registry becomes a folder name.
    return fsutil.safe_name(spec.name), backbones.hub_cache_folder(spec.handle, settings.tfhub_cache_dir)


def make(settings: Settings, target: Path, progress: bool = True) -> dict:
    """Collect the data as notebook 01 does (into ``settings.data_dir``), then write the pack
    ``target`` atomically; return its ``pack.json``."""
    target = Path(target).resolve()
    if not target.parent.is_dir():  # before the collection, which can be a long download
        raise PackError(f"No folder {target.parent} to write {target.name} into: create it, or "
                        "give another path.")
    main = dataset.prepare(settings, progress)
    external = dataset.prepare(settings.external(), progress) if settings.external_source else None
    name, backbone_folder = _backbone_folder(settings)
    with tempfile.TemporaryDirectory(prefix=".pack-", dir=target.parent) as work:
        staging = Path(work)
        info = {"format": FORMAT, "lesionlib": __version__, "profile": settings.profile,
                "made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "data": f"data/{main.source}",
                "counts": _write_collection(main, staging / "data" / main.source),
                "external": None, "external_counts": None,
                "backbone": f"backbone/{name}" if backbone_folder else name}
        if external is not None:
            info["external"] = f"external/{external.source}"
            info["external_counts"] = _write_collection(external, staging / info["external"])
        if backbone_folder is not None:
            shutil.copytree(backbone_folder, staging / info["backbone"])
        weights = backbones.keras_weights(settings)  # fine-tuning's; downloaded once if "imagenet"
        info["keras_weights"] = f"keras/{Path(weights).name}" if weights else None
        if weights:
            (staging / "keras").mkdir()
            shutil.copyfile(weights, staging / info["keras_weights"])
        (staging / PACK_FILE).write_text(json.dumps(info, indent=2) + "\n")
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        (staging / SUMS_FILE).write_text("".join(f"{sha256_of(staging / f)}  {f}\n" for f in files))
        with fsutil.atomic_path(target) as temporary, zipfile.ZipFile(temporary, "w") as archive:
            for name_in_pack in [SUMS_FILE, *files]:
                stored = name_in_pack.endswith(".jpg")  # JPEGs do not compress further
                archive.write(staging / name_in_pack, name_in_pack,
                              zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return info


def _checksums(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """``SHA256SUMS`` of the pack as ``{file: sha256}``, every name a safe relative path."""
    try:
        text = archive.read(SUMS_FILE).decode("utf-8")
    except KeyError:
        raise PackError(f"{path} is not a lesion-course pack: it has no {SUMS_FILE}. Make packs "
                        "with `lesionlib pack`.") from None
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        parts = PurePosixPath(name).parts
        if len(digest) != 64 or not parts or name.startswith("/") or ".." in parts:
            raise PackError(f"{path}: line {line!r} of {SUMS_FILE} is not '<sha256>  <relative path>'; "
                            "the pack is damaged. Copy it again from the instructor's original.")
        sums[name] = digest
    if PACK_FILE not in sums:
        raise PackError(f"{path}: {SUMS_FILE} does not list {PACK_FILE}; the pack is damaged.")
    return sums


def _extract(archive: zipfile.ZipFile, path: Path, sums: dict[str, str], folder: Path | None) -> None:
    """Check every listed file against its checksum, writing it into ``folder`` unless None."""
    present = {n for n in archive.namelist() if not n.endswith("/")} - {SUMS_FILE}
    missing, extra = sorted(set(sums) - present), sorted(present - set(sums))
    if missing:
        raise PackError(f"{path} is incomplete: {len(missing)} files listed in {SUMS_FILE} are not "
                        f"in it (first: {missing[0]}). Copy the pack again, or make a new one.")
    if extra:
        raise PackError(f"{path} holds {len(extra)} files its {SUMS_FILE} does not list (first: "
                        f"{extra[0]}): it was changed after it was made. Use the original pack.")
    for name, expected in sums.items():
        digest = hashlib.sha256()
        if folder is not None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with archive.open(name) as source, open(folder / name if folder else os.devnull, "wb") as out:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise PackError(f"{path} is damaged: {name} does not match its checksum. Copy the pack "
                            "again from the instructor's original.")


def _installed_intact(target: Path, sums: dict[str, str]) -> bool:
    """Whether ``target`` holds every file of ``sums``, each with its checksum."""
    return all((target / name).is_file() and sha256_of(target / name) == digest
               for name, digest in sums.items())


def unpack(path: Path, home: Path) -> tuple[dict, bool]:
    """Check every file of the pack at ``path`` and put it in ``home/pack/`` (atomically: a
    damaged pack leaves what was there). Return its ``pack.json`` and whether anything
    changed: the same pack, unpacked again over an intact copy, is checked and nothing is
    written; over a copy with a file missing or changed, it is unpacked anew."""
    path = Path(path)
    target = Path(home) / "pack"
    if not path.is_file():
        raise PackError(f"No pack at {path}: give the path of the .zip file made by `lesionlib pack`.")
    try:
        with zipfile.ZipFile(path) as archive:
            sums = _checksums(archive, path)
            installed = target / SUMS_FILE
            if installed.is_file() and installed.read_bytes() == archive.read(SUMS_FILE) \
                    and _installed_intact(target, sums):
                _extract(archive, path, sums, None)
                return json.loads((target / PACK_FILE).read_text()), False
            with fsutil.atomic_folder(target) as staging:
                _extract(archive, path, sums, staging)
                info = json.loads((staging / PACK_FILE).read_text())
                if info.get("format") != FORMAT:
                    raise PackError(f"{path} is a pack of format {info.get('format')}, made by "
                                    f"lesionlib {info.get('lesionlib')}; this lesionlib "
                                    f"({__version__}) reads format {FORMAT}. Update the course.")
                (staging / SUMS_FILE).write_bytes(archive.read(SUMS_FILE))  # last: marks it complete
    except (zipfile.BadZipFile, EOFError) as error:
        raise PackError(f"{path} is not a complete zip file ({error}): it was cut short or "
                        "damaged in the copy. Copy it again from the instructor's original.") from None
    except OSError as error:
        raise PackError(f"Could not unpack {path} into {target} ({error}). Free some disk space or "
                        "check that the folder can be written, then unpack again.") from None
    return info, True
