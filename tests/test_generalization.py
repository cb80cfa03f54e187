"""Several sources: settings, combining, holding one out, recipes, and what they measure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionlib import dataset, explore, features, generalization, splits, training
from lesionlib.preprocessing import Preprocessing
from lesionlib.generalization import Recipe
from lesionlib.settings import NO_SOURCE, SYNTHETIC_OTHER_CLINIC, SettingsError

QUICK = training.HeadConfig(epochs=80, patience=10)


def test_external_source_settings(make_settings, cc0_sample):
    smoke = make_settings(profile="smoke")
    assert smoke.external_source == SYNTHETIC_OTHER_CLINIC
    assert make_settings(profile="workshop", data_source="synthetic").external_source is None
    assert make_settings(profile="smoke", external_source=NO_SOURCE).external_source is None
    external = make_settings(profile="smoke", external_source=str(cc0_sample)).external()
    assert external.data_source == cc0_sample and external.external_source is None
    assert external.data_dir == smoke.home / "data" / "external" / cc0_sample.name
    assert external.manifest_path.parent == external.data_dir
    assert external.cache_dir == smoke.cache_dir  # networks and bottlenecks are shared
    with pytest.raises(SettingsError, match="also in LESIONLIB_DATA_SOURCE"):
        make_settings(data_source=str(cc0_sample), external_source=str(cc0_sample))
    with pytest.raises(SettingsError, match="LESIONLIB_EXTERNAL_SOURCE='nowhere'"):
        make_settings(profile="smoke", external_source="nowhere")
    with pytest.raises(SettingsError, match="set LESIONLIB_EXTERNAL_SOURCE"):
        make_settings(profile="smoke", external_source=NO_SOURCE).external()


@pytest.fixture(scope="module")
def smoke_sources(tmp_path_factory):
    from lesionlib.settings import load_settings

    home = tmp_path_factory.mktemp("home")
    settings = load_settings({"LESIONLIB_HOME": str(home), "LESIONLIB_PROFILE": "smoke"})
    dataset.prepare(settings, progress=False)
    return settings, generalization.load_sources(settings, progress=False)


def test_the_other_clinic_is_checked_and_kept_apart(smoke_sources):
    settings, sources = smoke_sources
    assert sources.main == "synthetic" and sources.external == SYNTHETIC_OTHER_CLINIC
    assert set(sources.manifest["source"]) == {"synthetic", SYNTHETIC_OTHER_CLINIC}
    assert sources.manifest.index.is_unique and sources.repeated.empty
    external = sources.manifest[sources.manifest["source"] == SYNTHETIC_OTHER_CLINIC]
    assert all(str(path).startswith(str(settings.external().train_dir)) for path in external["path"])
    assert external["lesion_id"].str.startswith(f"{SYNTHETIC_OTHER_CLINIC}:").all()
    table = generalization.source_table(sources.manifest)
    assert list(table.index) == sorted(sources.manifest["source"].unique())


def test_the_other_camera_is_warmer(smoke_sources):
    from PIL import Image

    _, sources = smoke_sources

    def red_over_blue(source: str) -> float:
        paths = sources.manifest.loc[sources.manifest["source"] == source, "path"].iloc[:20]
        means = np.array([np.asarray(Image.open(p).convert("RGB"), float).mean(axis=(0, 1)) for p in paths])
        return float((means[:, 0] / means[:, 2]).mean())

    assert red_over_blue(SYNTHETIC_OTHER_CLINIC) > 1.2 * red_over_blue("synthetic")


def test_combine_prefixes_ids_and_keeps_an_image_once():
    first = pd.DataFrame({"image_id": ["ISIC_0000001", "ISIC_0000002", "img001"], "lesion_id": ["L1", "", "L9"],
                          "patient_id": [None, "P1", None], "source": "a", "label": "benign",
                          "source_sha256": ["h1", "h2", "h9"]})
    # ISIC_0000002 again (resized: other bytes) and h9 again (the same bytes, another name): both one
    # image kept once, with their lesions; img001 here is another image of the same name.
    second = pd.DataFrame({"image_id": ["ISIC_0000002", "ISIC_0000003", "copy", "ISIC_0000004", "img001"],
                           "lesion_id": ["L1", "L2", "L7", "L7", "L8"],
                           "patient_id": ["P1", None, None, None, None], "source": "b",
                           "label": "malignant", "source_sha256": ["x2", "h3", "h9", "h4", "h8"]})
    combined, repeated = dataset.combine([first, second])
    assert list(combined["image_id"]) == ["ISIC_0000001", "ISIC_0000002", "img001", "ISIC_0000003", "b:img001"]
    assert list(combined["lesion_id"]) == ["a:L1", "", "a:L9", "b:L2", "b:L8"]  # b's L1 is not a's L1
    assert combined["patient_id"].tolist()[1] == "a:P1" and pd.isna(combined["patient_id"].tolist()[0])
    assert list(repeated["image_id"]) == ["ISIC_0000002", "copy", "ISIC_0000004"] and set(repeated["source"]) == {"b"}
    # Combined again (notebook 06 adds its held-out source to a combined manifest): ids stay.
    again, _ = dataset.combine([combined, pd.DataFrame(
        {"image_id": ["ISIC_0000005"], "lesion_id": ["L1"], "patient_id": [None], "source": "c",
         "label": "benign", "source_sha256": ["h5"]})])
    assert list(again["lesion_id"]) == ["a:L1", "", "a:L9", "b:L2", "b:L8", "c:L1"]
    with pytest.raises(ValueError, match="b is in two of the manifests combined"):
        dataset.combine([combined, second])  # b twice would leave all of b out as repeats


def test_holding_a_source_out(smoke_sources):
    _, sources = smoke_sources
    part = sources.split(seed=42)
    external = sources.manifest["source"] == SYNTHETIC_OTHER_CLINIC
    assert (part[external] == splits.HELD_OUT).all()
    assert set(part[~external]) == {"train", "validation", "test"}
    assert splits.crossing_groups(sources.manifest[~external], part[~external]) == 0
    with pytest.raises(ValueError, match="needs images of it and of another source"):
        splits.hold_out_source(sources.manifest, "no such source")


def test_a_split_of_several_sources_gives_every_part_every_source(smoke_sources):
    _, sources = smoke_sources
    part = sources.split_together(seed=42)
    counts = pd.crosstab(part, sources.manifest["source"])
    assert (counts > 0).all().all()
    table = splits.split_table(sources.manifest, part)  # notebook 03's table shows it
    shown = table[[f"from {name}" for name in sorted(sources.manifest["source"].unique())]]
    assert (shown.sum(axis=1) == table["all"]).all() and (shown > 0).all().all()
    assert splits.crossing_groups(sources.manifest, part) == 0


def test_a_recipe_for_the_other_camera_repairs_the_drop(smoke_sources, monkeypatch):
    settings, sources = smoke_sources
    from lesionlib import backbones

    backbone = backbones.load(settings)
    part = sources.split(seed=42)
    read = []  # the parts of the images each extraction reads

    def extract(manifest, *args, **kwargs):
        read.append(set(part[manifest.index]))
        return features.extract(manifest, *args, **kwargs)

    monkeypatch.setattr(generalization, "extract", extract)
    repair = Preprocessing(crop=True, resolution=32, colour="shades_of_gray")
    recipes = (Recipe("original"), Recipe("repaired", repair))
    chosen = [generalization.evaluate(recipe, backbone, sources.manifest, part, settings.bottleneck_dir,
                                      resamples=200) for recipe in recipes]
    assert all(list(outcome.auc) == ["validation"] for outcome in chosen)
    assert set().union(*read) == {"train", "validation"}  # choosing reads no test or held-out image
    original, repaired = (generalization.score(outcome, backbone, sources.manifest, part,
                                               settings.bottleneck_dir, resamples=200)
                          for outcome in chosen)
    assert read[-1] == {"test", splits.HELD_OUT}
    assert original.head is chosen[0].head and list(chosen[0].auc) == ["validation"]  # a copy, same head
    assert list(original.auc) == ["validation", "test", splits.HELD_OUT]
    held_out = original.auc[splits.HELD_OUT]["estimate"]
    assert original.auc["test"]["estimate"] > held_out + 0.05  # the drop on the other camera's images
    assert repaired.auc[splits.HELD_OUT]["estimate"] > held_out + 0.05  # and its repair
    table = generalization.comparison([original, repaired])
    assert list(table.index) == ["original", "repaired"]
    assert list(table.columns) == [
        "AUC validation", "AUC validation 95% interval", "AUC same source (test)",
        "AUC same source (test) 95% interval", "AUC held-out source", "AUC held-out source 95% interval",
        "features (s)", "head (s)"]
    low, high = map(float, table.loc["original", "AUC held-out source 95% interval"].split("–"))
    assert low <= table.loc["original", "AUC held-out source"] <= high


def test_scoring_a_part_that_is_not_there_changes_nothing(smoke_sources):
    settings, sources = smoke_sources
    from lesionlib import backbones

    part = splits.grouped_split(sources.manifest[sources.manifest["source"] == "synthetic"], seed=42)
    manifest = sources.manifest.loc[part.index]
    backbone = backbones.load(settings)
    outcome = generalization.evaluate(Recipe("alone", head=QUICK), backbone, manifest, part,
                                      settings.bottleneck_dir, resamples=50)
    scored = generalization.score(outcome, backbone, manifest, part, settings.bottleneck_dir, resamples=50)
    assert list(scored.auc) == ["validation", "test"]  # no held-out source: nothing to score there
    assert generalization.score(scored, backbone, manifest, part, settings.bottleneck_dir,
                                parts=(splits.HELD_OUT,)) is scored


def test_per_source_scores_and_the_sources_figure(smoke_sources):
    settings, sources = smoke_sources
    from lesionlib import backbones

    outcome = generalization.evaluate(Recipe("both", head=QUICK), backbones.load(settings),
                                      sources.manifest, sources.split_together(seed=42),
                                      settings.bottleneck_dir, resamples=100, parts=("test",))
    table = generalization.per_source(outcome.predictions["test"], sources.manifest, resamples=100)
    assert list(table.index) == ["synthetic", SYNTHETIC_OTHER_CLINIC]
    assert table["images"].sum() == len(outcome.predictions["test"])
    figure = explore.sample_grid_figure(sources.manifest, per_class=3, by="source")
    assert len(figure.axes) == 2 * 3


def test_the_reference_results_ship_with_lesionlib():
    text = generalization.reference_results("generalization")
    assert "HAM10000" in text and "held-out" in text
    tuned = generalization.reference_results("finetune")
    assert "(best on validation)" in tuned and "AUC PH2" in tuned
    with pytest.raises(ValueError, match="generalization, finetune"):
        generalization.reference_results("../../etc/passwd")


def test_without_an_external_source_the_main_one_is_split_as_usual(make_settings):
    settings = make_settings(profile="smoke", external_source=NO_SOURCE)
    dataset.prepare(settings, progress=False)
    sources = generalization.load_sources(settings, progress=False)
    assert sources.external is None and "LESIONLIB_EXTERNAL_SOURCE" in sources.summary()
    assert set(sources.split(seed=42)) == {"train", "validation", "test"}


def test_a_repeated_image_takes_its_whole_lesion_along():
    first = pd.DataFrame({"image_id": ["ISIC_0000001"], "lesion_id": ["L9"], "patient_id": [None],
                          "source": "a", "label": "malignant", "source_sha256": ["h1"]})
    second = pd.DataFrame({"image_id": ["ISIC_0000001", "ISIC_0000005", "ISIC_0000006"],
                           "lesion_id": ["L1", "L1", "L2"], "patient_id": [None, None, None],
                           "source": "b", "label": "malignant", "source_sha256": ["h1", "h5", "h6"]})
    combined, left_out = dataset.combine([first, second])
    assert list(combined["image_id"]) == ["ISIC_0000001", "ISIC_0000006"]  # 5: the lesion of 1
    assert list(left_out["image_id"]) == ["ISIC_0000001", "ISIC_0000005"]


def test_one_source_is_split_exactly_as_before(trained_smoke, smoke_sources):
    _, manifest, *_ = trained_smoke
    part = splits.grouped_split(manifest, seed=42)
    assert splits.fingerprint(manifest, part) == splits.fingerprint(manifest, splits.grouped_split(
        manifest.drop(columns="source"), seed=42))  # a single source adds no strata
    _, sources = smoke_sources
    main = sources.manifest["source"] == "synthetic"
    held = sources.split(seed=42)
    alone = splits.grouped_split(sources.manifest[main], seed=42)
    assert (held[main] == alone).all()  # holding a source out leaves the main split as it was


def test_two_sources_with_one_name_are_refused(make_settings, tmp_path):
    for parent in ("a", "b"):
        (tmp_path / parent / "images").mkdir(parents=True)
    with pytest.raises(SettingsError, match="same name, 'images'"):
        make_settings(data_source=str(tmp_path / "a" / "images"),
                      external_source=str(tmp_path / "b" / "images"))
