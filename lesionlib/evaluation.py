"""Evaluating the classifier the way a clinician would: by what it misses, with error bars.

Everything works on one table of predictions (:func:`predict_part`): one row per image, with
its true class, the probability of each class, the predicted class and the *group* used to
resample for confidence intervals (the split's groups: lesion joined with patient, else the
image alone). A class with no images in the table
gets ``NaN`` where a number cannot exist, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from . import LesionlibError, fsutil
from .features import Bottlenecks, image_loader
from .preprocessing import ORIGINAL, Preprocessing
from .splits import groups
from .taxonomy import CLASSES
from .tfutil import import_tensorflow
from .training import label_indices, part_rows, probabilities

PROBABILITY = [f"p_{label}" for label in CLASSES]
CODES = {label: code for code, label in enumerate(CLASSES)}


def predict_part(head, bottlenecks: Bottlenecks, manifest: pd.DataFrame, part: pd.Series,
                 name: str) -> pd.DataFrame:
    """The predictions of ``head`` (a Keras model or a :class:`~lesionlib.training.TrainedHead`)
    for the images of one part, as a table."""
    rows = part_rows(bottlenecks, part, name)
    found = probabilities(head, bottlenecks.features[rows]) if rows.any() else np.zeros((0, len(CLASSES)))
    return prediction_table(found, manifest, bottlenecks.index[rows])


def prediction_table(found: np.ndarray, manifest: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """Class probabilities ``found`` (one row per image of ``index``, manifest ids) as the
    predictions table every measure here reads: label, its code, probabilities, predicted
    class and the lesion group."""
    frame = pd.DataFrame(found, index=index, columns=PROBABILITY)
    frame.insert(0, "label", manifest.loc[frame.index, "label"].to_numpy())
    frame.insert(1, "y", label_indices(frame["label"]))
    frame["predicted"] = np.array(CLASSES)[frame[PROBABILITY].to_numpy().argmax(axis=1)] if len(frame) else []
    frame["group"] = groups(manifest).loc[frame.index].to_numpy()  # lesion and patient, as the split
    return frame


def _confusion_counts(frame: pd.DataFrame) -> np.ndarray:
    """``counts[true, predicted]`` over :data:`CLASSES`, with numpy: the bootstrap calls it
    thousands of times."""
    found = []
    for column in ("label", "predicted"):
        codes = frame[column].map(CODES)
        if codes.isna().any():
            raise ValueError(f"{column} {frame[column].to_numpy()[codes.isna().to_numpy()][0]!r} is not one of "
                             f"{CLASSES}.")
        found.append(codes.to_numpy(dtype=np.int64))
    true, predicted = found
    size = len(CLASSES)
    return np.bincount(true * size + predicted, minlength=size * size).reshape(size, size)


def confusion_table(frame: pd.DataFrame, normalize: bool = False) -> pd.DataFrame:
    """Counts of (true class, predicted class); rows normalised to 1 if asked (empty rows NaN)."""
    table = pd.DataFrame(_confusion_counts(frame), index=pd.Index(CLASSES, name="true class"),
                         columns=pd.Index(CLASSES, name="predicted class"))
    if normalize:
        table = table.div(table.sum(axis=1).replace(0, np.nan), axis=0)
    return table


def per_class_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per class: images, precision, recall (sensitivity), specificity and F1."""
    values = _per_class(frame)
    return pd.DataFrame(values, index=pd.Index(CLASSES, name="class")).astype({"images": int})


