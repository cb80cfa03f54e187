"""The model card: what the exported model is, what it was trained and measured on, and what
it must not be used for, written from the run's own records (``build/model/MODEL_CARD.md``)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from . import DISCLAIMER, fsutil
from .export import ModelError, read_record
from .preprocessing import preprocessing_of
from .training import record_digest

NAME = "MODEL_CARD.md"


def _interval(row: dict | None) -> str:
    if not row or row.get("estimate") is None:
        return "not measured (no images of that kind in the test part)"
    if row.get("low") is None:
        return f"{row['estimate']:.3f}"
    return f"{row['estimate']:.3f} (95% interval {row['low']:.3f}–{row['high']:.3f})"


def markdown_table(frame: pd.DataFrame, number=lambda column, value: f"{value:.3g}") -> str:
    """A small DataFrame as a Markdown table (no extra dependency for ``to_markdown``);
    ``number(column, value)`` writes each float."""
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        cells = [number(column, v) if isinstance(v, (float, np.floating)) else str(v)
                 for column, v in row.items()]
        lines.append("| " + " | ".join([str(index)] + cells) + " |")
    return "\n".join(lines)


def _head_words(head: dict) -> str:
    balancing = "class weights" if head["class_weighting"] else "no class balancing"
    return f"dropout {head['dropout']}, L2 {head['l2']}, {balancing}"


def input_contract(model_record: dict) -> str:
    """The TFLite files' input and output in one line, from ``model.json``."""
    height, width = model_record["camera_input"]
    return (f"one uint8 RGB picture `[1, {height}, {width}, 3]` (height × width): resize the "
            f"picture to {width}×{height} (cut around its centre first if its shape differs); "
            f"the model does the rest ({preprocessing_of(model_record).describe()}, values "
            "scaled as the network wants). "
            f"Output: float32 `[1, {len(model_record['classes'])}]`, the probabilities of "
            f"{', '.join(model_record['classes'])} (`labels.txt`).")


def check_report(record: dict, metrics: dict) -> None:
    """Refuse an evaluation report made for another head than the one of ``record`` (its
    ``training.json``, kept in an exported model's ``model.json`` as ``training``)."""
    if metrics.get("head") != record_digest(record):
        raise ModelError("The evaluation report (build/report/metrics.json) was written for "
                         "another head than this one (other data, split, backbone or "
                         "settings). Run notebook 04 again, then this notebook.")


def _network_words(backbone: dict, size: int) -> str:
    tuned = backbone.get("fine_tuned")
    if tuned:
        where = f"from block {tuned['first_block']} on" if tuned["first_block"] else "every layer"
        weights = str(tuned.get("weights"))
        start = {"none": "random weights", "imagenet": "ImageNet weights"}.get(
            weights.lower(), f"the weights in `{Path(weights).name}`")
        epochs = f"{tuned['epochs']} epoch" + ("s" if tuned["epochs"] != 1 else "")
        return (f"Keras MobileNet V2 (width {tuned['alpha']}, input {size}×{size}) from {start}, "
                f"**fine-tuned** on these images ({where}, at most {epochs}), with a softmax head "
                "trained along with it")
    return (f"A frozen ImageNet network, **{backbone['name']}** (`{backbone['handle']}`, input {size}×{size}), "
            "with a softmax head trained on its features (\"bottleneck retraining\")")


