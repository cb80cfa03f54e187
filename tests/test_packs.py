"""Workshop packs: made from real sources, unpacked into a fresh home, refused when damaged."""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from lesionlib import backbones, cli, dataset, features, packs, splits, training
from lesionlib.settings import SettingsError, load_settings

from .conftest import SHARED

MOBILENET = SHARED / "weights" / "tfhub" / "mobilenet_v2_100_224_feature_vector"
KERAS_WEIGHTS = SHARED / "weights" / "keras" / "mobilenet_v2_1.0_224_float_no_top.weights.h5"
SAME = ["image_id", "label", "diagnosis", "lesion_id", "patient_id", "age", "sex", "site",
        "sha256", "license", "attribution"]


def _settings(home: Path, **env: str):
    """Settings from nothing but the home and the given LESIONLIB_* values."""
    return load_settings({"LESIONLIB_HOME": str(home),
                          **{f"LESIONLIB_{key.upper()}": value for key, value in env.items()}})


def _same_images(first: pd.DataFrame, second: pd.DataFrame) -> None:
    columns = lambda frame: frame[SAME].sort_values("image_id", ignore_index=True)  # noqa: E731
    pd.testing.assert_frame_equal(columns(first), columns(second), check_dtype=False)


@pytest.fixture
def smoke_pack(tmp_path) -> tuple[Path, object]:
    instructor = _settings(tmp_path / "instructor", profile="smoke")
    pack = tmp_path / "smoke.zip"
    packs.make(instructor, pack, progress=False)
    return pack, instructor


def test_a_smoke_pack_gives_a_student_the_same_images_and_collections(smoke_pack, tmp_path):
    pack, instructor = smoke_pack
    info, changed = packs.unpack(pack, tmp_path / "student")
    assert changed and info["profile"] == "smoke" and info["backbone"] == "tiny"
    student = _settings(tmp_path / "student", profile="smoke")
    assert student.pack == tmp_path / "student" / "pack"
    assert student.data_source == student.pack / "data" / "synthetic"
    assert student.external_source == student.pack / "external" / "synthetic-other-clinic"
    _same_images(dataset.prepare(student, progress=False).manifest, dataset.load_manifest(instructor))
    _same_images(dataset.prepare(student.external(), progress=False).manifest,
                 dataset.load_manifest(instructor.external()))
    # each collection carries its licences' names and links beside the attribution
    for collection in ("data/synthetic", "external/synthetic-other-clinic"):
        licences = student.pack / collection / "licenses"
        assert [p.name for p in licences.iterdir()] == ["CC-0.txt"]
        assert "creativecommons.org/publicdomain/zero/1.0" in (licences / "CC-0.txt").read_text()


def test_unpacking_twice_is_harmless(smoke_pack, tmp_path):
    pack, _ = smoke_pack
    packs.unpack(pack, tmp_path / "student")
    pack_json = tmp_path / "student" / "pack" / "pack.json"
    before = pack_json.stat().st_mtime_ns
    info, changed = packs.unpack(pack, tmp_path / "student")
    assert not changed and pack_json.stat().st_mtime_ns == before and info["profile"] == "smoke"


