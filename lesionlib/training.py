"""Training the classifier head on cached bottlenecks, and saving what was trained.

The head is what the original ``retrain.py`` added on top of the frozen network: one softmax
layer. Here it also standardises the features (a ``Normalization`` layer fitted on the
training part) and has dropout and L2 regularisation, class weights for the unbalanced
classes, and early stopping on the validation loss.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
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
    """The knobs of head training. ``steps`` (if set) counts batches, as ``retrain.py`` did."""

    # Strong regularisation: with about a thousand training images and 1,280 features each,
    # the head otherwise overfits within a few epochs. Chosen by benchmarks/head_settings.py
    # (balanced accuracy on lesions held out of the training + validation part of HAM10000,
    # workshop profile, shared MobileNet V2): 0.682 +- 0.014, against 0.654 for L2 0.01.
    # (Measured with the original preprocessing, before the workshop profile's changed.)
    learning_rate: float = 3e-4
    epochs: int = 300
    steps: int | None = None  # e.g. 4000, the original's default; overrides ``epochs``
    batch_size: int = 64
    dropout: float = 0.5
    l2: float = 1.0
    class_weighting: bool = True
    # How class_weighting balances the classes. "weights": every image counts, rarer classes
    # more; "sampling": each batch draws the classes equally often (rarer images are seen more
    # often instead of weighing more). Neither when class_weighting is False.
    balance: str = "weights"
    hidden: int = 0  # units of a hidden ReLU layer before the softmax; 0: none, as the original
    patience: int = 20  # epochs without a better validation loss before stopping
    seed: int = 42

    def __post_init__(self) -> None:
        if self.balance not in ("weights", "sampling"):
            raise ValueError(f"balance={self.balance!r}: use 'weights' or 'sampling'.")


@dataclass
class TrainedHead:
    model: object  # a keras.Model taking bottlenecks, returning one probability per class
    history: pd.DataFrame  # loss and accuracy per epoch, training and validation
    config: HeadConfig
    best_epoch: int

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, len(CLASSES)]``.

        Calls the model directly: ``model.predict`` retraces (and warns) for every new number
        of rows, and the head is small enough to run on all rows at once.
        """
        return np.asarray(self.model(np.asarray(features, dtype=np.float32), training=False))


def label_indices(labels: pd.Series) -> np.ndarray:
    return labels.map({c: i for i, c in enumerate(CLASSES)}).to_numpy(dtype=np.int64)


def part_rows(bottlenecks: Bottlenecks, part: pd.Series, name: str,
              with_copies: bool = False) -> np.ndarray:
    """Which bottleneck rows belong to one part; augmented copies only when asked (training)."""
    rows = part.reindex(bottlenecks.index).to_numpy() == name
    return rows if with_copies else rows & (bottlenecks.copy == 0)


