"""Checks for the exercises of notebook 05 (deployment)::

    from lesionlib.exercises import n05 as check
    check.label_at(label_at, served, threshold)

Each check works out the right answer from what it is given (the exported model's folder and
its answers on the learner's own test images: the numbers differ with the data), so it holds
no answer of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import DISCLAIMER
from ..export import tflite_path
from ..tfutil import converting
from ..inference import ExportedModel
from ..taxonomy import CLASSES
from . import NotRight, passed, require, results_of, unanswered

MALIGNANT = CLASSES.index("malignant")
CHECKED_IMAGES = 8  # test images each TFLite check runs: enough to see a slip, quick on a CPU


def right_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Malignant where its probability is at least ``threshold``, otherwise the more probable
    of the other classes."""
    others = [i for i in range(len(CLASSES)) if i != MALIGNANT]
    best_other = np.array(others)[probabilities[:, others].argmax(axis=1)]
    names = np.array(CLASSES)
    return np.where(probabilities[:, MALIGNANT] >= threshold, names[MALIGNANT], names[best_other])


def _thresholds(probabilities: np.ndarray, threshold: float) -> list[float]:
    """The learner's threshold, a few others, and one equal to a probability of the data (so
    that "at least" and "more than" differ)."""
    column = probabilities[:, MALIGNANT]
    tie = float(column[np.abs(column - np.median(column)).argmin()]) if len(column) else 0.5
    return [float(threshold), 0.05, 0.5, 0.9, tie]


def label_at(function: Callable[[np.ndarray, float], Any], probabilities: np.ndarray,
             threshold: float) -> None:
    """Exercise 1: ``function(probabilities, threshold)`` gives one class name per row:
    malignant where its probability is at least ``threshold``, otherwise the more probable of
    benign and indeterminate. Tried at ``threshold`` and at a few others."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    thresholds = _thresholds(probabilities, threshold)
    call = (lambda t: function(probabilities.copy(), t)) if callable(function) else function
    results = results_of(call, thresholds, "label_at", lambda t: f"threshold {t:.3g}")
    if results is None:
        return
    names = np.array(CLASSES)
    most_probable = names[probabilities.argmax(axis=1)]
    for t, mine in zip(thresholds, results):
        right = right_labels(probabilities, t)
        mine = np.asarray(mine).reshape(-1) if mine is not None else np.array([])
        require(len(mine) == len(right),
                f"Your function returns {len(mine)} labels for {len(right)} images: one label per "
                "row of probabilities.")
        require(mine.dtype != bool,
                "Your function returns True or False: return the class names, 'malignant' for "
                "the images at or above the threshold and the other class's name for the rest.")
        require(not np.issubdtype(mine.dtype, np.number),
                "Your function returns numbers; return the class names, as in `CLASSES`.")
        mine = mine.astype(str)
        if np.array_equal(mine, right):
            continue
        is_malignant = mine == names[MALIGNANT]
        ties = probabilities[:, MALIGNANT] == np.float32(t)
        require(not np.array_equal(mine[~ties], right[~ties]),
                "Nearly: an image whose probability of malignant is exactly the threshold must be "
                "called malignant too ('at least').")
        require(not np.array_equal(mine, most_probable),
                f"At threshold {t:.3g} your labels are each image's most probable class, as if there "
                "were no threshold: call an image malignant when its probability of malignant is at "
                "least the threshold, and otherwise choose between the other two classes only.")
        for column, name in enumerate(CLASSES):
            if column != MALIGNANT and np.array_equal(is_malignant, probabilities[:, column] >= t):
                raise NotRight(f"Your function compares the probability of {name} with the "
                               f"threshold. The columns are in the order of `CLASSES`, {list(CLASSES)}.")
        require(not np.any(is_malignant & (probabilities[:, MALIGNANT] < t)),
                f"At threshold {t:.3g} your function calls some images malignant whose probability "
                "of malignant is below it: below the threshold, choose between the other two "
                "classes only.")
        require(np.array_equal(is_malignant, right == names[MALIGNANT]),
                f"At threshold {t:.3g} your function calls {is_malignant.sum()} images malignant: "
                "compare each image's probability of malignant with the threshold.")
        raise NotRight(f"At threshold {t:.3g} your malignant images are right, but not the labels "
                       "of the others: below the threshold, give the more probable of benign and "
                       "indeterminate.")
    at = right_labels(probabilities, threshold)
    flagged, usual = int((at == names[MALIGNANT]).sum()), int((most_probable == names[MALIGNANT]).sum())
    passed(f"At notebook 04's threshold, {threshold:.3g}, {flagged} of {len(at)} test images are "
           f"called malignant, against {usual} by the most probable class alone. {DISCLAIMER}")


def _interpreter(model_content: bytes | None = None, model_path: Path | None = None):
    """A LiteRT interpreter, tensors allocated, without its "Created ... XNNPACK" line."""
    from ai_edge_litert.interpreter import Interpreter

    from ..tfutil import native_output_filtered

    with native_output_filtered():
        interpreter = (Interpreter(model_content=model_content) if model_content is not None
                       else Interpreter(model_path=str(model_path)))
        interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, batch: np.ndarray) -> np.ndarray:
    """The interpreter's first output for ``batch``, as it comes out (no dequantising)."""
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(given["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"]).copy()


