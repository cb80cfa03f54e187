"""The checks of notebook 05's exercises: each passes a right answer, says "not answered yet"
for the placeholder, and rejects realistic wrong answers with a hint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionlib import export, inference
from lesionlib.exercises import NotRight, n05
from lesionlib.taxonomy import CLASSES
from tests.test_export import CAMERA, _record, convert_like_notebook_05, export_like_notebook_05

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
def exported_folder(trained_smoke, tmp_path_factory) -> tuple[Path, np.ndarray, list[Path]]:
    """The smoke head exported as notebook 05 exports it, with float32 and int8 TFLite files;
    prepared test images (exercise 2) and test files (exercise 3)."""
    settings, manifest, backbone, _, part, head = trained_smoke
    folder = tmp_path_factory.mktemp("exercises") / "model"
    export_like_notebook_05(backbone, head.model, folder, _record(settings, manifest, part, backbone))
    model = inference.ExportedModel(folder)
    paths = [Path(path) for path in manifest["path"]]
    pixels = np.stack([model.pixels_of(path.read_bytes()) for path in paths[30:50]])
    convert_like_notebook_05(folder, "float32")
    convert_like_notebook_05(folder, "int8",
                             np.stack([inference.camera_image(p.read_bytes(), *CAMERA) for p in paths[:30]]))
    return folder, pixels, paths[30:50]


@pytest.fixture(scope="module")
def model_folder(exported_folder) -> tuple[Path, inference.ExportedModel, np.ndarray]:
    """The exported folder, its model loaded as notebook 05 loads it, and prepared test images."""
    folder, pixels, _ = exported_folder
    return folder, inference.ExportedModel(folder), pixels


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

    folder, model, pixels = model_folder
    answer = _converted(folder, optimizations=[tf.lite.Optimize.DEFAULT], supported_types=[tf.float16])
    n05.float16_model(answer, model, pixels)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "differ from the SavedModel's by at most" in out


def test_float16_model_says_a_placeholder_is_unanswered(model_folder, capsys):
    _, model, pixels = model_folder
    n05.float16_model(..., model, pixels)
    assert UNANSWERED in capsys.readouterr().out


def test_float16_model_rejects_the_float16_copy_of_another_model(model_folder, trained_smoke, tmp_path):
    import tensorflow as tf

    from lesionlib import training

    settings, manifest, backbone, bottlenecks, part, _ = trained_smoke
    _, model, pixels = model_folder
    untrained = training.build_head(bottlenecks.features)  # another head: other weights
    other = export_like_notebook_05(backbone, untrained, tmp_path / "other",
                                    _record(settings, manifest, part, backbone))
    answer = _converted(other, optimizations=[tf.lite.Optimize.DEFAULT], supported_types=[tf.float16])
    with pytest.raises(NotRight, match="convert the model of `settings.model_dir` as it is"):
        n05.float16_model(answer, model, pixels)


def test_float16_model_rejects_wrong_answers(model_folder):
    import tensorflow as tf

    folder, model, pixels = model_folder
    with pytest.raises(NotRight, match="no weight as float16"):
        n05.float16_model(_converted(folder), model, pixels)  # nothing set: float32
    with pytest.raises(NotRight, match="no weight as float16|8-bit integers"):  # int8 weights, if any
        n05.float16_model(_converted(folder, optimizations=[tf.lite.Optimize.DEFAULT]), model, pixels)
    with pytest.raises(NotRight, match="the converter itself"):
        n05.float16_model(tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["pixels"]),
                          model, pixels)
    with pytest.raises(NotRight, match="not `camera`"):
        n05.float16_model(export.tflite_path(folder, "int8").read_bytes(), model, pixels)
    with pytest.raises(NotRight, match="cannot load"):
        n05.float16_model(b"not a model", model, pixels)
    with pytest.raises(NotRight, match="as bytes"):
        n05.float16_model(str(export.tflite_path(folder, "float32")), model, pixels)


def right_app_probabilities(interpreter, path):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    _, height, width, _ = given["shape"]
    picture = Image.open(path).convert("RGB").resize((width, height))
    interpreter.set_tensor(given["index"], np.asarray(picture, dtype=np.uint8)[np.newaxis])
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"])[0]


def test_app_probabilities_passes_a_right_answer(exported_folder, capsys):
    folder, _, paths = exported_folder
    n05.app_probabilities(right_app_probabilities, folder, paths)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and f"resize to {CAMERA[1]}×{CAMERA[0]}" in out and "not a diagnosis" in out


def test_app_probabilities_says_a_placeholder_is_unanswered(exported_folder, capsys):
    folder, _, paths = exported_folder
    n05.app_probabilities(placeholder, folder, paths)
    assert UNANSWERED in capsys.readouterr().out


def _run(interpreter, batch):
    given, returned = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(given["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"])


def _as_floats(interpreter, path):
    _, height, width, _ = interpreter.get_input_details()[0]["shape"]
    picture = Image.open(path).convert("RGB").resize((width, height))
    return _run(interpreter, np.asarray(picture, dtype=np.float32)[np.newaxis] / 255)[0]


def _height_and_width_swapped(interpreter, path):
    _, height, width, _ = interpreter.get_input_details()[0]["shape"]
    picture = Image.open(path).convert("RGB").resize((height, width))
    return _run(interpreter, np.asarray(picture, dtype=np.uint8)[np.newaxis])[0]


def _not_resized(interpreter, path):
    return _run(interpreter, np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)[np.newaxis])[0]


@pytest.mark.parametrize("answer, hint", [
    (_as_floats, "as uint8"),
    (_height_and_width_swapped, "takes \\(width, height\\)"),
    (_not_resized, "takes \\(width, height\\)"),
    (lambda interpreter, path: right_app_probabilities(interpreter, path)[np.newaxis], "batch of one"),
    (lambda interpreter, path: "benign", "a str"),
])
def test_app_probabilities_rejects_wrong_answers(exported_folder, answer, hint):
    folder, _, paths = exported_folder
    with pytest.raises(NotRight, match=hint):
        n05.app_probabilities(answer, folder, paths)


def test_app_probabilities_names_a_missing_file(tmp_path, exported_folder):
    _, _, paths = exported_folder
    with pytest.raises(NotRight, match="model-int8.tflite is missing"):
        n05.app_probabilities(right_app_probabilities, tmp_path, paths)
