"""Choose the head's default regularisation without ever looking at the test part.

    .venv/bin/python benchmarks/head_settings.py [--shared ../shared]

On HAM10000 (workshop profile, the shared MobileNet V2) the course's grouped split (seed 42)
sets its test part aside. Its training + validation part is split again, four times, by
lesion; each setting is trained on each of those and scored by balanced accuracy on the
held-out lesions. Prints the table, best first. The winner is ``HeadConfig``'s default.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lesionlib import backbones, dataset, features, splits, training
from lesionlib.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({
            "LESIONLIB_HOME": home, "LESIONLIB_DATA_SOURCE": str(args.shared / "data/ham10000"),
            "LESIONLIB_BACKBONE": str(args.shared / "weights/tfhub/mobilenet_v2_100_224_feature_vector")})
        manifest = dataset.prepare(settings, progress=False).manifest
        bottlenecks = features.extract(manifest, backbones.load(settings), settings.bottleneck_dir,
                                       preprocessing=settings.preprocessing,
                                       progress=False)
    course_part = splits.grouped_split(manifest, seed=settings.seed)
    development = manifest[course_part != "test"]  # the test part is never used here
    folds = [splits.grouped_split(development, validation=0.2, test=0.2, seed=seed)
             .replace({"test": "held out"}) for seed in range(4)]

    rows = []
    for learning_rate, l2, dropout in itertools.product((3e-4, 1e-3), (0.01, 0.1, 0.3, 1.0),
                                                         (0.5, 0.8)):
        config = training.HeadConfig(learning_rate=learning_rate, l2=l2, dropout=dropout)
        scores = []
        for part in folds:
            head = training.train_head(training.arrays(bottlenecks, manifest, part, "train"),
                                       training.arrays(bottlenecks, manifest, part, "validation"),
                                       config)
            scores.append(training.scores(
                head, *training.arrays(bottlenecks, manifest, part, "held out"))["balanced accuracy"])
        rows.append({"learning_rate": learning_rate, "l2": l2, "dropout": dropout,
                     "balanced accuracy": np.mean(scores), "spread": np.std(scores)})
    table = pd.DataFrame(rows).sort_values("balanced accuracy", ascending=False)
    print(table.round({"balanced accuracy": 3, "spread": 3}).to_string(index=False))


if __name__ == "__main__":
    main()
