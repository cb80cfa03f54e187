"""Workshop packs: made from real sources, unpacked into a fresh home, refused when damaged."""

from __future__ import annotations

import json
import shutil
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
    assert len(sums) == len(built.manifest) + 2 + sum(1 for p in MOBILENET.rglob("*") if p.is_file()) + 2
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


def test_a_pack_without_a_second_collection_gives_none(tmp_path):
    instructor = _settings(tmp_path / "instructor", profile="smoke", external_source="none")
    with pytest.raises(packs.PackError, match="No folder .*missing to write x.zip into: create it"):
        packs.make(instructor, tmp_path / "missing" / "x.zip", progress=False)
    assert not (tmp_path / "instructor" / "data").exists()  # refused before collecting anything
    packs.make(instructor, tmp_path / "x.zip", progress=False)
    packs.unpack(tmp_path / "x.zip", tmp_path / "student")
    assert _settings(tmp_path / "student", profile="smoke").external_source is None  # not the profile's
