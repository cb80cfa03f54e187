"""Does it work on someone else's images? The image preparation chosen on HAM10000, then scored once.

    .venv/bin/python benchmarks/generalization.py [--shared ../shared] [--home DIR]
        [--resamples N] [--out FILE]

The project's rule: settings are chosen on validation lesions of the training data; the test
part and any held-out collection are scored once, at the end. So:

1. HAM10000 under the workshop profile (up to 500 images per class, as notebook 01 builds it),
   the shared MobileNet V2, the course's grouped split (seed 42; train / validation / test,
   70/15/15 by lesion).
2. Chosen on HAM10000's train + validation lesions only, by the grouped 5-fold
   cross-validation of ``benchmarks/head_settings.py`` (each fold's head early-stopped on
   lesions of its own training folds): first the image preparation, each candidate with the
   head L2 1.0 and dropout 0.5; then the head's L2 for the chosen preparation. The measure is
   malignant-versus-rest AUC, mean over the folds.
3. Scored once, after the choice, the chosen recipe only: a head trained on the train part
   (early-stopped on the validation part), malignant-versus-rest AUC with a 95% interval from
   resampling lesions, on HAM10000's test part, on PH2 (another clinic's sharp images) and on
   the CC0 ISIC sample (blurry thumbnails), both held out whole. No other candidate is scored
   on them, so nobody can choose by them.

Prints each table with the CPU model and writes them as Markdown to ``--out`` (default:
lesionlib/results/generalization.md, shipped with the library), which notebook 06 shows.
"features (s)" is the time to compute a preparation's bottlenecks (train + validation
images); "heads (s)" the training of the five folds' heads. Asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from head_settings import (DROPOUT, FOLDS, best, cross_validate, cross_validation_parts,
                           development_bottlenecks, l2_table, workshop_settings)
from machine import cpu_name, describe

from lesionlib import backbones, dataset, evaluation, features, generalization, splits, training
from lesionlib.modelcard import markdown_table
from lesionlib.preprocessing import Preprocessing
from lesionlib.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PREPARATION_L2 = 1.0  # the head's L2 while the preparation is chosen
EXTERNAL = {"PH2": "data/ph2", "CC0": "data/isic-cc0-sample"}  # name in tables: folder in --shared


def candidates() -> dict[str, Preprocessing]:
    sog = "shades_of_gray"
    return {
        "original: whole image resized": Preprocessing(),
        "centre crop": Preprocessing(crop=True),
        "64 px": Preprocessing(resolution=64),
        "128 px": Preprocessing(resolution=128),
        "shades of gray": Preprocessing(colour=sog),
        "crop + 64 px": Preprocessing(crop=True, resolution=64),
        "crop + 128 px": Preprocessing(crop=True, resolution=128),
        "crop + shades of gray": Preprocessing(crop=True, colour=sog),
        "crop + 64 px + shades of gray (the old default)":
            Preprocessing(crop=True, resolution=64, colour=sog),
        "crop + 128 px + shades of gray": Preprocessing(crop=True, resolution=128, colour=sog),
    }


def preparation_table(settings: Settings, manifest: pd.DataFrame, course_part: pd.Series,
                      parts: list[pd.Series], backbone) -> pd.DataFrame:
    """Cross-validation of every candidate preparation (head L2 1.0, dropout 0.5)."""
    rows = {}
    config = training.HeadConfig(l2=PREPARATION_L2, dropout=DROPOUT)
    for name, preprocessing in candidates().items():
        started = time.perf_counter()
        bottlenecks = development_bottlenecks(settings, manifest, course_part, backbone, preprocessing)
        seconds = time.perf_counter() - started
        rows[name] = {**cross_validate(bottlenecks, manifest, parts, config), "features (s)": seconds}
        print(f"{name}: {pd.Series(rows[name]).to_dict()} ({cpu_name()})", flush=True)
    return pd.DataFrame(rows).T.rename_axis("preparation")


def _interval(frame: pd.DataFrame, resamples: int, seed: int) -> tuple[float, str]:
    auc = generalization.auc_interval(frame, resamples, seed)
    return float(auc["estimate"]), f"{auc['low']:.3f}–{auc['high']:.3f}"


def final_scores(settings: Settings, shared: Path, manifest: pd.DataFrame, course_part: pd.Series,
                 backbone, preprocessing: Preprocessing, l2: float,
                 resamples: int) -> tuple[dict, pd.DataFrame]:
    """The chosen recipe, trained on the train part and scored once on HAM10000's test part
    and on each held-out collection: the one row of AUCs, and the images each was scored on."""
    bottlenecks = features.extract(manifest, backbone, settings.bottleneck_dir,
                                   preprocessing=preprocessing, progress=False)
    head = training.train_head(training.arrays(bottlenecks, manifest, course_part, "train"),
                               training.arrays(bottlenecks, manifest, course_part, "validation"),
                               training.HeadConfig(l2=l2, dropout=DROPOUT))
    frames = {"HAM10000 test part": evaluation.predict_part(head, bottlenecks, manifest, course_part, "test")}
    for name, folder in EXTERNAL.items():
        sources = generalization.load_sources(workshop_settings(shared, settings.home, shared / folder),
                                              progress=False)
        part = splits.hold_out_source(sources.manifest, sources.external, seed=settings.seed)
        held = features.extract(sources.manifest[part == splits.HELD_OUT], backbone, settings.bottleneck_dir,
                                preprocessing=preprocessing, progress=False)
        frames[name] = evaluation.predict_part(head, held, sources.manifest, part, splits.HELD_OUT)
    row = {}
    for name, frame in frames.items():
        auc_name = "AUC" if name.startswith("HAM10000") else "AUC held-out source"
        row[f"{auc_name} {name}"], row[f"{name} 95% interval"] = _interval(frame, resamples, settings.seed)
    images = pd.DataFrame({name: frame["label"].value_counts() for name, frame in frames.items()}).T
    return row, images.fillna(0).astype(int).rename_axis("scored once on")


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table, lambda column, v: f"{v:.1f}" if column.endswith("(s)") else f"{v:.3f}")


def report(machine: str, minutes: float, preparations: pd.DataFrame, chosen: str,
           l2s: pd.DataFrame, l2: float, row: dict, images: pd.DataFrame) -> str:
    final = pd.DataFrame([row], index=pd.Index([f"{chosen}, L2 {l2:g}"], name="recipe"))
    return "\n\n".join([
        "# Generalization across sources (benchmarks/generalization.py)",
        f"{machine}; MobileNet V2 (shared weights), workshop profile, seed 42; "
        f"{minutes:.0f} minutes in all.",
        "Trained on HAM10000 (up to 500 images per class, split by lesion into train / validation "
        "/ test, 70/15/15). Everything was **chosen on HAM10000's train + validation lesions "
        f"only**, by grouped {FOLDS}-fold cross-validation (each fold's head early-stopped on "
        "lesions of its own training folds), by the mean malignant-versus-rest AUC over the "
        "folds; \"sd\" is the standard deviation over the folds. The test part of HAM10000 and "
        "the two held-out collections, PH2 and the CC0 ISIC sample, were scored **once, after "
        "the choice**, with the chosen recipe only.",
        f"## 1. Image preparation (cross-validation; head L2 {PREPARATION_L2:g}, dropout {DROPOUT})\n\n"
        + _markdown(preparations) + f"\n\nChosen: **{chosen}**.",
        f"## 2. Head L2 for {chosen} (cross-validation; dropout {DROPOUT})\n\n"
        + _markdown(l2s.rename(index=lambda value: f"{value:g}")) + f"\n\nChosen: **L2 {l2:g}**.",
        "## 3. The chosen recipe, scored once after the choice\n\n"
        "Trained on the train part, early-stopped on the validation part. AUC of malignant "
        "versus the rest, with a 95% interval from resampling lesions.\n\n" + _markdown(final)
        + "\n\nImages scored:\n\n" + _markdown(images),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep data and caches here (default: a temporary folder)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "lesionlib" / "results" / "generalization.md")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        settings = workshop_settings(args.shared, args.home or Path(temporary))
        manifest = dataset.prepare(settings, progress=False).manifest
        course_part = splits.grouped_split(manifest, seed=settings.seed)
        parts = cross_validation_parts(manifest, course_part, settings.seed)
        backbone = backbones.load(settings)
        import tensorflow as tf  # loaded by now: only its version is wanted, for the machine line

        preparations = preparation_table(settings, manifest, course_part, parts, backbone)
        chosen = best(preparations)
        print(f"\n{preparations.to_string(float_format='{:.3f}'.format)}\nchosen: {chosen} ({cpu_name()})\n")
        development = development_bottlenecks(settings, manifest, course_part, backbone, candidates()[chosen])
        l2s = l2_table(development, manifest, parts)
        l2 = float(best(l2s))
        print(f"{l2s.to_string(float_format='{:.3f}'.format)}\nchosen: L2 {l2:g} ({cpu_name()})\n")

        row, images = final_scores(settings, args.shared, manifest, course_part, backbone,
                                   candidates()[chosen], l2, args.resamples)
    print(f"Scored once, after the choice ({cpu_name()}):\n{pd.Series(row).to_string()}\n", flush=True)
    minutes = (time.perf_counter() - started) / 60
    text = report(describe(tf), minutes, preparations, chosen, l2s, l2, row, images)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
