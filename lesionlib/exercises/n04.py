"""Checks for the exercises of notebook 04 (evaluation)::

    from lesionlib.exercises import n04 as check
    check.predictive_values(predictive_values, counts)

Each check works out the right answer from the predictions it is given (synthetic images,
HAM10000, the CC0 ISIC sample: the numbers differ), so it holds no answer of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .. import evaluation
from ..taxonomy import CLASSES
from . import NotRight, passed, require, results_of, unanswered

# Confusion matrices to try a function on besides the learner's own: rows and columns differ
# (a transposed matrix gives other numbers), and one class has no images and is never predicted.
MATRICES = (np.array([[50, 5, 10], [4, 20, 6], [3, 2, 30]]),
            np.array([[40, 0, 9], [0, 0, 0], [7, 0, 11]]))


def _predictive(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision and NPV of each class against the rest, and the numbers of a few slips."""
    counts = counts.astype(float)
    tp = np.diag(counts)
    fn = counts.sum(axis=1) - tp
    fp = counts.sum(axis=0) - tp
    tn = counts.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"precision": tp / (tp + fp), "npv": tn / (tn + fn),
                "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp)}


def _same(mine: np.ndarray, right: np.ndarray) -> bool:
    """Equal wherever the right value exists (where it is 0/0, any answer will do)."""
    defined = ~np.isnan(right)
    return mine.shape == right.shape and bool(np.allclose(mine[defined], right[defined], atol=1e-9))


