"""Settings: one place, environment variables, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionlib.preprocessing import Preprocessing
from lesionlib.settings import ISIC_ARCHIVE, SYNTHETIC, SettingsError, load_settings


def test_defaults_are_the_workshop_profile(tmp_path):
    settings = load_settings({"LESIONLIB_HOME": str(tmp_path)})
    assert settings.profile == "workshop"
    assert settings.data_source == ISIC_ARCHIVE
    assert settings.per_class_limit == 500
    assert settings.backbone == "mobilenet_v2_100_224"
    assert settings.manifest_path == tmp_path / "data" / "manifest.csv"
    assert settings.train_dir == tmp_path / "data" / "train"
    assert settings.figures_dir == tmp_path / "build" / "figures"


def test_profiles_choose_source_size_and_backbone(tmp_path):
    smoke = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "smoke"})
    full = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "FULL"})
    assert (smoke.data_source, smoke.backbone) == (SYNTHETIC, "tiny")
    assert (full.per_class_limit, full.backbone, full.isic_file) == (None, "mobilenet_v2_100_224", "full")
    assert full.preprocessing == Preprocessing()  # the whole image: chosen on validation (finetune.md)
    assert full.fine_tuning.ships and (full.fine_tuning.first_block, full.fine_tuning.learning_rate) == (13, 1e-4)
    workshop = load_settings({"LESIONLIB_HOME": str(tmp_path)})
    assert not workshop.fine_tuning.ships  # the workshop ships its frozen head


def test_relative_paths_start_at_home(tmp_path):
    (tmp_path / "elsewhere" / "images").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    settings = load_settings({"LESIONLIB_HOME": str(tmp_path / "home"),
                              "LESIONLIB_DATA_SOURCE": "../elsewhere/images",
                              "LESIONLIB_BACKBONE": "../elsewhere"})
    assert settings.data_source == tmp_path / "elsewhere" / "images"
    assert settings.backbone == str(tmp_path / "elsewhere")
    assert settings.source_name == "images"


def test_several_sources_are_named_with_commas(tmp_path):
    for name in ("vienna", "porto", "a,b"):
        (tmp_path / name).mkdir()
    home = str(tmp_path / "home")
    settings = load_settings({"LESIONLIB_HOME": home, "LESIONLIB_DATA_SOURCE": "../vienna, isic-archive:collection=249"})
    assert settings.data_sources == (tmp_path / "vienna", "isic-archive:collection=249")
    assert settings.data_source == f"{tmp_path / 'vienna'},isic-archive:collection=249"
    assert settings.source_name == "vienna+isic-archive-collection-249"
    first, second = settings.parts()
    assert first.data_source == tmp_path / "vienna" and second.data_source == "isic-archive:collection=249"
    assert first.data_dir == tmp_path / "home" / "data" / "sources" / "vienna"
    assert second.cache_dir == settings.cache_dir and second.external_source is None
    one = load_settings({"LESIONLIB_HOME": home, "LESIONLIB_DATA_SOURCE": "../a,b"})
    assert one.data_sources == (tmp_path / "a,b",) and one.parts() == [one]  # a folder's name, whole
    for value, problem in [("../vienna,isic-archive:collection=249,../vienna", "twice"),
                           ("../vienna,../nowhere", "no folder at .*read as several sources"), (",", "names no source")]:
        with pytest.raises(SettingsError, match=problem):
            load_settings({"LESIONLIB_HOME": home, "LESIONLIB_DATA_SOURCE": value})
    with pytest.raises(SettingsError, match="never trained on"):
        load_settings({"LESIONLIB_HOME": home, "LESIONLIB_DATA_SOURCE": "../vienna,../porto",
                       "LESIONLIB_EXTERNAL_SOURCE": "../porto"})


def test_the_full_profile_learns_from_two_collections_and_holds_a_third_out(tmp_path):
    full = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "full"})
    assert full.data_sources == ("isic-archive:collection=212", "isic-archive:collection=249")
    assert full.external_source == "isic-archive:collection=251"


def test_a_handle_backbone_is_kept_as_given(tmp_path):
    handle = "https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5"
    settings = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_BACKBONE": handle})
    assert settings.backbone == handle


def test_unknown_profile_names_the_choices(tmp_path):
    with pytest.raises(SettingsError, match="smoke, workshop, full"):
        load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "huge"})


def test_missing_data_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(SettingsError) as raised:
        load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_DATA_SOURCE": "nowhere"})
    assert str(tmp_path / "nowhere") in str(raised.value)
    assert "isic-archive" in str(raised.value)


def test_default_home_is_the_checkout(monkeypatch):
    settings = load_settings({})
    assert (settings.home / "pyproject.toml").is_file()
    assert settings.home == Path(__file__).resolve().parent.parent


def test_profiles_prepare_and_fine_tune_as_chosen(tmp_path):
    """The workshop's preparation is the one cross-validated on HAM10000's own lesions
    (benchmarks/generalization.py); smoke mirrors it; full keeps the original's whole image.
    Fine-tuning is a tiny random network for smoke, ImageNet weights otherwise."""
    from lesionlib.preprocessing import Preprocessing

    def profile(name: str):
        return load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": name,
                              "LESIONLIB_DATA_SOURCE": "synthetic"})

    smoke, workshop, full = profile("smoke"), profile("workshop"), profile("full")
    assert workshop.preprocessing == smoke.preprocessing == Preprocessing(crop=True, resolution=128)
    assert full.preprocessing == Preprocessing()
    assert smoke.keras_weights is None and smoke.fine_tuning.alpha < 1 and smoke.head_epochs < 100
    assert workshop.keras_weights == full.keras_weights == "imagenet"
    assert workshop.fine_tuning.alpha == 1.0 and full.fine_tuning.epochs > workshop.fine_tuning.epochs
    assert workshop.as_table()["fine-tuning weights"] == "imagenet"
