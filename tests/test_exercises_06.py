"""The checks of notebook 06's exercises: each passes a right answer, says "not answered yet" for
the placeholder, and rejects realistic wrong answers with a hint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import rankdata

from lesionlib import evaluation
from lesionlib.exercises import NotRight, n06
from lesionlib.splits import HELD_OUT
from lesionlib.taxonomy import CLASSES
from lesionlib.tfutil import import_tensorflow

RIGHT = "✓ Right."
UNANSWERED = "Not answered yet"
tf = import_tensorflow()


def placeholder(*args):
    """What a learner's function is before they write it: its body is ``...``."""
    ...


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    """Two sources, one of them under warmer light and without indeterminate lesions."""
    rng = np.random.default_rng(1)
    rows = []
    for source, light, labels in (("main", (1.0, 0.9, 0.8), CLASSES),
                                  ("other", (1.0, 0.7, 0.45), ("benign", "malignant"))):
        for label in labels:
            path = tmp_path / f"{source}-{label}.png"
            pixels = rng.uniform(0.1, 1.0, (30, 40, 3)) * light
            Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
            rows.append({"path": path, "label": label, "source": source})
    return pd.DataFrame(rows)


def predictions_table(rng: np.random.Generator, lesions: int, labels: tuple[str, ...],
                      skill: float) -> pd.DataFrame:
    """A predictions table in predict_part's form: 1 to 3 images per lesion, scored alike."""
    per_lesion = rng.integers(1, 4, lesions)
    label = np.repeat(rng.choice(labels, lesions), per_lesion)
    scores = rng.dirichlet(np.ones(len(CLASSES)), len(label))
    scores[np.arange(len(label)), [CLASSES.index(c) for c in label]] += skill
    scores /= scores.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(scores, columns=evaluation.PROBABILITY)
    frame.insert(0, "label", label)
    frame.insert(1, "y", [CLASSES.index(c) for c in label])
    frame["predicted"] = np.array(CLASSES)[scores.argmax(axis=1)]
    frame["group"] = np.repeat([f"L{n}" for n in range(lesions)], per_lesion)
    return frame


@pytest.fixture
def predictions() -> dict[str, pd.DataFrame]:
    """As notebook 06's chosen recipe has them: validation, test, and a held-out collection
    without indeterminate lesions, on which the head does worse."""
    rng = np.random.default_rng(2)
    return {"validation": predictions_table(rng, 60, CLASSES, 0.6),
            "test": predictions_table(rng, 60, CLASSES, 0.6),
            HELD_OUT: predictions_table(rng, 120, ("benign", "malignant"), 0.15)}


def expect_wrong(check, answer, *args, match: str) -> None:
    with pytest.raises(NotRight, match=match):
        check(answer, *args)


# Exercise 1: gray world

def right_gray_world(image):
    means = tf.reduce_mean(image, axis=[0, 1])
    return image / means * tf.reduce_mean(means)


def test_gray_world_right(manifest, capsys):
    n06.gray_world(right_gray_world, manifest)
    out = capsys.readouterr().out
    assert RIGHT in out and "main:" in out and "other:" in out and "1.00 after" in out
    n06.gray_world(lambda image: tf.clip_by_value(right_gray_world(image), 0.0, 1.0), manifest)
    assert RIGHT in capsys.readouterr().out  # clipped to [0, 1], as a network's input is


def test_gray_world_unanswered(manifest, capsys):
    n06.gray_world(placeholder, manifest)
    assert UNANSWERED in capsys.readouterr().out
    n06.gray_world(..., manifest)
    assert UNANSWERED in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (lambda image: image / tf.reduce_mean(image) * tf.reduce_mean(image), "balance of red, green and blue"),
    (lambda image: image / tf.reduce_mean(image, axis=-1, keepdims=True), "its own three channels"),
    (lambda image: image / tf.reduce_mean(image, axis=[0, 1]), "brighter or darker"),
    (lambda image: tf.clip_by_value(image / tf.reduce_mean(image, axis=[0, 1]), 0.0, 1.0),
     "brighter or darker"),
    (lambda image: image / tf.reduce_max(image, axis=[0, 1]) * 0.8,
     "differs from gray world"),  # white patch, another colour constancy
    (lambda image: image[:, :, ::-1], "differs from gray world"),
    (lambda image: image[:-1], "returns shape"),
    (lambda image: image.numpy() / image.numpy().mean(axis=(0, 1)) * image.numpy().mean(), "tf.function"),
])
def test_gray_world_wrong(manifest, wrong, match):
    expect_wrong(n06.gray_world, wrong, manifest, match=match)


