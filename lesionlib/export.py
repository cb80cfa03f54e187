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
  head's preprocessing says (``model.json``; e.g. centre square, 128 pixels and back) and
  returns ``probabilities``: the float path a learner inspects (the demo's occlusion maps).
* ``camera`` takes what a camera app has: one ``uint8`` RGB image ``[1, h, w, 3]`` of a fixed
  size (the picture resized to it) and returns ``probabilities``; the preparation (centre
  square, downscaling, colour constancy, scaling) is folded into it. TFLite has no image
  decoder, so the TFLite files are converted from this signature: an app only resizes.

:func:`write_model` writes the archive, ``labels.txt`` and ``model.json`` (format, classes,
input size, preprocessing, disclaimer and the head's training record) into a new folder and
swaps it in whole, so an interrupted export never leaves half a model. The model goes
through Keras's own ``ExportArchive`` (what ``model.export`` uses). Notebook 05 converts the
``camera`` signature of the written SavedModel into the TFLite variants itself
(``TFLiteConverter.from_saved_model``: ``from_keras_model`` prints hundreds of lines, and
``from_concrete_functions`` on a Keras 3 model has produced NaN outputs), each inside
:func:`lesionlib.tfutil.converting`; :func:`save_tflite` keeps each file beside the SavedModel.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import DISCLAIMER, LesionlibError, fsutil
from .preprocessing import preprocessing_of
from .taxonomy import CLASSES
from .tfutil import import_tensorflow, native_output_filtered, release_memory

FORMAT = 1
RECORD = "model.json"  # how the model was made: backbone, preprocessing, head record
SIGNATURES = ("serving_default", "pixels", "camera")  # the entry points every exported model has
PIXELS = "pixels"
CAMERA = "camera"
# The TFLite variants notebook 05 converts, and what each changes.
TFLITE_VARIANTS = {
    "float32": "weights and arithmetic in float32: the SavedModel's numbers",
    "float16": "weights stored as float16 (half the size), computed in float32",
    "dynamic-int8": "weights stored as int8, activations quantised on the fly",
    "int8": "weights and activations int8, ranges calibrated on training images",
}


class ModelError(LesionlibError):
    """A model folder that is missing or damaged; the message says how to make it again."""


def _input_shapes(folder: Path) -> tuple[int, list[int]]:
    """The square input size of a written SavedModel's ``pixels`` signature and the
    ``[height, width]`` of its ``camera`` signature, read from its ``saved_model.pb``; a clear
    error if a signature of the contract is missing or odd."""
    tf = import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(folder) / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    missing = [name for name in SIGNATURES if name not in signatures]
    if missing:
        raise ModelError(f"The exported model has no {' and no '.join(missing)} signature (it has "
                         f"{', '.join(sorted(signatures)) or 'none'}): add an endpoint of each name "
                         "to the ExportArchive, as notebook 05 does.")

    def shape_of(name: str) -> tuple[list[int], int]:
        inputs = list(signatures[name].inputs.values())
        shape = [dim.size for dim in inputs[0].tensor_shape.dim] if len(inputs) == 1 else []
        return shape, (inputs[0].dtype if len(inputs) == 1 else 0)

    shape, _ = shape_of(PIXELS)
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] < 1 or shape[3] != 3 \
            or "probabilities" not in signatures[PIXELS].outputs:
        raise ModelError("The exported model's pixels signature must take one batch of square "
                         f"RGB images [N, s, s, 3] and return probabilities; it takes {shape}.")
    camera, dtype = shape_of(CAMERA)
    if len(camera) != 4 or camera[0] != 1 or min(camera[1:3]) < 1 or camera[3] != 3 \
            or dtype != tf.uint8.as_datatype_enum or "probabilities" not in signatures[CAMERA].outputs:
        raise ModelError("The exported model's camera signature must take one uint8 RGB image "
                         f"[1, height, width, 3] and return probabilities; it takes {camera}.")
    return shape[1], camera[1:3]


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
        size, camera = _input_shapes(temporary)
        fsutil.write_text_atomic(temporary / "labels.txt", "\n".join(CLASSES) + "\n")
        fsutil.write_json_atomic(temporary / RECORD, {
            "format": FORMAT, "classes": list(CLASSES), "input_size": size, "camera_input": camera,
            "preprocessing": asdict(preprocessing_of(record)), "disclaimer": DISCLAIMER,
            "training": record})
    release_memory()  # what tracing and writing the functions took
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
