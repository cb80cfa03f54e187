"""The checks of notebook 05's exercises: each passes a right answer, says "not answered yet"
for the placeholder, and rejects realistic wrong answers with a hint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesionlib import export, inference
from lesionlib.exercises import NotRight, n05
from lesionlib.taxonomy import CLASSES
from tests.test_export import _record, export_like_notebook_05

RIGHT = "✓ Right."
UNANSWERED = "Not answered yet"
MALIGNANT = CLASSES.index("malignant")


def placeholder(*args):
    """What a learner's function is before they write it: its body is ``...``."""
    ...


# Exercise 1: a label at notebook 04's operating point

@pytest.fixture
def probabilities() -> np.ndarray:
    """Probabilities of 60 images, as a model serves them (float32, rows adding up to 1)."""
    return np.random.default_rng(5).dirichlet([1.0, 0.7, 1.0], size=60).astype(np.float32)


def right_label_at(probabilities, threshold):
    malignant = CLASSES.index("malignant")
    others = [column for column in range(len(CLASSES)) if column != malignant]
    best_other = np.array(others)[probabilities[:, others].argmax(axis=1)]
    return np.where(probabilities[:, malignant] >= threshold, "malignant", np.array(CLASSES)[best_other])


def test_label_at_passes_a_right_answer(probabilities, capsys):
    n05.label_at(right_label_at, probabilities, 0.25)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "not a diagnosis" in out
    flagged = int((probabilities[:, MALIGNANT] >= 0.25).sum())
    assert f"{flagged} of 60 test images are called malignant" in out


def test_label_at_accepts_a_list_and_a_loop(probabilities, capsys):
    def by_row(probabilities, threshold):
        labels = []
        for benign, indeterminate, malignant in probabilities:
            if malignant >= threshold:
                labels.append("malignant")
            else:
                labels.append("benign" if benign >= indeterminate else "indeterminate")
        return labels

    n05.label_at(by_row, probabilities, 0.3)
    assert capsys.readouterr().out.startswith(RIGHT)


def test_label_at_says_a_placeholder_is_unanswered(probabilities, capsys):
    n05.label_at(placeholder, probabilities, 0.25)
    n05.label_at(..., probabilities, 0.25)
    assert capsys.readouterr().out.count(UNANSWERED) == 2


@pytest.mark.parametrize("answer, hint", [
    (lambda p, t: np.array(CLASSES)[p.argmax(axis=1)], "most probable class"),
    (lambda p, t: np.where(p[:, 2] >= t, "malignant", np.array(CLASSES)[p.argmax(axis=1)]), "most probable"),
    (lambda p, t: np.where(p[:, 2] > t, "malignant", np.array(CLASSES)[p[:, :2].argmax(axis=1)]), "exactly"),
    (lambda p, t: np.where(p[:, 0] >= t, "malignant", np.array(CLASSES)[p[:, :2].argmax(axis=1)]),
     "probability of benign"),
    (lambda p, t: np.where(p[:, 2] >= t, "malignant", "benign"), "more probable of benign and indeterminate"),
    (lambda p, t: p[:, 2] >= t, "True or False"),
    (lambda p, t: np.where(p[:, 2] >= t, 2, p[:, :2].argmax(axis=1)), "numbers"),
    (lambda p, t: right_label_at(p, t)[:10], "10 labels for 60 images"),
    (lambda p, t: p[:, 3], "raised IndexError"),
])
def test_label_at_rejects_wrong_answers(probabilities, answer, hint):
    with pytest.raises(NotRight, match=hint):
        n05.label_at(answer, probabilities, 0.25)


# Exercises 2 and 3: the exported model and its TFLite files

