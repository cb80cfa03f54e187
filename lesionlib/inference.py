"""Using an exported model: the SavedModel and its TFLite variants, on files, with timings.

Nothing here needs the training code or the bottleneck cache: a model folder made by
:mod:`lesionlib.export` is enough, loaded with ``tf.saved_model.load``. That is what
``lesionlib predict`` uses.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import images
from .export import SIGNATURES, TFLITE_VARIANTS, ModelError, read_record, tflite_path
from .preprocessing import decode, prepare, preprocessing_of
from .tfutil import import_tensorflow, native_output_filtered, release_memory


class ExportedModel:
    """A model folder exported by notebook 05 (:func:`lesionlib.export.write_model`), loaded
    with TensorFlow alone. ``loaded``: that folder's SavedModel, already loaded with
    ``tf.saved_model.load`` (it is then not loaded a second time)."""

    def __init__(self, folder: Path, loaded=None) -> None:
        self.folder = Path(folder)
        self.record = read_record(self.folder)
        self.classes: list[str] = list(self.record["classes"])
        self.input_size: int = int(self.record["input_size"])
        self.camera_input: tuple[int, int] = tuple(self.record["camera_input"])  # (height, width)
        if loaded is not None:
            missing = [name for name in SIGNATURES if not hasattr(loaded, name)]
            if missing:
                raise ModelError(f"The model given for {self.folder} has no {' and no '.join(missing)} "
                                 f"signature: give what tf.saved_model.load({str(self.folder)!r}) returns.")
            self._loaded = loaded
            return
        tf = import_tensorflow()
        try:
            self._loaded = tf.saved_model.load(str(self.folder))
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise ModelError(f"{self.folder} could not be loaded as a SavedModel ({type(error).__name__}: "
                             f"{error}). Run notebook 05 again to export the model afresh.") from None

    def _batched(self, signature, inputs, dtype, batch_size: int) -> np.ndarray:
        tf = import_tensorflow()
        chunks = [signature(tf.constant(inputs[start:start + batch_size], dtype=dtype))
                  ["probabilities"].numpy() for start in range(0, len(inputs), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.classes)), np.float32)

    def predict_bytes(self, encoded: list[bytes], batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``[N, classes]`` of encoded upright RGB images (JPEG, PNG, GIF or
        BMP bytes; see :func:`model_bytes` for any other image file)."""
        tf = import_tensorflow()
        return self._batched(self._loaded.serving_default, encoded, tf.string, batch_size)

    def pixels_of(self, encoded: bytes) -> np.ndarray:
        """One encoded image as the model sees it: ``[s, s, 3]`` in [0, 1], decoded and resized
        by the same functions as inside the model."""
        return prepare(decode(encoded), self.input_size, preprocessing_of(self.record)).numpy()

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Class probabilities of network-sized images ``[N, s, s, 3]`` in [0, 1]."""
        tf = import_tensorflow()
        return self._batched(self._loaded.pixels, pixels, tf.float32, batch_size)

    def predict_camera(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of camera images ``[N, h, w, 3]`` (``uint8`` RGB, each resized to
        :attr:`camera_input` as :func:`camera_image` does), through the ``camera`` signature."""
        tf = import_tensorflow()
        chunks = [self._loaded.camera(tf.constant(image[np.newaxis], dtype=tf.uint8))["probabilities"].numpy()
                  for image in images]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.classes)), np.float32)

    @property
    def size_bytes(self) -> int:
        """The SavedModel's own files (graph and weights), not the files written beside it."""
        parts = [self.folder / "saved_model.pb", self.folder / "fingerprint.pb",
                 *(self.folder / "variables").rglob("*"), *(self.folder / "assets").rglob("*")]
        return sum(path.stat().st_size for path in parts if path.is_file())


