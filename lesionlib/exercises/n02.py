"""Checks for the exercises of notebook 02 (exploration)::

    from lesionlib.exercises import n02 as check
    check.leak_share(leak_share, manifest)

Each check works out the right answer from the data it is given (synthetic images, HAM10000,
an ISIC download: the numbers differ), so it holds no answer of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..tfutil import import_tensorflow
from . import NotRight, passed, require, results_of, unanswered

FRACTIONS = (0.1, 0.2, 0.3, 0.5)


def random_test_masks(size: int, fractions: tuple[float, ...] = FRACTIONS, seed: int = 0) -> list[np.ndarray]:
    """For each fraction, a random split of ``size`` images as a boolean array: True = test.
    Each side gets at least one image."""
    rng = np.random.default_rng(seed)
    masks = []
    for fraction in fractions:
        is_test = np.zeros(size, dtype=bool)
        is_test[rng.choice(size, min(max(round(fraction * size), 1), size - 1), replace=False)] = True
        masks.append(is_test)
    return masks


def _leak(manifest: pd.DataFrame, is_test: np.ndarray) -> dict[str, float]:
    """The right share of leaked test images, and the numbers of a few common slips."""
    lesions = manifest["lesion_id"].reset_index(drop=True)
    test, training = lesions[is_test], lesions[~is_test]
    leaked = test.notna() & test.isin(set(training.dropna()))
    with_missing = test.isin(set(training))  # pandas matches a missing id with a missing id
    repeated = lesions.duplicated(keep=False)[is_test]  # another image anywhere, test ones too
    return {"right": float(leaked.mean()), "count": float(leaked.sum()),
            "over all images": float(leaked.sum()) / len(lesions), "percent": 100 * float(leaked.mean()),
            "missing ids match": float(with_missing.mean()),
            "anywhere": float((repeated & test.notna()).mean()), "anywhere, missing ids too": float(repeated.mean())}


def leak_share(function: Callable[[pd.DataFrame, np.ndarray], Any], manifest: pd.DataFrame) -> None:
    """Exercise 1: ``function(manifest, is_test)`` returns the share of test images whose lesion
    also has an image in the training part; tried on random splits of 10 to 50 % test."""
    masks = random_test_masks(len(manifest))
    call = (lambda is_test: function(manifest.copy(), is_test)) if callable(function) else function
    results = results_of(call, masks, "leak_share",
                         lambda is_test: f"a split with {is_test.sum()} test images of {len(is_test)}")
    if results is None:
        return
    shares = []
    for is_test, mine in zip(masks, results):
        numbers = _leak(manifest, is_test)
        try:
            mine = float(mine)
        except (TypeError, ValueError):
            raise NotRight(f"Your function returns a {type(mine).__name__}; return one number, "
                           "the share of the test images that leak.") from None
        shares.append(numbers["right"])
        if np.isclose(mine, numbers["right"]):
            continue
        hints = {
            "count": "That is a number of images: return a share, the leaked test images divided "
                     "by all test images.",
            "percent": "That is a percentage: return a share between 0 and 1.",
            "over all images": "Divide by the number of test images, not by every image.",
            "missing ids match": "An image without a lesion id cannot be matched with anything: "
                                 "leave missing ids out of the training lesions.",
            "anywhere": "Too many: a test image leaks only when its lesion has an image on the "
                        "*training* side; another image in the test set does no harm.",
        }
        hints["anywhere, missing ids too"] = hints["anywhere"]
        for slip, hint in hints.items():
            require(not np.isclose(mine, numbers[slip]) or np.isclose(numbers[slip], numbers["right"]), hint)
        raise NotRight(f"With {is_test.sum()} test images of {len(is_test)}, your function returns "
                       f"{mine:.3f}, {'more' if mine > numbers['right'] else 'less'} than it should. "
                       "Collect the lesion ids of the training images, then ask of each test image "
                       "whether its lesion is among them.")
    ids = "" if manifest["lesion_id"].notna().any() else (
        " (this source records no lesion ids, so nothing can be seen to leak, which is not the "
        "same as no leak)")
    passed("Your function agrees on four random splits: at "
           + ", ".join(f"{fraction:.0%}" for fraction in FRACTIONS) + " test, a share of "
           + ", ".join(f"{share:.2f}" for share in shares)
           + f" of the test images have their lesion in training{ids}.")


def age_per_class(ages: Any, manifest: pd.DataFrame) -> None:
    """Exercise 2: ``ages`` has one row per class and the columns count, mean and median of the
    recorded ages (``describe()``'s ``50%`` is taken for the median)."""
    if unanswered(ages):
        return
    require(isinstance(ages, pd.DataFrame),
            "Make a table (a DataFrame) with one row per class and three columns: count, mean "
            "and median. A grouped column can give several statistics at once.")
    right = manifest.groupby("label")["age"].agg(["count", "mean", "median"])
    mine = ages.rename(columns={"50%": "median"})
    missing = [name for name in right.columns if name not in mine.columns]
    require(not missing, f"Your table has no column {', '.join(map(repr, missing))}: name the "
                         "columns count, mean and median.")
    require(set(map(str, mine.index)) == set(right.index),
            f"Your table's rows are {', '.join(map(str, mine.index))}: make one row per class "
            "(group by `label`).")
    mine = mine.rename(index=str).loc[right.index]
    if not np.array_equal(mine["count"].to_numpy(float), right["count"].to_numpy(float)):
        sizes = manifest.groupby("label").size().loc[right.index]
        require(not np.array_equal(mine["count"].to_numpy(float), sizes.to_numpy(float)),
                "Your counts include the images whose age is not recorded: count the recorded "
                "ages only.")
        raise NotRight("Your counts are not the numbers of recorded ages in each class.")
    for statistic in ("mean", "median"):
        close = np.isclose(mine[statistic].to_numpy(float), right[statistic].to_numpy(float),
                           atol=0.051, equal_nan=True)  # rounded to one decimal is right too
        if not close.all():
            label = right.index[~close][0]
            raise NotRight(f"The {statistic} age of the {label} class is not right. Leave the "
                           "missing ages out (pandas does that by itself), do not count them as 0.")
    medians = ", ".join(f"{'not recorded' if pd.isna(age) else f'{age:.0f}'} for {label}"
                        for label, age in right["median"].items())
    passed(f"The median age is {medians}: a network can see the age of the skin around a "
           "lesion, and could take it for a sign of the class.")


def _corner(image: np.ndarray, side: int, top: int, left: int) -> np.ndarray:
    return image[top:top + side, left:left + side]


def centre_square(function: Callable[[Any], Any], manifest: pd.DataFrame, per_class: int = 1) -> None:
    """Exercise 3: ``function(image)`` cuts the largest centred square out of a ``[height,
    width, 3]`` image tensor, as ``tf.image.resize_with_crop_or_pad`` does; tried on
    ``per_class`` images of each class and on random images of other shapes."""
    tf = import_tensorflow()
    from ..preprocessing import decode

    rng = np.random.default_rng(0)
    images = [decode(tf.io.read_file(str(path))) for path in manifest.groupby("label").head(per_class)["path"]]
    images += [tf.constant(rng.random(shape, dtype=np.float32)) for shape in
               ((150, 200, 3), (201, 120, 3), (64, 64, 3), (7, 4, 3))]
    results = results_of(function, images, "centre_square",
                         lambda image: "a {} x {} image".format(*image.shape[:2]))
    if results is None:
        return
    for image, mine in zip(images, results):
        height, width = image.shape[:2]
        side = min(height, width)
        expected = tf.image.resize_with_crop_or_pad(image, side, side).numpy()
        pixels = image.numpy()
        late = _corner(pixels, side, (height - side + 1) // 2, (width - side + 1) // 2)  # rounded up
        mine = np.asarray(mine)
        what = f"a {height} x {width} image"
        require(mine.ndim == 3 and mine.shape[2] == 3,
                f"For {what} your function returns shape {mine.shape}: keep the form "
                "[height, width, 3], all three colour channels.")
        require(mine.shape[0] == mine.shape[1],
                f"For {what} your function returns {mine.shape[0]} x {mine.shape[1]} pixels: a "
                "square has equal sides.")
        require(mine.shape[0] == side,
                f"For {what} your square has sides of {mine.shape[0]} pixels: the largest square "
                "that fits is as wide as the image's shorter side.")
        if np.allclose(mine, expected, atol=1e-6) or np.allclose(mine, late, atol=1e-6):
            continue
        require(not np.allclose(mine, _corner(pixels, side, 0, 0), atol=1e-6),
                f"For {what} your square is the right size but in the top-left corner: share the "
                "pixels you cut off equally between both ends.")
        raise NotRight(f"For {what} your square is the right size but has other pixels: cut it "
                       "out of the middle of the image (with slicing, `image[a:b, c:d]`), without "
                       "resizing anything.")
    passed(f"Your function cuts the same square as TensorFlow's `tf.image.resize_with_crop_or_pad` "
           f"on {len(images)} images of {len({tuple(i.shape) for i in images})} shapes: a "
           "preparation with `crop=True` does this before resizing, so a 4:3 photograph is not "
           "squeezed, at the price of its edges.")
