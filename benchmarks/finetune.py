"""The best model the course can make: frozen bottlenecks against fine-tuning, on all of HAM10000.

    .venv/bin/python benchmarks/finetune.py [--shared ../shared] [--home DIR] [--epochs N]
        [--per-class N] [--resamples N] [--out FILE]

Five models, each trained on the train part of all of HAM10000 (split by lesion, seed 42,
70/15/15) and early-stopped on its validation part (its loss, unless said otherwise):

1. frozen head, whole image: the shared MobileNet V2's bottlenecks of the whole image
   resized to 224 px, and the course's head (``training.train_head``, L2 0.1, dropout 0.5);
2. frozen head, the workshop's preparation (centre crop, 128 px; chosen by cross-validation
   on HAM10000's lesions, ``benchmarks/generalization.py``);
3. fine-tuned top blocks: Keras MobileNet V2 (Google's float ImageNet weights) from block 13
   on, with augmentation (flips, turns, zoom, light and contrast), class weights, Adam 1e-4;
4. fine-tuned everything: every layer of the network, Adam 3e-5;
5. fine-tuned top blocks as in 3, early-stopped on the validation AUC of malignant versus the
   rest instead of the validation loss. Added after rows 3 and 4 stopped after their first
   epoch: class weights make the unweighted validation loss rise while the training loss still
   falls, so the loss may stop a run that the figure we choose by would let go on. The
   reason is on validation lesions alone.

The fine-tuned models start from a head trained on their own network's frozen features, take
the preparation of whichever frozen row scored better on validation, and see the network at
that preparation's resolution (no upscaling: 128 px costs a third of 224 px). The learning
rates and the block were fixed beforehand, as in Keras's transfer-learning guide, not tuned.

Choose without peeking: the model the course recommends is the one with the best AUC on
**validation** lesions (marked in the table). HAM10000's test part, PH2 (another clinic's sharp
images) and the CC0 ISIC sample (blurry thumbnails) are held out and scored once per model,
after training; nothing is chosen by them. AUC is malignant versus the rest, with a 95%
interval from resampling lesions.

Fine-tuning saves a checkpoint after every epoch under ``HOME/checkpoints/finetune``
(:mod:`lesionlib.checkpoints`): run the same command again after an interruption and it goes
on from the last finished epoch. Training minutes add up over all sessions of a run.

Prints the table with the CPU model and writes it as Markdown to ``--out`` (default:
lesionlib/results/finetune.md). Asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from head_settings import workshop_settings
from machine import cpu_name, describe

from lesionlib import (
    backbones,
    checkpoints,
    evaluation,
    features,
    generalization,
    splits,
    training,
)
from lesionlib.modelcard import markdown_table
from lesionlib.preprocessing import Preprocessing
from lesionlib.settings import WORKSHOP_PREPARATION, Settings
from lesionlib.tfutil import import_tensorflow

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = {"PH2": "data/ph2", "CC0": "data/isic-cc0-sample"}  # held out whole: folder in --shared
KERAS_WEIGHTS = "weights/keras/mobilenet_v2_1.0_224_float_no_top.weights.h5"
FROZEN = {"frozen head, whole image (224 px)": Preprocessing(),
          "frozen head, crop + 128 px (the workshop's)": WORKSHOP_PREPARATION}
TUNED = {"fine-tuned from block 13": (13, 1e-4, "val_loss"),  # block, rate, what early stopping watches
         "fine-tuned, every layer": (0, 3e-5, "val_loss"),
         "fine-tuned from block 13, stopped on validation AUC": (13, 1e-4, "val_malignant_auc")}
BATCH = 32
PATIENCE = 3  # epochs without a better validation loss (or AUC)


@dataclass
class Row:
    """One model's predictions on each part, and what its training cost."""

    predictions: dict[str, pd.DataFrame]
    minutes: float
    images_per_second: float
    epochs: int