def render(model_record: dict, metrics: dict, manifest: pd.DataFrame,
           tflite: pd.DataFrame | None = None) -> str:
    """The card's Markdown, from ``model.json``, notebook 04's ``metrics.json`` and the manifest."""
    training = model_record["training"]
    backbone, split, head = training["backbone"], training["split"], training["head"]
    counts = manifest["label"].value_counts().reindex(model_record["classes"], fill_value=0)
    licences = manifest["license"].fillna("not recorded").value_counts()
    attributions = manifest["attribution"].dropna().unique().tolist() if "attribution" in manifest else []
    intervals = metrics.get("intervals", {})
    per_class = metrics.get("per_class_intervals", {})
    operating = metrics.get("operating_point", {})
    calibration = metrics.get("calibration", {})
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Model card: lesion-course teaching classifier",
        "",
        f"> **{DISCLAIMER}** This model was made in a course about machine learning. It has not "
        "been validated for any clinical use and must not be used to decide anything about "
        "anyone's skin.",
        "",
        "## The model",
        f"- Classes: {', '.join(model_record['classes'])} (ISIC's diagnosis hierarchy, level 1).",
        f"- {_network_words(backbone, model_record['input_size'])}: {_head_words(head)}, early "
        f"stopping (best epoch {training['best_epoch']}).",
        f"- **Input contract of the TFLite files:** {input_contract(model_record)}",
        "- The SavedModel (`saved_model.pb`, `variables/`) has three signatures: `serving_default` "
        "takes encoded upright RGB images (JPEG, PNG, GIF or BMP bytes) and prepares them itself "
        f"({preprocessing_of(model_record).describe()}); `camera` takes what the TFLite files "
        "take; `pixels` takes images already prepared, values in [0, 1] (the float path, for "
        "inspection). Beside it: `labels.txt` (the classes in output order), `model.json`, and "
        "the TFLite variants below.",
        "",
        "## Data",
        f"- Source: `{training['data_source']}` ({training.get('profile')} profile), "
        f"{len(manifest)} images: " + ", ".join(f"{label} {n}" for label, n in counts.items()) + "."
        + ("" if "source" not in manifest or manifest["source"].nunique() < 2 else
           " Learned from several collections: " + ", ".join(
               f"{name} {n}" for name, n in manifest["source"].value_counts().items()) + " images."),
        "- Licences: " + ", ".join(f"{name} ({n} images)" for name, n in licences.items()) + "."
        + (" Some of them forbid commercial use (NC): do not use this model commercially either."
           if any(re.search(r"\bNC\b", str(name).upper()) for name in licences.index) else ""),
    ]
    if attributions:
        shown = "; ".join(str(a) for a in attributions[:3])
        more = " and others (see the manifest)" if len(attributions) > 3 else ""
        lines.append(f"- Attribution: {shown}{more}")
    lines += [
        f"- Split: {split['kind']}; validation {split['validation']:.0%}, test {split['test']:.0%}, "
        f"seed {split['seed']}. No lesion (or patient, where known) is on two sides.",
        "",
        f"## Evaluation (test part, {metrics.get('test_images')} images, never used in training)",
        f"- Accuracy: {_interval(intervals.get('accuracy'))}",
        f"- Balanced accuracy: {_interval(intervals.get('balanced accuracy'))}",
        f"- Malignant versus rest, ROC AUC: {_interval(intervals.get('AUC malignant vs rest'))}",
    ]
    for label in model_record["classes"]:
        lines.append(f"- {label}: sensitivity {_interval(per_class.get(f'{label} sensitivity'))}; "
                     f"specificity {_interval(per_class.get(f'{label} specificity'))}")
    if operating.get("test"):
        point = operating["test"]
        lines.append(f"- Operating point: P(malignant) ≥ {point['threshold']:.3f}, chosen on "
                     f"validation for sensitivity {operating['target sensitivity']:.2f}, "
                     "gives on test sensitivity "
                     f"{point['sensitivity']:.3f} and specificity {point['specificity']:.3f}.")
    if calibration:
        lines.append(f"- Calibration: expected calibration error {calibration.get('test ECE before')} "
                     f"on test; {calibration.get('test ECE after')} after temperature scaling "
                     f"(T = {calibration.get('temperature')}, fitted on validation; not applied "
                     "in the exported model).")
    lines.append("- Intervals come from resampling test lesions 1,000 times (notebook 04).")
    if tflite is not None and len(tflite):
        lines += ["", "## TFLite variants (against the SavedModel, on the test part)", "",
                  markdown_table(tflite.round(4)), "",
                  "Full int8 is post-training quantisation; where its agreement is low, ship the "
                  "smallest variant that agrees (notebook 05 says which and why)."]
    lines += [
        "",
        "## Intended use",
        "- Teaching and learning how image classifiers are built, evaluated and deployed.",
        "- **Not** for diagnosis, screening, triage or reassurance, by anyone, about anyone.",
        "",
        "## Limitations",
        "- Dermoscopic images only. Photographs taken with a phone without a dermatoscope look "
        "different, and the model has never seen one.",
        "- Skin types: the ISIC Archive (and HAM10000) hold mostly light skin (Fitzpatrick I–III) "
        "from Europe, Australia and the United States. Darker skin is under-represented; "
        "performance there is unknown and likely worse.",
        "- Three coarse classes: \"indeterminate\" is mostly actinic keratosis; rarer diagnoses "
        "are folded into benign or malignant.",
        f"- Made from {len(manifest)} images, of which {metrics.get('test_images')} were kept for "
        "the test: the intervals above show how far the figures could move on other images "
        "from the same sources.",
        "- Measured on unseen lesions of the training collections. Another clinic's images "
        "(other cameras, light and patients) usually score lower.",
        "- Probabilities are not risks for a person: they depend on how common each class was in "
        "the training data.",
        "",
        "## How it was made",
        f"- {made}, lesionlib {metadata.version('lesionlib')}, TensorFlow {metadata.version('tensorflow')}.",
        f"- {DISCLAIMER}",
        "",
    ]
    return "\n".join(lines)


def write(folder: Path, metrics: dict, manifest: pd.DataFrame, tflite: pd.DataFrame | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into an exported model's folder, atomically."""
    record = read_record(folder)
    check_report(record["training"], metrics)
    target = Path(folder) / NAME
    fsutil.write_text_atomic(target, render(record, metrics, manifest, tflite))
    return target
