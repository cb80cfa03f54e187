"""The numbers behind notebook 02, on hand-made tables, and its figures on awkward data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionlib import dataset, explore, notebook


def test_class_balance_lists_every_class_even_when_empty():
    manifest = pd.DataFrame({"label": ["benign"] * 3 + ["malignant"]})
    table = explore.class_balance(manifest, {"benign": 30, "malignant": 1})
    assert table["in use"].to_dict() == {"benign": 3, "indeterminate": 0, "malignant": 1}
    assert table["share"].to_dict() == {"benign": 0.75, "indeterminate": 0.0, "malignant": 0.25}
    assert table["in the source"].to_dict() == {"benign": 30, "indeterminate": 0, "malignant": 1}


def test_images_per_group_counts_groups_by_size():
    manifest = pd.DataFrame({"lesion_id": ["a", "a", "b", "c", "c", "c", None]})
    counts = explore.images_per_group(manifest, "lesion_id")
    assert counts.to_dict() == {1: 1, 2: 1, 3: 1}


def test_random_split_leakage_counts_lesions_on_both_sides():
    one_image_each = pd.DataFrame({"lesion_id": [f"L{i}" for i in range(200)]})
    assert explore.random_split_leakage(one_image_each)["with their lesion also in training"] == 0
    pairs = pd.DataFrame({"lesion_id": [f"L{i // 2}" for i in range(400)]})
    leak = explore.random_split_leakage(pairs, test_fraction=0.2, seed=1)
    assert 0.6 < leak["share"] < 0.95  # about 80%: a test image's twin lands in training
    unknown = pd.DataFrame({"lesion_id": [None] * 50})
    assert explore.random_split_leakage(unknown)["with their lesion also in training"] == 0


def test_colour_statistics_measure_the_pixels(tmp_path):
    paths = []
    for name, colour in (("red", (255, 0, 0)), ("gray", (128, 128, 128))):
        paths.append(tmp_path / f"{name}.png")
        Image.new("RGB", (20, 10), colour).save(paths[-1])
    stats = explore.colour_statistics(pd.DataFrame({"path": paths, "label": ["malignant", "benign"]}))
    assert stats.loc[0, ["red", "green", "blue", "saturation"]].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert stats.loc[1, "saturation"] == 0.0
    assert np.isclose(stats.loc[1, "red"], 128 / 255)


@pytest.fixture
def awkward(make_settings):
    """The smoke set without one class and without sex, site and lesion ids (as some sources)."""
    settings = make_settings(profile="smoke")
    built = dataset.prepare(settings, progress=False)
    manifest = built.manifest[built.manifest["label"] != "indeterminate"].assign(
        sex=pd.NA, site=pd.NA, lesion_id=pd.NA, patient_id=pd.NA)
    return settings, manifest, built.rejected


def test_figures_cope_with_missing_classes_and_metadata(awkward):
    settings, manifest, rejected = awkward
    stats = explore.colour_statistics(manifest)
    figures = {
        "balance": explore.class_balance_figure(explore.class_balance(manifest)),
        "samples": explore.sample_grid_figure(manifest, per_class=4),
        "sizes": explore.size_figure(manifest),
        "metadata": explore.metadata_figure(manifest),
        "groups": explore.groups_figure(manifest),
        "colours": explore.colour_figure(stats),
    }
    for name, figure in figures.items():
        path = notebook.save_figure(figure, settings, f"test-{name}")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 200
    assert len(figures["samples"].axes) == 2 * 4  # two classes present


def test_size_figure_says_when_all_images_have_one_size(awkward):
    _, manifest, _ = awkward
    figure = explore.size_figure(manifest)
    assert figure.axes[0].get_title() == f"All {len(manifest)} images are 96 x 96"


def test_the_site_figure_shows_the_archives_broad_sites(make_settings):
    """The synthetic set carries today's ISIC fields (anatom_site_1, since May 2026): the
    figure's site panel names those regions, and nothing is 'not recorded'."""
    built = dataset.prepare(make_settings(profile="smoke"), progress=False)
    figure = explore.metadata_figure(built.manifest)
    sites = {label.get_text() for label in figure.axes[2].get_yticklabels()}
    assert sites and sites <= {"Head and neck", "Trunk", "Upper extremity", "Lower extremity",
                               "Anogenital region"}
