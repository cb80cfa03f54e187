"""Export's plumbing: the folder around the model, and the TFLite variants.

Notebook 05 writes the model itself: its serving function (image bytes -> decode -> prepare
-> backbone -> head -> probabilities, label, classes), the Keras ``ExportArchive`` holding it
with two endpoints, and one TFLite conversion. What it hands to :func:`write_model` must keep
this contract, on which ``lesionlib predict``, :class:`lesionlib.inference.ExportedModel`, the
demo and the model card rely:

* ``serving_default`` takes a batch of encoded images (JPEG, PNG, GIF or BMP bytes) and
  returns ``probabilities`` ``[N, 3]``, the most probable ``label`` ``[N]`` and the ``classes``
  in column order. Like TensorFlow's decoders, it expects **upright RGB** images: it does not
  apply a JPEG's EXIF rotation and drops transparency. Training images were made upright RGB
  by notebook 01; :func:`lesionlib.inference.model_bytes` does the same for any image file,
  and ``lesionlib predict`` and the demo use it. A server should too.
* ``pixels`` takes network-sized images ``[N, s, s, 3]`` in [0, 1], already prepared as the
  head's preprocessing says (``model.json``; e.g. centre square, 64 pixels and back, shades
  of gray) and returns ``probabilities``; it is what TFLite gets, since TFLite has no image
  decoder: a phone app decodes and prepares images with its own platform's API.

:func:`write_model` writes the archive, ``labels.txt`` and ``model.json`` (format, classes,
input size, preprocessing, disclaimer and the head's training record) into a new folder and
swaps it in whole, so an interrupted export never leaves half a model. The model goes
through Keras's own ``ExportArchive`` (what ``model.export`` uses). TFLite files are converted
from the written SavedModel with ``TFLiteConverter.from_saved_model``: ``from_keras_model``
prints hundreds of lines, and ``from_concrete_functions`` on a Keras 3 model has produced NaN
outputs. :func:`save_tflite` keeps a converted file beside the SavedModel; :func:`convert_tflite`
makes the variants of the table in notebook 05 (float32, float16, dynamic-range and full int8).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import DISCLAIMER, LesionlibError, fsutil
from .preprocessing import preprocessing_of
from .taxonomy import CLASSES
from .tfutil import import_tensorflow, native_output_filtered

FORMAT = 1
RECORD = "model.json"  # how the model was made: backbone, preprocessing, head record
SIGNATURES = ("serving_default", "pixels")  # the entry points every exported model has
PIXELS = "pixels"
# Each variant and what it changes. Only full int8 needs representative images (to choose
# the ranges of the activations).
TFLITE_VARIANTS = {
    "float32": "weights and arithmetic in float32: the SavedModel's numbers",
    "float16": "weights stored as float16 (half the size), computed in float32",
    "dynamic-int8": "weights stored as int8, activations quantised on the fly",
    "int8": "weights and activations int8, ranges calibrated on training images; "
            "takes and returns uint8",
}


class ModelError(LesionlibError):
    """A model folder that is missing or damaged; the message says how to make it again."""


def _pixels_size(folder: Path) -> int:
    """The square input size of a written SavedModel's ``pixels`` signature, read from its
    ``saved_model.pb``; a clear error if a signature of the contract is missing or odd."""
    import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(folder) / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    missing = [name for name in SIGNATURES if name not in signatures]
    if missing:
        raise ModelError(f"The exported model has no {' and no '.join(missing)} signature (it has "
                         f"{', '.join(sorted(signatures)) or 'none'}): add an endpoint of each name "
                         "to the ExportArchive, as notebook 05 does.")
    inputs = list(signatures[PIXELS].inputs.values())
    shape = [dim.size for dim in inputs[0].tensor_shape.dim] if len(inputs) == 1 else []
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] < 1 or shape[3] != 3 \
            or "probabilities" not in signatures[PIXELS].outputs:
        raise ModelError("The exported model's pixels signature must take one batch of square "
                         f"RGB images [N, s, s, 3] and return probabilities; it takes {shape}.")
    return shape[1]


def write_model(archive, folder: Path, record: dict) -> Path:
    """Write a Keras ``ExportArchive`` with the endpoints of the contract (see above) as a
    SavedModel, with ``labels.txt`` and ``model.json``, into ``folder``, replacing it whole.

    ``record`` is the head's training record (``training.json``): its preprocessing is the one
    the model applies (kept in ``model.json`` for apps that prepare images themselves), and it
    is kept whole for the model card.
    """
    tf = import_tensorflow()
    logger = tf.get_logger()
    level = logger.level
    with fsutil.atomic_folder(folder) as temporary:
        logger.setLevel("ERROR")  # not "INFO:tensorflow:Assets written to: <a temporary folder>"
        try:
            with native_output_filtered():
                archive.write_out(str(temporary), verbose=False)
        finally:
            logger.setLevel(level)
        size = _pixels_size(temporary)
        fsutil.write_text_atomic(temporary / "labels.txt", "\n".join(CLASSES) + "\n")
        fsutil.write_json_atomic(temporary / RECORD, {
            "format": FORMAT, "classes": list(CLASSES), "input_size": size,
            "preprocessing": asdict(preprocessing_of(record)), "disclaimer": DISCLAIMER,
            "training": record})
    return Path(folder)


def read_record(folder: Path) -> dict:
    """``model.json`` of an exported model, or a clear error if the folder is not one."""
    folder = Path(folder)
    path = folder / RECORD
    if not (folder / "saved_model.pb").is_file() or not path.is_file():
        raise ModelError(f"{folder} holds no exported model (no saved_model.pb and {RECORD}). "
                         "Run notebook 05 (or `make course`) to export one.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelError(f"{path} is damaged ({error}). Run notebook 05 again to export the "
                         "model afresh.") from None


def tflite_path(folder: Path, variant: str) -> Path:
    """Where the TFLite file of ``variant`` goes, beside the SavedModel."""
    return Path(folder) / f"model-{variant}.tflite"


def save_tflite(flatbuffer: bytes, folder: Path, variant: str) -> Path:
    """Keep a converted TFLite model (``converter.convert()``'s bytes) as
    ``model-<variant>.tflite`` beside the SavedModel in ``folder``, written atomically."""
    read_record(folder)
    target = tflite_path(folder, variant)
    with fsutil.atomic_path(target) as temporary:
        temporary.write_bytes(flatbuffer)
    return target


def convert_tflite(folder: Path, variant: str, representative: np.ndarray | None = None) -> Path:
    """Convert the exported SavedModel's ``pixels`` signature into ``model-<variant>.tflite``.

    ``representative`` (network-sized training images in [0, 1]) is needed for ``int8`` only.
    """
    tf = import_tensorflow()
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"Unknown TFLite variant {variant!r}; choose one of {', '.join(TFLITE_VARIANTS)}.")
    read_record(folder)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=[PIXELS])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative is None or not len(representative):
            raise ValueError("Full int8 needs representative images from the training part.")
        converter.representative_dataset = lambda: ([image[np.newaxis].astype(np.float32)]
                                                    for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with native_output_filtered():
        flatbuffer = converter.convert()
    return save_tflite(flatbuffer, folder, variant)
