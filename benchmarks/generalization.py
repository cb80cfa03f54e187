"""Does it work on someone else's images? Recipes side by side, HAM10000 -> the CC0 ISIC sample.

    .venv/bin/python benchmarks/generalization.py [--shared ../shared] [--home DIR] [--out FILE]

Trains a head on HAM10000 (workshop profile: up to 500 images per class, grouped split) with
the shared MobileNet V2, once per recipe, and measures malignant-versus-rest AUC, with a 95%
interval from resampling lesions, on HAM10000's own test lesions and on the CC0 ISIC Archive
sample, which is never trained on. Then the other direction (trained on the CC0 sample,
tested on HAM10000), and both sources trained on together. Prints the tables and writes them
as Markdown to ``--out`` (default: lesionlib/results/generalization.md, shipped with the
library), which notebook 06 shows.

The last row of the first table is not a course setting but an experiment: the last block of
the network fine-tuned with the head (see :func:`fine_tuned`).

"features (s)" is the time to compute the bottlenecks the recipe needed and the cache did not
hold yet (a recipe that reuses an earlier one's preprocessing pays nothing); "head (s)" is
the head's training. Asserts nothing: figures are measured here, never in the tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe

from lesionlib import backbones, dataset, evaluation, features, fsutil, generalization, splits, training
from lesionlib.features import Preprocessing
from lesionlib.generalization import Recipe
from lesionlib.modelcard import markdown_table
from lesionlib.settings import ACROSS_SOURCES, load_settings
from lesionlib.splits import HELD_OUT
from lesionlib.taxonomy import CLASSES
from lesionlib.tfutil import import_tensorflow
from lesionlib.training import HeadConfig

ROOT = Path(__file__).resolve().parent.parent
BEST = ACROSS_SOURCES  # crop + 64 px + shades of gray: the workshop profile's default


def recipes() -> list[Recipe]:
    return [
        Recipe("original: whole image resized"),
        Recipe("centre crop", Preprocessing(crop=True)),
        Recipe("common resolution, 64 px", Preprocessing(resolution=64)),
        Recipe("shades of gray", Preprocessing(colour="shades_of_gray")),
        Recipe("crop + 64 px", Preprocessing(crop=True, resolution=64)),
        Recipe("crop + 32 px + shades of gray", replace(BEST, resolution=32)),
        Recipe("crop + 64 px + shades of gray", BEST),
        Recipe("crop + 96 px + shades of gray", replace(BEST, resolution=96)),
        Recipe("best + 2 augmented copies", BEST, augmentation=2),
        Recipe("best + test-time augmentation (4 copies)", BEST, tta=4),
        Recipe("best + class-balanced sampling", BEST, head=HeadConfig(balance="sampling")),
        Recipe("best + hidden layer of 256", BEST, head=HeadConfig(hidden=256)),
        Recipe("best + stronger L2 (3.0)", BEST, head=HeadConfig(l2=3.0)),
    ]


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table, lambda column, v: f"{v:.1f}" if column.endswith("(s)") else f"{v:.3f}")


def _settings(home: Path, main: Path, external: Path, shared: Path):
    mobilenet = shared / "weights/tfhub/mobilenet_v2_100_224_feature_vector"
    return load_settings({"LESIONLIB_HOME": str(home), "LESIONLIB_PROFILE": "workshop",
                          "LESIONLIB_DATA_SOURCE": str(main), "LESIONLIB_EXTERNAL_SOURCE": str(external),
                          "LESIONLIB_BACKBONE": str(mobilenet)})


def fine_tuned(settings, sources: generalization.Sources, part: pd.Series, shared: Path,
               resamples: int) -> dict:
    """Not a course setting: the last inverted-residual block and the final 1x1 convolution of
    Keras MobileNet V2 (the same weights, from ../shared/weights/keras/) trained together with
    the head, on activations computed once below that block. Batch-norm layers stay frozen."""
    import keras

    started = time.perf_counter()
    base = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, pooling="avg",
        weights=str(shared / "weights/keras/mobilenet_v2_1.0_224_no_top.weights.h5"))
    bottom = keras.Model(base.input, base.get_layer("block_15_add").output)
    top = keras.Model(base.get_layer("block_16_expand").input, base.output)
    activations, labels = {}, {}
    for name in ("train", "validation", "test", HELD_OUT):
        rows = sources.manifest[part == name]
        pipeline = features.image_pipeline([str(p) for p in rows["path"]], np.zeros((len(rows), 2)), 224,
                                           (-1.0, 1.0), BEST)  # Keras MobileNet V2 takes [-1, 1]
        activations[name] = np.zeros((len(rows), *bottom.output.shape[1:]), np.float32)
        for positions, batch in pipeline:  # an image that cannot be decoded stays all zeros
            activations[name][positions.numpy()] = bottom(batch, training=False).numpy()
        labels[name] = training.label_indices(rows["label"])
    features_done = time.perf_counter()

    for layer in top.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    inputs = keras.Input(activations["train"].shape[1:])
    hidden = keras.layers.Dropout(0.5)(top(inputs, training=False))
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax",
                                 kernel_regularizer=keras.regularizers.L2(0.01))(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    keras.utils.set_random_seed(settings.seed)
    weights = training.class_weights(labels["train"])
    model.fit(activations["train"], labels["train"], batch_size=32, epochs=60, verbose=0,
              sample_weight=np.array([weights[y] for y in labels["train"]], np.float32),
              validation_data=(activations["validation"], labels["validation"]),
              callbacks=[keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)])
    head_done = time.perf_counter()

    auc = {}
    for name in ("test", HELD_OUT):
        index = sources.manifest.index[part == name]
        frame = pd.DataFrame(model.predict(activations[name], verbose=0), index=index,
                             columns=evaluation.PROBABILITY)
        frame["label"] = sources.manifest.loc[index, "label"]
        frame["group"] = splits.groups(sources.manifest).loc[index]
        auc[name] = generalization.auc_interval(frame, resamples, settings.seed)
    return generalization.table_row("best + fine-tuning the last block (Keras weights)", auc,
                                    features_done - started, head_done - features_done)


def run(settings, chosen: list[Recipe], resamples: int) -> tuple[generalization.Sources, pd.DataFrame]:
    dataset.prepare(settings, progress=False)  # notebook 01 for the main source
    sources = generalization.load_sources(settings, progress=False)
    backbone = backbones.load(settings)
    part = sources.split(settings.seed)
    outcomes = []
    for recipe in chosen:
        outcomes.append(generalization.evaluate(recipe, backbone, sources.manifest, part,
                                                settings.bottleneck_dir, settings.seed, resamples))
        print(pd.Series(outcomes[-1].row()).to_string(), "\n", flush=True)
    return sources, generalization.comparison(outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep data and caches here (default: a temporary folder)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "lesionlib" / "results" / "generalization.md")
    args = parser.parse_args()
    tf = import_tensorflow()
    ham, cc0 = args.shared / "data" / "ham10000", args.shared / "data" / "isic-cc0-sample"

    with tempfile.TemporaryDirectory() as temporary:
        home = args.home or Path(temporary)
        forward_settings = _settings(home / "ham", ham, cc0, args.shared)
        forward_sources, forward = run(forward_settings, recipes(), args.resamples)
        part = forward_sources.split(forward_settings.seed)
        tuned = fine_tuned(forward_settings, forward_sources, part, args.shared, args.resamples)
        print(pd.Series(tuned).to_string(), flush=True)
        forward = pd.concat([forward, pd.DataFrame([tuned]).set_index("recipe")])
        chosen = [r for r in recipes()
                  if r.name in ("original: whole image resized", "crop + 64 px + shades of gray")]
        _, backward = run(_settings(home / "cc0", cc0, ham, args.shared), chosen, args.resamples)
        both = forward_settings
        outcome = generalization.evaluate(chosen[1], backbones.load(both), forward_sources.manifest,
                                          forward_sources.split_together(both.seed), both.bottleneck_dir,
                                          both.seed, args.resamples)
        together = generalization.per_source(outcome.predictions["test"], forward_sources.manifest,
                                             args.resamples)

    counts = forward_sources.manifest.groupby(["source", "label"]).size().unstack(fill_value=0)
    text = "\n\n".join([
        "# Generalization across sources (benchmarks/generalization.py)",
        describe(tf) + "; MobileNet V2 (shared weights), workshop profile, seed 42.",
        "Images in use after the checks of notebook 01:\n\n" + _markdown(counts),
        "## Trained on HAM10000, tested on its own test lesions and on the CC0 ISIC sample\n\n"
        + _markdown(forward),
        "## Trained on the CC0 ISIC sample, tested on its own test lesions and on HAM10000\n\n"
        + _markdown(backward),
        "## Trained on both (best recipe), tested on each source's own test lesions\n\n"
        + _markdown(together.rename_axis("source")),
    ]) + "\n"
    fsutil.write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
