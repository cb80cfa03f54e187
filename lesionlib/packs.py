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
import re
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pandas as pd

from . import LesionlibError, __version__, backbones, dataset, fsutil, isic_archive
from .images import sha256_of
from .settings import PACK_FILE, PROFILE_TABLE, Settings, pack_data_folders

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
        "anatom_site_1": manifest["site"],  # the site as the source recorded it
    })


def _write_collection(built: dataset.Dataset, folder: Path) -> dict:
    """Copy the images in use and write their ``metadata.csv``; return counts for pack.json."""
    folder.mkdir(parents=True)
    for image_id, path in zip(built.manifest["image_id"], built.manifest["path"]):
        shutil.copyfile(path, folder / f"{image_id}.jpg")
    _isic_metadata(built.manifest).to_csv(folder / "metadata.csv", index=False)
    licences = sorted(built.manifest["license"].dropna().astype(str).unique())
    isic_archive.write_licences(folder, licences)
    (folder / "README.txt").write_text(
        f"{len(built.manifest)} images from {built.source}, chosen and checked by lesion-course's "
        "notebook 01, in the ISIC download layout.\nLicences: "
        f"{', '.join(licences) or 'none recorded'} (per image in metadata.csv, with the "
        "attribution; each licence's name and link in licenses/). CC-BY-NC images may not be "
        "used commercially.\n")
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
    # Several sources travel as several collections, each in data/<its name>.
    collections = {f"data/{part.source}": part for part in main.parts or [main]}
    try:
        pack_data_folders(list(collections))
    except ValueError:
        names = ", ".join(part.source for part in collections.values())
        raise PackError(f"A pack's collections are named after their folders, and a comma in {names} "
                        "would split one in two: rename that folder.") from None
    external = dataset.prepare(settings.external(), progress) if settings.external_source else None
    name, backbone_folder = _backbone_folder(settings)
    weights = backbones.keras_weights(settings)  # fine-tuning's; downloaded once if "imagenet"
    files = [Path(path) for part in [*collections.values(), *([external] if external else [])]
             for path in part.manifest["path"]]
    files += [path for path in backbone_folder.rglob("*") if path.is_file()] if backbone_folder else []
    files += [Path(weights)] if weights else []
    size = sum(path.stat().st_size for path in files)
    if size > MAX_TOTAL:  # before hours of writing a pack that no laptop would unpack
        raise PackError(f"The pack would hold {size / 1e9:.1f} GB, more than `lesionlib unpack` takes "
                        f"({MAX_TOTAL >> 30} GiB): pack the workshop profile (up to 500 images per "
                        "class), or give each laptop the images and set LESIONLIB_DATA_SOURCE.")
    # Staging beside the pack, named with this process's id: one left by a kill is swept later.
    with fsutil.temporary_folder(target) as staging:
        info = {"format": FORMAT, "lesionlib": __version__, "profile": settings.profile,
                "made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "external": None, "external_counts": None,
                "backbone": f"backbone/{name}" if backbone_folder else name}
        counts = {folder: _write_collection(part, staging / folder) for folder, part in collections.items()}
        info["data"], info["counts"] = (next(iter(counts)), next(iter(counts.values()))) \
            if len(counts) == 1 else (list(counts), counts)
        if external is not None:
            info["external"] = f"external/{external.source}"
            info["external_counts"] = _write_collection(external, staging / info["external"])
        if backbone_folder is not None:
            shutil.copytree(backbone_folder, staging / info["backbone"])
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


