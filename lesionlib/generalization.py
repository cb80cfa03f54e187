"""Does it work on someone else's images? Training on some sources, testing on another.

A classifier can score well on unseen lesions of its own collection and fail on another
clinic's: other cameras, light, framing, patients. :func:`evaluate` trains a head by one
:class:`Recipe` on the ``train`` part of a (possibly combined) manifest and measures
malignant-versus-rest AUC, with an interval from resampling lesions, on ``validation``: the
part recipes are compared and chosen on. Once one is chosen, :func:`score` scores its head on
``test`` (unseen lesions of the training sources) and ``held out`` (a source never trained on;
see :func:`lesionlib.splits.hold_out_source`), once. Until then, not one image of those parts
goes through the network. Notebook 06 shows the whole procedure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from importlib import resources

import pandas as pd

from . import dataset
from .backbones import Backbone
from .dataset import ManifestError
from .evaluation import bootstrap_intervals, malignant_auc, predict_part
from .features import extract
from .preprocessing import ORIGINAL, Preprocessing
from .settings import Settings
from .splits import HELD_OUT, grouped_split, hold_out_source
from .training import HeadConfig, TrainedHead, arrays, train_head


@dataclass
class Sources:
    """The images of the main source, or sources (notebooks 01–05), and, if set, of the external one."""

    manifest: pd.DataFrame  # every source's images, with their ``source``
    main: str
    external: str | None  # LESIONLIB_EXTERNAL_SOURCE's name, or None
    repeated: pd.DataFrame  # external images also in the main source, with their lesions: left out

    def split(self, seed: int = 42) -> pd.Series:
        """The external source held out whole; the main one split by lesion, as in notebook 03."""
        if self.external is None:
            return grouped_split(self.manifest, seed=seed)
        return hold_out_source(self.manifest, self.external, seed=seed)

    def split_together(self, seed: int = 42) -> pd.Series:
        """Every source split by lesion together: each part gets its share of every source."""
        return grouped_split(self.manifest, seed=seed)

    def summary(self) -> str:
        """One sentence: which source is held out, and what was left out of it."""
        if self.external is None:
            return (f"Only {self.main}: no external source, so nothing can be held out. Set "
                    "LESIONLIB_EXTERNAL_SOURCE to a folder of images from another collection "
                    "(any layout notebook 01 reads) to measure generalisation.")
        text = f"trained on {self.main.replace('+', ' and ')}, held-out source {self.external}"
        if len(self.repeated):
            text += (f"; {len(self.repeated)} images of {self.external} are left out: they, or "
                     f"other images of their lesion, are also in {self.main} (same ISIC id or same bytes)")
        return text


def manifest_of(settings: Settings, progress: bool = True) -> pd.DataFrame:
    """The manifest built for ``settings``, built now if there is none (notebook 01's way)."""
    try:
        return dataset.load_manifest(settings)
    except ManifestError:  # not built yet, or for other settings: build it
        return dataset.prepare(settings, progress=progress).manifest


def load_sources(settings: Settings, progress: bool = True) -> Sources:
    """The main source's manifest (notebook 01) and the external source's, built the same way
    (every image checked) in ``data/external/<name>/`` the first time."""
    main = dataset.load_manifest(settings)
    if settings.external_source is None:
        return Sources(main, settings.source_name, None, main.iloc[:0])
    external_settings = settings.external()
    combined, repeated = dataset.combine([main, manifest_of(external_settings, progress)])
    return Sources(combined, settings.source_name, external_settings.source_name, repeated)


def source_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """How the sources differ: images per class and typical size."""
    table = manifest.groupby(["source", "label"]).size().unstack(fill_value=0)
    table["median width"] = manifest.groupby("source")["width"].median()
    table["median height"] = manifest.groupby("source")["height"].median()
    return table


@dataclass(frozen=True)
class Recipe:
    """One way of preparing images and training the head: a row of the comparison."""

    name: str
    preprocessing: Preprocessing = ORIGINAL
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class Outcome:
    """What one recipe gave: the trained head, the predictions, the AUCs and the time taken."""

    recipe: Recipe
    head: TrainedHead
    predictions: dict[str, pd.DataFrame]  # part name -> evaluation.predict_part table
    auc: dict[str, pd.Series]  # part name -> estimate, low, high
    feature_seconds: float
    head_seconds: float

    def row(self) -> dict:
        """The recipe's row of a comparison table: AUC and interval per part, and the time taken."""
        row = {"recipe": self.recipe.name}
        for part, value in self.auc.items():
            label = {HELD_OUT: "held-out source", "test": "same source (test)"}.get(part, part)
            row[f"AUC {label}"] = value["estimate"]
            row[f"AUC {label} 95% interval"] = f"{value['low']:.3f}–{value['high']:.3f}"
        row["features (s)"] = round(self.feature_seconds, 1)
        row["head (s)"] = round(self.head_seconds, 1)
        return row


def auc_interval(frame: pd.DataFrame, resamples: int = 1000, seed: int = 42) -> pd.Series:
    """Malignant-versus-rest AUC of a predictions table, with a 95% interval over lesions."""
    table = bootstrap_intervals(frame, lambda f: {"AUC": malignant_auc(f)}, resamples, seed)
    return table.loc["AUC"]


def evaluate(recipe: Recipe, backbone: Backbone, manifest: pd.DataFrame, part: pd.Series,
             cache_root, seed: int = 42, resamples: int = 1000, progress: bool = False,
             parts: tuple[str, ...] = ("validation",)) -> Outcome:
    """Train by ``recipe`` on the ``train`` part (stopping on ``validation``); AUC on ``parts``.

    Recipes are compared on ``validation``; ask for ``test`` and ``held out`` only for the
    recipe chosen, once, at the end (:func:`score`): a choice made on them would make their
    scores a lie. Only the images of ``train``, ``validation`` and ``parts`` are read.
    """
    started = time.perf_counter()
    bottlenecks = extract(manifest[part.isin(["train", "validation"])], backbone, cache_root,
                          preprocessing=recipe.preprocessing, progress=progress)
    features_done = time.perf_counter()
    head = train_head(arrays(bottlenecks, manifest, part, "train"),
                      arrays(bottlenecks, manifest, part, "validation"), recipe.head)
    outcome = Outcome(recipe, head, {}, {}, features_done - started, time.perf_counter() - features_done)
    return score(outcome, backbone, manifest, part, cache_root, seed, resamples, progress, parts)


def score(outcome: Outcome, backbone: Backbone, manifest: pd.DataFrame, part: pd.Series,
          cache_root, seed: int = 42, resamples: int = 1000, progress: bool = False,
          parts: tuple[str, ...] = ("test", HELD_OUT)) -> Outcome:
    """``outcome`` with its head's predictions and AUC on ``parts`` added (those ``part`` has).

    The head is the one trained: scoring the chosen recipe on ``test`` and ``held out`` trains
    nothing again, so the numbers reported are those of the head that was chosen.
    """
    present = [name for name in parts if (part == name).any()]
    if not present:  # e.g. no held-out source set
        return outcome
    started = time.perf_counter()
    bottlenecks = extract(manifest[part.isin(present)], backbone, cache_root,
                          preprocessing=outcome.recipe.preprocessing, progress=progress)
    seconds = time.perf_counter() - started
    predictions = {name: predict_part(outcome.head, bottlenecks, manifest, part, name) for name in present}
    auc = {name: auc_interval(frame, resamples, seed) for name, frame in predictions.items()}
    return replace(outcome, predictions={**outcome.predictions, **predictions}, auc={**outcome.auc, **auc},
                   feature_seconds=outcome.feature_seconds + seconds)


BENCHMARKS = ("generalization", "finetune")  # the benchmarks whose tables ship in lesionlib/results/


def reference_results(benchmark: str) -> str:
    """The tables ``benchmarks/<benchmark>.py`` measured on HAM10000 and held-out collections
    (Markdown, shipped with lesionlib so that notebook 06 can show them anywhere)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"No results of a benchmark {benchmark!r}: there are {', '.join(BENCHMARKS)}.")
    return resources.files("lesionlib").joinpath("results", f"{benchmark}.md").read_text(encoding="utf-8")


def comparison(outcomes: list[Outcome]) -> pd.DataFrame:
    """Several recipes' rows side by side."""
    return pd.DataFrame([outcome.row() for outcome in outcomes]).set_index("recipe")


def per_source(frame: pd.DataFrame, manifest: pd.DataFrame, resamples: int = 1000,
               seed: int = 42) -> pd.DataFrame:
    """Malignant-versus-rest AUC of one part's predictions, source by source."""
    rows = {}
    for source, rows_of_source in frame.groupby(manifest.loc[frame.index, "source"].to_numpy()):
        auc = auc_interval(rows_of_source, resamples, seed)
        rows[source] = {"images": len(rows_of_source), "AUC": round(auc["estimate"], 3),
                        "95% interval": f"{auc['low']:.3f}–{auc['high']:.3f}"}
    return pd.DataFrame(rows).T