def _per_class(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The per-class metrics of a predictions table, one array each (NaN where undefined)."""
    counts = _confusion_counts(frame).astype(float)
    tp = np.diag(counts)
    fn = counts.sum(axis=1) - tp
    fp = counts.sum(axis=0) - tp
    tn = counts.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"images": tp + fn, "precision": tp / (tp + fp), "recall (sensitivity)": tp / (tp + fn),
                "specificity": tn / (tn + fp),
                "F1": 2 * tp / (2 * tp + fp + fn)}  # 0 when nothing is found


def accuracy(frame: pd.DataFrame) -> float:
    return float((frame["label"] == frame["predicted"]).mean()) if len(frame) else np.nan


def balanced_accuracy(frame: pd.DataFrame) -> float:
    """The mean recall over the classes that have images."""
    recalls = _per_class(frame)["recall (sensitivity)"]
    recalls = recalls[~np.isnan(recalls)]
    return float(recalls.mean()) if len(recalls) else np.nan


def auc_one_vs_rest(frame: pd.DataFrame, label: str) -> float:
    """ROC AUC of ``P(label)`` for ``label`` against the rest; NaN unless both sides have images."""
    positive = (frame["label"] == label).to_numpy()
    if positive.all() or not positive.any():
        return np.nan
    # The Mann-Whitney form of the AUC (ties count one half), as roc_auc_score gives it, in a
    # fraction of its time: the bootstrap calls it thousands of times.
    ranks = rankdata(frame[f"p_{label}"].to_numpy())
    found = int(positive.sum())
    return float((ranks[positive].sum() - found * (found + 1) / 2) / (found * (len(positive) - found)))


def malignant_auc(frame: pd.DataFrame) -> float:
    return auc_one_vs_rest(frame, "malignant")


def summary(frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy, balanced accuracy and malignant-versus-rest AUC."""
    return {"accuracy": accuracy(frame), "balanced accuracy": balanced_accuracy(frame),
            "AUC malignant vs rest": malignant_auc(frame)}


def per_class_values(frame: pd.DataFrame) -> dict[str, float]:
    """Sensitivity, specificity and precision of each class, as ``"<class> <metric>"`` keys."""
    values = _per_class(frame)
    return {f"{label} {metric}": float(values[column][i]) for i, label in enumerate(CLASSES)
            for metric, column in (("sensitivity", "recall (sensitivity)"),
                                   ("specificity", "specificity"), ("precision", "precision"))}


def bootstrap_intervals(frame: pd.DataFrame,
                        statistic: Callable[[pd.DataFrame], dict[str, float]] = summary,
                        resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Each value of ``statistic`` with a percentile confidence interval from resampling
    **groups** (lesions).

    Images of one lesion are not independent, so the resampling draws whole lesions with
    replacement, as a new test set of the same kind would. Resamples where a value cannot be
    computed (no image of a class drawn) are left out of that value's interval.
    """
    rng = np.random.default_rng(seed)
    members = list(frame.groupby("group", sort=False).indices.values())
    draws = []
    for _ in range(resamples if members else 0):
        chosen = rng.integers(0, len(members), len(members))
        draws.append(statistic(frame.iloc[np.concatenate([members[i] for i in chosen])]))
    tail = (1 - level) / 2 * 100
    rows = []
    for name, estimate in statistic(frame).items():
        values = np.array([draw[name] for draw in draws], dtype=float)
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        rows.append({"metric": name, "estimate": estimate, "low": low, "high": high})
    return pd.DataFrame(rows).set_index("metric")


def per_class_intervals(frame: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The per-class table with intervals: one row per class and metric."""
    table = bootstrap_intervals(frame, per_class_values, resamples, seed)
    names = table.index.str.split(" ", n=1)
    table.index = pd.MultiIndex.from_tuples([tuple(n) for n in names], names=["class", "metric"])
    return table


def missing_classes(frame: pd.DataFrame) -> list[str]:
    """A sentence for each class that has no images here, so its metrics cannot exist."""
    present = set(frame["label"])
    return [f"No {label} images in this part: its sensitivity and the metrics built on it "
            "cannot be measured (shown as NaN)." for label in CLASSES if label not in present]


def threshold_for_sensitivity(positive: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest threshold on ``scores`` whose sensitivity (recall of ``positive``) >= ``target``."""
    positive = np.asarray(positive, dtype=bool)
    if not 0 < target <= 1:
        raise ValueError(f"A sensitivity target is above 0 and at most 1, not {target}.")
    if not positive.any():
        raise ValueError("No positive images: a sensitivity target cannot be met.")
    ranked = np.sort(np.asarray(scores)[positive])[::-1]
    needed = int(np.ceil(round(target * len(ranked), 9)))  # positives at or above it (no 0.07*100=7.000001)
    return float(ranked[max(needed, 1) - 1])


def operating_point(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity and specificity of calling ``scores >= threshold`` positive."""
    positive = np.asarray(positive, dtype=bool)
    called = np.asarray(scores) >= threshold
    return {"threshold": float(threshold),
            "sensitivity": float(called[positive].mean()) if positive.any() else np.nan,
            "specificity": float((~called[~positive]).mean()) if (~positive).any() else np.nan}


def reliability_table(frame: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Per confidence bin: images, mean confidence (top probability) and accuracy."""
    confidence = frame[PROBABILITY].max(axis=1).to_numpy()
    correct = (frame["label"] == frame["predicted"]).to_numpy()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append({"from": edges[b], "to": edges[b + 1], "images": int(inside.sum()),
                     "confidence": confidence[inside].mean() if inside.any() else np.nan,
                     "accuracy": correct[inside].mean() if inside.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(frame: pd.DataFrame, bins: int = 10) -> float:
    """The image-weighted mean gap between confidence and accuracy over the bins."""
    table = reliability_table(frame, bins).dropna()
    if table.empty:
        return np.nan
    gaps = (table["confidence"] - table["accuracy"]).abs()
    return float((gaps * table["images"]).sum() / table["images"].sum())


def with_temperature(frame: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """The table with its probabilities softened (T > 1) or sharpened (T < 1)."""
    logits = np.log(np.clip(frame[PROBABILITY].to_numpy(), 1e-12, 1.0)) / temperature
    scaled = np.exp(logits - logits.max(axis=1, keepdims=True))
    scaled /= scaled.sum(axis=1, keepdims=True)
    result = frame.copy()
    result[PROBABILITY] = scaled
    result["predicted"] = np.array(CLASSES)[scaled.argmax(axis=1)]
    return result


def fit_temperature(frame: pd.DataFrame) -> float:
    """The temperature that minimises the negative log-likelihood on ``frame`` (validation)."""
    from scipy.optimize import minimize_scalar

    if frame.empty:
        return 1.0  # nothing to fit on: leave the probabilities as they are
    y = frame["y"].to_numpy()

    def loss(log_t: float) -> float:
        probabilities = with_temperature(frame, float(np.exp(log_t)))[PROBABILITY].to_numpy()
        return float(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1)).mean())

    return float(np.exp(minimize_scalar(loss, bounds=(-3, 3), method="bounded").x))


def subgroup_table(frame: pd.DataFrame, manifest: pd.DataFrame, column: str) -> pd.DataFrame:
    """Images, accuracy, balanced accuracy and malignant sensitivity per value of ``column``
    (``age`` is cut into bands); groups without the metadata are shown as "not recorded"."""
    values = manifest.loc[frame.index, column]
    if column == "age":
        values = pd.cut(pd.to_numeric(values, errors="coerce"), [0, 30, 45, 60, 75, 120],
                        right=False, labels=["<30", "30-44", "45-59", "60-74", "75+"])
    keys = values.astype("string").fillna("not recorded")
    order = (list(values.cat.categories) if column == "age" else sorted(set(keys) - {"not recorded"}))
    rows = []
    for key in [k for k in order + ["not recorded"] if k in set(keys)]:
        members = frame[(keys == key).to_numpy()]
        malignant = members[members["label"] == "malignant"]
        rows.append({column: key, "images": len(members), "accuracy": accuracy(members),
                     "balanced accuracy": balanced_accuracy(members),
                     "malignant found": (malignant["predicted"] == "malignant").mean()
                     if len(malignant) else np.nan})
    columns = [column, "images", "accuracy", "balanced accuracy", "malignant found"]
    return pd.DataFrame(rows, columns=columns).set_index(column)


def confident_mistakes(frame: pd.DataFrame, count: int = 8) -> pd.DataFrame:
    """The wrong predictions the head was surest of, surest first."""
    wrong = frame[frame["label"] != frame["predicted"]]
    confidence = wrong[PROBABILITY].max(axis=1)
    return wrong.assign(confidence=confidence).sort_values("confidence", ascending=False).head(count)


def confusion_figure(frame: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.heatmap(confusion_table(frame), annot=True, fmt="d", cmap="Blues", cbar=False, ax=axes[0])
    sns.heatmap(confusion_table(frame, normalize=True), annot=True, fmt=".2f", cmap="Blues",
                vmin=0, vmax=1, cbar=False, ax=axes[1])
    axes[0].set_title("Images")
    axes[1].set_title("Share of each true class (rows sum to 1)")
    figure.tight_layout()
    return figure


def curves_figure(frame: pd.DataFrame):
    """One-vs-rest ROC and precision-recall curves, malignant-versus-rest drawn boldest."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    figure, (roc, pr) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label in CLASSES:
        positive = (frame["label"] == label).to_numpy()
        if positive.all() or not positive.any():
            continue
        scores = frame[f"p_{label}"].to_numpy()
        width = 3 if label == "malignant" else 1.2
        fpr, tpr, _ = roc_curve(positive, scores)
        roc.plot(fpr, tpr, linewidth=width,
                 label=f"{label} vs rest (AUC {auc_one_vs_rest(frame, label):.2f})")
        precision, recall, _ = precision_recall_curve(positive, scores)
        pr.plot(recall, precision, linewidth=width,
                label=f"{label} vs rest (AP {average_precision_score(positive, scores):.2f})")
    roc.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
    roc.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", title="ROC")
    pr.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall")
    roc.legend(loc="lower right")
    pr.legend(loc="lower left")
    figure.tight_layout()
    return figure


def reliability_figure(frame: pd.DataFrame, bins: int = 10):
    import matplotlib.pyplot as plt

    table = reliability_table(frame, bins).dropna()
    figure, axis = plt.subplots(figsize=(5, 4.5))
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfectly calibrated")
    axis.plot(table["confidence"], table["accuracy"], marker="o", label="the head")
    axis.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
             title=f"Reliability (ECE {expected_calibration_error(frame, bins):.3f})")
    axis.legend(loc="upper left")
    return figure


def mistakes_figure(mistakes: pd.DataFrame, manifest: pd.DataFrame):
    """A gallery of mistakes, each with its true class and the head's probabilities."""
    import matplotlib.pyplot as plt
    from PIL import Image

    columns = 4
    rows = max(1, int(np.ceil(len(mistakes) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (index, row) in zip(axes.flat, mistakes.iterrows()):
        with Image.open(manifest.at[index, "path"]) as image:
            axis.imshow(image)
        shares = ", ".join(f"{label[:5]} {row[f'p_{label}']:.2f}" for label in CLASSES)
        axis.set_title(f"true: {row['label']}\n{shares}", fontsize=8)
    figure.suptitle("Most confident mistakes (not a diagnosis)")
    figure.tight_layout()
    return figure


def occlusion(image: np.ndarray, probabilities, column: int, patch: int = 40, stride: int = 20,
              batch_size: int = 8) -> np.ndarray:
    """Where a model looks: how much probability ``column`` drops when each region is greyed out.

    ``image`` is one network-sized image in [0, 1]; ``probabilities`` maps a batch of such
    images to class probabilities. Needs forward passes only, so it works with any model.
    """
    size = image.shape[0]
    starts = sorted(set(range(0, size - patch + 1, stride)) | {size - patch})  # edges covered too
    corners = [(top, left) for top in starts for left in starts]
    occluded = np.repeat(image[np.newaxis], len(corners) + 1, axis=0).astype(np.float32)
    for k, (top, left) in enumerate(corners, start=1):
        occluded[k, top:top + patch, left:left + patch] = 0.5
    probability = np.concatenate([np.asarray(probabilities(occluded[start:start + batch_size]))[:, column]
                                  for start in range(0, len(occluded), batch_size)])
    drop = np.zeros((size, size))
    covered = np.zeros((size, size))
    for k, (top, left) in enumerate(corners, start=1):
        drop[top:top + patch, left:left + patch] += probability[0] - probability[k]
        covered[top:top + patch, left:left + patch] += 1
    return drop / np.maximum(covered, 1)


def occlusion_map(path, backbone, head, label: str, patch: int = 40, stride: int = 20,
                  batch_size: int = 8,
                  preprocessing: Preprocessing = ORIGINAL) -> tuple[np.ndarray, np.ndarray]:
    """:func:`occlusion` of one image file for a loaded backbone and a head, for ``P(label)``.

    Returns the network-sized input image (values in [0, 1]) and the map, same size.
    """
    tf = import_tensorflow()
    try:
        image = image_loader(backbone.spec.input_size, preprocessing)(str(path)).numpy()
    except tf.errors.OpError:
        raise ValueError(f"{path} could not be read as an image.") from None

    def chance(chunk: np.ndarray) -> np.ndarray:
        return probabilities(head, np.asarray(backbone(tf.constant(chunk))))

    return image, occlusion(image, chance, CLASSES.index(label), patch, stride, batch_size)


def draw_occlusion(axis, image: np.ndarray, heat: np.ndarray, label: str) -> None:
    """An occlusion map laid over its image on ``axis``, red where hiding lowers ``P(label)``."""
    axis.imshow(image)
    limit = max(abs(heat).max(), 1e-6)
    axis.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55)
    axis.set_title(f"red: hiding it lowers P({label})", fontsize=9)
    axis.axis("off")


def saliency_figure(maps: list[tuple[str, np.ndarray, np.ndarray, str]]):
    """Rows of (title, image, occlusion map, class): the image and the map laid over it."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(maps), 2, figsize=(6.5, 3.2 * len(maps)), squeeze=False)
    for (title, image, heat, label), (left, right) in zip(maps, axes):
        left.imshow(image)
        left.set_title(title, fontsize=9)
        left.axis("off")
        draw_occlusion(right, image, heat, label)
    figure.suptitle("Where the model looks (occlusion); not a diagnosis")
    figure.tight_layout()
    return figure


def _plain(value):
    """JSON-ready: NaN becomes null, NumPy numbers become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def read_report(folder: Path) -> dict:
    """``metrics.json`` of the report written by :func:`write_report` (notebook 04)."""
    path = Path(folder) / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LesionlibError(f"No evaluation report at {path}. Run notebook 04 first.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise LesionlibError(f"{path} is damaged ({error}). Run notebook 04 again.") from None


def write_report(folder: Path, metrics: dict, figures: dict) -> list[Path]:
    """Write ``metrics.json`` and one PNG per figure into ``folder`` (``build/report/``)."""
    folder = Path(folder)
    fsutil.write_json_atomic(folder / "metrics.json", _plain(metrics))
    return [folder / "metrics.json"] + [fsutil.save_figure(figure, folder / f"{name}.png")
                                        for name, figure in figures.items()]