# Limits of what `unpack` accepts. A workshop pack is 10-20 MB; the full profile's every image of
# HAM10000 (~3 GB at full size) and BCN20000 is far more, so `make` refuses it before writing.
# The limits leave room for any workshop and stop zip bombs.
MAX_TOTAL = 4 << 30  # declared bytes of all files together
MAX_RATIO = 100  # unpacked / packed size of one file above RATIO_FLOOR (SavedModels: ~12, JPEGs: ~1)
RATIO_FLOOR = 1 << 20
MAX_SUMS = 16 << 20  # SHA256SUMS: ~100 bytes a line, so over 100,000 files
MAX_PACK_JSON = 1 << 20
MAX_LINE = 1024  # one SHA256SUMS line: a digest, two spaces, a path
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}  # what `make` writes
_DIGEST = re.compile(r"[0-9a-f]{64}")
_AGAIN = "Copy it again from the instructor's original, or make a new one with `lesionlib pack`."


def _shown(value: object, limit: int = 80) -> str:
    """``value`` for a message, cut short: never print a whole hostile line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _check_members(archive: zipfile.ZipFile, path: Path) -> int:
    """Refuse, from the zip's directory alone (nothing unpacked yet), entries `make` never
    writes and sizes no pack has; return the declared size of everything."""
    total, seen = 0, set()
    for info in archive.infolist():
        name = _shown(info.filename)
        if info.filename in seen:
            raise PackError(f"{path} holds {name} twice: it was changed after it was made. {_AGAIN}")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise PackError(f"{path}: {name} is encrypted, and packs never are: it was not made by "
                            f"`lesionlib pack`. {_AGAIN}")
        if info.compress_type not in METHODS:
            raise PackError(f"{path}: {name} uses zip compression method {info.compress_type}; packs "
                            f"use only {' or '.join(METHODS.values())}: it was not made by "
                            f"`lesionlib pack`. {_AGAIN}")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise PackError(f"{path}: {name} would unpack to {info.file_size:,} bytes from "
                            f"{info.compress_size:,} (over {MAX_RATIO} times; a zip bomb?). "
                            f"Nothing was unpacked. {_AGAIN}")
        total += info.file_size
    if total > MAX_TOTAL:
        raise PackError(f"{path} would unpack to {total:,} bytes, more than the {MAX_TOTAL:,} a pack "
                        f"may hold. Nothing was unpacked. {_AGAIN}")
    return total


def _read_member(archive: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    """A small member's bytes, at most ``limit`` of them, whatever its header claims."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise PackError(f"{path} is not a lesion-course pack: it has no {name}. Make packs "
                        "with `lesionlib pack`.") from None
    if info.file_size > limit:
        raise PackError(f"{path}: its {name} is {info.file_size:,} bytes, more than the {limit:,} "
                        f"a pack's may be: the pack is damaged or not a lesion-course pack. {_AGAIN}")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise PackError(f"{path}: its {name} is longer than it says; the pack is damaged. {_AGAIN}")
    return data


def _safe_name(name: str) -> bool:
    """A relative POSIX path of plain parts: no ``..``, ``.``, empty part, backslash or control."""
    parts = name.split("/")
    return (0 < len(name) <= 1000 and PurePosixPath(name).as_posix() == name and not name.startswith("/")
            and all(part not in ("", ".", "..") for part in parts)
            and not any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in name))