def test_gray_world_says_where_the_learners_code_failed(manifest):
    expect_wrong(n06.gray_world, lambda image, power: image, manifest, match="raised TypeError")
    expect_wrong(n06.gray_world, 3, manifest, match="should be a function")


def test_lesionlibs_shades_of_gray_is_not_gray_world(manifest):
    from lesionlib.preprocessing import shades_of_gray

    expect_wrong(n06.gray_world, shades_of_gray, manifest, match="differs from gray world")


# Exercise 2: balanced accuracy

def right_balanced_accuracy(frame):
    right = frame["label"] == frame["predicted"]
    return right.groupby(frame["label"]).mean().mean()


def test_balanced_accuracy_right(predictions, capsys):
    n06.balanced_accuracy(right_balanced_accuracy, predictions)
    out = capsys.readouterr().out
    assert RIGHT in out and f"{HELD_OUT}: accuracy" in out
    from sklearn.metrics import balanced_accuracy_score

    n06.balanced_accuracy(lambda f: balanced_accuracy_score(f["label"], f["predicted"]), predictions)
    assert RIGHT in capsys.readouterr().out


def test_balanced_accuracy_without_a_second_collection(predictions, capsys):
    n06.balanced_accuracy(right_balanced_accuracy, {k: predictions[k] for k in ("validation", "test")})
    assert RIGHT in capsys.readouterr().out


def test_balanced_accuracy_unanswered(predictions, capsys):
    n06.balanced_accuracy(placeholder, predictions)
    assert UNANSWERED in capsys.readouterr().out


def every_class_counted(frame):
    right = frame["label"] == frame["predicted"]
    return sum(right[frame["label"] == c].mean() if (frame["label"] == c).any() else 0 for c in CLASSES) / 3


@pytest.mark.parametrize("wrong, match", [
    (lambda f: (f["label"] == f["predicted"]).mean(), "plain accuracy"),
    (every_class_counted, "has no sensitivity at all"),
    (lambda f: np.mean([(f["predicted"][f["label"] == c] == c).mean() for c in CLASSES]),
     "gives NaN"),  # the mean of an empty class is NaN
    (lambda f: (f["label"] == f["predicted"]).groupby(f["predicted"]).mean().mean(), "precision"),
    (lambda f: (f["label"] == f["predicted"]).groupby(f["label"]).mean(), "not one number"),
    (lambda f: (f["label"] == f["predicted"]).groupby(f["label"]).mean().median(), "not the mean over"),
])
def test_balanced_accuracy_wrong(predictions, wrong, match):
    expect_wrong(n06.balanced_accuracy, wrong, predictions, match=match)


# Exercise 3: the drop, with an interval

def draws(frame, resamples, rng, by="group"):
    """A learner's bootstrap, with numpy arrays rather than ``frame.iloc`` to keep the tests quick."""
    members = list(frame.groupby(by).indices.values()) if by else [[i] for i in range(len(frame))]
    label, p = frame["label"].to_numpy(), frame["p_malignant"].to_numpy()
    values = []
    for _ in range(resamples):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        positive, found = label[rows] == "malignant", int((label[rows] == "malignant").sum())
        ranks = rankdata(p[rows])
        values.append((ranks[positive].sum() - found * (found + 1) / 2) / (found * (len(rows) - found))
                      if 0 < found < len(rows) else np.nan)
    return np.array(values)


def right_drop(first, second, resamples=1000, seed=1):
    rng = np.random.default_rng(seed)
    differences = draws(first, resamples, rng) - draws(second, resamples, rng)
    low, high = np.nanpercentile(differences, [2.5, 97.5])
    return evaluation.malignant_auc(first) - evaluation.malignant_auc(second), low, high


