"""Splits: grouped ones never let a lesion or patient cross; the original's hash split does."""

from __future__ import annotations

import pandas as pd
import pytest

from lesionlib import sources, splits


def _manifest(lesions: int = 120, seed: int = 0) -> pd.DataFrame:
    rows = []
    for lesion in range(lesions):
        label = ("benign", "benign", "indeterminate", "malignant")[lesion % 4]
        for image in range(1 + (lesion * 7 + seed) % 3):
            rows.append({"image_id": f"IMG_{lesion:03d}_{image}", "lesion_id": f"L{lesion}",
                         "patient_id": f"P{lesion // 3}", "label": label,
                         "path": f"train/{label}/IMG_{lesion:03d}_{image}.jpg"})
    return pd.DataFrame(rows)


def test_groups_join_lesions_of_one_patient():
    manifest = pd.DataFrame({"lesion_id": ["a", "a", "b", "c", None, None],
                             "patient_id": [None, "p", "p", None, None, "q"]})
    group = splits.groups(manifest).tolist()
    assert group[0] == group[1] == group[2]  # a-a by lesion, a-b by patient p
    assert len({group[0], group[3], group[4], group[5]}) == 4


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_grouped_split_keeps_lesions_and_patients_on_one_side(seed):
    manifest = _manifest()
    part = splits.grouped_split(manifest, seed=seed)
    assert splits.crossing_groups(manifest, part, "lesion_id") == 0
    assert splits.crossing_groups(manifest, part, "patient_id") == 0
    shares = part.value_counts(normalize=True)
    assert 0.6 < shares["train"] < 0.8 and 0.08 < shares["test"] < 0.25
    table = splits.split_table(manifest, part)
    assert (table.drop(columns="all") > 0).all().all()  # every class on every side


def test_grouped_split_is_deterministic_for_a_seed():
    manifest = _manifest()
    assert splits.grouped_split(manifest, seed=5).equals(splits.grouped_split(manifest, seed=5))
    assert not splits.grouped_split(manifest, seed=5).equals(splits.grouped_split(manifest, seed=6))


def test_hash_split_follows_the_original_rule():
    # The original retrain.py puts "x_nohash_1.jpg" and "x_nohash_2.jpg" together.
    assert splits.hash_part("dog_nohash_1.jpg") == splits.hash_part("dog_nohash_2.jpg")
    parts = pd.Series([splits.hash_part(f"image_{i}.jpg") for i in range(5000)]).value_counts(normalize=True)
    assert abs(parts["validation"] - 0.1) < 0.02 and abs(parts["test"] - 0.1) < 0.02


def test_hash_split_lets_lesions_cross_on_real_data(ham10000):
    _, candidates = sources.read_source(ham10000)
    manifest = candidates.rename(columns={"source_path": "path"})
    crossing = splits.crossing_groups(manifest, splits.hash_split(manifest))
    grouped = splits.crossing_groups(manifest, splits.grouped_split(manifest))
    assert crossing > 500 and grouped == 0


def test_too_few_lesions_is_a_clear_error():
    manifest = pd.DataFrame({"lesion_id": list("aabcde"), "label": ["benign"] * 6})
    with pytest.raises(ValueError, match="needs at least 7 lesions"):
        splits.grouped_split(manifest, test=0.15)


@pytest.mark.parametrize("fraction", [0, 0.6])
def test_an_impossible_fraction_is_a_clear_error(fraction):
    with pytest.raises(ValueError, match="split fraction"):
        splits.grouped_split(_manifest(), validation=fraction)


def test_seen_in_training_marks_test_images_with_a_lesion_twin_in_training():
    manifest = pd.DataFrame({"lesion_id": ["a", "a", "b", "c", None]})
    part = pd.Series(["train", "test", "test", "validation", "test"])
    assert splits.seen_in_training(manifest, part).tolist() == [False, True, False, False, False]
