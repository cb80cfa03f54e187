"""Evaluation metrics, checked against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from lesionlib import evaluation
from lesionlib.taxonomy import CLASSES


def _frame(n: int = 300, seed: int = 0, skill: float = 2.0, lesions: int | None = None,
           classes: tuple[str, ...] = CLASSES) -> pd.DataFrame:
    """A predictions table with some skill: the true class gets a boost in its logit."""
    rng = np.random.default_rng(seed)
    y = rng.choice([CLASSES.index(c) for c in classes], n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += skill
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame(probabilities, columns=evaluation.PROBABILITY)
    frame.insert(0, "label", np.array(CLASSES)[y])
    frame.insert(1, "y", y)
    frame["predicted"] = np.array(CLASSES)[probabilities.argmax(axis=1)]
    frame["group"] = [f"L{i % (lesions or n)}" for i in range(n)]
    return frame


def test_confusion_and_per_class_metrics_match_scikit_learn():
    frame = _frame()
    counts = evaluation.confusion_table(frame)
    assert (counts.to_numpy() == confusion_matrix(frame["label"], frame["predicted"],
                                                  labels=list(CLASSES))).all()
    table = evaluation.per_class_table(frame)
    precision, recall, f1, support = precision_recall_fscore_support(
        frame["label"], frame["predicted"], labels=list(CLASSES))
    assert np.allclose(table["precision"], precision)
    assert np.allclose(table["recall (sensitivity)"], recall)
    assert np.allclose(table["F1"], f1)
    assert table["images"].tolist() == support.tolist()
    assert evaluation.balanced_accuracy(frame) == pytest.approx(
        balanced_accuracy_score(frame["label"], frame["predicted"]))
    assert evaluation.malignant_auc(frame) == pytest.approx(
        roc_auc_score(frame["label"] == "malignant", frame["p_malignant"]))
    assert np.allclose(evaluation.confusion_table(frame, normalize=True).sum(axis=1), 1)


def test_specificity_by_hand():
    # 2 malignant (1 found), 3 benign (1 called malignant): malignant specificity = 2/3
    frame = pd.DataFrame({"label": ["malignant", "malignant", "benign", "benign", "benign"],
                          "predicted": ["malignant", "benign", "malignant", "benign", "benign"]})
    table = evaluation.per_class_table(frame)
    assert table.loc["malignant", "specificity"] == pytest.approx(2 / 3)
    assert table.loc["malignant", "recall (sensitivity)"] == pytest.approx(1 / 2)
    assert table.loc["benign", "specificity"] == pytest.approx(1 / 2)


def test_a_class_without_images_gives_nan_not_an_error():
    frame = _frame(classes=("benign", "malignant"))
    table = evaluation.per_class_table(frame)
    assert table.loc["indeterminate", "images"] == 0
    assert np.isnan(table.loc["indeterminate", "recall (sensitivity)"])
    assert evaluation.confusion_table(frame, normalize=True).loc["indeterminate"].isna().all()
    assert evaluation.balanced_accuracy(frame) == pytest.approx(
        table.loc[["benign", "malignant"], "recall (sensitivity)"].mean())
    assert np.isnan(evaluation.auc_one_vs_rest(frame, "indeterminate"))
    only_benign = frame[frame["label"] == "benign"]
    assert np.isnan(evaluation.malignant_auc(only_benign))


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_data():
    small = evaluation.bootstrap_intervals(_frame(n=150, lesions=75), resamples=400)
    large = evaluation.bootstrap_intervals(_frame(n=2400, lesions=1200), resamples=400)
    for table in (small, large):
        assert ((table["low"] <= table["estimate"]) & (table["estimate"] <= table["high"])).all()
    assert ((large["high"] - large["low"]) < (small["high"] - small["low"])).all()


def test_bootstrap_resamples_lesions_not_images():
    # 20 lesions of 10 identical images each: resampling images would give a far narrower
    # interval than resampling the 20 lesions, which is what the test set really holds.
    frame = _frame(n=20, seed=3)
    repeated = frame.loc[frame.index.repeat(10)].reset_index(drop=True)
    by_lesion = evaluation.bootstrap_intervals(repeated, resamples=400)
    per_image = evaluation.bootstrap_intervals(repeated.assign(group=range(len(repeated))),
                                               resamples=400)
    width = lambda t: (t["high"] - t["low"])["accuracy"]  # noqa: E731
    assert width(by_lesion) > 2 * width(per_image)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_threshold_meets_its_sensitivity_target_and_is_the_highest_that_does(target):
    frame = _frame(n=500, seed=1)
    positive = (frame["label"] == "malignant").to_numpy()
    scores = frame["p_malignant"].to_numpy()
    threshold = evaluation.threshold_for_sensitivity(positive, scores, target)
    point = evaluation.operating_point(positive, scores, threshold)
    assert point["sensitivity"] >= target
    higher = np.min(scores[positive][scores[positive] > threshold])
    assert evaluation.operating_point(positive, scores, higher)["sensitivity"] < target


def test_threshold_without_positives_is_a_clear_error():
    with pytest.raises(ValueError, match="No positive images"):
        evaluation.threshold_for_sensitivity(np.zeros(5, bool), np.ones(5), 0.9)


def test_calibration_error_and_temperature_scaling():
    n = 4000
    frame = _frame(n=n, seed=2, skill=1.0)
    overconfident = evaluation.with_temperature(frame, 0.3)  # far too sure of itself
    assert evaluation.expected_calibration_error(overconfident) > 0.15
    temperature = evaluation.fit_temperature(overconfident)
    assert temperature == pytest.approx(1 / 0.3, rel=0.15)  # undoes the sharpening
    repaired = evaluation.with_temperature(overconfident, temperature)
    assert evaluation.expected_calibration_error(repaired) < 0.05
    assert evaluation.fit_temperature(repaired.iloc[:0]) == 1.0  # nothing to fit: unchanged


def test_subgroups_band_ages_and_show_missing_metadata():
    frame = _frame(n=8, seed=4)
    manifest = pd.DataFrame({"age": [20, 35, 50, 65, 80, None, 40, 41],
                             "sex": ["male"] * 4 + [None] * 4}, index=frame.index)
    ages = evaluation.subgroup_table(frame, manifest, "age")
    assert list(ages.index) == ["<30", "30-44", "45-59", "60-74", "75+", "not recorded"]
    assert ages["images"].tolist() == [1, 3, 1, 1, 1, 1]
    sexes = evaluation.subgroup_table(frame, manifest, "sex")
    assert sexes.loc["not recorded", "images"] == 4


def test_confident_mistakes_are_wrong_and_surest_first():
    mistakes = evaluation.confident_mistakes(_frame(seed=5), count=5)
    assert (mistakes["label"] != mistakes["predicted"]).all()
    assert mistakes["confidence"].is_monotonic_decreasing and len(mistakes) == 5


def test_report_writes_json_without_nan_and_the_figures(tmp_path):
    import json

    import matplotlib.pyplot as plt

    figure = plt.figure()
    written = evaluation.write_report(tmp_path / "report", {"auc": np.nan, "n": np.int64(3)},
                                      {"empty": figure})
    assert [p.name for p in written] == ["metrics.json", "empty.png"]
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == {"auc": None, "n": 3}


def test_predict_part_rows_match_the_images_of_the_part(trained_smoke):
    _, manifest, _, bottlenecks, part, head = trained_smoke
    test = evaluation.predict_part(head, bottlenecks, manifest, part, "test")
    assert set(test.index) == set(manifest.index[part == "test"])
    assert (test["label"] == manifest.loc[test.index, "label"]).all()
    assert np.allclose(test[evaluation.PROBABILITY].sum(axis=1), 1, atol=1e-5)
    lesions = manifest.loc[test.index, "lesion_id"]
    assert (test.groupby(lesions.to_numpy())["group"].nunique() == 1).all()  # a lesion is one group


def test_occlusion_map_works_with_the_course_backbone(trained_smoke):
    _, manifest, backbone, _, _, head = trained_smoke
    size = backbone.spec.input_size
    image, heat = evaluation.occlusion_map(manifest["path"].iloc[0], backbone, head, "benign",
                                           patch=size // 4, stride=size // 8)
    assert image.shape == (size, size, 3) and heat.shape == (size, size)
    assert np.isfinite(heat).all() and np.abs(heat).max() > 0  # hiding parts changes P(benign)


def test_a_head_from_other_settings_is_refused(trained_smoke, tmp_path):
    from lesionlib import training

    settings, _, backbone, _, _, _ = trained_smoke
    record = {"data_source": "/elsewhere", "backbone": {"identity": backbone.identity, "name": "x"}}
    with pytest.raises(training.ManifestError, match="Run notebook 03 again"):
        training.check_record(record, settings, backbone)
    training.check_record({"data_source": str(settings.data_source),
                           "backbone": {"identity": backbone.identity}}, settings, backbone)


def test_per_class_intervals_hold_each_estimate():
    frame = _frame(n=400, lesions=200, seed=6)
    table = evaluation.per_class_intervals(frame, resamples=300)
    assert set(table.index.get_level_values("class")) == set(CLASSES)
    assert set(table.index.get_level_values("metric")) == {"sensitivity", "specificity", "precision"}
    assert ((table["low"] <= table["estimate"]) & (table["estimate"] <= table["high"])).all()
    per_class = evaluation.per_class_table(frame)
    assert table.loc[("malignant", "sensitivity"), "estimate"] == pytest.approx(
        per_class.loc["malignant", "recall (sensitivity)"])


def test_a_missing_class_is_named_in_a_message():
    frame = _frame(classes=("benign", "malignant"))
    assert evaluation.missing_classes(frame) == [
        "No indeterminate images in this part: its sensitivity and the metrics built on it "
        "cannot be measured (shown as NaN)."]
    assert evaluation.missing_classes(_frame()) == []
    table = evaluation.per_class_intervals(frame, resamples=50)
    assert table.loc[("indeterminate", "sensitivity")].isna().all()


def test_f1_is_zero_not_nan_when_a_class_is_never_found():
    frame = pd.DataFrame({"label": ["malignant", "malignant", "benign"],
                          "predicted": ["benign", "benign", "benign"]})
    table = evaluation.per_class_table(frame)
    assert table.loc["malignant", "F1"] == 0 and table.loc["malignant", "recall (sensitivity)"] == 0
    assert np.isnan(table.loc["indeterminate", "F1"])  # no images, never predicted


def test_threshold_with_ties_and_awkward_targets():
    positive = np.array([True] * 100 + [False] * 10)
    scores = np.concatenate([np.arange(100, 0, -1) / 100, np.zeros(10)])
    threshold = evaluation.threshold_for_sensitivity(positive, scores, 0.07)  # 7 of 100
    assert evaluation.operating_point(positive, scores, threshold)["sensitivity"] == 0.07
    tied = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    threshold = evaluation.threshold_for_sensitivity(np.ones(5, bool), tied, 0.5)
    assert threshold == 0.5  # the tie counts all three: sensitivity 0.8 >= 0.5
    with pytest.raises(ValueError, match="at most 1"):
        evaluation.threshold_for_sensitivity(positive, scores, 1.5)


def test_an_empty_part_gives_nan_rows_not_a_crash():
    empty = _frame().iloc[:0]
    intervals = evaluation.bootstrap_intervals(empty, resamples=20)
    assert intervals[["estimate", "low", "high"]].isna().all().all()
    manifest = pd.DataFrame({"age": [], "sex": []})
    assert evaluation.subgroup_table(empty, manifest, "sex").empty


def test_the_split_must_be_the_one_the_head_was_trained_with():
    from lesionlib import splits, training

    manifest = pd.DataFrame({"image_id": [f"I{i}" for i in range(40)],
                             "lesion_id": [f"L{i // 2}" for i in range(40)],
                             "label": ["benign", "malignant"] * 20})
    part = splits.grouped_split(manifest, validation=0.2, test=0.2, seed=1)
    record = {"split": {"fingerprint": splits.fingerprint(manifest, part)}}
    training.check_split(record, manifest, part)
    other = splits.grouped_split(manifest.iloc[2:], validation=0.2, test=0.2, seed=1)
    with pytest.raises(training.ManifestError, match="not the one the head was trained with"):
        training.check_split(record, manifest.iloc[2:], other)


def test_a_label_outside_the_classes_is_named_not_miscounted():
    frame = pd.DataFrame({"label": ["malignant", "benign"], "predicted": ["malignant", "nevus"]})
    with pytest.raises(ValueError, match=r"predicted .nevus. is not one of \('benign'"):
        evaluation.confusion_table(frame)


def test_the_auc_counts_tied_scores_as_half():
    frame = pd.DataFrame({"label": ["malignant", "benign", "malignant", "benign"],
                          "p_malignant": [0.9, 0.5, 0.5, 0.1]})
    # pairs (malignant, benign): (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) 1/2, (0.5, 0.1) 1
    assert evaluation.malignant_auc(frame) == pytest.approx(3.5 / 4)