def test_drop_interval_right(predictions, capsys):
    n06.drop_interval(right_drop, predictions)
    out = capsys.readouterr().out
    assert RIGHT in out and "AUC on the test lesions minus AUC on the held-out collection" in out
    assert "it leaves out 0" in out  # the fixture's held-out collection is scored worse
    n06.drop_interval(lambda a, b: pd.Series(dict(zip(("estimate", "low", "high"), right_drop(a, b)))),
                      predictions)
    assert RIGHT in capsys.readouterr().out


def test_drop_interval_without_a_second_collection(predictions, capsys):
    n06.drop_interval(right_drop, {k: predictions[k] for k in ("validation", "test")})
    out = capsys.readouterr().out
    assert RIGHT in out and "minus AUC on the validation lesions" in out


def test_drop_interval_unanswered(predictions, capsys):
    n06.drop_interval(placeholder, predictions)
    assert UNANSWERED in capsys.readouterr().out


def by_images(first, second, resamples=1000):
    rng = np.random.default_rng(1)
    differences = draws(first, resamples, rng, by=None) - draws(second, resamples, rng, by=None)
    return (evaluation.malignant_auc(first) - evaluation.malignant_auc(second),
            *np.nanpercentile(differences, [2.5, 97.5]))


def combined_intervals(first, second):
    a, b = (evaluation.bootstrap_intervals(f, lambda x: {"AUC": evaluation.malignant_auc(x)}).loc["AUC"]
            for f in (first, second))
    return a["estimate"] - b["estimate"], a["low"] - b["high"], a["high"] - b["low"]


def mean_of_draws(first, second, resamples=1000):
    rng = np.random.default_rng(1)
    differences = draws(first, resamples, rng) - draws(second, resamples, rng)
    return (np.nanmean(differences), *np.nanpercentile(differences, [2.5, 97.5]))


def with_nan(first, second, resamples=1000):
    rng = np.random.default_rng(1)
    differences = draws(first, resamples, rng) - draws(second, resamples, rng)
    return (evaluation.malignant_auc(first) - evaluation.malignant_auc(second),
            *np.percentile(differences, [2.5, 97.5]))


def ninety_percent(first, second, resamples=1000):
    rng = np.random.default_rng(1)
    differences = draws(first, resamples, rng) - draws(second, resamples, rng)
    return (evaluation.malignant_auc(first) - evaluation.malignant_auc(second),
            *np.nanpercentile(differences, [10, 90]))


@pytest.mark.parametrize("wrong, match", [
    (lambda a, b: right_drop(b, a), "wrong sign"),
    (by_images, "too narrow"),
    (combined_intervals, "too wide"),
    (mean_of_draws, "not a mean of resamples"),
    (ninety_percent, "2.5% of the resampled differences"),
    (lambda a, b: right_drop(a, b)[0], "return three numbers"),
    (lambda a, b: (evaluation.auc_one_vs_rest(a, "benign") - evaluation.auc_one_vs_rest(b, "benign"), 0, 1),
     "malignant against the rest"),
])
def test_drop_interval_wrong(predictions, wrong, match):
    expect_wrong(n06.drop_interval, wrong, predictions, match=match)


def test_drop_interval_asks_to_leave_out_resamples_without_malignant_lesions(predictions):
    rng = np.random.default_rng(5)
    small = predictions_table(rng, 12, ("benign",), 0.5)
    small.loc[small.index[:1], "label"] = "malignant"  # one malignant image: most resamples lack it
    expect_wrong(n06.drop_interval, with_nan, {**predictions, "test": small}, match="nanpercentile")


def test_the_lesion_tables_punish_resampling_images():
    first, second = n06.lesion_tables()
    lesions, images = n06.right_drop(first, second), by_images(first, second)
    assert (images[2] - images[1]) < 0.6 * (lesions[2] - lesions[1])
    combined = combined_intervals(first, second)
    assert (combined[2] - combined[1]) > 1.3 * (lesions[2] - lesions[1])
