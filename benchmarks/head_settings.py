"""Choose the head's L2 regularisation on validation lesions of HAM10000's training data only.

    .venv/bin/python benchmarks/head_settings.py [--shared ../shared] [--home DIR]

HAM10000 under the workshop profile (up to 500 images per class, as notebook 01 builds it),
the shared MobileNet V2 and the profile's image preparation. The course's grouped split
(seed 42) sets its test part aside, unread. The train + validation lesions are cut into five
folds by lesion (stratified by class); each fold is scored by a head trained on the other
four and early-stopped on validation lesions taken from those four, never from the fold.
Prints, per L2 (dropout 0.5): malignant-versus-rest AUC and balanced accuracy, mean and
standard deviation over the folds, and the L2 with the best mean AUC.

``benchmarks/generalization.py`` uses this cross-validation to choose the preparation first,
then the L2 for it. Asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_name
from sklearn.model_selection import StratifiedGroupKFold

from lesionlib import backbones, dataset, evaluation, features, splits, training
from lesionlib.features import Bottlenecks
from lesionlib.preprocessing import Preprocessing
from lesionlib.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
FOLDS = 5
INNER_FOLDS = 6  # a fold's early-stopping lesions: one sixth of its training lesions
L2_VALUES = (0.01, 0.1, 1.0, 3.0, 10.0)
DROPOUT = 0.5
SCORED = "scored"
NOT_USED = "not used"  # the course split's test part


def workshop_settings(shared: Path, home: Path, external: Path | None = None) -> Settings:
    """HAM10000 under the workshop profile with the shared MobileNet V2; ``external`` is the
    collection notebook 06 holds out, if any."""
    env = {"LESIONLIB_HOME": str(home), "LESIONLIB_PROFILE": "workshop",
           "LESIONLIB_DATA_SOURCE": str(shared / "data/ham10000"),
           "LESIONLIB_BACKBONE": str(shared / "weights/tfhub/mobilenet_v2_100_224_feature_vector")}
    if external is not None:
        env["LESIONLIB_EXTERNAL_SOURCE"] = str(external)
    return load_settings(env)


def _fold_numbers(labels: np.ndarray, group_ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per row: whole groups per fold, each class shared about equally. The
    groups are numbered in a seeded random order first, as lesionlib.splits does (scikit-learn
    before 1.8 does not shuffle the groups themselves)."""
    _, inverse = np.unique(group_ids, return_inverse=True)
    shuffled = np.random.RandomState(seed).permutation(inverse.max() + 1)[inverse.ravel()]
    fold = np.empty(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(folds)
    for number, (_, rows) in enumerate(splitter.split(np.zeros(len(labels)), labels, shuffled)):
        fold[rows] = number
    return fold


def cross_validation_parts(manifest: pd.DataFrame, course_part: pd.Series, seed: int) -> list[pd.Series]:
    """One part per fold of the course split's train + validation lesions: ``scored`` (the
    fold), ``validation`` (early stopping) and ``train`` (the other folds' lesions); the
    course's test part is ``not used``."""
    development = np.flatnonzero((course_part != "test").to_numpy())
    labels = manifest["label"].to_numpy()[development]
    group_ids = splits.groups(manifest).to_numpy()[development]
    outer = _fold_numbers(labels, group_ids, FOLDS, seed)
    parts = []
    for fold in range(FOLDS):
        value = np.full(len(manifest), NOT_USED, dtype=object)
        value[development[outer == fold]] = SCORED
        rest = np.flatnonzero(outer != fold)
        inner = _fold_numbers(labels[rest], group_ids[rest], INNER_FOLDS, seed + 1 + fold) == 0
        value[development[rest]] = np.where(inner, "validation", "train")
        parts.append(pd.Series(value, index=manifest.index, name="part"))
    return parts


def development_bottlenecks(settings: Settings, manifest: pd.DataFrame, course_part: pd.Series,
                            backbone, preprocessing: Preprocessing) -> Bottlenecks:
    """Bottlenecks of the course split's train + validation images only (the test part's are
    not computed here)."""
    return features.extract(manifest[course_part != "test"], backbone, settings.bottleneck_dir,
                            preprocessing=preprocessing, progress=False)


def cross_validate(bottlenecks: Bottlenecks, manifest: pd.DataFrame, parts: list[pd.Series],
                   config: training.HeadConfig) -> dict[str, float | str]:
    """Malignant-versus-rest AUC and balanced accuracy on each fold's scored lesions: mean,
    standard deviation, each fold's AUC, and the time the heads took."""
    started = time.perf_counter()
    auc, balanced = [], []
    for part in parts:
        head = training.train_head(training.arrays(bottlenecks, manifest, part, "train"),
                                   training.arrays(bottlenecks, manifest, part, "validation"), config)
        frame = evaluation.predict_part(head, bottlenecks, manifest, part, SCORED)
        auc.append(evaluation.malignant_auc(frame))
        balanced.append(evaluation.balanced_accuracy(frame))
    return {"AUC mean": float(np.mean(auc)), "AUC sd": float(np.std(auc, ddof=1)),
            "balanced accuracy mean": float(np.mean(balanced)),
            "balanced accuracy sd": float(np.std(balanced, ddof=1)),
            "AUC per fold": " ".join(f"{value:.3f}" for value in auc),
            "heads (s)": time.perf_counter() - started}


def l2_table(bottlenecks: Bottlenecks, manifest: pd.DataFrame, parts: list[pd.Series]) -> pd.DataFrame:
    """:func:`cross_validate` for each L2 of :data:`L2_VALUES` (dropout 0.5)."""
    rows = {l2: cross_validate(bottlenecks, manifest, parts, training.HeadConfig(l2=l2, dropout=DROPOUT))
            for l2 in L2_VALUES}
    return pd.DataFrame(rows).T.rename_axis("L2")


def best(table: pd.DataFrame):
    """The row name with the highest mean AUC."""
    return table["AUC mean"].astype(float).idxmax()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep data and caches here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        settings = workshop_settings(args.shared, args.home or Path(temporary))
        manifest = dataset.prepare(settings, progress=False).manifest
        course_part = splits.grouped_split(manifest, seed=settings.seed)
        bottlenecks = development_bottlenecks(settings, manifest, course_part,
                                              backbones.load(settings), settings.preprocessing)
    table = l2_table(bottlenecks, manifest, cross_validation_parts(manifest, course_part, settings.seed))
    print(f"{FOLDS}-fold cross-validation on HAM10000's train + validation lesions, "
          f"preparation: {settings.preprocessing.describe()}; CPU: {cpu_name()}")
    print(table.to_string(float_format="{:.3f}".format))
    print(f"best mean AUC: L2 {best(table)}")


if __name__ == "__main__":
    main()