def frozen_row(settings: Settings, backbone, manifest: pd.DataFrame, part: pd.Series,
               held_out: dict[str, pd.DataFrame], preprocessing: Preprocessing) -> Row:
    started = time.perf_counter()
    found = features.extract(manifest, backbone, settings.bottleneck_dir, preprocessing=preprocessing)
    head = training.train_head(training.arrays(found, manifest, part, "train"),
                               training.arrays(found, manifest, part, "validation"), training.HeadConfig())
    predictions = {name: evaluation.predict_part(head, found, manifest, part, name)
                   for name in ("validation", "test")}
    for name, other in held_out.items():
        theirs = features.extract(other, backbone, settings.bottleneck_dir, preprocessing=preprocessing)
        predictions[name] = evaluation.prediction_table(training.probabilities(head, theirs.features),
                                                        other, theirs.index)
    epochs = len(head.history)
    seconds = time.perf_counter() - started
    return Row(predictions, seconds / 60, (part == "train").sum() / seconds, epochs)


def _images(rows: pd.DataFrame, size: int, preprocessing: Preprocessing, shuffle: bool = False):
    """Images (uint8, decoded and prepared once, then kept in memory) and label indices."""
    tf = import_tensorflow()
    load = features.image_loader(size, preprocessing)
    data = tf.data.Dataset.from_tensor_slices((rows["path"].astype(str).tolist(),
                                               training.label_indices(rows["label"])))
    data = data.map(lambda path, label: (tf.image.convert_image_dtype(load(path), tf.uint8, saturate=True), label),
                    num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        data = data.shuffle(len(rows), seed=42, reshuffle_each_iteration=True)
    return data.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def tuned_row(settings: Settings, shared: Path, manifest: pd.DataFrame, part: pd.Series,
              held_out: dict[str, pd.DataFrame], preprocessing: Preprocessing, block: int,
              learning_rate: float, monitor: str, epochs: int) -> Row:
    import_tensorflow()
    import keras

    size = preprocessing.resolution or 224
    rows = {name: manifest[part == name] for name in ("train", "validation", "test")}
    train = _images(rows["train"], size, preprocessing, shuffle=True)
    validation = _images(rows["validation"], size, preprocessing)

    keras.utils.set_random_seed(42)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, pooling="avg",
                                          weights=str(shared / KERAS_WEIGHTS))
    augment = keras.Sequential([
        keras.layers.RandomFlip(), keras.layers.RandomRotation(0.5), keras.layers.RandomZoom((-0.2, 0.1)),
        keras.layers.RandomBrightness(0.1, value_range=(0, 1)), keras.layers.RandomContrast(0.2, value_range=(0, 1)),
    ], name="augment")
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    head = training.build_head(np.zeros((2, base.output_shape[-1]), "float32"))
    model = keras.Model(inputs, head(base(keras.layers.Rescaling(2.0, offset=-1.0)(augment(scaled)), training=False)))
    base.trainable = True
    first = base.layers.index(base.get_layer(f"block_{block}_expand")) if block else 0
    for layer in base.layers[:first]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", training.malignant_auc()])
    record = {"block": block, "learning_rate": learning_rate, "size": size, "batch": BATCH,
              "preprocessing": repr(preprocessing), "train images": len(rows["train"]),
              "weights": KERAS_WEIGHTS, "augment": "flip rotate 0.5 zoom -0.2..0.1 light 0.1 contrast 0.2"}
    if monitor != "val_loss":  # the runs made before there was a choice keep their records
        record["monitor"] = monitor
    run = checkpoints.Run(settings.home / "checkpoints" / "finetune", record, monitor=monitor,
                          mode="min" if monitor == "val_loss" else "max", patience=PATIENCE)
    start = run.resume(model, epochs)
    if start == 0:  # a good head first: a random one's large errors would wreck the network's weights
        frozen = keras.Model(inputs, base(keras.layers.Rescaling(2.0, offset=-1.0)(scaled), training=False))
        bottlenecks = {name: frozen.predict(_images(rows[name], size, preprocessing).map(lambda x, y: x), verbose=0)
                       for name in ("train", "validation")}
        y = {name: training.label_indices(rows[name]["label"]) for name in ("train", "validation")}
        trained = training.train_head((bottlenecks["train"], y["train"]),
                                      (bottlenecks["validation"], y["validation"]), training.HeadConfig())
        head.set_weights(trained.model.get_weights())
        for layer in head.layers:  # set_weights leaves Normalization's mean and variance as adapted
            if isinstance(layer, keras.layers.Normalization):
                layer.finalize_state()
    model.fit(train, validation_data=validation, epochs=epochs, initial_epoch=start, verbose=0, shuffle=False,
              class_weight=training.class_weights(training.label_indices(rows["train"]["label"])),
              callbacks=[run, checkpoints.progress(len(rows["train"]))])

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        found = model.predict(_images(frame, size, preprocessing).map(lambda x, y: x), verbose=0)
        return evaluation.prediction_table(found, frame, frame.index)

    predictions = {name: predict(rows[name]) for name in ("validation", "test")}
    predictions.update({name: predict(other) for name, other in held_out.items()})
    done = len(run.history)
    seconds = max(run.minutes * 60, 1e-9)
    return Row(predictions, run.minutes, len(rows["train"]) * done / seconds, done)