def _checksums(data: bytes, path: Path) -> dict[str, str]:
    """``SHA256SUMS`` of the pack as ``{file: sha256}``, every name a safe relative path."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PackError(f"{path}: its {SUMS_FILE} is not UTF-8 text (byte {error.start}); the pack "
                        f"is damaged or not a lesion-course pack. {_AGAIN}") from None
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(line) > MAX_LINE or not _DIGEST.fullmatch(digest) or not _safe_name(name) \
                or name == SUMS_FILE or name in sums:
            raise PackError(f"{path}: line {number} of {SUMS_FILE} ({_shown(line)}, {len(line):,} "
                            "characters) is not '<sha256>  <relative path>'; the pack is damaged. "
                            f"{_AGAIN}")
        sums[name] = digest
    if PACK_FILE not in sums:
        raise PackError(f"{path}: {SUMS_FILE} does not list {PACK_FILE}; the pack is damaged. {_AGAIN}")
    return sums


def _pack_info(archive: zipfile.ZipFile, path: Path, sums: dict[str, str]) -> dict:
    """``pack.json``, checked against its checksum and for what the settings read from it: a
    profile this lesionlib knows, and ``data``, ``external``, ``backbone`` and
    ``keras_weights`` inside the pack (or a registry network's name)."""
    data = _read_member(archive, path, PACK_FILE, MAX_PACK_JSON)
    if hashlib.sha256(data).hexdigest() != sums[PACK_FILE]:
        raise PackError(f"{path} is damaged: {PACK_FILE} does not match its checksum. {_AGAIN}")

    def refuse(problem: str) -> PackError:
        return PackError(f"{path}: its {PACK_FILE} {problem}; the pack was edited or not made by "
                         f"`lesionlib pack`. Nothing was unpacked. {_AGAIN}")

    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise refuse(f"is not JSON ({_shown(str(error), 120)})") from None
    if not isinstance(info, dict):
        raise refuse(f"is a JSON {type(info).__name__}, not an object")
    if info.get("format") != FORMAT:
        raise PackError(f"{path} is a pack of format {_shown(info.get('format'))}, made by lesionlib "
                        f"{_shown(info.get('lesionlib'))}; this lesionlib ({__version__}) reads format "
                        f"{FORMAT}. Update the course, or make the pack again with this version.")
    if info.get("profile") not in PROFILE_TABLE:
        raise refuse(f"names the profile {_shown(info.get('profile'))}, not one of "
                     f"{', '.join(PROFILE_TABLE)}")
    folders = {f + "/" for name in sums for f in _parents(name)}  # every folder that holds a file

    def inside(key: str, value: object, folder: bool) -> None:
        ok = isinstance(value, str) and _safe_name(value) and (
            value + "/" in folders if folder else value in sums)
        if not ok:
            raise refuse(f"gives {key} {_shown(value)}, which is no {'folder' if folder else 'file'} "
                         "inside the pack")

    try:
        data = pack_data_folders(info.get("data"))  # one collection, or several
    except ValueError as error:
        raise refuse(str(error)) from None
    for value in data:
        inside("data", value, True)
    if "external" not in info or info["external"] is not None:
        inside("external", info.get("external"), True)
    backbone = info.get("backbone")
    if not (isinstance(backbone, str) and "/" not in backbone and backbone in backbones.REGISTRY):
        inside("backbone", backbone, True)  # a network's name, or its folder in the pack
    if info.get("keras_weights") is not None:
        inside("keras_weights", info["keras_weights"], False)
    return info


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _extract(archive: zipfile.ZipFile, path: Path, sums: dict[str, str], folder: Path | None) -> None:
    """Check every listed file against its checksum, writing it into ``folder`` unless None;
    a file is never written beyond the size the zip declares for it."""
    for name, expected in sums.items():
        info = archive.getinfo(name)
        digest, written = hashlib.sha256(), 0
        if folder is not None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, open(folder / name if folder else os.devnull, "wb") as out:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                written += len(chunk)
                if written > info.file_size:
                    raise PackError(f"{path} is damaged: {_shown(name)} is longer than its zip entry "
                                    f"says. {_AGAIN}")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise PackError(f"{path} is damaged: {name} does not match its checksum. Copy the pack "
                            "again from the instructor's original.")


def _listed(archive: zipfile.ZipFile, path: Path, sums: dict[str, str]) -> None:
    """The zip holds exactly the files ``SHA256SUMS`` lists (and itself)."""
    present = {n for n in archive.namelist() if not n.endswith("/")} - {SUMS_FILE}
    missing, extra = sorted(set(sums) - present), sorted(present - set(sums))
    if missing:
        raise PackError(f"{path} is incomplete: {len(missing)} files listed in {SUMS_FILE} are not "
                        f"in it (first: {missing[0]}). Copy the pack again, or make a new one.")
    if extra:
        raise PackError(f"{path} holds {len(extra)} files its {SUMS_FILE} does not list (first: "
                        f"{_shown(extra[0])[1:-1]}): it was changed after it was made. Use the "
                        "original pack.")


def _installed_intact(target: Path, sums_bytes: bytes, sums: dict[str, str]) -> bool:
    """Whether ``target`` holds this pack's ``SHA256SUMS`` and every file of it, each intact."""
    installed = target / SUMS_FILE
    try:
        if not installed.is_file() or installed.stat().st_size != len(sums_bytes) \
                or installed.read_bytes() != sums_bytes:
            return False
    except OSError:
        return False
    return all((target / name).is_file() and sha256_of(target / name) == digest
               for name, digest in sums.items())


def _foreign_files(target: Path) -> list[str]:
    """Files in ``target`` that no pack put there (the installed ``SHA256SUMS`` lists a pack's):
    ``unpack`` replaces the folder, and must not take a learner's own files with it."""
    if not target.exists() and not target.is_symlink():
        return []
    if target.is_symlink() or not target.is_dir():
        return [target.name]
    owned = {SUMS_FILE}
    sums = target / SUMS_FILE
    if sums.is_file() and not sums.is_symlink() and sums.stat().st_size <= MAX_SUMS:
        for line in sums.read_bytes().decode("utf-8", "replace").splitlines():
            owned.add(line.partition("  ")[2])
    return sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                  if (p.is_symlink() or not p.is_dir()) and p.relative_to(target).as_posix() not in owned)