def _float16_of_pixels(folder: Path) -> bytes:
    """The right answer of exercise 2: the ``pixels`` signature converted with float16 weights."""
    from ..tfutil import import_tensorflow

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["pixels"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    with converting():
        return converter.convert()


def float16_model(answer: Any, model: ExportedModel, pixels: np.ndarray) -> None:
    """Exercise 2: ``answer`` is the exported ``model``'s ``pixels`` signature (the float path)
    converted to TFLite with float16 weights (``converter.convert()``'s bytes). Loaded with
    LiteRT, its weights must be float16 and its answers for ``pixels`` those of a float16
    conversion of the model's SavedModel, made here."""
    if unanswered(answer):
        return
    require(not hasattr(answer, "convert"),
            "That is the converter itself: its `convert()` method returns the model.")
    require(isinstance(answer, (bytes, bytearray)),
            f"Your answer is a {type(answer).__name__}; keep what `converter.convert()` returns, "
            "the TFLite model as bytes.")
    try:
        interpreter = _interpreter(model_content=bytes(answer))
    except (ValueError, RuntimeError) as error:
        raise NotRight(f"LiteRT cannot load your bytes as a model ({error}): keep exactly what "
                       "`converter.convert()` returns.") from None
    folder = model.folder
    given = interpreter.get_input_details()[0]
    size = model.input_size
    require(list(given["shape"][1:]) == [size, size, 3],
            f"Your model takes {list(given['shape'])}; convert the SavedModel's `pixels` signature "
            f"(images [N, {size}, {size}, 3]), not `camera`.")
    require(given["dtype"] == np.float32,
            f"Your model takes {np.dtype(given['dtype']).name} images: that is full integer "
            "quantisation. For float16 only the stored weights change; leave the input and "
            "output types as they are.")
    kinds = Counter(np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details())
    if not kinds["float16"]:
        require(not kinds["int8"],
                "Your model stores its weights as 8-bit integers: `Optimize.DEFAULT` alone "
                "quantises them to int8. Tell the converter's `target_spec` which type to store "
                "them in.")
        raise NotRight("Your model stores no weight as float16: it is a float32 model. Set the "
                       "converter's `optimizations` and its `target_spec`'s supported types "
                       "before `convert()`.")
    float32_file = tflite_path(folder, "float32")
    float32_size = float32_file.stat().st_size if float32_file.is_file() else None
    if float32_size and float32_size > 1e6:  # a real network: the weights are most of the file
        require(len(answer) < 0.7 * float32_size,
                f"Your file is {len(answer) / 1e6:.1f} MB, the float32 one {float32_size / 1e6:.1f} "
                "MB: with every weight in float16 it should be about half. Store all weights as "
                "float16, with nothing else changed.")
    right_model = _interpreter(model_content=_float16_of_pixels(folder))
    images = np.asarray(pixels, dtype=np.float32)[:CHECKED_IMAGES]
    mine = np.stack([_run(interpreter, image[np.newaxis])[0] for image in images])
    right = np.stack([_run(right_model, image[np.newaxis])[0] for image in images])
    require(np.allclose(mine, right, atol=1e-5),
            f"Your model's probabilities differ from those of the SavedModel converted with float16 "
            f"weights by up to {np.abs(mine - right).max():.2g}: convert the model of "
            "`settings.model_dir` as it is, changing only how its weights are stored.")
    difference = float(np.abs(mine - model.predict_pixels(images)).max())
    sizes = f"{len(answer) / 1e6:.3g} MB"
    if float32_size:
        sizes += f" against {float32_size / 1e6:.3g} MB in float32"
        if float32_size <= 1e6:
            sizes += " (a network this small, like the smoke profile's, has too few weights to shrink)"
    passed(f"Your float16 model: {sizes}. On {len(images)} test images its probabilities differ from "
           f"the SavedModel's by at most {difference:.2g}.")


class _Watched:
    """An interpreter that remembers what was last given to its input: the check's hints
    look at the learner's picture, not only at the answer."""

    def __init__(self, interpreter) -> None:
        self._interpreter = interpreter
        self.given: np.ndarray | None = None

    def set_tensor(self, index, value) -> None:
        if index == self._interpreter.get_input_details()[0]["index"]:
            self.given = np.array(value, copy=True)
        self._interpreter.set_tensor(index, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._interpreter, name)


def app_probabilities(function: Callable[[Any, Path], Any], folder: Path, paths: list[Path]) -> None:
    """Exercise 3: ``function(interpreter, path)`` does what an app does with the full int8
    model (``model-int8.tflite`` in ``folder``): opens the image file, resizes it to the
    input's size, runs the interpreter on it as ``uint8`` and returns the three probabilities."""
    from PIL import Image

    path = tflite_path(folder, "int8")
    if not path.is_file():
        raise NotRight(f"{path} is missing: run the notebook's TFLite cells above first.")
    paths = [Path(p) for p in paths][:CHECKED_IMAGES]
    watched = _Watched(_interpreter(model_path=path))
    given = watched.get_input_details()[0]
    _, height, width, _ = (int(n) for n in given["shape"])

    def call(image_path: Path) -> Any:
        watched.given = None
        try:
            return function(watched, image_path)
        except ValueError as error:
            text = str(error)
            require("type" not in text.lower() or "uint8" not in text.lower(),
                    f"The interpreter refused your picture ({text.strip()}): give it the pixels as "
                    "uint8, e.g. np.asarray(picture, dtype=np.uint8).")
            require("dimension" not in text.lower() and "shape" not in text.lower(),
                    f"The interpreter refused your picture ({text.strip()}): it takes "
                    f"[1, {height}, {width}, 3]. Pillow's resize takes (width, height), and the "
                    "interpreter wants a batch of one (np.newaxis in front).")
            raise

    results = results_of(call if callable(function) else function, paths, "app_probabilities",
                         lambda image_path: image_path.name)
    if results is None:
        return
    right_model = _interpreter(model_path=path)  # the check's own, for the right answers
    for image_path, mine in zip(paths, results):
        with Image.open(image_path) as opened:
            picture = np.asarray(opened.convert("RGB").resize((width, height)), dtype=np.uint8)
        right = _run(right_model, picture[np.newaxis])[0]
        try:
            mine = np.asarray(mine, dtype=np.float32)
        except (TypeError, ValueError):
            raise NotRight(f"Your function returns a {type(mine).__name__}; return the picture's "
                           "class probabilities, a numpy array of 3 numbers.") from None
        require(mine.shape != (1, len(CLASSES)),
                "Your function returns a batch of one, shape (1, 3): return the probabilities of "
                "the one picture, shape (3,) (row 0 of the output).")
        require(mine.shape == right.shape,
                f"Your function returns an array of shape {mine.shape}; return the picture's "
                f"{len(CLASSES)} class probabilities.")
        require(watched.given is None or watched.given.dtype == np.uint8,
                "Give the interpreter the picture's uint8 pixels (0 to 255), as a camera has them.")
        require(abs(float(mine.sum()) - 1) < 0.05,
                f"Your numbers add up to {mine.sum():.3g}, not 1: return the interpreter's output "
                "(get_tensor on the output's index), row 0.")
        require(np.allclose(mine, right, atol=1e-3),
                f"Your probabilities for {image_path.name} differ from the app's by up to "
                f"{np.abs(mine - right).max():.2g}: open the file as RGB, resize it to {width}×{height} "
                "with Pillow's resize, and give the interpreter its uint8 pixels.")
    passed(f"Your function is what an app does: open, resize to {width}×{height}, run, on "
           f"{len(paths)} test pictures. {DISCLAIMER}")
