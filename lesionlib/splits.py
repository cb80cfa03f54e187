"""Train / validation / test splits: grouped by lesion and patient, or the original's file-name hash.

Images of one lesion are near-copies; images of one patient share skin, camera and clinic.
:func:`grouped_split` keeps every lesion (and every patient, where known) on one side and
keeps each class's share about equal on all sides. :func:`hash_split` is the original
``retrain.py`` rule, kept to show what it does to a data set with several images per lesion.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePath

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

PARTS = ("train", "validation", "test")


def groups(manifest: pd.DataFrame) -> pd.Series:
    """A group number per image: images sharing a lesion id or a patient id, transitively, share one.

    Images with neither id form a group of their own.
    """
    parent = list(range(len(manifest)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in ("lesion_id", "patient_id"):
        if column not in manifest:
            continue
        first: dict[str, int] = {}
        for position, value in enumerate(manifest[column]):
            if pd.isna(value) or value == "":
                continue
            if value in first:
                parent[find(position)] = find(first[value])
            else:
                first[value] = position
    return pd.Series([find(i) for i in range(len(manifest))], index=manifest.index, name="group")


def _one_fold(labels: np.ndarray, group_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the rows, whole groups, stratified by label.

    It is one fold of ``round(1 / fraction)``, so the fraction is met as ``1/k``: 0.15 gives
    1/7, 0.2 gives 1/5.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"A split fraction must be above 0 and at most 0.5, not {fraction}.")
    folds = max(2, round(1 / fraction))
    if len(np.unique(group_ids)) < folds:
        raise ValueError(f"Splitting off {fraction:.0%} needs at least {folds} lesions (or images "
                         f"without ids); this data has {len(np.unique(group_ids))}.")
    # Shuffle the groups here rather than with shuffle=True: before scikit-learn 1.8 that
    # option shuffled the groups' class counts but not the groups themselves, so the folds
    # were not stratified (scikit-learn PR 32540), and Colab ships 1.6. Numbering the groups
    # in a seeded random order gives the folds scikit-learn >= 1.8 gives with shuffle=True.
    _, inverse = np.unique(group_ids, return_inverse=True)
    order = np.arange(inverse.max() + 1)
    np.random.RandomState(seed).shuffle(order)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=False)
    _, chosen = next(splitter.split(np.zeros(len(labels)), labels, rank[inverse.ravel()]))
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return mask


def _strata(manifest: pd.DataFrame) -> np.ndarray:
    """What each part should hold the same share of: the class, and the source when there
    are several (so every source is in every part)."""
    if "source" in manifest and manifest["source"].nunique() > 1:
        return (manifest["label"] + " | " + manifest["source"]).to_numpy()
    return manifest["label"].to_numpy()


HELD_OUT = "held out"


def hold_out_source(manifest: pd.DataFrame, source: str, validation: float = 0.15, test: float = 0.15,
                    seed: int = 42) -> pd.Series:
    """Every image of ``source`` is ``held out``; the other sources are split into ``train``,
    ``validation`` and ``test`` by :func:`grouped_split`. So a model trained on the ``train``
    part can be tested on unseen lesions of its own sources (``test``) and on a source it has
    never seen at all (``held out``)."""
    held = (manifest["source"] == source).to_numpy()
    if not held.any() or held.all():
        raise ValueError(f"Holding out {source!r} needs images of it and of another source; the "
                         f"sources here are {sorted(manifest['source'].unique())}.")
    part = pd.Series(HELD_OUT, index=manifest.index, name="part", dtype=object)
    others = manifest[~held]
    part[~held] = grouped_split(others, validation, test, seed)
    return part


def grouped_split(manifest: pd.DataFrame, validation: float = 0.15, test: float = 0.15,
                  seed: int = 42) -> pd.Series:
    """``train`` / ``validation`` / ``test`` per image: no lesion or patient on two sides.

    Deterministic for a seed. The fractions are of images and are met approximately, since
    whole groups move together.
    """
    labels = _strata(manifest)
    group_ids = groups(manifest).to_numpy()
    part = np.full(len(manifest), "train", dtype=object)
    is_test = _one_fold(labels, group_ids, test, seed)
    part[is_test] = "test"
    rest = np.flatnonzero(~is_test)
    is_validation = _one_fold(labels[rest], group_ids[rest], validation / (1 - test), seed + 1)
    part[rest[is_validation]] = "validation"
    return pd.Series(part, index=manifest.index, name="part")


MAX_NUM_IMAGES_PER_CLASS = 2 ** 27 - 1  # the constant of the original retrain.py


def hash_part(file_name: str, validation_percentage: float = 10, testing_percentage: float = 10) -> str:
    """The original ``retrain.py`` rule: a stable hash of the file name picks the part.

    Anything after ``_nohash_`` in the name is ignored, so files named that way stay together:
    the only grouping the original knew.
    """
    hash_name = re.sub(r"_nohash_.*$", "", file_name)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < testing_percentage + validation_percentage:
        return "test"
    return "train"


def hash_split(manifest: pd.DataFrame, validation_percentage: float = 10,
               testing_percentage: float = 10) -> pd.Series:
    """The original's split of every image by the hash of its file name."""
    names = [PurePath(p).name for p in manifest["path"]]
    return pd.Series([hash_part(n, validation_percentage, testing_percentage) for n in names],
                     index=manifest.index, name="part")


def crossing_groups(manifest: pd.DataFrame, part: pd.Series, column: str = "lesion_id") -> int:
    """How many lesions (or patients) have images in more than one part."""
    known = manifest[column].notna()
    per_group = part[known].groupby(manifest.loc[known, column]).nunique()
    return int((per_group > 1).sum())


def seen_in_training(manifest: pd.DataFrame, part: pd.Series, column: str = "lesion_id") -> pd.Series:
    """True for each image outside the training part whose lesion has an image in it."""
    trained = set(manifest.loc[part == "train", column].dropna())
    return (part != "train") & manifest[column].isin(trained) & manifest[column].notna()


def split_table(manifest: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
    """Images per part and class, with each part's total, and per source when there are several."""
    table = pd.crosstab(part, manifest["label"]).reindex(PARTS, fill_value=0)
    table["all"] = table.sum(axis=1)
    if "source" in manifest and manifest["source"].nunique() > 1:
        by_source = pd.crosstab(part, manifest["source"]).reindex(PARTS, fill_value=0)
        table = table.join(by_source.add_prefix("from "))
    return table


def fingerprint(manifest: pd.DataFrame, part: pd.Series) -> str:
    """A hash of which images are in the validation and test parts, to recognise a split again."""
    held_out = sorted(f"{p}:{i}" for p, i in zip(part, manifest["image_id"]) if p != "train")
    return hashlib.sha256("\n".join(held_out).encode()).hexdigest()[:16]