def arrays(bottlenecks: Bottlenecks, manifest: pd.DataFrame, part: pd.Series, name: str,
           with_copies: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features and class indices of one part (rows as :func:`part_rows` picks them)."""
    rows = part_rows(bottlenecks, part, name, with_copies)
    labels = manifest.loc[bottlenecks.index[rows], "label"]
    return bottlenecks.features[rows], label_indices(labels)


def class_weights(y: np.ndarray) -> dict[int, float]:
    """``n / (k * count)`` for each class present (k classes present); 1 for absent ones."""
    counts = np.bincount(y, minlength=len(CLASSES))
    present = counts > 0
    weights = np.ones(len(CLASSES))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def build_head(x_train: np.ndarray, config: HeadConfig):
    """Normalization (fitted on ``x_train``) -> dropout -> softmax over the three classes."""
    import_tensorflow()
    import keras

    normalize = keras.layers.Normalization(name="standardize")
    normalize.adapt(x_train)
    inputs = keras.Input((x_train.shape[1],), name="bottleneck")
    hidden = keras.layers.Dropout(config.dropout, name="dropout")(normalize(inputs))
    if config.hidden:
        hidden = keras.layers.Dense(config.hidden, activation="relu", name="hidden",
                                    kernel_regularizer=keras.regularizers.L2(config.l2))(hidden)
        hidden = keras.layers.Dropout(config.dropout, name="hidden_dropout")(hidden)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities",
                                 kernel_regularizer=keras.regularizers.L2(config.l2))(hidden)
    model = keras.Model(inputs, outputs, name="head")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train_head(train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
               config: HeadConfig = HeadConfig()) -> TrainedHead:
    """Fit the head; repeatable for a seed; stops early and keeps the best validation weights."""
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    x_train, y_train = train
    epochs = config.epochs
    if config.steps is not None:
        epochs = max(1, math.ceil(config.steps * config.batch_size / len(x_train)))
    model = build_head(x_train, config)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True)
    # Datasets built once, with the class weights as per-image weights: Keras's own
    # `class_weight` and NumPy inputs cost it ~80 ms of overhead per epoch, this ~20 ms.
    weighted = config.class_weighting and config.balance == "weights"
    weights = class_weights(y_train) if weighted else dict.fromkeys(range(len(CLASSES)), 1.0)
    per_image = np.array([weights[label] for label in y_train], dtype=np.float32)
    if config.class_weighting and config.balance == "sampling":
        batches = _balanced_batches(tf, x_train, y_train, per_image, config)
    else:
        batches = (tf.data.Dataset.from_tensor_slices((x_train, y_train, per_image)).cache()
                   .shuffle(len(x_train), seed=config.seed).batch(config.batch_size))
    checks = tf.data.Dataset.from_tensor_slices(validation).batch(4096).cache()
    fitted = model.fit(batches, validation_data=checks, epochs=epochs, shuffle=False,
                       verbose=0, callbacks=[stop])
    history = pd.DataFrame(fitted.history).rename_axis("epoch")
    history.index += 1
    return TrainedHead(model, history, config, int(history["val_loss"].idxmin()))


def _balanced_batches(tf, x: np.ndarray, y: np.ndarray, per_image: np.ndarray, config: HeadConfig):
    """An epoch of as many images as ``x`` holds, each drawn from every present class equally
    often (rare images repeat within an epoch)."""
    present = [c for c in range(len(CLASSES)) if (y == c).any()]
    streams = [tf.data.Dataset.from_tensor_slices((x[y == c], y[y == c], per_image[y == c])).cache()
               .shuffle(int((y == c).sum()), seed=config.seed + c).repeat() for c in present]
    mixed = tf.data.Dataset.sample_from_datasets(streams, seed=config.seed,
                                                 rerandomize_each_iteration=True)  # new draws each epoch
    return mixed.take(len(x)).batch(config.batch_size)


def scores(trained: TrainedHead, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (the mean of per-class recall) on one part.

    A part with no images gets ``None`` for both: there is nothing to score.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    if len(y) == 0:
        return {"images": 0, "accuracy": None, "balanced accuracy": None}
    predicted = trained.predict(x).argmax(axis=1)
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


def save_head(trained: TrainedHead, folder: Path, record: dict) -> Path:
    """Write ``head.keras``, ``labels.txt`` (the original's output), ``training.json`` and
    ``history.csv`` into ``folder``, each atomically. ``record`` adds settings and metrics."""
    folder = Path(folder)
    with fsutil.atomic_path(folder / "head.keras") as temporary:
        trained.model.save(temporary)
    fsutil.write_text_atomic(folder / "labels.txt", "\n".join(CLASSES) + "\n")
    fsutil.write_json_atomic(folder / "training.json", {
        "head": asdict(trained.config), "best_epoch": trained.best_epoch, **record})
    fsutil.write_atomic(folder / "history.csv", lambda out: trained.history.to_csv(out))
    return folder


def load_head(folder: Path) -> tuple[TrainedHead, dict]:
    """The head saved by :func:`save_head` and its record (``training.json``)."""
    import_tensorflow()
    import keras

    folder = Path(folder)
    if not (folder / "head.keras").is_file():
        raise ManifestError(f"No trained head in {folder}. Run notebook 03 first.")
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    # Read as text and convert with Python's float(): pandas < 3 parses floats in CSV with
    # a fast parser that can be one unit in the last place off, so the history did not
    # come back equal; float_precision="round_trip" is deprecated in pandas 3.
    history = pd.read_csv(folder / "history.csv", dtype=str)
    history = history.astype(float).astype({"epoch": int}).set_index("epoch")
    trained = TrainedHead(keras.models.load_model(folder / "head.keras"), history,
                          HeadConfig(**record["head"]), record["best_epoch"])
    return trained, record


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