class TFLiteModel:
    """One ``model-<variant>.tflite`` file run by LiteRT (``ai-edge-litert``), one camera image
    at a time (``uint8`` ``[h, w, 3]``, what the ``camera`` signature takes).

    ``tf.lite.Interpreter`` still works but warns on every construction that it will be
    deleted; LiteRT is its maintained successor, the same runtime phones use.
    """

    def __init__(self, folder: Path, variant: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.variant = variant
        self.path = tflite_path(folder, variant)
        if not self.path.is_file():
            raise ModelError(f"{self.path} is missing. Run notebook 05 to convert the model.")
        with native_output_filtered():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self._interpreter = Interpreter(model_path=str(self.path))
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    @property
    def size_bytes(self) -> int:
        """The size of the ``.tflite`` file: what an app ships."""
        return self.path.stat().st_size

    @property
    def output_quantization(self) -> tuple[float, int] | None:
        """The output's ``(scale, zero_point)`` when it is quantised, else ``None``."""
        return None if self._output["dtype"] == np.float32 else tuple(self._output["quantization"])

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities of one camera image ``[h, w, 3]`` (``uint8`` RGB)."""
        batch = np.asarray(image)[np.newaxis].astype(self._input["dtype"])
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output["index"])[0]
        if self._output["dtype"] != np.float32:
            scale, zero = self._output["quantization"]
            output = (output.astype(np.float32) - zero) * scale
        return output

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, classes]`` of camera images ``[N, h, w, 3]``, one at a time."""
        return np.stack([self.predict_one(image) for image in images])


def camera_image(data: bytes, height: int, width: int) -> np.ndarray:
    """What a camera app gives the TFLite model for an image file's bytes: the upright RGB
    picture (decoded as the SavedModel decodes it) cut around its centre to the shape
    ``height`` x ``width``, so that it is not squeezed, and resized to it (antialiased);
    ``uint8`` ``[height, width, 3]``. A picture of that size already is returned as decoded.
    Raises ``ValueError`` as :func:`model_bytes` does."""
    tf = import_tensorflow()
    image = tf.io.decode_image(model_bytes(data, "image"), channels=3, expand_animations=False)
    if tuple(image.shape[:2]) == (height, width):
        return image.numpy()
    scale = min(image.shape[0] / height, image.shape[1] / width)
    crop_height, crop_width = round(height * scale), round(width * scale)
    image = tf.image.resize_with_crop_or_pad(image, crop_height, crop_width)
    resized = tf.image.resize(image, [height, width], antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8).numpy()


def model_bytes(data: bytes, name: str | Path) -> bytes:
    """What a model is given for an image file's bytes: the bytes as they are when they are an
    upright RGB JPEG, otherwise the image converted as notebook 01 converts images for training
    (upright, 8-bit RGB, alpha on white), encoded as PNG. Raises ``ValueError`` naming the problem."""
    checked = images.inspect_bytes(data, Path(name))
    if isinstance(checked, images.Rejected):
        detail = f" ({checked.detail})" if checked.detail else ""
        raise ValueError(f"{checked.reason}{detail}: {images.FIXES[checked.reason]}")
    if not checked.needs_conversion:
        return data
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        images.to_rgb(image).save(out, "PNG")
    return out.getvalue()


MAX_IMAGE_BYTES = 64 << 20  # a dermatoscopic photo is a few MB; more is not an image to predict
_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def read_image_file(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (default :data:`MAX_IMAGE_BYTES`).
    Raises ``ValueError`` saying what else ``path`` is (a FIFO, a device such as /dev/zero, a
    folder, a file too large), ``OSError`` when it cannot be read. Never blocks on a FIFO and
    never reads more than ``limit + 1`` bytes, even from a file that grows meanwhile."""
    limit = MAX_IMAGE_BYTES if limit is None else limit
    # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
    # Windows has neither FIFOs nor O_NONBLOCK, and needs O_BINARY.
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    handle = os.open(path, flags)
    size_error = ValueError(f"file too large (over {limit:,} bytes): give an image file of at most "
                            f"{limit >> 20} MB")
    try:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ValueError(f"not a regular file ({kind}): give an image file")
        if nonblocking:
            os.set_blocking(handle, True)
        if os.fstat(handle).st_size > limit:
            raise size_error
        file = os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise
    with file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise size_error
    return data


def predict_files(model: ExportedModel, paths: Iterable[str | Path]) -> Iterator[dict]:
    """One record per file, in order, each as soon as it is ready:
    ``{"image", "label", "probabilities": {class: p}}``, or ``{"image", "error"}`` saying why
    that file could not be predicted and what to do. One bad file never stops the others."""
    tf = import_tensorflow()
    for path in paths:
        try:
            data = read_image_file(path)
        except ValueError as error:  # a FIFO, a device, a folder, a file too large
            yield {"image": str(path), "error": str(error)}
            continue
        except OSError as error:
            reason = f"{images.UNREADABLE} ({error.strerror or error})"
            yield {"image": str(path), "error": f"{reason}: {images.FIXES[images.UNREADABLE]}"}
            continue
        try:
            probabilities = model.predict_bytes([model_bytes(data, path)])[0]
        except ValueError as error:  # refused by the checks of notebook 01
            yield {"image": str(path), "error": str(error)}
            continue
        except (tf.errors.OpError, MemoryError) as error:  # read by Pillow, not by the model
            detail = getattr(error, "message", None) or type(error).__name__
            yield {"image": str(path), "error": f"could not be decoded ({detail.strip()}): "
                                                 f"{images.FIXES[images.NOT_AN_IMAGE]}"}
            continue
        yield {"image": str(path), "label": model.classes[int(probabilities.argmax())],
               "probabilities": {c: float(p) for c, p in zip(model.classes, probabilities)}}


def predict_in_new_process(folder: Path, paths: Iterable[str | Path],
                           timeout: float | None = None) -> list[dict]:
    """The records of ``lesionlib predict --json`` run in a new Python process: the model as
    another program would load it. ``timeout``: seconds before it is stopped (None: no limit).
    This process first gives back the memory it has freed: the two hold TensorFlow at once."""
    release_memory()
    # "--": the paths are operands even when one starts with "-" (a file named --model=x.jpg)
    command = [sys.executable, "-m", "lesionlib", "predict", "--json", "--model", str(folder), "--",
               *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    if result.returncode == 2:  # the model itself could not be loaded
        raise ModelError(result.stderr.strip())
    return [json.loads(line) for line in result.stdout.splitlines()]


def records_table(records: Iterable[dict]) -> pd.DataFrame:
    """Prediction records as a table: one row per image, its label and one column per class."""
    rows = [{"image": Path(r["image"]).name, "label": r.get("label"), "error": r.get("error"),
             **{f"p_{label}": p for label, p in r.get("probabilities", {}).items()}} for r in records]
    table = pd.DataFrame(rows).set_index("image")
    return table.dropna(axis=1, how="all")


def smallest_agreeing(variants: pd.DataFrame, agreement: float = 0.99) -> str | None:
    """The smallest TFLite variant in a :func:`variants_table` whose top-1 agreement with the
    SavedModel is at least ``agreement``; ``None`` if none is."""
    candidates = variants.drop(index="SavedModel", errors="ignore")
    candidates = candidates[candidates["top-1 agreement"] >= agreement]
    return None if candidates.empty else str(candidates["size (MB)"].idxmin())


def latency_ms(run: Callable[[], object], repeats: int = 30, warmup: int = 3) -> float:
    """The median wall time of ``run()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def variants_table(model: ExportedModel, images: np.ndarray, variants: Iterable[str] = tuple(TFLITE_VARIANTS),
                   repeats: int = 30) -> pd.DataFrame:
    """The SavedModel and each TFLite variant: size, single-image latency, and against the
    SavedModel's own probabilities for the camera ``images`` (``uint8`` ``[N, h, w, 3]``),
    top-1 agreement and the largest difference of any probability."""
    reference = model.predict_camera(images)
    rows = [{"variant": "SavedModel", "size (MB)": model.size_bytes / 1e6,
             "latency (ms)": latency_ms(lambda: model.predict_camera(images[:1]), repeats),
             "top-1 agreement": 1.0, "largest probability difference": 0.0}]
    for variant in variants:
        lite = TFLiteModel(model.folder, variant)
        probabilities = lite.predict(images)
        rows.append({"variant": variant, "size (MB)": lite.size_bytes / 1e6,
                     "latency (ms)": latency_ms(lambda lite=lite: lite.predict_one(images[0]), repeats),
                     "top-1 agreement": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
                     "largest probability difference": float(np.abs(probabilities - reference).max())})
        del lite
    release_memory()  # what the interpreters and the signature's first calls took
    return pd.DataFrame(rows).set_index("variant")


def quantisation_errors(converter, pictures: np.ndarray) -> pd.DataFrame:
    """TensorFlow's ``QuantizationDebugger`` for a full-int8 ``converter``, run on ``pictures``
    (camera images): one row per quantised layer with ``rmse/scale``, the error the layer adds
    in steps of its own int8 grid (rounding alone gives about 0.29), worst first."""
    import warnings

    tf = import_tensorflow()
    dump = io.StringIO()
    with warnings.catch_warnings(), native_output_filtered():
        warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated", used inside
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([image[np.newaxis]] for image in pictures))
        debugger.run()
        debugger.layer_statistics_dump(dump)
    del debugger  # its models and interpreters
    release_memory()
    layers = pd.read_csv(io.StringIO(dump.getvalue()))
    layers["rmse/scale"] = np.sqrt(layers["mean_squared_error"]) / layers["scale"]
    layers["layer"] = layers["tensor_name"].str.split(";").str[0]
    return layers[["op_name", "layer", "rmse/scale"]].sort_values("rmse/scale", ascending=False)
