"""The classifier head's plumbing: its data, its records, and its recipe for later uses.

Notebook 03 writes the head out in Keras (standardisation, dropout, a softmax layer with L2),
compiles and fits it. :func:`train_head` is the same recipe for second and later uses
(notebook 06, the benchmarks): early stopping on the validation loss, class weights for the
unbalanced classes. :func:`save_head` and :func:`load_head` keep a head with its record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import fsutil
from .dataset import ManifestError
from .features import Bottlenecks
from .taxonomy import CLASSES
from .tfutil import import_tensorflow


@dataclass(frozen=True)
class HeadConfig:
    """The knobs of :func:`train_head`, as notebook 03 sets them."""

    learning_rate: float = 3e-4
    epochs: int = 300
    batch_size: int = 64
    dropout: float = 0.5
    # With about a thousand training images and 1,280 features each, the head otherwise
    # memorises within a few epochs. Chosen by cross-validation on HAM10000's own lesions
    # (benchmarks/head_settings.py, the workshop's preparation: AUC 0.777 against 0.773 for
    # 1.0 and 0.751 for 0.01); notebook 03 measures it again on your data.
    l2: float = 0.1
    class_weighting: bool = True
    patience: int = 20  # epochs without a better validation loss before stopping
    seed: int = 42


@dataclass
class TrainedHead:
    model: object  # a keras.Model taking bottlenecks, returning one probability per class
    history: pd.DataFrame  # loss and accuracy per epoch, training and validation
    best_epoch: int

    def __call__(self, features, training: bool = False):
        """Called like the Keras model it holds (so :func:`probabilities` takes either)."""
        return self.model(features, training=training)


def probabilities(model, features: np.ndarray) -> np.ndarray:
    """A head's class probabilities for ``features``, all rows at once.

    Calls the model directly: ``model.predict`` retraces (and warns) for every new number of
    rows, and a head is small enough to run on all rows at once.
    """
    return np.asarray(model(np.asarray(features, dtype=np.float32), training=False))


def label_indices(labels: pd.Series) -> np.ndarray:
    return labels.map({c: i for i, c in enumerate(CLASSES)}).to_numpy(dtype=np.int64)


def part_rows(bottlenecks: Bottlenecks, part: pd.Series, name: str) -> np.ndarray:
    """Which bottleneck rows belong to one part."""
    return part.reindex(bottlenecks.index).to_numpy() == name


def arrays(bottlenecks: Bottlenecks, manifest: pd.DataFrame, part: pd.Series,
           name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and class indices of one part."""
    rows = part_rows(bottlenecks, part, name)
    labels = manifest.loc[bottlenecks.index[rows], "label"]
    return bottlenecks.features[rows], label_indices(labels)


def class_weights(y: np.ndarray) -> dict[int, float]:
    """``n / (k * count)`` for each class present (k classes present); 1 for absent ones."""
    counts = np.bincount(y, minlength=len(CLASSES))
    present = counts > 0
    weights = np.ones(len(CLASSES))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def build_head(x_train: np.ndarray, config: HeadConfig = HeadConfig()):
    """Notebook 03's head: standardisation (fitted on ``x_train``), dropout, a softmax layer
    with L2; compiled."""
    import_tensorflow()
    import keras

    standardize = keras.layers.Normalization(name="standardize")
    standardize.adapt(x_train)
    head = keras.Sequential([
        keras.Input((x_train.shape[1],), name="bottleneck"),
        standardize,
        keras.layers.Dropout(config.dropout, name="dropout"),
        keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities",
                           kernel_regularizer=keras.regularizers.L2(config.l2)),
    ], name="head")
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return head


def train_head(train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
               config: HeadConfig = HeadConfig()) -> TrainedHead:
    """Fit :func:`build_head` as notebook 03 does; repeatable for a seed; stops early and keeps
    the best validation weights."""
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    x_train, y_train = train
    head = build_head(x_train, config)
    batches = (tf.data.Dataset.from_tensor_slices(train).cache()
               .shuffle(len(x_train), seed=config.seed).batch(config.batch_size))
    checks = tf.data.Dataset.from_tensor_slices(validation).batch(4096).cache()
    fitted = head.fit(batches, validation_data=checks, epochs=config.epochs, verbose=0, shuffle=False,
                      class_weight=class_weights(y_train) if config.class_weighting else None,
                      callbacks=[keras.callbacks.EarlyStopping(
                          monitor="val_loss", min_delta=1e-3, patience=config.patience,
                          restore_best_weights=True)])
    history = history_table(fitted.history)
    return TrainedHead(head, history, int(history["val_loss"].idxmin()))


