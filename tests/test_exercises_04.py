"""The checks of notebook 04's exercises: each passes a right answer, says "not answered yet" for
the placeholder, and rejects realistic wrong answers with a hint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionlib import evaluation
from lesionlib.exercises import NotRight, n04
from lesionlib.taxonomy import CLASSES

RIGHT = "✓ Right."
UNANSWERED = "Not answered yet"


def placeholder(*args):
    """What a learner's function is before they write it: its body is ``...``."""
    ...


def predictions(n: int = 120, seed: int = 0, lesions: int | None = None,
                classes: tuple[str, ...] = CLASSES) -> pd.DataFrame:
    """A small predictions table like ``evaluation.predict_part``'s, with some skill."""
    rng = np.random.default_rng(seed)
    y = rng.choice([CLASSES.index(c) for c in classes], n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame(probabilities, columns=evaluation.PROBABILITY, index=np.arange(n) * 2 + 5)
    frame.insert(0, "label", np.array(CLASSES)[y])
    frame.insert(1, "y", y)
    frame["predicted"] = np.array(CLASSES)[probabilities.argmax(axis=1)]
    frame["group"] = [i % (lesions or n) for i in range(n)]
    return frame


def counts_of(frame: pd.DataFrame) -> np.ndarray:
    return evaluation.confusion_table(frame).to_numpy()


# Exercise 1: precision and NPV from the confusion matrix

def right_predictive_values(counts):
    tp = np.diag(counts)
    fn = counts.sum(axis=1) - tp
    fp = counts.sum(axis=0) - tp
    tn = counts.sum() - tp - fn - fp
    with np.errstate(invalid="ignore"):
        return tp / (tp + fp), tn / (tn + fn)


def transposed(counts):  # precision over the rows: that is the sensitivity
    tp = np.diag(counts)
    fn = counts.sum(axis=1) - tp
    fp = counts.sum(axis=0) - tp
    tn = counts.sum() - tp - fn - fp
    return tp / (tp + fn), tn / (tn + fn)


def npv_is_specificity(counts):
    tp = np.diag(counts)
    fn = counts.sum(axis=1) - tp
    fp = counts.sum(axis=0) - tp
    tn = counts.sum() - tp - fn - fp
    return tp / (tp + fp), tn / (tn + fp)


def swapped(counts):
    precision, npv = right_predictive_values(counts)
    return npv, precision


def tn_forgets_fp(counts):  # tn = everything off the diagonal... of the wrong kind
    tp = np.diag(counts)
    fn = counts.sum(axis=1) - tp
    fp = counts.sum(axis=0) - tp
    tn = counts.sum() - tp - fn
    return tp / (tp + fp), tn / (tn + fn)


def one_number(counts):
    return float(np.diag(counts).sum() / counts.sum()), 0.5


@pytest.mark.parametrize("classes", [CLASSES, ("benign", "malignant")])  # the CC0 sample: no indeterminate
def test_predictive_values_passes_a_right_answer(classes, capsys):
    n04.predictive_values(right_predictive_values, counts_of(predictions(classes=classes)))
    assert RIGHT in capsys.readouterr().out


def test_predictive_values_says_when_unanswered(capsys):
    n04.predictive_values(placeholder, counts_of(predictions()))
    assert UNANSWERED in capsys.readouterr().out
    n04.predictive_values(..., counts_of(predictions()))
    assert UNANSWERED in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (transposed, "divided by a row"), (npv_is_specificity, "specificity"), (swapped, "wrong order"),
    (tn_forgets_fp, "NPV is not right"), (one_number, "one number per class"),
    (lambda counts: right_predictive_values(counts)[0], "Return two things"),
])
def test_predictive_values_rejects_wrong_answers(answer, hint):
    with pytest.raises(NotRight, match=hint):
        n04.predictive_values(answer, counts_of(predictions()))


# Exercise 2: the threshold for 95% sensitivity

def right_threshold(validation: pd.DataFrame, target: float = 0.95) -> float:
    scores = np.sort(validation.loc[validation["label"] == "malignant", "p_malignant"].to_numpy())[::-1]
    return scores[int(np.ceil(target * len(scores))) - 1]


@pytest.mark.parametrize("classes", [CLASSES, ("benign", "malignant")])
def test_threshold_passes_a_right_answer(classes, capsys):
    validation = predictions(classes=classes)
    n04.sensitivity_threshold(right_threshold(validation), validation, target=0.95)
    assert RIGHT in capsys.readouterr().out
    # A threshold just under it calls the same images: the same operating point, also right.
    n04.sensitivity_threshold(np.nextafter(right_threshold(validation), 0), validation, target=0.95)
    assert RIGHT in capsys.readouterr().out