@pytest.fixture(scope="module")
def model_folder(trained_smoke, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The smoke head exported as notebook 05 exports it, with float32 and int8 TFLite files;
    and prepared test images."""
    settings, manifest, backbone, _, part, head = trained_smoke
    folder = tmp_path_factory.mktemp("exercises") / "model"
    export_like_notebook_05(backbone, head.model, folder, _record(settings, manifest, part, backbone))
    model = inference.ExportedModel(folder)
    pixels = np.stack([model.pixels_of(Path(path).read_bytes()) for path in manifest["path"]])
    export.convert_tflite(folder, "float32")
    export.convert_tflite(folder, "int8", pixels[:30])
    return folder, pixels[30:50]


def _converted(folder: Path, **settings) -> bytes:
    """The pixels signature converted with the converter's attributes set as given."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["pixels"])
    for name, value in settings.items():
        if name == "supported_types":
            converter.target_spec.supported_types = value
        else:
            setattr(converter, name, value)
    return converter.convert()


def test_float16_model_passes_a_right_answer(model_folder, capsys):
    import tensorflow as tf

    folder, pixels = model_folder
    answer = _converted(folder, optimizations=[tf.lite.Optimize.DEFAULT], supported_types=[tf.float16])
    n05.float16_model(answer, folder, pixels)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "differ from the SavedModel's by at most" in out


def test_float16_model_says_a_placeholder_is_unanswered(model_folder, capsys):
    folder, pixels = model_folder
    n05.float16_model(..., folder, pixels)
    assert UNANSWERED in capsys.readouterr().out


def test_float16_model_rejects_the_float16_copy_of_another_model(model_folder, trained_smoke, tmp_path):
    import tensorflow as tf

    from lesionlib import training

    settings, manifest, backbone, bottlenecks, part, _ = trained_smoke
    folder, pixels = model_folder
    untrained = training.build_head(bottlenecks.features)  # another head: other weights
    other = export_like_notebook_05(backbone, untrained, tmp_path / "other",
                                    _record(settings, manifest, part, backbone))
    answer = _converted(other, optimizations=[tf.lite.Optimize.DEFAULT], supported_types=[tf.float16])
    with pytest.raises(NotRight, match="convert the model of `settings.model_dir` as it is"):
        n05.float16_model(answer, folder, pixels)


def test_float16_model_rejects_wrong_answers(model_folder):
    import tensorflow as tf

    folder, pixels = model_folder
    with pytest.raises(NotRight, match="no weight as float16"):
        n05.float16_model(_converted(folder), folder, pixels)  # nothing set: float32
    with pytest.raises(NotRight, match="no weight as float16|8-bit integers"):  # int8 weights, if any
        n05.float16_model(_converted(folder, optimizations=[tf.lite.Optimize.DEFAULT]), folder, pixels)
    with pytest.raises(NotRight, match="the converter itself"):
        n05.float16_model(tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["pixels"]),
                          folder, pixels)
    with pytest.raises(NotRight, match="takes uint8 images"):
        n05.float16_model(export.tflite_path(folder, "int8").read_bytes(), folder, pixels)
    with pytest.raises(NotRight, match="cannot load"):
        n05.float16_model(b"not a model", folder, pixels)
    with pytest.raises(NotRight, match="as bytes"):
        n05.float16_model(str(export.tflite_path(folder, "float32")), folder, pixels)


def right_int8_probabilities(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = given["quantization"]
    quantised = np.clip(np.round(pixels / scale + zero_point), 0, 255).astype(np.uint8)
    interpreter.set_tensor(given["index"], quantised[np.newaxis])
    interpreter.invoke()
    scale, zero_point = returned["quantization"]
    return (interpreter.get_tensor(returned["index"])[0].astype(np.float32) - zero_point) * scale


def test_int8_probabilities_passes_a_right_answer(model_folder, capsys):
    folder, pixels = model_folder
    n05.int8_probabilities(right_int8_probabilities, folder, pixels)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "float32 model's by up to" in out and "not a diagnosis" in out


def test_int8_probabilities_says_a_placeholder_is_unanswered(model_folder, capsys):
    folder, pixels = model_folder
    n05.int8_probabilities(placeholder, folder, pixels)
    assert UNANSWERED in capsys.readouterr().out


def _without_dequantising(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = given["quantization"]
    interpreter.set_tensor(given["index"], np.round(pixels / scale + zero_point).astype(np.uint8)[np.newaxis])
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"])[0]


def _without_quantising(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(given["index"], pixels.astype(np.uint8)[np.newaxis])
    interpreter.invoke()
    scale, zero_point = returned["quantization"]
    return (interpreter.get_tensor(returned["index"])[0].astype(np.float32) - zero_point) * scale


def _float_input(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(given["index"], pixels[np.newaxis])
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"])[0]


def _truncating(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = given["quantization"]
    interpreter.set_tensor(given["index"], (pixels / scale + zero_point).astype(np.uint8)[np.newaxis])
    interpreter.invoke()
    scale, zero_point = returned["quantization"]
    return (interpreter.get_tensor(returned["index"])[0].astype(np.float32) - zero_point) * scale


def _times_255(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(given["index"], np.round(pixels * 255).astype(np.uint8)[np.newaxis])
    interpreter.invoke()
    scale, zero_point = returned["quantization"]
    return (interpreter.get_tensor(returned["index"])[0].astype(np.float32) - zero_point) * scale


def _divided_by_255(interpreter, pixels):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = given["quantization"]
    interpreter.set_tensor(given["index"], np.round(pixels / scale + zero_point).astype(np.uint8)[np.newaxis])
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"])[0] / 255


@pytest.mark.parametrize("answer, hint", [
    (_without_dequantising, "still quantised"),
    (_truncating, "round the quantised pixels"),
    (_times_255, "not the image quantised"),
    (_divided_by_255, "read the output back"),
    (_without_quantising, "unscaled"),
    (lambda interpreter, pixels: right_int8_probabilities(interpreter, pixels)[np.newaxis], "batch of one"),
    (_float_input, "raised ValueError"),
    (lambda interpreter, pixels: "benign", "a str"),
])
def test_int8_probabilities_rejects_wrong_answers(model_folder, answer, hint):
    folder, pixels = model_folder
    with pytest.raises(NotRight, match=hint):
        n05.int8_probabilities(answer, folder, pixels)


def test_int8_probabilities_names_a_missing_file(tmp_path, model_folder):
    _, pixels = model_folder
    with pytest.raises(NotRight, match="model-int8.tflite is missing"):
        n05.int8_probabilities(right_int8_probabilities, tmp_path, pixels)