def _free_bytes(folder: Path) -> int:
    existing = next(p for p in [folder, *folder.parents] if p.is_dir())
    return shutil.disk_usage(existing).free


def unpack(path: Path, home: Path) -> tuple[dict, bool]:
    """Check every file of the pack at ``path`` and put it in ``home/pack/`` (atomically: a
    damaged pack leaves what was there). Return its ``pack.json`` and whether anything
    changed: the same pack, unpacked again over an intact copy, is checked and nothing is
    written; over a copy with a file missing or changed, it is unpacked anew.

    Before anything is written, the zip's directory, ``SHA256SUMS`` and ``pack.json`` are
    checked (sizes, compression, names, what ``pack.json`` points at), and ``home/pack/`` must
    hold nothing but files of a pack: a folder with files of the learner's own is refused."""
    path = Path(path)
    target = Path(home) / "pack"
    if not path.is_file():
        raise PackError(f"No pack at {path}: give the path of the .zip file made by `lesionlib pack`.")
    try:
        with zipfile.ZipFile(path) as archive:
            total = _check_members(archive, path)
            sums_bytes = _read_member(archive, path, SUMS_FILE, MAX_SUMS)
            sums = _checksums(sums_bytes, path)
            _listed(archive, path, sums)
            info = _pack_info(archive, path, sums)
            if _installed_intact(target, sums_bytes, sums):
                _extract(archive, path, sums, None)
                return info, False
            foreign = _foreign_files(target)
            if foreign:
                raise PackError(f"Did not unpack {path}: {target} holds {len(foreign)} files that no "
                                f"pack put there (first: {_shown(foreign[0])[1:-1]}), and unpacking "
                                "replaces that folder. Move "
                                "them elsewhere (or delete the folder if you do not need them), then "
                                "unpack again.")
            if total > _free_bytes(target.parent):
                raise PackError(f"{path} needs {total:,} bytes and {target.parent} has "
                                f"{_free_bytes(target.parent):,} free: free some disk space, then "
                                "unpack again.")
            with fsutil.atomic_folder(target) as staging:
                _extract(archive, path, sums, staging)
                (staging / SUMS_FILE).write_bytes(sums_bytes)  # last: marks it complete
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise PackError(f"{path} is not a complete zip file ({_shown(str(error), 120)}): it was cut "
                        "short or damaged in the copy. Copy it again from the instructor's "
                        "original.") from None
    except OSError as error:
        raise PackError(f"Could not unpack {path} into {target} ({_shown(str(error), 200)}). Free some "
                        "disk space or check that the folder can be written, then unpack again.") from None
    return info, True