def malignant_auc():
    """A Keras metric: the AUC of the probability of malignant against every other class, from
    class indices and softmax probabilities, the figure the course chooses models by; ``fit``
    logs it as ``malignant_auc`` (weighted by ``class_weight``, as Keras passes it on) and, on
    validation data, ``val_malignant_auc`` (unweighted: the one to stop on)."""
    tf = import_tensorflow()
    import keras

    column = CLASSES.index("malignant")

    class MalignantAUC(keras.metrics.AUC):
        def update_state(self, y_true, y_pred, sample_weight=None):
            positive = tf.equal(tf.reshape(tf.cast(y_true, tf.int32), [-1]), column)
            return super().update_state(positive, y_pred[:, column], sample_weight)

    return MalignantAUC(num_thresholds=1000, name="malignant_auc")


def epoch_log(every: int = 10):
    """A Keras callback that prints one short line every ``every`` epochs and at the end: a
    log a learner can watch without a wall of progress bars."""
    import_tensorflow()
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.last = (epoch, logs or {})
            if (epoch + 1) % every == 0 or epoch == 0:
                self._print(epoch, logs or {})

        def on_train_end(self, logs: dict | None = None) -> None:
            epoch, last = getattr(self, "last", (None, {}))
            if epoch is not None and (epoch + 1) % every:
                self._print(epoch, last)

        @staticmethod
        def _print(epoch: int, logs: dict) -> None:
            print(f"epoch {epoch + 1:>4}: " + "  ".join(f"{name} {value:.3f}" for name, value in logs.items()
                                                      if name in ("loss", "accuracy", "val_loss", "val_accuracy")))

    return EpochLog()


def history_table(history: dict) -> pd.DataFrame:
    """Keras's ``fit(...).history`` as a table, one row per epoch, counted from 1."""
    table = pd.DataFrame(history).rename_axis("epoch")
    table.index += 1
    return table


def scores(head, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (the mean of per-class recall) of a head (a Keras model
    or a :class:`TrainedHead`) on one part.

    A part with no images gets ``None`` for both: there is nothing to score.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    if len(y) == 0:
        return {"images": 0, "accuracy": None, "balanced accuracy": None}
    predicted = probabilities(head, x).argmax(axis=1)
    return {"images": int(len(y)), "accuracy": round(float(accuracy_score(y, predicted)), 4),
            "balanced accuracy": round(float(balanced_accuracy_score(y, predicted)), 4)}


def learning_curves_figure(history: pd.DataFrame, best_epoch: int):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(history.index, history[metric], label="training")
        axis.plot(history.index, history[f"val_{metric}"], label="validation")
        axis.axvline(best_epoch, color="gray", linestyle=":", label=f"kept: epoch {best_epoch}")
        axis.set(xlabel="epoch", ylabel=metric, title=f"{metric.capitalize()} per epoch")
        axis.legend()
    figure.tight_layout()
    return figure


def save_head(model, history: pd.DataFrame, folder: Path, record: dict) -> Path:
    """Write ``head.keras``, ``labels.txt`` (the original's output), ``training.json`` (the
    ``record``: settings, split, scores) and ``history.csv`` into ``folder``, each atomically."""
    folder = Path(folder)
    with fsutil.atomic_path(folder / "head.keras") as temporary:
        model.save(temporary)
    fsutil.write_text_atomic(folder / "labels.txt", "\n".join(CLASSES) + "\n")
    fsutil.write_json_atomic(folder / "training.json", record)
    fsutil.write_atomic(folder / "history.csv", lambda out: history.to_csv(out))
    return folder


def load_head(folder: Path) -> tuple[object, dict]:
    """The Keras head saved by :func:`save_head`, and its record (``training.json``)."""
    import_tensorflow()
    import keras

    folder = Path(folder)
    if not (folder / "head.keras").is_file():
        raise ManifestError(f"No trained head in {folder}. Run notebook 03 first.")
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    return keras.models.load_model(folder / "head.keras"), record


def record_digest(record: dict) -> str:
    """A short hash of a head's record (``training.json``): reports and exported models carry
    it, so a report of another head (other data, split, backbone or settings) is recognised."""
    import hashlib

    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_record(record: dict, settings, backbone) -> None:
    """Refuse a head trained on other data or another backbone's features than these."""
    if record.get("data_source") != str(settings.data_source) or \
            record.get("backbone", {}).get("identity") != backbone.identity:
        raise ManifestError(
            f"The head in {settings.head_dir} was trained on {record.get('data_source')} with "
            f"{record.get('backbone', {}).get('name')}; these settings use "
            f"{settings.data_source} with {backbone.spec.name}. Run notebook 03 again.")


def check_split(record: dict, manifest: pd.DataFrame, part: pd.Series) -> None:
    """Refuse a split that is not the one the head was trained with (its test would leak)."""
    from .splits import fingerprint

    if record.get("split", {}).get("fingerprint") != fingerprint(manifest, part):
        raise ManifestError("This split is not the one the head was trained with (the data "
                            "changed since notebook 03): its test part could hold training "
                            "images. Run notebook 03 again.")
