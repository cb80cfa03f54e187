"""The checks of notebooks 01 and 02's exercises: each passes a right answer, says "not answered
yet" for the placeholder, and rejects realistic wrong answers with a hint."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionlib.exercises import NotRight, n01, n02

RIGHT = "✓ Right."
UNANSWERED = "Not answered yet"


def placeholder(*args):
    """What a learner's function is before they write it: its body is ``...``."""
    ...


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    """Twelve images of six lesions: two of them without a lesion id, some ages not recorded,
    one class without its diagnosis recorded for one image. Non-square images (4:3 and 3:4)."""
    rng = np.random.default_rng(3)
    rows = []
    specs = [("benign", "nevus", "L1", 30), ("benign", "nevus", "L1", 30), ("benign", "nevus", "L2", None),
             ("benign", "dermatofibroma", "L3", 45), ("benign", None, None, 50),
             ("indeterminate", "actinic keratosis", "L4", 70), ("indeterminate", "actinic keratosis", "L4", 70),
             ("malignant", "melanoma", "L5", 65), ("malignant", "melanoma", "L5", 65),
             ("malignant", "melanoma", None, None), ("malignant", "basal cell carcinoma", "L6", 80),
             ("malignant", "basal cell carcinoma", "L6", 80)]
    for number, (label, diagnosis, lesion, age) in enumerate(specs):
        path = tmp_path / f"image{number}.png"
        shape = (30, 40, 3) if number % 2 else (41, 28, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
        rows.append({"image_id": f"image{number}", "path": path, "label": label, "diagnosis": diagnosis,
                     "lesion_id": lesion, "age": age, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    frame = pd.DataFrame(rows)
    return frame.astype({"lesion_id": "string", "diagnosis": "string", "age": "float"})


@pytest.fixture
def lesions() -> pd.DataFrame:
    """Forty images: ten lesions photographed twice, ten once, and ten images without a lesion id."""
    ids = [f"L{n // 2}" for n in range(20)] + [f"S{n}" for n in range(10)] + [None] * 10
    return pd.DataFrame({"lesion_id": pd.array(ids, dtype="string"), "label": "benign"})


def right_leak_share(manifest: pd.DataFrame, is_test: np.ndarray) -> float:
    lesions = manifest["lesion_id"]
    in_training = set(lesions[~is_test].dropna())
    return lesions[is_test].isin(in_training).mean()


def right_centre_square(image):
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def right_class_of(path: str) -> str:
    first = path.split(":")[0].lower()
    return "indeterminate" if first == "intermediate" else first


def right_sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


# Notebook 01, exercise 1: images per class and diagnosis

@pytest.mark.parametrize("answer", [
    lambda m: m.groupby(["label", "diagnosis"]).size(),
    lambda m: m.groupby(["label", "diagnosis"], dropna=False).size(),
    lambda m: m.value_counts(["diagnosis", "label"]),
    lambda m: pd.crosstab(m["label"], m["diagnosis"]),
    lambda m: m.groupby(["label", "diagnosis"]).size().rename("images").to_frame(),
], ids=["groupby", "with-missing", "value_counts-turned", "crosstab", "frame"])
def test_diagnoses_per_class_accepts_right_tables(manifest, answer, capsys):
    n01.diagnoses_per_class(answer(manifest), manifest)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "5 diagnoses in 3 classes" in out and "'nevus'" in out


def test_diagnoses_per_class_waits_for_an_answer(manifest, capsys):
    n01.diagnoses_per_class(..., manifest)
    assert capsys.readouterr().out.startswith(UNANSWERED)


@pytest.mark.parametrize("answer, hint", [
    (lambda m: m.groupby("label").size(), "both columns"),
    (lambda m: m.groupby(["label", "diagnosis"]).count(), ".size()"),
    (lambda m: m.value_counts(["label", "diagnosis"], normalize=True), "shares"),
    (lambda m: m.iloc[:6].groupby(["label", "diagnosis"]).size(), "add up to 5"),
    (lambda m: m.groupby(["label", "lesion_id"]).size(), "not a (class, diagnosis) pair"),
], ids=["one-column", "count", "shares", "some-images", "other-column"])
def test_diagnoses_per_class_rejects_wrong_tables(manifest, answer, hint):
    with pytest.raises(NotRight, match=re.escape(hint)):
        n01.diagnoses_per_class(answer(manifest), manifest)


# Notebook 01, exercise 2: the class of a path of ISIC's hierarchy

def test_class_of_accepts_a_right_function(capsys):
    n01.class_of(right_class_of)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "indeterminate" in out


@pytest.mark.parametrize("answer", [..., placeholder])
def test_class_of_waits_for_an_answer(answer, capsys):
    n01.class_of(answer)
    assert capsys.readouterr().out.startswith(UNANSWERED)


@pytest.mark.parametrize("function, hint", [
    (lambda path: path.split(":")[0], "lower case"),
    (lambda path: path.split(":")[-1].lower(), "a finer level"),
    (lambda path: path.split(":")[0].lower(), "the original project's word"),
    (lambda path: path.split(":")[1].lower(), "raised IndexError"),
    (lambda path: {"Benign": "benign"}.get(path.split(":")[0]), "returns nothing"),
], ids=["capitals", "last-level", "intermediate", "raises", "no-return"])
def test_class_of_rejects_wrong_functions(function, hint):
    with pytest.raises(NotRight, match=hint):
        n01.class_of(function)


# Notebook 01, exercise 3: an image's SHA-256

def test_sha256_of_accepts_a_right_function(manifest, capsys):
    n01.sha256_of(right_sha256_of, manifest)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "each of the 10 images" in out  # 4 + 2 + 4


@pytest.mark.parametrize("answer", [..., placeholder])
def test_sha256_of_waits_for_an_answer(manifest, answer, capsys):
    n01.sha256_of(answer, manifest)
    assert capsys.readouterr().out.startswith(UNANSWERED)


@pytest.mark.parametrize("function, hint", [
    (lambda path: hashlib.sha256(Path(path).read_bytes()).digest(), "returns bytes"),
    (lambda path: hashlib.md5(Path(path).read_bytes()).hexdigest(), "32 characters"),
    (lambda path: hashlib.sha256(str(path).encode()).hexdigest(), "the file's name"),
    (lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest().upper(), "lower case"),
    (lambda path: hashlib.sha256(Path(path).read_bytes()[:100]).hexdigest(), "the whole file"),
    (lambda path: open(path).read(), "raised UnicodeDecodeError"),
], ids=["bytes", "md5", "name", "upper", "part", "text-mode"])
def test_sha256_of_rejects_wrong_functions(manifest, function, hint):
    with pytest.raises(NotRight, match=hint):
        n01.sha256_of(function, manifest)


# Notebook 02, exercise 1: the share of test images that leak

def test_leak_share_accepts_a_right_function(lesions, capsys):
    n02.leak_share(right_leak_share, lesions)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "no lesion ids" not in out
    # The check's own numbers: at 50 % test, 20 test images of 40.
    is_test = n02.random_test_masks(len(lesions))[-1]
    assert is_test.sum() == 20 and f"{right_leak_share(lesions, is_test):.2f} of the test" in out


def test_leak_share_says_when_no_lesion_is_recorded(lesions, capsys):
    n02.leak_share(right_leak_share, lesions.assign(lesion_id=pd.NA))
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "0.00, 0.00, 0.00, 0.00" in out and "no lesion ids" in out


@pytest.mark.parametrize("answer", [..., placeholder])
def test_leak_share_waits_for_an_answer(lesions, answer, capsys):
    n02.leak_share(answer, lesions)
    assert capsys.readouterr().out.startswith(UNANSWERED)


def _count(manifest, is_test):
    lesions = manifest["lesion_id"]
    return int(lesions[is_test].isin(set(lesions[~is_test].dropna())).sum())


@pytest.mark.parametrize("function, hint", [
    (_count, "a number of images"),
    (lambda m, t: 100 * right_leak_share(m, t), "percentage"),
    (lambda m, t: _count(m, t) / len(m), "not by every image"),
    (lambda m, t: m["lesion_id"][t].isin(set(m["lesion_id"][~t])).mean(), "without a lesion id"),
    (lambda m, t: m["lesion_id"].duplicated(keep=False)[t].mean(), "training"),
    (lambda m, t: m["lesion_id"][t].duplicated(keep=False).mean(), "than it should"),
    (lambda m, t: m[t], "return one number"),
], ids=["count", "percent", "over-all", "missing-ids", "anywhere", "within-test", "frame"])
def test_leak_share_rejects_wrong_functions(lesions, function, hint):
    with pytest.raises(NotRight, match=hint):
        n02.leak_share(function, lesions)


# Notebook 02, exercise 2: age per class

@pytest.mark.parametrize("answer", [
    lambda m: m.groupby("label")["age"].agg(["count", "mean", "median"]),
    lambda m: m.groupby("label")["age"].describe().round(1),
    lambda m: m.groupby("label").agg(count=("age", "count"), mean=("age", "mean"), median=("age", "median")),
], ids=["agg", "describe", "named"])
def test_age_per_class_accepts_right_tables(manifest, answer, capsys):
    n02.age_per_class(answer(manifest), manifest)
    out = capsys.readouterr().out
    assert out.startswith(RIGHT) and "38 for benign, 70 for indeterminate, 72 for malignant" in out


def test_age_per_class_waits_for_an_answer(manifest, capsys):
    n02.age_per_class(..., manifest)
    assert capsys.readouterr().out.startswith(UNANSWERED)


@pytest.mark.parametrize("answer, hint", [
    (lambda m: m.groupby("label")["age"].agg(["size", "mean", "median"]).rename(columns={"size": "count"}),
     "not recorded"),
    (lambda m: m.fillna({"age": 0}).groupby("label")["age"].agg(["count", "mean", "median"]), "not recorded"),
    (lambda m: m.groupby("label")["age"].agg(["count", "mean"]), "no column 'median'"),
    (lambda m: m.groupby("diagnosis")["age"].agg(["count", "mean", "median"]), "one row per class"),
    (lambda m: m.groupby("label")["age"].mean(), "a DataFrame"),
    (lambda m: m.groupby("label")["age"].agg(["count", "mean", "max"]).rename(columns={"max": "median"}),
     "median age of the benign"),
], ids=["size", "zeros", "no-median", "by-diagnosis", "series", "max"])
def test_age_per_class_rejects_wrong_tables(manifest, answer, hint):
    with pytest.raises(NotRight, match=hint) as error:
        n02.age_per_class(answer(manifest), manifest)
    assert "38.75" not in str(error.value) and "37.5" not in str(error.value)  # never the answer


# Notebook 02, exercise 3: the centre square, with TensorFlow

def test_centre_square_accepts_right_functions(manifest, capsys):
    tf = pytest.importorskip("tensorflow")
    n02.centre_square(right_centre_square, manifest)
    n02.centre_square(lambda image: tf.image.resize_with_crop_or_pad(image, *[min(image.shape[:2])] * 2),
                      manifest)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith(RIGHT) for line in out)
    assert "on 7 images of 6 shapes" in out[0]


@pytest.mark.parametrize("answer", [..., placeholder])
def test_centre_square_waits_for_an_answer(manifest, answer, capsys):
    n02.centre_square(answer, manifest)
    assert capsys.readouterr().out.startswith(UNANSWERED)


def _squeezed(image):
    import tensorflow as tf

    return tf.image.resize(image, [min(image.shape[:2])] * 2)


@pytest.mark.parametrize("function, hint", [
    (lambda image: image[:min(image.shape[:2]), :min(image.shape[:2])], "top-left corner"),
    (_squeezed, "without resizing"),
    (lambda image: image[:, :min(image.shape[:2])], "a square has equal sides"),
    (lambda image: image[2:-2, 2:-2][:20, :20], "shorter side"),
    (lambda image: right_centre_square(image)[..., 0], "three colour channels"),
], ids=["corner", "resized", "not-square", "too-small", "one-channel"])
def test_centre_square_rejects_wrong_functions(manifest, function, hint):
    pytest.importorskip("tensorflow")
    with pytest.raises(NotRight, match=hint):
        n02.centre_square(function, manifest)
