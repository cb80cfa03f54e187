"""Checks for the exercises of notebook 06 (generalization)::

    from lesionlib.exercises import n06 as check
    check.gray_world(gray_world, sources.manifest)

Each check works out the right answer from the data it is given (synthetic images, HAM10000,
PH2, the CC0 ISIC sample, with or without a second collection: the numbers differ), so it
holds no answer of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation import PROBABILITY, balanced_accuracy as right_balanced_accuracy, malignant_auc
from ..splits import HELD_OUT
from ..taxonomy import CLASSES
from ..tfutil import import_tensorflow
from . import NotRight, passed, require, results_of

SIDE = 128  # the check's images are scaled to at most this many pixels a side
RESAMPLES = 2000  # the checks' own bootstrap: twice the learner's, so its noise is the smaller


def _results(function: Any, calls: list[tuple], name: str, shown: Callable[[tuple], str]) -> list | None:
    """``function(*call)`` for each call of tables, each given a copy (so that an answer that
    changes its tables changes nothing for the check), as
    :func:`~lesionlib.exercises.n01.results_of` does for one argument: None (and "not answered
    yet") while it is the placeholder."""
    if not callable(function):
        return results_of(function, [], name)  # the placeholder is unanswered; anything else, wrong
    return results_of(lambda call: function(*(table.copy() for table in call)), calls, name, shown)


# Exercise 1: gray world in TensorFlow

def _test_images(manifest: pd.DataFrame) -> list[tuple[str, Any]]:
    """One image of each class of each source, decoded as the course does, and three drawn
    ones: a grey image, one under orange light, one that is not square."""
    tf = import_tensorflow()
    from ..preprocessing import decode

    images = []
    sources = manifest["source"] if "source" in manifest else pd.Series("images", manifest.index)
    for (source, label), rows in manifest.groupby([sources, manifest["label"]]):
        image = decode(tf.io.read_file(str(rows["path"].iloc[0])))
        if max(image.shape[:2]) > SIDE:  # smaller: quicker, and float32 means nearer the exact ones
            image = tf.image.resize(image, [SIDE, SIDE], preserve_aspect_ratio=True, antialias=True)
        images.append((f"a {label} image of {source}", image))
    rng = np.random.default_rng(6)
    grey = np.repeat(rng.uniform(0.2, 0.8, (40, 40, 1)), 3, axis=2)
    orange = rng.uniform(0.1, 0.9, (40, 60, 3)) * [1.0, 0.7, 0.4]
    tall = rng.uniform(0.05, 0.95, (50, 20, 3))
    images += [("a grey image", grey), ("an image under orange light", orange), ("a 50 x 20 image", tall)]
    return [(what, tf.constant(np.asarray(image, np.float32))) for what, image in images]


def _gray_world(image: np.ndarray) -> np.ndarray:
    means = image.mean(axis=(0, 1))
    return image / means * means.mean()


def _close(mine: np.ndarray, other: np.ndarray) -> bool:
    """Equal but for float32 rounding: TensorFlow's means of many pixels are off by up to 1e-3."""
    return np.allclose(mine, other, rtol=5e-3, atol=1e-3)


def _proportional(mine: np.ndarray, other: np.ndarray) -> bool:
    """Whether ``mine`` is ``other`` times one number (not 1)."""
    factor = float((mine * other).sum() / max((other * other).sum(), 1e-12))
    return abs(factor - 1) > 2e-2 and _close(mine, factor * other)


def _red_over_blue(images: list[np.ndarray]) -> float:
    means = np.mean([image.mean(axis=(0, 1)) for image in images], axis=0)
    return float(means[0] / means[2])


def gray_world(function: Callable[[Any], Any], manifest: pd.DataFrame) -> None:
    """Exercise 1: ``function(image)`` applies gray-world colour constancy to a ``[height, width,
    3]`` float tensor in [0, 1] with TensorFlow: each channel divided by its mean over the
    image, times the mean of the three means (so a grey image stays as it is); clipping to
    [0, 1] is allowed. Tried on an image of each class of each source and on drawn ones, then
    inside a ``tf.function``, as a ``tf.data`` pipeline would run it."""
    tf = import_tensorflow()
    images = _test_images(manifest)
    names = {id(image): what for what, image in images}
    results = results_of(function, [image for _, image in images], "gray_world",
                         lambda image: names[id(image)])
    if results is None:
        return
    for (what, image), mine in zip(images, results):
        pixels = image.numpy()
        mine = np.asarray(mine, dtype=np.float64)
        right = _gray_world(pixels.astype(np.float64))
        require(mine.shape == pixels.shape,
                f"For {what} your function returns shape {mine.shape}, not {pixels.shape}: keep "
                "the image's height, width and three channels.")
        require(np.isfinite(mine).all(),
                f"For {what} your result holds NaN or infinite values.")
        if _close(mine, right) or _close(mine, np.clip(right, 0, 1)):
            continue
        coloured = not np.allclose(pixels, pixels[..., :1], atol=1e-6)
        require(not (coloured and (_close(mine, pixels) or _proportional(mine, pixels))),
                f"For {what} your function leaves the balance of red, green and blue as it was: "
                "each channel needs a mean of its own, over all the pixels of the image.")
        with np.errstate(invalid="ignore", divide="ignore"):
            per_pixel = np.nan_to_num(pixels / pixels.mean(axis=2, keepdims=True))
        require(not (_close(mine, per_pixel) or _proportional(mine, per_pixel)),
                f"For {what} you divided each pixel by the mean of its own three channels: the "
                "means to divide by are over the height and width (axes 0 and 1), one per channel.")
        unscaled = right / right.mean()  # each channel divided by its mean, and nothing else
        require(not (_proportional(mine, right) or _proportional(mine, np.clip(right, 0, 1))
                     or _close(mine, np.clip(unscaled, 0, 1))),
                f"For {what} your colours are balanced right but the image is brighter or darker "
                "than it should be: a grey image must come out unchanged.")
        raise NotRight(f"For {what} your result differs from gray world at some pixels: divide "
                       "each channel by its own mean over the image, then scale as the exercise "
                       "says. Change nothing else.")
    graph = tf.function(function, input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    try:
        graph(images[0][1])
    except Exception as error:  # the learner's code: say where it failed, not how to fix it
        raise NotRight(f"Your function works on one image but not inside a `tf.function` (as in a "
                       f"`tf.data` pipeline, where images have no values yet): {type(error).__name__}. "
                       "Use TensorFlow operations (`tf.reduce_mean`, ...) rather than numpy or "
                       "`.numpy()`.") from None
    by_source: dict[str, tuple[list, list]] = {}
    for (what, image), mine in zip(images, results):
        if " of " in what:
            before, after = by_source.setdefault(what.split(" of ", 1)[1], ([], []))
            before.append(image.numpy())
            after.append(np.asarray(mine))
    ratios = "; ".join(f"{source}: {_red_over_blue(before):.2f} before, {_red_over_blue(after):.2f} after"
                       for source, (before, after) in by_source.items())
    passed(f"Your function is gray world, and runs inside a TensorFlow graph. The red / blue "
           f"ratio of the average colour of one image per class ({ratios}): every collection "
           "comes out grey on average, whatever its light. `shades_of_gray` in lesionlib is the "
           "same idea with a mean that leans towards the brightest pixels.")


# Exercise 2: balanced accuracy, by hand

def _frame(labels: list[str], predicted: list[str]) -> pd.DataFrame:
    """A predictions table in :func:`lesionlib.evaluation.predict_part`'s form."""
    onehot = np.eye(len(CLASSES))[[CLASSES.index(p) for p in predicted]] * 0.6 + 0.4 / len(CLASSES)
    frame = pd.DataFrame(onehot, columns=PROBABILITY)
    frame.insert(0, "label", labels)
    frame.insert(1, "y", [CLASSES.index(label) for label in labels])
    frame["predicted"] = predicted
    frame["group"] = [f"lesion {n}" for n in range(len(labels))]
    return frame


def _small_tables() -> dict[str, pd.DataFrame]:
    """Two small tables whose answers differ from the usual slips: every class, and one class
    missing (as in PH2 and the CC0 sample, which hold no indeterminate lesions)."""
    b, i, m = CLASSES
    every = _frame([b] * 6 + [i] * 2 + [m] * 4, [b] * 5 + [m] + [b, b] + [m, m, b, i])
    missing = _frame([b] * 8 + [m] * 2, [b] * 7 + [i] + [m, b])
    return {"a small table with every class": every,
            "a small table without indeterminate lesions": missing}


def _macro_precision(frame: pd.DataFrame) -> float:
    shares = [(frame.loc[frame["predicted"] == c, "label"] == c).mean()
              for c in CLASSES if (frame["predicted"] == c).any()]
    return float(np.mean(shares))


def balanced_accuracy(function: Callable[[pd.DataFrame], Any], predictions: dict[str, pd.DataFrame]) -> None:
    """Exercise 2: ``function(frame)`` is the balanced accuracy of a predictions table: the mean,
    over the classes that have images, of the share of each class's images predicted as it.
    Tried on two small tables and on each part of ``predictions``."""
    tables = {**_small_tables(), **{f"the {part} part": frame for part, frame in predictions.items()}}
    results = _results(function, [(frame,) for frame in tables.values()], "balanced_accuracy",
                       lambda call: next(name for name, f in tables.items() if f is call[0]))
    if results is None:
        return
    for (what, frame), mine in zip(tables.items(), results):
        require(np.ndim(mine) == 0 and pd.api.types.is_number(np.asarray(mine).item()),
                f"For {what} your function returns {type(mine).__name__}, not one number.")
        mine = float(mine)
        right = right_balanced_accuracy(frame)
        if np.isclose(mine, right, atol=1e-9):
            continue
        present = frame["label"].nunique()
        require(not np.isnan(mine),
                f"For {what} your function gives NaN: average over the classes that have images.")
        require(not np.isclose(mine, (frame["label"] == frame["predicted"]).mean()),
                f"For {what} your number is the share of all images predicted right, the plain "
                "accuracy: in the balanced one, each class counts the same, whatever its size.")
        require(not (present < len(CLASSES) and np.isclose(mine, right * present / len(CLASSES))),
                f"For {what} your number is too low: a class with no images there has no "
                "sensitivity at all, not one of 0. Average over the classes that have images.")
        require(not np.isclose(mine, _macro_precision(frame)),
                f"For {what} you took, for each predicted class, the share that was right (the "
                "precision). The sensitivity of a class starts from its true images.")
        raise NotRight(f"For {what} your number is {mine:.3f}, not the mean over the classes of "
                       "the share of each class's images predicted as that class.")
    parts = "; ".join(f"{part}: accuracy {(f['label'] == f['predicted']).mean():.2f}, balanced "
                      f"{right_balanced_accuracy(f):.2f}" for part, f in predictions.items())
    passed(f"{parts}. Accuracy follows the commonest class of each part; the balanced accuracy "
           "weighs a rare class (often the malignant one) as much as the common one.")


# Exercise 3: the drop, with an interval

def _auc_draws(frame: pd.DataFrame, resamples: int, rng: np.random.Generator,
               by: str = "group") -> np.ndarray:
    """Malignant-versus-rest AUC of ``resamples`` resamples of the lesions (``group``) of a
    table, or of its images (``by="image"``)."""
    from scipy.stats import rankdata

    positive = (frame["label"] == "malignant").to_numpy()
    scores = frame["p_malignant"].to_numpy()
    members = (list(frame.groupby("group", sort=False).indices.values()) if by == "group"
               else [np.array([row]) for row in range(len(frame))])
    draws = np.full(resamples, np.nan)
    for r in range(resamples):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        found = int(positive[rows].sum())
        if 0 < found < len(rows):
            ranks = rankdata(scores[rows])
            draws[r] = (ranks[positive[rows]].sum() - found * (found + 1) / 2) / (found * (len(rows) - found))
    return draws


def right_drop(first: pd.DataFrame, second: pd.DataFrame, resamples: int = RESAMPLES,
               seed: int = 0, by: str = "group") -> tuple[float, float, float]:
    """AUC(first) - AUC(second), and its 95% interval from resampling each table's lesions (or,
    to recognise that slip, its images: ``by="image"``)."""
    rng = np.random.default_rng(seed)
    differences = _auc_draws(first, resamples, rng, by) - _auc_draws(second, resamples, rng, by)
    low, high = np.nanpercentile(differences, [2.5, 97.5])
    return malignant_auc(first) - malignant_auc(second), float(low), float(high)


def lesion_tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables of 40 lesions with 5 images each, the images of a lesion scored alike (as
    photographs of one lesion are): there, resampling images instead of lesions gives an
    interval less than half as wide as it should be, and combining the two AUCs' intervals
    one about 1.4 times as wide."""
    rng = np.random.default_rng(seed)
    tables = []
    for name in ("first", "second"):
        malignant = np.arange(40) % 2 == 0
        centre = np.clip(0.4 + 0.15 * malignant + rng.normal(0, 0.15, 40), 0.02, 0.9)
        p = np.repeat(centre, 5) + rng.normal(0, 0.002, 200)
        labels = np.where(np.repeat(malignant, 5), "malignant", "benign")
        frame = pd.DataFrame({"label": labels, "y": [CLASSES.index(label) for label in labels],
                              "p_benign": 1 - p - 0.05, "p_indeterminate": 0.05, "p_malignant": p})
        frame["predicted"] = np.array(CLASSES)[frame[PROBABILITY].to_numpy().argmax(axis=1)]
        frame["group"] = [f"{name} lesion {n}" for n in np.repeat(np.arange(40), 5)]
        frame.index = [f"{name} image {n}" for n in range(200)]
        tables.append(frame)
    return tables[0], tables[1]


PARTS = {"validation": "the validation lesions", "test": "the test lesions",
         HELD_OUT: "the held-out collection"}


def compared_parts(predictions: dict[str, pd.DataFrame]) -> tuple[str, str]:
    """The test part and the held-out collection; without one, the test and validation parts."""
    return "test", HELD_OUT if HELD_OUT in predictions else "validation"


def _near(interval: tuple[float, float], right: tuple[float, float, float]) -> bool:
    """Whether ``interval`` is ``right``'s but for the noise of a bootstrap of 1000 resamples."""
    tolerance = 0.12 * (right[2] - right[1]) + 0.01
    return abs(interval[0] - right[1]) <= tolerance and abs(interval[1] - right[2]) <= tolerance


def _triple(answer: Any) -> tuple[float, float, float] | None:
    """The learner's (estimate, low, high), from a tuple, list, array, dict or Series."""
    if isinstance(answer, (dict, pd.Series)) and {"estimate", "low", "high"} <= set(answer.keys()):
        answer = [answer["estimate"], answer["low"], answer["high"]]
    try:
        values = np.asarray(answer, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    return tuple(float(v) for v in values) if values.shape == (3,) else None


def drop_interval(function: Callable[[pd.DataFrame, pd.DataFrame], Any],
                  predictions: dict[str, pd.DataFrame]) -> None:
    """Exercise 3: ``function(first, second)`` returns AUC(first) - AUC(second) (malignant
    against the rest) with a 95% interval from resampling the lesions of each table. Tried on
    tables where images of a lesion go together, then on the two parts compared."""
    first, second = (PARTS[name] for name in compared_parts(predictions))
    compared = f"{first} and {second}"
    calls = {compared: tuple(predictions[name] for name in compared_parts(predictions)),
             "the two tables of 40 lesions with 5 images each": lesion_tables()}
    results = _results(function, list(calls.values()), "drop_interval",
                       lambda call: next(name for name, c in calls.items() if c is call))
    if results is None:
        return
    rights = {}
    for (what, (a, b)), mine in zip(calls.items(), results):
        found = _triple(mine)
        require(found is not None,
                f"For {what} your function returns {mine!r}: return three numbers, the "
                "difference and the low and high ends of its interval.")
        estimate, low, high = found
        right = rights[what] = right_drop(a, b)
        require(np.isfinite([estimate, low, high]).all(),
                f"For {what} your function returns NaN: a resample can hold no malignant lesion, "
                "and then has no AUC. Leave those resamples out (`np.nanpercentile`).")
        require(not np.isclose(estimate, -right[0], atol=1e-9) or np.isclose(right[0], 0, atol=1e-9),
                f"For {what} your difference has the wrong sign: the first table's AUC minus the "
                "second's.")
        require(np.isclose(estimate, right[0], atol=1e-9) or not np.isclose(estimate, right[0], atol=0.03),
                f"For {what} your difference is near the right one but not it: the estimate is "
                "the difference of the AUCs of the tables as they are, not a mean of resamples.")
        require(np.isclose(estimate, right[0], atol=1e-9),
                f"For {what} your difference is {estimate:.3f}: it should be the AUC of P(malignant), "
                "malignant against the rest, of the first table minus that of the second.")
        require(low < high and low <= estimate + 1e-9 and estimate - 1e-9 <= high,
                f"For {what} your interval, {low:.3f} to {high:.3f}, should run from low to high "
                "around the difference.")
    answers = dict(zip(calls, map(_triple, results)))
    for what in reversed(calls):  # the lesion tables first: there, the slips show most
        (_, low, high), right = answers[what], rights[what]
        if _near((low, high), right):
            continue
        require(not _near((low, high), right_drop(*calls[what], by="image")),
                f"For {what} your interval is too narrow: the images of one lesion are not "
                "independent, so resample the lesions (column `group`), each with all its images.")
        width, right_width = high - low, right[2] - right[1]
        require(width < 1.25 * right_width,
                f"For {what} your interval is too wide: compute the difference in each resample "
                "and take the percentiles of those differences, rather than combining the two "
                "AUCs' own intervals.")
        require(width > 0.8 * right_width,
                f"For {what} your interval is too narrow: a 95% interval leaves out 2.5% of the "
                "resampled differences at each end, no more.")
        raise NotRight(f"For {what} your interval, {low:.3f} to {high:.3f}, is not where the "
                       "lesions' bootstrap puts it: draw each table's lesions with replacement, "
                       "independently, about 1000 times, and take the 2.5th and 97.5th percentiles "
                       "of the differences.")
    estimate, low, high = rights[compared]
    verdict = ("it leaves out 0: more than the luck of which lesions were drawn" if low > 0 or high < 0
               else "it includes 0: these lesions cannot tell the two AUCs apart")
    passed(f"AUC on {first} minus AUC on {second}: {estimate:.3f}, 95% interval "
           f"{low:.3f} to {high:.3f}; {verdict}.")