def table(rows: dict[str, Row], resamples: int) -> pd.DataFrame:
    out = {}
    for name, row in rows.items():
        line = {}
        for part, frame in row.predictions.items():
            auc = generalization.auc_interval(frame, resamples, 42)
            label = {"validation": "validation", "test": "HAM10000 test"}.get(part, part)
            line[f"AUC {label}"] = auc["estimate"]
            line[f"{label} 95%"] = f"{auc['low']:.3f}–{auc['high']:.3f}"
        line.update({"epochs": row.epochs, "training (min)": row.minutes, "images/s": row.images_per_second})
        out[name] = line
    frame = pd.DataFrame(out).T.rename_axis("model")
    chosen = frame["AUC validation"].astype(float).idxmax()
    return frame.rename(index={chosen: f"**{chosen}** (best on validation)"})


def report(machine: str, minutes: float, frame: pd.DataFrame, images: pd.DataFrame) -> str:
    number = lambda column, v: f"{v:.1f}" if column in ("training (min)", "images/s") else (
        str(int(v)) if column == "epochs" else f"{v:.3f}")
    return "\n\n".join([
        "# The best model: frozen bottlenecks against fine-tuning (benchmarks/finetune.py)",
        f"{machine}; {minutes:.0f} minutes in this session.",
        "Trained on the train part of all of HAM10000 (split by lesion, 70/15/15, seed 42), "
        "early-stopped on its validation part. The model to recommend is chosen by its AUC on "
        "**validation** lesions; HAM10000's test part, PH2 and the CC0 ISIC sample are held out "
        "and scored once per model after training. AUC of malignant versus the rest, 95% "
        "intervals from resampling lesions. Training minutes are CPU minutes on this machine, "
        "over all sessions of a resumed run (frozen rows: bottlenecks and head).",
        markdown_table(frame, number),
        "Images scored:\n\n" + markdown_table(images, lambda column, v: str(int(v))),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--home", type=Path, required=True,
                        help="data, caches and checkpoints (keep it to resume an interrupted run)")
    parser.add_argument("--epochs", type=int, default=15, help="the most a fine-tuning run trains")
    parser.add_argument("--per-class", type=int, default=None,
                        help="at most this many images per class (default: all; a small number tries the script out)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "lesionlib" / "results" / "finetune.md")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = replace(workshop_settings(args.shared, args.home.resolve()), per_class_limit=args.per_class)
    manifest = generalization.manifest_of(settings)
    part = splits.grouped_split(manifest, seed=settings.seed)
    held_out = {name: generalization.manifest_of(replace(settings, external_source=args.shared / folder).external())
                for name, folder in EXTERNAL.items()}
    backbone = backbones.load(settings)
    import tensorflow as tf  # loaded by now: only its version is wanted, for the machine line

    rows: dict[str, Row] = {}
    for name, preprocessing in FROZEN.items():
        rows[name] = frozen_row(settings, backbone, manifest, part, held_out, preprocessing)
        print(f"{name}: {table({name: rows[name]}, 200).iloc[0].to_dict()} ({cpu_name()})", flush=True)
    validation = {name: evaluation.malignant_auc(rows[name].predictions["validation"]) for name in FROZEN}
    preprocessing = FROZEN[max(validation, key=validation.get)]
    for name, (block, rate, monitor) in TUNED.items():
        rows[name] = tuned_row(settings, args.shared, manifest, part, held_out, preprocessing, block, rate,
                               monitor, args.epochs)
        print(f"{name}: {table({name: rows[name]}, 200).iloc[0].to_dict()} ({cpu_name()})", flush=True)
    frame = table(rows, args.resamples)
    first = next(iter(rows.values())).predictions
    images = pd.DataFrame({name: p["label"].value_counts() for name, p in first.items()}).T.fillna(0)
    text = report(describe(tf), (time.perf_counter() - started) / 60, frame, images.rename_axis("part"))
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