def _per_class(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise NotRight(f"Your {name} is a {type(value).__name__}; make it one number per class, "
                       "e.g. a numpy array.") from None
    require(array.shape == (len(CLASSES),),
            f"Your {name} has shape {array.shape}: make it one number per class, {len(CLASSES)} "
            "in all, in the order of the matrix's rows.")
    return array


def predictive_values(function: Callable[[np.ndarray], Any], counts: Any) -> None:
    """Exercise 1: ``function(counts)`` returns ``(precision, npv)``, one value per class each,
    of a confusion matrix (rows true, columns predicted); tried on ``counts`` and on
    :data:`MATRICES`."""
    counts = np.asarray(counts)
    matrices = [counts, *MATRICES]
    results = results_of(function, [m.copy() for m in matrices], "predictive_values",
                         lambda m: "the matrix\n" + str(m))
    if results is None:
        return
    for matrix, result in zip(matrices, results):
        require(isinstance(result, (tuple, list)) and len(result) == 2,
                "Return two things, the precision and the NPV: `return precision, npv`.")
        precision, npv = (_per_class(value, name) for value, name in zip(result, ("precision", "NPV")))
        right = _predictive(matrix)
        if _same(precision, right["precision"]) and _same(npv, right["npv"]):
            continue
        shown = f"For the matrix\n{matrix}\n"
        require(not (_same(precision, right["npv"]) and _same(npv, right["precision"])),
                shown + "your two arrays are the right ones in the wrong order: return the "
                "precision first, then the NPV.")
        if not _same(precision, right["precision"]):
            require(not _same(precision, right["sensitivity"]),
                    shown + "your precision is each class's sensitivity: you divided by a row (the "
                    "images that *are* of the class). Precision divides by a column, the images "
                    "*called* the class.")
            raise NotRight(shown + "your precision is not right: of the images the head called "
                           "this class (a column), the share that are of it.")
        require(not _same(npv, right["specificity"]),
                shown + "your NPV is each class's specificity: you divided by the images that are "
                "*not* of the class. The NPV divides by the images *not called* the class: true "
                "negatives and false negatives.")
        raise NotRight(shown + "your NPV is not right: of the images the head did *not* call this "
                       "class, the share that are indeed not of it (true negatives over true "
                       "negatives plus false negatives).")
    right = _predictive(counts)
    malignant = CLASSES.index("malignant")
    passed(f"On validation, when the head says malignant it is right {right['precision'][malignant]:.0%} "
           f"of the time; when it says not malignant, {right['npv'][malignant]:.0%}. Unlike "
           "sensitivity and specificity, both depend on how common each class is: the same head "
           "in a clinic with fewer malignant lesions would have a lower precision and a higher NPV.")


def sensitivity_threshold(threshold: Any, validation: pd.DataFrame, target: float = 0.95) -> None:
    """Exercise 2: ``threshold`` is the highest threshold on ``P(malignant)`` whose sensitivity on
    ``validation`` is at least ``target`` (any threshold calling the same images is right too)."""
    if unanswered(threshold):
        return
    try:
        mine = float(threshold)
    except (TypeError, ValueError):
        raise NotRight(f"Your threshold is a {type(threshold).__name__}; make it one number, a "
                       "probability.") from None
    positive = (validation["label"] == "malignant").to_numpy()
    scores = validation["p_malignant"].to_numpy()
    require(positive.any(), "This validation part holds no malignant images: no sensitivity can "
                            "be reached.")
    require(0 <= mine <= 1, f"Your threshold is {mine:g}: a threshold on a probability lies "
                            "between 0 and 1.")
    right = evaluation.threshold_for_sensitivity(positive, scores, target)
    point = evaluation.operating_point(positive, scores, mine)
    require(point["sensitivity"] >= target,
            f"At your threshold ({mine:.3f}) the head finds {point['sensitivity']:.1%} of the "
            f"malignant validation images, fewer than {target:.0%}: the threshold is too high. "
            "Look only at the malignant images' scores, sorted from highest to lowest: how many "
            "must be at or above the threshold?")
    if not np.array_equal(scores >= mine, scores >= right):
        found = int((scores[positive] >= mine).sum() - (scores[positive] >= right).sum())
        flagged = int((scores[~positive] >= mine).sum() - (scores[~positive] >= right).sum())
        raise NotRight(f"Your threshold ({mine:.3f}) reaches {target:.0%}, but it is lower than "
                       f"it needs to be: it flags {flagged} more images that are not malignant "
                       f"(and finds {found} more malignant ones) than the highest threshold "
                       "that does. The threshold you want is one of the malignant images' own "
                       "scores.")
    usual = evaluation.threshold_for_sensitivity(positive, scores, 0.9)
    strict, before = (evaluation.operating_point(positive, scores, t) for t in (right, usual))
    more = int((scores[~positive] >= right).sum() - (scores[~positive] >= usual).sum())
    passed(f"P(malignant) ≥ {right:.3f} finds {strict['sensitivity']:.0%} of the malignant validation "
           f"images, with specificity {strict['specificity']:.2f} against {before['specificity']:.2f} "
           f"at the 90% point: {more} more of the {int((~positive).sum())} other validation images "
           "sent for a closer look.")


def _difference_interval(first: pd.DataFrame, second: pd.DataFrame, resamples: int = 4000,
                         seed: int = 0) -> tuple[float, float]:
    """The right answer: the percentile interval of AUC(first) - AUC(second) over lesion draws,
    both tables drawn alike (in numpy, with many draws, to be close to the exact interval)."""
    rng = np.random.default_rng(seed)
    members = list(first.groupby("group", sort=False).indices.values())
    positive = (first["label"] == "malignant").to_numpy()
    scores = [table["p_malignant"].to_numpy() for table in (first, second)]

    def auc(rows: np.ndarray, values: np.ndarray) -> float:
        found = int(positive[rows].sum())
        if found in (0, len(rows)):
            return np.nan
        ranks = rankdata(values[rows])
        return (ranks[positive[rows]].sum() - found * (found + 1) / 2) / (found * (len(rows) - found))

    differences = np.empty(resamples)
    for k in range(resamples):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        differences[k] = auc(rows, scores[0]) - auc(rows, scores[1])
    differences = differences[~np.isnan(differences)]
    if not len(differences):
        return np.nan, np.nan
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def _table(y: np.ndarray, p_malignant: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """A predictions table like ``evaluation.predict_part``'s, from a malignant probability."""
    p_malignant = np.clip(p_malignant, 0.001, 0.999)
    rest = (1 - p_malignant) / 2
    frame = pd.DataFrame({"p_benign": rest, "p_indeterminate": rest, "p_malignant": p_malignant},
                         index=pd.RangeIndex(len(y)) * 3 + 7)  # not 0, 1, 2...: like a real index
    frame.insert(0, "label", np.array(CLASSES)[y])
    frame.insert(1, "y", y)
    frame["predicted"] = np.array(CLASSES)[frame[evaluation.PROBABILITY].to_numpy().argmax(axis=1)]
    frame["group"] = groups
    return frame


def trial_pairs(seed: int = 4) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Pairs of heads' tables on which slips give intervals far from the right one."""
    rng = np.random.default_rng(seed)

    def scores(y: np.ndarray, noise: float) -> np.ndarray:
        return 0.4 + 0.25 * (y == 2) + rng.normal(0, noise, len(y))

    # 150 lesions, one image each; the second head is the first with a little noise: the
    # difference is small and steady when both are drawn alike, not when drawn apart.
    y = rng.choice([0, 1, 2], 150, p=[0.5, 0.2, 0.3])
    first = scores(y, 0.2)
    alike = _table(y, first, np.arange(150)), _table(y, first + rng.normal(0, 0.06, 150), np.arange(150))
    # 30 lesions of 6 images each, with the lesions' own scores: drawing images, not lesions,
    # pretends to six times the evidence there is.
    y = rng.choice([0, 1, 2], 30, p=[0.5, 0.2, 0.3])
    lesion_first, lesion_second = scores(y, 0.2), scores(y, 0.2)
    groups = np.repeat(np.arange(30) * 5 + 1, 6)
    lesions = (_table(np.repeat(y, 6), np.repeat(lesion_first, 6) + rng.normal(0, 0.005, 180), groups),
               _table(np.repeat(y, 6), np.repeat(lesion_second, 6) + rng.normal(0, 0.005, 180), groups))
    # 40 lesions of which 2 malignant: about one draw in eight holds none, and has no AUC.
    y = np.array([2, 2] + [0] * 30 + [1] * 8)
    rare = _table(y, scores(y, 0.3), np.arange(40)), _table(y, scores(y, 0.3), np.arange(40))
    return {"two similar heads": alike, "lesions of six images": lesions, "two malignant lesions": rare}


def auc_difference(function: Callable[[pd.DataFrame, pd.DataFrame], Any], first: pd.DataFrame,
                   second: pd.DataFrame) -> None:
    """Exercise 3: ``function(first, second)`` returns the 95% percentile interval of
    AUC(first) - AUC(second), malignant versus rest, over draws of lesions with replacement;
    tried on the learner's two heads and on :func:`trial_pairs`."""
    pairs = {**trial_pairs(), "your two heads": (first, second)}
    results = []
    for name, pair in pairs.items():  # one at a time: a slip is named without waiting for the rest
        result = results_of(lambda tables: function(*(t.copy() for t in tables)), [pair],
                            "auc_difference", lambda _: f"the tables of {name}")
        if result is None:
            return
        result = result[0]
        results.append(result)
        try:
            low, high = (float(value) for value in result)
        except (TypeError, ValueError):
            raise NotRight("Return two numbers, the low and the high end of the interval: `return "
                           "low, high` (e.g. from `np.percentile(differences, [2.5, 97.5])`).") from None
        where = f"For {name}: your interval is [{low:.3f}, {high:.3f}]"
        require(not (np.isnan(low) or np.isnan(high)),
                f"{where}. A draw without a malignant image has no AUC (NaN), and one NaN makes "
                "`np.percentile` NaN: leave them out (`np.nanpercentile`).")
        require(low <= high, f"{where}: put the low end first.")
        right_low, right_high = _difference_interval(*pairs[name])
        width = right_high - right_low
        tolerance = 0.12 * width + 0.003  # the draws are random: close, not equal
        if abs(low - right_low) <= tolerance and abs(high - right_high) <= tolerance:
            continue
        require(not (abs(low + right_high) <= tolerance and abs(high + right_low) <= tolerance),
                f"{where}: the right one, but upside down. Subtract the second head's AUC from "
                "the first's.")
        require((high - low) <= 1.1 * width + 0.005,
                f"{where}, too wide. Draw the lesions once per round and take the same rows from "
                "both tables: each head's errors are on the same lesions, which is what makes the "
                "difference steadier than either AUC.")
        require((high - low) >= 0.9 * width - 0.005,
                f"{where}, too narrow. Draw whole lesions (the `group` column), as many as there "
                "are, with replacement, and keep every image of each lesion drawn; a lesion drawn "
                "twice counts twice (`isin` would keep it once).")
        raise NotRight(f"{where}: its width is about right but it lies elsewhere. Compute "
                       "`evaluation.malignant_auc` of the drawn rows of each table, subtract, and "
                       "take the 2.5th and 97.5th percentiles of the 1,000 differences.")
    low, high = results[-1]
    verdict = ("it holds 0: on these validation lesions the two heads cannot be told apart"
               if low <= 0 <= high else
               f"it leaves out 0: the {'first' if low > 0 else 'second'} head ranks malignant "
               "lesions better, more than chance explains")
    passed(f"Your function agrees on {len(pairs)} pairs of tables. For your two heads, AUC(first) "
           f"− AUC(second) lies in [{float(low):+.3f}, {float(high):+.3f}]: {verdict}.")
