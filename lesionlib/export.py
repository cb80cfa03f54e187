"""Export: the trained classifier as one self-contained SavedModel, and as TFLite files for phones.

The original project ended with a frozen graph that still needed the caller to decode and
resize images exactly as training did. Here everything is inside one SavedModel in
``build/model/``:

* ``serving_default`` takes a batch of encoded images (JPEG, PNG, GIF or BMP bytes) and
  returns ``probabilities`` ``[N, 3]``, the most probable ``label`` ``[N]`` and the ``classes``
  in column order. Decoding and resizing are :func:`lesionlib.preprocessing.decode` and
  :func:`~lesionlib.preprocessing.prepare`, the very functions that made the training bottlenecks.
  Like TensorFlow's decoders, it expects **upright RGB** images: it does not apply a JPEG's
  EXIF rotation and drops transparency. Training images were made upright RGB by notebook
  01; :func:`lesionlib.inference.model_bytes` does the same for any image file, and
  ``lesionlib predict`` and the demo use it. A server should too.
* ``pixels`` takes network-sized images ``[N, s, s, 3]`` in [0, 1], already prepared as the
  head's preprocessing says (``model.json``; e.g. centre square, 64 pixels and back, shades
  of gray); it is what TFLite gets, since TFLite has no image decoder: a phone app decodes
  and prepares images with its own platform's API.

Written through Keras's own ``ExportArchive`` (what ``model.export`` uses). TFLite files are
converted from that SavedModel with ``TFLiteConverter.from_saved_model``: ``from_keras_model``
prints hundreds of lines, and ``from_concrete_functions`` on a Keras 3 model has produced NaN
outputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import DISCLAIMER, LesionlibError, fsutil
from .preprocessing import decode, prepare
from .preprocessing import preprocessing_of
from .taxonomy import CLASSES
from .tfutil import import_tensorflow, native_output_filtered

if TYPE_CHECKING:  # only for the type hints: loading a model needs no training code
    from .backbones import Backbone
    from .training import TrainedHead

FORMAT = 1
RECORD = "model.json"  # how the model was made: backbone, preprocessing, head record
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


def pixel_model(backbone: Backbone, trained: TrainedHead):
    """A Keras model: network-sized images in [0, 1] -> the head's class probabilities."""
    import_tensorflow()
    import keras

    class FrozenBackbone(keras.layers.Layer):
        """The TF Hub network as a Keras layer (Keras 3 cannot take ``hub.KerasLayer``)."""

        def __init__(self, network, **kwargs):
            super().__init__(trainable=False, **kwargs)
            self.network = network

        def call(self, images):
            return self.network(images)

    size = backbone.spec.input_size
    images = keras.Input((size, size, 3), name="images")
    features = FrozenBackbone(backbone.model, name="backbone")(images)
    return keras.Model(images, trained.model(features, training=False), name="lesion_classifier")


def export_model(backbone: Backbone, trained: TrainedHead, folder: Path, record: dict) -> Path:
    """Write the SavedModel, ``labels.txt`` and ``model.json`` to ``folder``, replacing it whole.

    ``record`` is the head's training record (``training.json``): it says how images were
    prepared for training, which the model then does too, and it is kept in ``model.json``
    for the model card.
    """
    tf = import_tensorflow()
    import keras

    preprocessing = preprocessing_of(record)
    model = pixel_model(backbone, trained)
    size = backbone.spec.input_size
    classes = tf.constant(CLASSES)

    def classify(encoded):
        def one(item):
            return prepare(decode(item), size, preprocessing)

        pixels = tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probabilities = model(pixels, training=False)
        return {"probabilities": probabilities,
                "label": tf.gather(classes, tf.argmax(probabilities, axis=1)),
                "classes": tf.broadcast_to(classes, tf.shape(probabilities))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", classify, input_signature=[tf.TensorSpec([None], tf.string)])
    archive.add_endpoint(PIXELS, lambda images: {"probabilities": model(images, training=False)},
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    logger = tf.get_logger()
    level = logger.level
    with fsutil.atomic_folder(folder) as temporary:
        logger.setLevel("ERROR")  # not "INFO:tensorflow:Assets written to: <a temporary folder>"
        try:
            with native_output_filtered():
                archive.write_out(str(temporary), verbose=False)
        finally:
            logger.setLevel(level)
        fsutil.write_text_atomic(temporary / "labels.txt", "\n".join(CLASSES) + "\n")
        fsutil.write_json_atomic(temporary / RECORD, {
            "format": FORMAT, "classes": list(CLASSES), "input_size": size,
            "preprocessing": asdict(preprocessing), "disclaimer": DISCLAIMER, "training": record})
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
    target = tflite_path(folder, variant)
    with fsutil.atomic_path(target) as temporary:
        temporary.write_bytes(flatbuffer)
    return target