def test_threshold_says_when_unanswered(capsys):
    n04.sensitivity_threshold(..., predictions(), target=0.95)
    assert UNANSWERED in capsys.readouterr().out


def test_threshold_rejects_wrong_answers():
    validation = predictions(n=300, seed=2)
    malignant = np.sort(validation.loc[validation["label"] == "malignant", "p_malignant"].to_numpy())
    with pytest.raises(NotRight, match="too high"):  # the 95th percentile: finds only 5%
        n04.sensitivity_threshold(np.percentile(malignant, 95), validation, target=0.95)
    with pytest.raises(NotRight, match="lower than it needs to be"):  # off by one, to the lowest score
        n04.sensitivity_threshold(malignant[0], validation, target=0.95)
    with pytest.raises(NotRight, match="lower than it needs to be"):  # over every image, not the malignant
        n04.sensitivity_threshold(np.percentile(validation["p_malignant"], 5), validation, target=0.95)
    with pytest.raises(NotRight, match="between 0 and 1"):  # a percentage
        n04.sensitivity_threshold(100 * right_threshold(validation), validation, target=0.95)
    with pytest.raises(NotRight, match="one number"):
        n04.sensitivity_threshold([0.3, 0.4], validation, target=0.95)


# Exercise 3: the bootstrap of the difference between two heads' AUCs

def right_auc_difference(first, second, seed=1):
    rng = np.random.default_rng(seed)
    lesions = list(first.groupby("group").indices.values())
    differences = []
    for _ in range(1000):
        rows = np.concatenate([lesions[i] for i in rng.integers(0, len(lesions), len(lesions))])
        differences.append(evaluation.malignant_auc(first.iloc[rows])
                           - evaluation.malignant_auc(second.iloc[rows]))
    return np.nanpercentile(differences, [2.5, 97.5])


def drawn_apart(first, second, seed=1):
    rng = np.random.default_rng(seed)
    lesions = list(first.groupby("group").indices.values())
    differences = []
    for _ in range(1000):
        one, other = (np.concatenate([lesions[i] for i in rng.integers(0, len(lesions), len(lesions))])
                      for _ in range(2))
        differences.append(evaluation.malignant_auc(first.iloc[one])
                           - evaluation.malignant_auc(second.iloc[other]))
    return np.nanpercentile(differences, [2.5, 97.5])


def images_not_lesions(first, second):
    return right_auc_difference(first.assign(group=range(len(first))), second)


def upside_down(first, second):
    return right_auc_difference(second, first)


def nan_kept(first, second, seed=1):
    rng = np.random.default_rng(seed)
    lesions = list(first.groupby("group").indices.values())
    differences = []
    for _ in range(1000):
        rows = np.concatenate([lesions[i] for i in rng.integers(0, len(lesions), len(lesions))])
        differences.append(evaluation.malignant_auc(first.iloc[rows])
                           - evaluation.malignant_auc(second.iloc[rows]))
    return np.percentile(differences, [2.5, 97.5])  # nan as soon as one draw has no malignant image


def two_heads(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    first = predictions(n=160, seed=seed, lesions=110)
    rng = np.random.default_rng(seed)
    second = first.copy()
    second["p_malignant"] = np.clip(first["p_malignant"] + rng.normal(0, 0.1, len(first)), 0, 1)
    return first, second


def test_auc_difference_passes_a_right_answer(capsys):
    n04.auc_difference(right_auc_difference, *two_heads())
    out = capsys.readouterr().out
    assert RIGHT in out and "AUC(first) − AUC(second)" in out


def test_auc_difference_says_when_unanswered(capsys):
    n04.auc_difference(placeholder, *two_heads())
    assert UNANSWERED in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (drawn_apart, "too wide"), (images_not_lesions, "too narrow"), (upside_down, "upside down"),
    (nan_kept, "nanpercentile"), (lambda first, second: 0.05, "two numbers"),
])
def test_auc_difference_rejects_wrong_answers(answer, hint):
    with pytest.raises(NotRight, match=hint):
        n04.auc_difference(answer, *two_heads())


def test_a_function_that_fails_is_named_with_its_error():
    with pytest.raises(NotRight, match="KeyError"):
        n04.auc_difference(lambda first, second: first["lesion"], *two_heads())