def _rewrite(source: Path, target: Path, change) -> Path:
    """A copy of the zip ``source`` with ``change(name, data)`` applied to each member
    (returning None drops it), plus any ``change.extra`` members."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = change(item.filename, old.read(item))
            if data is not None:
                new.writestr(item, data)
    return target


def _a_jpeg(pack: Path) -> str:
    with zipfile.ZipFile(pack) as archive:
        return next(n for n in archive.namelist() if n.endswith(".jpg"))


@pytest.mark.parametrize("damage, message", [
    ("flip", "is damaged: {jpeg} does not match its checksum"),
    ("drop", "is incomplete: 1 files listed in SHA256SUMS are not in it (first: {jpeg})"),
    ("add", "holds 1 files its SHA256SUMS does not list (first: data/extra.jpg)"),
    ("truncate", "is not a complete zip file"),
    ("no sums", "is not a lesion-course pack: it has no SHA256SUMS"),
])
def test_a_damaged_pack_is_refused_and_the_unpacked_one_is_kept(smoke_pack, tmp_path, damage, message):
    pack, _ = smoke_pack
    home = tmp_path / "student"
    packs.unpack(pack, home)
    kept = sorted(p.relative_to(home) for p in (home / "pack").rglob("*"))
    jpeg = _a_jpeg(pack)
    bad = tmp_path / "bad.zip"
    if damage == "truncate":
        bad.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    elif damage == "add":
        shutil.copy(pack, bad)
        with zipfile.ZipFile(bad, "a") as archive:
            archive.writestr("data/extra.jpg", b"not listed")
    else:
        def change(name: str, data: bytes) -> bytes | None:
            if damage == "flip" and name == jpeg:
                return data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            if (damage == "drop" and name == jpeg) or (damage == "no sums" and name == "SHA256SUMS"):
                return None
            return data
        _rewrite(pack, bad, change)
    for where in (home, tmp_path / "fresh"):  # over the same pack intact, and into a new home
        with pytest.raises(packs.PackError) as error:
            packs.unpack(bad, where)
        assert message.format(jpeg=jpeg) in str(error.value) and str(bad) in str(error.value)
        assert not list(where.glob(".pack*"))  # nothing half-unpacked
    assert sorted(p.relative_to(home) for p in (home / "pack").rglob("*")) == kept
    assert not (tmp_path / "fresh" / "pack").exists()


def test_a_pack_is_used_only_for_its_profile_and_only_where_nothing_is_set(smoke_pack, tmp_path):
    pack, _ = smoke_pack
    home = tmp_path / "student"
    packs.unpack(pack, home)
    assert _settings(home).pack is None  # the workshop profile: this smoke pack is not for it
    own = tmp_path / "own-images"
    own.mkdir()
    settings = _settings(home, profile="smoke", data_source=str(own))
    assert settings.data_source == own and settings.pack == home / "pack"  # the rest still from the pack
    assert settings.external_source == home / "pack" / "external" / "synthetic-other-clinic"
    everything = _settings(home, profile="smoke", data_source=str(own), external_source="none",
                          backbone="tiny")
    assert everything.pack is None


def test_the_commands_pack_and_unpack(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LESIONLIB_HOME", str(tmp_path / "instructor"))
    for name in ("DATA_SOURCE", "BACKBONE", "EXTERNAL_SOURCE"):
        monkeypatch.delenv(f"LESIONLIB_{name}", raising=False)
    monkeypatch.setenv("LESIONLIB_PROFILE", "workshop")  # --profile wins
    pack = tmp_path / "cmd.zip"
    assert cli.main(["pack", "--profile", "smoke", "--quiet", str(pack)]) == 0
    assert "profile smoke" in capsys.readouterr().out
    monkeypatch.setenv("LESIONLIB_HOME", str(tmp_path / "student"))
    monkeypatch.setenv("LESIONLIB_PROFILE", "smoke")
    assert cli.main(["unpack", str(pack)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Unpacked") and f"workshop pack: {tmp_path / 'student' / 'pack'}" in out
    assert cli.main(["unpack", str(pack)]) == 0
    assert capsys.readouterr().out.startswith("Already unpacked, nothing to do")
    assert cli.main(["unpack", str(tmp_path / "missing.zip")]) == 2
    assert "No pack at" in capsys.readouterr().err


def test_a_pack_of_an_isic_archive_download(archive, tmp_path):
    instructor = _settings(tmp_path / "instructor", profile="smoke", data_source="isic-archive",
                           external_source="none", isic_api=archive.api)
    info = packs.make(instructor, tmp_path / "isic.zip", progress=False)
    assert info["data"] == "data/isic-archive" and info["external"] is None
    packs.unpack(tmp_path / "isic.zip", tmp_path / "student")
    archive.stop()  # the student has no network
    student = _settings(tmp_path / "student", profile="smoke")
    _same_images(dataset.prepare(student, progress=False).manifest, dataset.load_manifest(instructor))


def test_a_workshop_pack_of_ham10000_and_mobilenet_runs_offline_and_learns(ham10000, tmp_path):
    """Real HAM10000 and the shared MobileNet V2 folder, packed, unpacked in a fresh home."""
    instructor = _settings(tmp_path / "instructor", data_source=str(ham10000), backbone=str(MOBILENET),
                           keras_weights=str(KERAS_WEIGHTS))
    pack = tmp_path / "workshop.zip"
    info = packs.make(instructor, pack, progress=False)
    assert info["counts"] == {"benign": 500, "indeterminate": 327, "malignant": 500}
    packs.unpack(pack, tmp_path / "student")
    student = _settings(tmp_path / "student")  # no variable set: the workshop profile, the pack
    assert student.profile == "workshop" and student.pack is not None
    assert student.data_source == student.pack / "data" / "ham10000"
    assert Path(student.backbone) == student.pack / "backbone" / MOBILENET.name
    # Fine-tuning's Keras weights come along, byte for byte.
    assert student.keras_weights == student.pack / "keras" / KERAS_WEIGHTS.name
    assert student.keras_weights.read_bytes() == KERAS_WEIGHTS.read_bytes()
    built = dataset.prepare(student, progress=False)
    assert built.layout == "isic-download" and built.rejected.empty
    _same_images(built.manifest, dataset.load_manifest(instructor))
    # The same network (so bottleneck caches agree), loaded from the pack with no network...
    backbone = backbones.load(student)
    assert backbone.identity == backbones.load(instructor).identity
    # ... and the course learns from the pack: above chance (1/3) on unseen lesions.
    bottlenecks = features.extract(built.manifest, backbone, student.bottleneck_dir,
                                   preprocessing=student.preprocessing, progress=False)
    part = splits.grouped_split(built.manifest, seed=student.seed)
    arrays = {name: training.arrays(bottlenecks, built.manifest, part, name)
              for name in ("train", "validation", "test")}
    head = training.train_head(arrays["train"], arrays["validation"], training.HeadConfig())
    assert training.scores(head, *arrays["test"])["balanced accuracy"] > 0.5
    with zipfile.ZipFile(pack) as archive:
        sums = archive.read("SHA256SUMS").decode().splitlines()
        licence = archive.read("data/ham10000/licenses/CC-BY-NC.txt").decode()
    assert "creativecommons.org/licenses/by-nc/4.0" in licence  # HAM10000's, beside its credit
    # images, metadata.csv, README.txt, the licence; the network; pack.json, the weights
    assert len(sums) == len(built.manifest) + 3 + sum(1 for p in MOBILENET.rglob("*") if p.is_file()) + 2
    assert json.loads((student.pack / "pack.json").read_text())["data"] == "data/ham10000"


def test_a_pack_of_a_tf_hub_handle_carries_the_cached_download(tmp_path):
    """A registry name is downloaded into data/cache/tfhub/ by the instructor; the pack takes
    that folder. Here the cache is filled from the shared copy (no TF Hub on this machine)."""
    if not MOBILENET.is_dir():
        pytest.skip(f"no MobileNet V2 at {MOBILENET}")
    instructor = _settings(tmp_path / "instructor", profile="smoke", backbone="mobilenet_v2_100_224",
                           external_source="none")
    handle = backbones.REGISTRY["mobilenet_v2_100_224"].handle
    shutil.copytree(MOBILENET, backbones.hub_cache_folder(handle, instructor.tfhub_cache_dir))
    info = packs.make(instructor, tmp_path / "hub.zip", progress=False)
    assert info["backbone"] == "backbone/mobilenet_v2_100_224"
    packs.unpack(tmp_path / "hub.zip", tmp_path / "student")
    student = _settings(tmp_path / "student", profile="smoke")
    assert backbones.resolve(student.backbone).input_size == 224
    assert backbones.load(student).identity.startswith("folder:")


def test_an_edited_pack_json_is_a_clear_error(smoke_pack, tmp_path):
    pack, _ = smoke_pack
    packs.unpack(pack, tmp_path / "student")
    (tmp_path / "student" / "pack" / "pack.json").write_text('{"profile": "smoke"}')
    with pytest.raises(SettingsError, match=r"pack\.json cannot be read \(KeyError: 'backbone'\): unpack"):
        _settings(tmp_path / "student", profile="smoke")
    # A comma would make two sources of one name, the second anywhere on the laptop.
    info = json.loads(zipfile.ZipFile(pack).read("pack.json"))
    (tmp_path / "student" / "pack" / "pack.json").write_text(json.dumps(
        {**info, "data": ["data/synthetic,/etc", "data/synthetic"]}))
    with pytest.raises(SettingsError, match=r"pack\.json cannot be read \(ValueError: data is .*no comma"):
        _settings(tmp_path / "student", profile="smoke")


@pytest.mark.parametrize("damage", ["edit pack.json", "delete pack.json", "delete the images"])
def test_unpacking_again_repairs_an_unpacked_pack(smoke_pack, tmp_path, monkeypatch, capsys, damage):
    pack, _ = smoke_pack
    home = tmp_path / "student"
    packs.unpack(pack, home)
    if damage == "edit pack.json":
        (home / "pack" / "pack.json").write_text("{")
    elif damage == "delete pack.json":
        (home / "pack" / "pack.json").unlink()
    else:
        shutil.rmtree(home / "pack" / "data")
        with pytest.raises(SettingsError, match=r"has lost data/synthetic/: unpack the pack again"):
            _settings(home, profile="smoke")
    monkeypatch.setenv("LESIONLIB_HOME", str(home))
    monkeypatch.setenv("LESIONLIB_PROFILE", "smoke")
    for name in ("DATA_SOURCE", "BACKBONE", "EXTERNAL_SOURCE"):
        monkeypatch.delenv(f"LESIONLIB_{name}", raising=False)
    assert cli.main(["unpack", str(pack)]) == 0
    assert capsys.readouterr().out.startswith("Unpacked")
    assert _settings(home, profile="smoke").data_source == home / "pack" / "data" / "synthetic"


def test_a_pack_of_several_sources_keeps_them_apart(tmp_path, cc0_sample):
    instructor = _settings(tmp_path / "instructor", profile="smoke", data_source=f"synthetic,{cc0_sample}")
    info = packs.make(instructor, tmp_path / "x.zip", progress=False)
    assert info["data"] == ["data/synthetic", "data/isic-cc0-sample"] and set(info["counts"]) == set(info["data"])
    home = tmp_path / "student"
    packs.unpack(tmp_path / "x.zip", home)
    student = _settings(home, profile="smoke")
    assert student.data_sources == (home / "pack" / "data" / "synthetic", home / "pack" / "data" / "isic-cc0-sample")
    built = dataset.prepare(student, progress=False)
    _same_images(built.manifest, dataset.load_manifest(instructor))  # ids prefixed by the same names
    assert set(built.manifest["source"]) == {"synthetic", "isic-cc0-sample"}


def test_a_pack_too_large_to_unpack_is_refused_before_it_is_written(tmp_path, monkeypatch):
    instructor = _settings(tmp_path / "instructor", profile="smoke")
    monkeypatch.setattr(packs, "MAX_TOTAL", 1000)
    with pytest.raises(packs.PackError, match=r"would hold 0\.0 GB, more than `lesionlib unpack` takes"):
        packs.make(instructor, tmp_path / "x.zip", progress=False)
    assert not (tmp_path / "x.zip").exists() and not list(tmp_path.glob("*.zip*"))


def test_a_pack_without_a_second_collection_gives_none(tmp_path):
    instructor = _settings(tmp_path / "instructor", profile="smoke", external_source="none")
    with pytest.raises(packs.PackError, match="No folder .*missing to write x.zip into: create it"):
        packs.make(instructor, tmp_path / "missing" / "x.zip", progress=False)
    assert not (tmp_path / "instructor" / "data").exists()  # refused before collecting anything
    packs.make(instructor, tmp_path / "x.zip", progress=False)
    packs.unpack(tmp_path / "x.zip", tmp_path / "student")
    assert _settings(tmp_path / "student", profile="smoke").external_source is None  # not the profile's


# Issue 14: hostile packs --------------------------------------------------------------------

GIB = 1 << 30


@pytest.fixture(scope="module")
def one_smoke_pack(tmp_path_factory) -> tuple[Path, object]:
    """One smoke pack for the tests below, which only read it (making one takes a second)."""
    folder = tmp_path_factory.mktemp("one-pack")
    instructor = _settings(folder / "instructor", profile="smoke")
    packs.make(instructor, folder / "smoke.zip", progress=False)
    return folder / "smoke.zip", instructor


def _zeros_member(archive: zipfile.ZipFile, name: str, size: int, fill: bytes = b"\0") -> str:
    """Stream ``size`` bytes of ``fill`` into ``archive`` as one deflated member (never all in
    memory); return their sha256."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = 1  # fast; 1 GiB of zeros still packs ~230 times smaller
    chunk, digest = fill * ((1 << 20) // len(fill)), hashlib.sha256()
    with archive.open(info, "w", force_zip64=True) as out:
        for start in range(0, size, len(chunk)):
            piece = chunk[: size - start]
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def _repack(source: Path, target: Path, change=lambda name, data: data, extra=None,
            sums: bytes | None = None) -> Path:
    """A copy of pack ``source`` with ``change(name, data)`` applied to each file (None drops it)
    and ``extra(archive) -> {name: sha256}`` members added, its SHA256SUMS rewritten to match
    (unless ``sums`` is given): consistent, so it is refused for the intended reason only."""
    lines = []
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            if item.filename == "SHA256SUMS":
                continue
            data = change(item.filename, old.read(item))
            if data is not None:
                new.writestr(item, data)
                lines.append(f"{hashlib.sha256(data).hexdigest()}  {item.filename}\n")
        for name, digest in (extra(new) if extra else {}).items():
            lines.append(f"{digest}  {name}\n")
        new.writestr("SHA256SUMS", sums if sums is not None else "".join(lines))
    return target


def _files_under(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()} if folder.exists() else {}


def _refused(bad: Path, home: Path, *messages: str) -> str:
    """Unpack ``bad`` into ``home``: a PackError naming the pack, short, with each message;
    nothing written anywhere in ``home``."""
    before = _files_under(home)
    with pytest.raises(packs.PackError) as error:
        packs.unpack(bad, home)
    text = str(error.value)
    assert str(bad) in text and len(text) < 700, text
    for message in messages:
        assert message in text, text
    assert _files_under(home) == before and not list(home.glob(".pack*"))
    return text


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(one_smoke_pack, tmp_path, monkeypatch):
    pack, _ = one_smoke_pack
    home = tmp_path / "student"
    packs.unpack(pack, home)
    written = []
    monkeypatch.setattr(packs, "_extract", lambda *args: written.append(args[-1]))
    bomb = _repack(pack, tmp_path / "bomb.zip",  # 1 GiB of zeros in ~5 MB, with its right checksum
                   extra=lambda new: {"data/bomb.jpg": _zeros_member(new, "data/bomb.jpg", GIB)})
    assert bomb.stat().st_size < 10 << 20
    _refused(bomb, home, "data/bomb.jpg' would unpack to 1,073,741,824 bytes", "a zip bomb?")
    _refused(bomb, tmp_path / "fresh", "a zip bomb?")
    assert written == [] and not (tmp_path / "fresh").exists()
    liar = _repack(pack, tmp_path / "liar.zip",  # the same, with a wrong checksum: never written either
                   extra=lambda new: {"data/bomb.jpg": _zeros_member(new, "data/bomb.jpg", GIB) and "0" * 64})
    _refused(liar, home, "a zip bomb?")
    assert written == []


def test_the_total_unpacked_size_is_capped(one_smoke_pack, tmp_path, monkeypatch):
    pack, _ = one_smoke_pack
    with zipfile.ZipFile(pack) as archive:
        total = sum(info.file_size for info in archive.infolist())
    monkeypatch.setattr(packs, "MAX_TOTAL", total - 1)  # real files, ratios as real packs have
    _refused(pack, tmp_path / "student", f"would unpack to {total:,} bytes, more than the {total - 1:,}")
    monkeypatch.setattr(packs, "MAX_TOTAL", total)
    assert packs.unpack(pack, tmp_path / "student")[1]
    assert sum(_files_under(tmp_path / "student").values()) <= total


def test_a_wrong_checksum_is_found_while_streaming_and_nothing_stays(one_smoke_pack, tmp_path):
    pack, _ = one_smoke_pack
    bad = _repack(pack, tmp_path / "bad.zip",  # 1 MiB within every limit, with a wrong checksum
                  extra=lambda new: {"data/big.jpg": _zeros_member(new, "data/big.jpg", 1 << 20, b"0123457")
                                     and "f" * 64})
    _refused(bad, tmp_path / "student", "is damaged: data/big.jpg does not match its checksum")
    assert not (tmp_path / "student").exists() or not any((tmp_path / "student").iterdir())


def test_a_sums_file_of_one_huge_line_takes_no_memory_and_is_not_printed(one_smoke_pack, tmp_path,
                                                                         monkeypatch):
    pack, _ = one_smoke_pack
    _refused(_repack(pack, tmp_path / "ratio.zip", sums=b"a" * (100 << 20)), tmp_path / "student",
             "'SHA256SUMS' would unpack to 104,857,600 bytes", "a zip bomb?")
    monkeypatch.setattr(packs, "MAX_RATIO", 10**9)  # the ratio stops it already; now the size cap
    with zipfile.ZipFile(pack) as archive:
        names = [n for n in archive.namelist() if n != "SHA256SUMS"]
    huge = tmp_path / "huge.zip"
    with zipfile.ZipFile(pack) as old, zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as new:
        for name in names:
            new.writestr(name, old.read(name))
        _zeros_member(new, "SHA256SUMS", GIB, b"a")  # one line of 1 GiB
    tracemalloc.start()
    try:
        text = _refused(huge, tmp_path / "student", "SHA256SUMS is 1,073,741,824 bytes, more than")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20 and "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" not in text
    long_line = _repack(pack, tmp_path / "long.zip", sums=("a" * 64 + "  " + "x/" * 50_000 + "y\n").encode())
    text = _refused(long_line, tmp_path / "student", "line 1 of SHA256SUMS ('aaaa", "100,067 characters")
    assert "x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x" not in text


@pytest.mark.parametrize("where", ["a fresh folder", "an unpacked pack"])
def test_unpacking_never_deletes_a_learners_own_files(one_smoke_pack, tmp_path, where):
    pack, _ = one_smoke_pack
    home = tmp_path / "home"  # LESIONLIB_HOME=$HOME: ~/pack may be the learner's own folder
    if where == "an unpacked pack":
        packs.unpack(pack, home)
        pack = _repack(pack, tmp_path / "newer.zip",  # another pack, so the folder is replaced
                       change=lambda n, d: d.replace(b'"made"', b'"made" ') if n == "pack.json" else d)
    (home / "pack" / "notes").mkdir(parents=True, exist_ok=True)
    (home / "pack" / "notes" / "mine.txt").write_text("my notes")
    text = _refused(pack, home, f"{home / 'pack'} holds 1 files that no pack put there (first: "
                    "notes/mine.txt)", "Move them elsewhere", "then unpack again")
    assert (home / "pack" / "notes" / "mine.txt").read_text() == "my notes" and "Traceback" not in text
    (home / "pack" / "notes" / "mine.txt").unlink()
    assert packs.unpack(pack, home)[1]  # only empty folders of its own: replaced
    (home / "pack" / "mine.txt").write_text("mine")
    assert packs.unpack(pack, home) == (packs.unpack(pack, home)[0], False)  # the same pack: untouched
    assert (home / "pack" / "mine.txt").read_text() == "mine"


def _patch_entry(zip_path: Path, name: str, offset_local: int, offset_central: int, value: int) -> None:
    """Overwrite a 2-byte field of ``name``'s local and central zip headers (method: 8 and 10;
    flags: 6 and 8)."""
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as archive:
        local = archive.getinfo(name).header_offset
    data[local + offset_local: local + offset_local + 2] = value.to_bytes(2, "little")
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = int.from_bytes(data[at + 28: at + 30], "little")
        if data[at + 46: at + 46 + length] == name.encode():
            data[at + offset_central: at + offset_central + 2] = value.to_bytes(2, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    zip_path.write_bytes(bytes(data))


def _set(**values):
    return _edit_json(lambda info: json.dumps({**info, **values}).encode())


def _edit_json(change):
    def edit(name, data):
        if name != "pack.json":
            return data
        info = json.loads(data)
        return change(info) if callable(change) else change
    return edit


HOSTILE = {
    "sums not UTF-8": (dict(sums=b"\xff\xfe" + "a".encode("utf-16")), "SHA256SUMS is not UTF-8 text"),
    "pack.json not JSON": (dict(change=_edit_json(b"{not json")), "pack.json is not JSON"),
    "pack.json a list": (dict(change=_edit_json(b"[1, 2]")), "pack.json is a JSON list, not an object"),
    "no profile": (dict(change=_edit_json(lambda i: json.dumps({k: v for k, v in i.items()
                                                                if k != "profile"}).encode())),
                   "pack.json names the profile None"),
    "data outside": (dict(change=_set(data="../../outside")),
                     "data is '../../outside', not a folder data/<name>"),
    "data absolute": (dict(change=_set(data="/etc")), "data is '/etc', not a folder data/<name>"),
    "data with a comma": (dict(change=_set(data=["data/synthetic,/etc", "data/synthetic"])),
                          "not a folder data/<name> (no comma in the name)"),
    "data an empty list": (dict(change=_set(data=[])), "data is '[]', not a folder data/<name>"),
    "data twice": (dict(change=_set(data=["data/synthetic", "data/synthetic"])), "list of distinct ones"),
    "data not text": (dict(change=_set(data=["data/synthetic", 3])), "not a folder data/<name>"),
    "data elsewhere in the pack": (dict(change=_set(data=["data/synthetic", "backbone"])),
                                   "not a folder data/<name>"),
    "data missing": (dict(change=_set(data=["data/synthetic", "data/nothing"])),
                     "gives data 'data/nothing', which is no folder inside the pack"),
    "external outside": (dict(change=_set(external="data/../..")),
                         "gives external 'data/../..'"),
    "backbone outside": (dict(change=_set(backbone="/home/x")),
                         "gives backbone '/home/x'"),
    "backbone a path name": (dict(change=_set(backbone="..")),
                             "gives backbone '..'"),
    "weights outside": (dict(change=_set(keras_weights="../w.h5")),
                        "gives keras_weights '../w.h5', which is no file inside the pack"),
    "compression": ("method", "uses zip compression method 99; packs use only stored or deflated"),
    "encrypted": ("flags", "is encrypted, and packs never are"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_pack_is_refused_cleanly_before_anything_is_installed(one_smoke_pack, tmp_path, case):
    pack, _ = one_smoke_pack
    how, message = HOSTILE[case]
    bad = tmp_path / "bad.zip"
    if isinstance(how, dict):
        _repack(pack, bad, **how)
    else:
        _repack(pack, bad)
        _patch_entry(bad, "pack.json", *((8, 10, 99) if how == "method" else (6, 8, 1)))
    home = tmp_path / "student"
    _refused(bad, tmp_path / "fresh", message)
    assert not (tmp_path / "fresh").exists()
    packs.unpack(pack, home)
    kept = _files_under(home)
    _refused(bad, home, message)
    assert _files_under(home) == kept
    assert _settings(home, profile="smoke").pack == home / "pack"  # the pack kept still works


_WRITER = """
import sys, time
from pathlib import Path
from lesionlib import fsutil
target, kind = Path(sys.argv[1]), sys.argv[2]
manager = {"file": fsutil.atomic_path, "folder": fsutil.atomic_folder,
           "staging": fsutil.temporary_folder}[kind](target)
temporary = manager.__enter__()
with open(temporary if kind == "file" else temporary / "big.bin", "wb") as out:
    out.write(bytes(8 << 20))  # 8 MB written, more to come...
    out.flush()
    print(temporary, flush=True)
    time.sleep(120)
"""


def _writer(target: Path, kind: str):
    """A child process in the middle of an atomic write; returns it and its temporary."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), kind], stdout=subprocess.PIPE,
                             text=True)
    temporary = Path(child.stdout.readline().strip())
    assert temporary.exists() and f"lesionlib-{child.pid}-" in temporary.name
    return child, temporary


def _kill_9(child) -> None:
    import os
    import signal

    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


def test_temporaries_of_killed_writers_are_swept_by_the_next_one_and_nothing_else(tmp_path):
    from lesionlib import fsutil

    folder = tmp_path / "work"
    folder.mkdir()
    killed = [_writer(folder / "shard.npz", "file"), _writer(folder / "model", "folder"),
              _writer(folder / "OUT.zip", "staging")]
    live = _writer(folder / "other.npz", "file")
    try:
        for child, _ in killed:
            _kill_9(child)
        # not ours: names like ours but without our tag, or of a live process, or a link
        foreign = [folder / ".shard.npz.abcd1234.tmp.npz", folder / ".pack.x1y2z3ab.tmp",
                   folder / "notes.lesionlib-1-0000aaaa.tmp", folder / "shard.npz"]
        for path in foreign:
            path.write_text("keep me")
        dead_link = folder / f".x.lesionlib-{killed[0][0].pid}-0000aaaa.tmp"
        dead_link.symlink_to(foreign[0])
        with fsutil.atomic_path(folder / "next.txt") as temporary:  # the next writer here
            temporary.write_text("new")
        for _, temporary in killed:
            assert not temporary.exists()
        assert live[1].exists() and live[0].poll() is None  # a live writer's temporary stays
        assert all(path.read_text() == "keep me" for path in foreign) and dead_link.is_symlink()
        assert (folder / "next.txt").read_text() == "new"
    finally:
        live[0].kill()
        live[0].wait()


def test_a_folder_swap_killed_between_its_renames_is_put_back(tmp_path):
    from lesionlib import fsutil

    target = tmp_path / "pack"
    old = tmp_path / ".pack.lesionlib-999999999-0123abcd.old"  # no such process can exist
    old.mkdir()
    (old / "pack.json").write_text("{}")
    assert fsutil.sweep(tmp_path) == [target]
    assert (target / "pack.json").read_text() == "{}" and not old.exists()


def test_an_unpack_killed_with_kill_9_is_cleaned_up_by_the_next_unpack(one_smoke_pack, tmp_path):
    home = tmp_path / "student"
    child, temporary = _writer(home / "pack", "folder")  # unpack's staging, mid-write
    _kill_9(child)
    assert temporary.name.startswith(".pack.") and temporary.exists()
    _, changed = packs.unpack(one_smoke_pack[0], home)
    assert changed and not temporary.exists()
    assert sorted(p.name for p in home.iterdir()) == ["pack"]


def test_a_pack_killed_while_staging_is_cleaned_up_by_the_next_pack(tmp_path):
    target = tmp_path / "out" / "smoke.zip"
    child, staging = _writer(target, "staging")
    _kill_9(child)
    packs.make(_settings(tmp_path / "instructor", profile="smoke"), target, progress=False)
    assert not staging.exists() and sorted(p.name for p in target.parent.iterdir()) == ["smoke.zip"]


def test_fsutil_never_changes_the_umask_and_its_files_follow_it(tmp_path):
    """Another thread may create files while lesionlib is imported or writes: the umask must
    never be set, not even for an instant; files and folders still get the modes it asks for."""
    import subprocess
    import sys

    code = ("import os, sys, threading\n"
            "os.umask(0o027)\n"
            "calls = []\n"
            "real = os.umask\n"
            "os.umask = lambda mask: calls.append(mask) or real(mask)\n"
            "from pathlib import Path\n"
            "from lesionlib import fsutil, packs, features\n"
            "folder = Path(sys.argv[1])\n"
            "fsutil.write_text_atomic(folder / 'a.txt', 'x')\n"
            "with fsutil.atomic_folder(folder / 'model') as temporary:\n"
            "    (temporary / 'inside').write_text('y')\n"
            "print(calls, oct((folder / 'a.txt').stat().st_mode & 0o777),\n"
            "      oct((folder / 'model').stat().st_mode & 0o777))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "0o640", "0o750"]
