"""Exporting the model, TFLite, the predict command, the model card and the demo.

Notebook 05 writes the model code itself; :func:`export_like_notebook_05` below is the same
export, so that these tests hold a model that keeps the folder's contract.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lesionlib import DISCLAIMER, backbones, export, features, fsutil, inference, modelcard, splits, tfutil, training
from lesionlib.export import ModelError
from lesionlib.preprocessing import Preprocessing, decode, prepare, preprocessing_of
from lesionlib.taxonomy import CLASSES
from tests.conftest import SHARED

MOBILENET = SHARED / "weights" / "tfhub" / "mobilenet_v2_100_224_feature_vector"


CAMERA = (36, 48)  # the camera size of the tests' models: (height, width), not square


def camera_maps(size: int, preprocessing, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Notebook 05's folding: the crop and resizes of ``prepare`` for a ``height`` x ``width``
    image as two matrices, measured on one-hot rows and columns."""
    import tensorflow as tf

    geometry = dataclasses.replace(preprocessing, colour="none")

    def measured(length: int, axis: int) -> np.ndarray:
        shape = [height, width, 3]
        shape[axis] = 1
        columns = []
        for index in range(length):
            probe = np.zeros((height, width, 3), np.float32)
            probe[(slice(None),) * axis + (index,)] = 1
            prepared = prepare(tf.constant(probe), size, geometry).numpy()
            columns.append(prepared[:, 0, 0] if axis == 0 else prepared[0, :, 0])
        return np.stack(columns, axis=1)

    return measured(height, 0), measured(width, 1)


def export_like_notebook_05(backbone, head, folder: Path, record: dict, *, pixels: bool = True,
                            camera: tuple[int, int] = CAMERA) -> Path:
    """Notebook 05's export: the serving function (bytes -> decode -> prepare -> backbone ->
    head), the camera function (uint8 image -> the same preparation, folded -> backbone -> head),
    an ExportArchive with its three endpoints, written by :func:`export.write_model`.
    ``pixels=False`` leaves the ``pixels`` endpoint out, as a learner's slip might."""
    import keras
    import tensorflow as tf

    from lesionlib.preprocessing import shades_of_gray

    size = backbone.spec.input_size
    preprocessing = preprocessing_of(record)
    classes = tf.constant(CLASSES)
    rows, columns = (tf.constant(m) for m in camera_maps(size, preprocessing, *camera))

    def probabilities_of(images):
        return head(backbone.model(images), training=False)

    def serve(encoded):
        images = tf.map_fn(lambda item: prepare(decode(item), size, preprocessing), encoded,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probabilities = probabilities_of(images)
        return {"probabilities": probabilities, "label": tf.gather(classes, tf.argmax(probabilities, axis=1)),
                "classes": tf.broadcast_to(classes, tf.shape(probabilities))}

    def from_camera(image):
        prepared = tf.einsum("yh,hwc,xw->yxc", rows, tf.cast(image[0], tf.float32) / 255.0, columns)
        if preprocessing.colour == "shades_of_gray":
            prepared = shades_of_gray(prepared)
        return {"probabilities": probabilities_of(prepared[tf.newaxis])}

    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.track(backbone.model)
    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec([None], tf.string)])
    if pixels:
        archive.add_endpoint("pixels", lambda images: {"probabilities": probabilities_of(images)},
                             input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    archive.add_endpoint("camera", from_camera, input_signature=[tf.TensorSpec([1, *camera, 3], tf.uint8)])
    return export.write_model(archive, folder, record)


def convert_like_notebook_05(folder: Path, variant: str, representative: np.ndarray | None = None) -> Path:
    """Notebook 05's TFLite conversion of the ``camera`` signature; ``representative``: uint8
    camera images, for full int8."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["camera"])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    with tfutil.converting():
        return export.save_tflite(converter.convert(), folder, variant)


def _record(settings, manifest, part, backbone) -> dict:
    return {"backbone": {"name": backbone.spec.name, "handle": backbone.spec.handle,
                         "input_size": backbone.spec.input_size, "identity": backbone.identity},
            "profile": settings.profile, "data_source": str(settings.data_source),
            "split": {"kind": "grouped by lesion and patient", "validation": 0.15, "test": 0.15,
                      "seed": settings.seed, "fingerprint": splits.fingerprint(manifest, part)},
            "head": dataclasses.asdict(training.HeadConfig()), "best_epoch": 1}


@pytest.fixture(scope="module")
def saved_head(trained_smoke, tmp_path_factory):
    """The smoke head saved and loaded back as notebook 03 saves it: (Keras model, record)."""
    settings, manifest, backbone, _, part, head = trained_smoke
    folder = tmp_path_factory.mktemp("head")
    training.save_head(head.model, head.history, folder, _record(settings, manifest, part, backbone))
    return training.load_head(folder)


@pytest.fixture(scope="module")
def exported(trained_smoke, saved_head, tmp_path_factory):
    """The smoke head exported as notebook 05 exports it."""
    _, _, backbone, *_ = trained_smoke
    head, record = saved_head
    folder = tmp_path_factory.mktemp("export") / "model"
    export_like_notebook_05(backbone, head, folder, record)
    return inference.ExportedModel(folder)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m lesionlib ...`` in a fresh process, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "lesionlib", *args], capture_output=True, text=True,
                          timeout=300)


def test_the_exported_model_predicts_what_the_backbone_and_head_predict(trained_smoke, exported):
    _, manifest, _, bottlenecks, _, head = trained_smoke
    paths = manifest["path"].iloc[:20]
    served = exported.predict_bytes([Path(p).read_bytes() for p in paths], batch_size=7)
    expected = training.probabilities(head, bottlenecks.features[bottlenecks.index.get_indexer(paths.index)])
    assert served.shape == (20, len(CLASSES))
    np.testing.assert_allclose(served, expected, atol=1e-5)  # float32 sums in other batch shapes
    pixels = np.stack([exported.pixels_of(Path(p).read_bytes()) for p in paths])
    np.testing.assert_allclose(exported.predict_pixels(pixels), served, atol=1e-6)


def test_the_serving_signature_returns_labels_and_classes(exported, trained_smoke):
    import tensorflow as tf

    _, manifest, *_ = trained_smoke
    encoded = [Path(p).read_bytes() for p in manifest["path"].iloc[:3]]
    output = exported._loaded.serving_default(tf.constant(encoded))
    probabilities = output["probabilities"].numpy()
    assert [x.decode() for x in output["label"].numpy()] == [CLASSES[i] for i in probabilities.argmax(1)]
    assert [[x.decode() for x in row] for row in output["classes"].numpy()] == [list(CLASSES)] * 3


def test_the_exported_model_prepares_images_as_the_head_was_trained(trained_smoke, exported, tmp_path):
    settings, manifest, backbone, _, _, head = trained_smoke
    preprocessing = Preprocessing(crop=True, resolution=32, colour="shades_of_gray")
    rows = manifest.iloc[:12]
    bottlenecks = features.extract(rows, backbone, settings.bottleneck_dir, preprocessing=preprocessing,
                                   progress=False)
    record = exported.record["training"] | {"preprocessing": dataclasses.asdict(preprocessing)}
    model = inference.ExportedModel(export_like_notebook_05(backbone, head.model, tmp_path / "model", record))
    assert model.record["preprocessing"] == dataclasses.asdict(preprocessing)
    served = model.predict_bytes([Path(p).read_bytes() for p in rows["path"]])
    np.testing.assert_allclose(served, training.probabilities(head, bottlenecks.features), atol=1e-6)
    assert not np.allclose(served, exported.predict_bytes([Path(p).read_bytes() for p in rows["path"]]),
                           atol=1e-3)  # the preprocessing made a difference


def test_the_model_folder_holds_labels_and_its_record(exported, trained_smoke):
    _, _, backbone, *_ = trained_smoke
    assert (exported.folder / "labels.txt").read_text().split() == list(CLASSES)
    assert exported.classes == list(CLASSES)
    assert exported.record["format"] == export.FORMAT
    assert exported.input_size == backbone.spec.input_size  # read from the pixels signature
    assert exported.record["preprocessing"] == dataclasses.asdict(Preprocessing())
    assert exported.record["training"]["split"]["fingerprint"]
    assert exported.record["disclaimer"] == DISCLAIMER


def test_a_failed_export_leaves_the_previous_model_whole(trained_smoke, saved_head, exported, tmp_path,
                                                         monkeypatch):
    _, _, backbone, *_ = trained_smoke
    head, record = saved_head
    folder = tmp_path / "model"
    shutil.copytree(exported.folder, folder)
    before = sorted(p.name for p in folder.rglob("*"))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil, "write_json_atomic", broken)  # after the SavedModel is written
    with pytest.raises(OSError, match="disk full"):
        export_like_notebook_05(backbone, head, folder, record)
    assert sorted(p.name for p in folder.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind


def test_an_export_without_the_pixels_signature_is_refused_and_changes_nothing(trained_smoke, saved_head,
                                                                                exported, tmp_path):
    _, _, backbone, *_ = trained_smoke
    head, record = saved_head
    folder = tmp_path / "model"
    shutil.copytree(exported.folder, folder)
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(ModelError, match="no pixels signature"):
        export_like_notebook_05(backbone, head, folder, record, pixels=False)
    assert sorted(p.name for p in folder.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_new_export_removes_files_of_the_old_model(trained_smoke, saved_head, exported, tmp_path):
    _, _, backbone, *_ = trained_smoke
    head, record = saved_head
    folder = tmp_path / "model"
    shutil.copytree(exported.folder, folder)
    (folder / "model-float32.tflite").write_bytes(b"a TFLite file of the previous model")
    export_like_notebook_05(backbone, head, folder, record)
    assert not (folder / "model-float32.tflite").exists()  # it no longer matches the model
    assert (folder / "saved_model.pb").is_file()


def test_atomic_folder_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with fsutil.atomic_folder(target) as temporary:
        (temporary / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError), fsutil.atomic_folder(target) as temporary:
        (temporary / "b").write_text("2")
        raise RuntimeError
    assert [p.name for p in target.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="Run notebook 05"):
        inference.ExportedModel(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="damaged"):
        inference.ExportedModel(tmp_path)


def test_a_savedmodel_loaded_already_is_used_not_loaded_again(exported, odd_files):
    import tensorflow as tf

    def answer(_):
        return {"probabilities": tf.constant([[0.25, 0.5, 0.25]])}

    given = SimpleNamespace(serving_default=answer, pixels=answer, camera=answer)
    model = inference.ExportedModel(exported.folder, given)
    assert model.predict_bytes([odd_files["good"].read_bytes()]).tolist() == [[0.25, 0.5, 0.25]]
    assert model.size_bytes == exported.size_bytes and model.classes == exported.classes
    with pytest.raises(ModelError, match="no pixels and no camera signature.*tf.saved_model.load"):
        inference.ExportedModel(exported.folder, SimpleNamespace(serving_default=answer))


@pytest.fixture
def odd_files(tmp_path, trained_smoke) -> dict[str, Path]:
    """A good JPEG, a PNG with transparency, and the bad files a learner might pass."""
    _, manifest, *_ = trained_smoke
    good = Path(manifest["path"].iloc[0])
    files = {"good": good}
    png = tmp_path / "lesion with alpha.png"
    Image.open(good).convert("RGBA").save(png)
    files["png"] = png
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("not an image")
    files["truncated"] = tmp_path / "cut.jpg"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["missing"] = tmp_path / "no-such-image.jpg"
    return files


def test_predict_files_gives_a_record_per_file_and_names_each_failure(exported, odd_files):
    records = list(inference.predict_files(exported, list(odd_files.values())))
    assert [r["image"] for r in records] == [str(p) for p in odd_files.values()]
    by_name = dict(zip(odd_files, records))
    for name in ("good", "png"):
        assert set(by_name[name]["probabilities"]) == set(CLASSES)
        probabilities = by_name[name]["probabilities"]
        assert by_name[name]["label"] == max(probabilities, key=probabilities.get)
        assert sum(by_name[name]["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert by_name["text"]["error"] == "not an image (no image format recognised): give a JPEG or PNG image"
    assert by_name["truncated"]["error"].startswith("truncated or corrupt image")
    assert by_name["truncated"]["error"].endswith("copy or download it again")
    assert by_name["empty"]["error"] == "empty file (0 bytes): copy or download it again"
    assert by_name["missing"]["error"].startswith(
        "unreadable file (No such file or directory): check the path")


def test_an_exif_rotated_photo_is_predicted_upright(exported, odd_files, tmp_path):
    with Image.open(odd_files["good"]) as image:
        upright = image.convert("RGB").crop((0, 0, image.width, image.height * 3 // 4))  # not square
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the camera was held sideways
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.jpg", quality=95, exif=exif)
    straight, turned = inference.predict_files(exported, [tmp_path / "upright.jpg",
                                                          tmp_path / "sideways.jpg"])
    assert turned["probabilities"] == pytest.approx(straight["probabilities"], abs=0.02)
    raw = exported.predict_bytes([(tmp_path / "sideways.jpg").read_bytes()])[0]  # the model alone
    assert not np.allclose(raw, list(turned["probabilities"].values()), atol=1e-4)


def test_a_png_with_alpha_is_predicted_like_the_same_image_on_white(exported, odd_files, tmp_path):
    flat = tmp_path / "flat.png"
    with Image.open(odd_files["png"]) as image:
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        background.save(flat)
    alpha, white = inference.predict_files(exported, [odd_files["png"], flat])
    assert alpha["probabilities"] == pytest.approx(white["probabilities"], abs=1e-6)


def test_predict_json_in_a_fresh_process(exported, odd_files):
    result = _cli("predict", "--json", "--model", str(exported.folder),
                  str(odd_files["good"]), str(odd_files["truncated"]), str(odd_files["text"]),
                  str(odd_files["missing"]))
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    names = ("good", "truncated", "text", "missing")
    assert [r["image"] for r in records] == [str(odd_files[k]) for k in names]
    assert set(records[0]) == {"image", "label", "probabilities"}
    assert all(set(r) == {"image", "error"} for r in records[1:])
    here = next(inference.predict_files(exported, [odd_files["good"]]))
    assert records[0] == here  # the fresh process loads the same model and gives the same numbers
    assert DISCLAIMER in result.stderr and "3 of 4 images could not be predicted" in result.stderr


def test_predict_text_output_and_exit_status(exported, odd_files):
    ok = _cli("predict", "--model", str(exported.folder), str(odd_files["good"]))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{odd_files['good']}: ")
    assert DISCLAIMER in ok.stdout
    bad = _cli("predict", "--model", str(exported.folder), str(odd_files["text"]))
    assert bad.returncode == 1
    assert f"{odd_files['text']}: not predicted: not an image" in bad.stdout


def test_predict_without_a_model_is_one_clear_line(tmp_path, odd_files):
    result = _cli("predict", "--model", str(tmp_path / "nothing"), str(odd_files["good"]))
    assert result.returncode == 2
    assert "holds no exported model" in result.stderr and "Traceback" not in result.stderr


def _pictures(manifest, start: int, stop: int) -> np.ndarray:
    return np.stack([inference.camera_image(Path(p).read_bytes(), *CAMERA) for p in manifest["path"].iloc[start:stop]])


@pytest.fixture(scope="module")
def converted(exported, trained_smoke):
    _, manifest, *_ = trained_smoke
    representative = _pictures(manifest, 0, 30)
    for variant in export.TFLITE_VARIANTS:
        convert_like_notebook_05(exported.folder, variant, representative)
    return exported


def test_every_tflite_variant_takes_a_camera_picture_and_runs(converted, trained_smoke):
    _, manifest, *_ = trained_smoke
    pictures = _pictures(manifest, 30, 40)
    table = inference.variants_table(converted, pictures, repeats=2)
    assert list(table.index) == ["SavedModel", *export.TFLITE_VARIANTS]
    assert (table["size (MB)"] > 0).all() and (table["latency (ms)"] > 0).all()
    assert table.loc["float32", "largest probability difference"] < 1e-4
    assert table.loc["float32", "top-1 agreement"] == 1.0
    assert table.loc["float16", "largest probability difference"] < 0.01
    for variant in export.TFLITE_VARIANTS:
        lite = inference.TFLiteModel(converted.folder, variant)
        assert lite._input["dtype"] == np.uint8 and list(lite._input["shape"]) == [1, *CAMERA, 3]
        assert lite.output_quantization is None  # probabilities come out as float32
        probabilities = lite.predict(pictures)
        assert probabilities.shape == (10, len(CLASSES)) and np.allclose(probabilities.sum(1), 1, atol=0.02)


@pytest.mark.parametrize("preprocessing", [
    Preprocessing(crop=True, resolution=16, colour="shades_of_gray"),
    Preprocessing(crop=True, resolution=None, method="area", antialias=False),
])
def test_the_camera_signature_prepares_as_serving_does(trained_smoke, saved_head, tmp_path, preprocessing):
    """The preparation folded into two matrices (and colour constancy) gives what ``prepare``
    gives: a picture of the camera size answers as its file does."""
    _, manifest, backbone, *_ = trained_smoke
    head, record = saved_head
    record = {**record, "preprocessing": dataclasses.asdict(preprocessing)}
    model = inference.ExportedModel(export_like_notebook_05(backbone, head, tmp_path / "model", record))
    assert model.camera_input == CAMERA and model.record["camera_input"] == list(CAMERA)
    pictures = _pictures(manifest, 0, 6)
    files = []
    for picture in pictures:
        out = io.BytesIO()
        Image.fromarray(picture).save(out, "PNG")
        files.append(out.getvalue())
    np.testing.assert_allclose(model.predict_camera(pictures), model.predict_bytes(files), atol=1e-5)


def test_camera_image_cuts_to_the_shape_then_resizes(tmp_path):
    noise = np.random.default_rng(0)
    wide = noise.integers(0, 60, (60, 200, 3)).astype(np.uint8)
    wide[:, 70:130] = noise.integers(200, 256, (60, 60, 3))  # a bright centre band
    out = io.BytesIO()
    Image.fromarray(wide).save(out, "PNG")
    picture = inference.camera_image(out.getvalue(), 30, 40)
    assert picture.shape == (30, 40, 3) and picture.dtype == np.uint8
    # cut to 4:3 around the centre (columns 60 to 140), the band spans columns 5 to 35; a
    # squeezed picture would have it at 14 to 26 only
    assert picture[:, :3].max() < 100 and picture[:, 7:12].min() > 150
    with pytest.raises(ValueError, match="not an image"):
        inference.camera_image(b"a shopping list", 30, 40)


def test_a_converted_model_is_kept_beside_the_savedmodel_only(exported, tmp_path):
    written = export.save_tflite(b"the bytes of a converted model", exported.folder, "mine")
    assert written == exported.folder / "model-mine.tflite" and written.read_bytes().startswith(b"the bytes")
    written.unlink()
    with pytest.raises(ModelError, match="holds no exported model"):
        export.save_tflite(b"model", tmp_path, "float32")
    assert not list(tmp_path.iterdir())


def test_a_missing_tflite_file_is_a_clear_error(exported, tmp_path):
    with pytest.raises(ModelError, match="model-float16.tflite is missing"):
        inference.TFLiteModel(tmp_path, "float16")


@pytest.mark.skipif(not MOBILENET.is_dir(), reason=f"shared MobileNet V2 not found at {MOBILENET}")
def test_a_real_mobilenet_export_is_self_contained_and_converts(tmp_path, ham10000):
    """MobileNet V2 from a folder that is deleted after export: the model must not need it."""
    from lesionlib.settings import load_settings

    copy = tmp_path / "mobilenet_v2_100_224_feature_vector"
    shutil.copytree(MOBILENET, copy)
    settings = load_settings({"LESIONLIB_HOME": str(tmp_path / "home"), "LESIONLIB_BACKBONE": str(copy)})
    backbone = backbones.load(settings)
    paths = sorted((ham10000 / "images").glob("ISIC_*.jpg"))[:24]
    load = features.image_loader(224)
    bottlenecks = np.asarray(backbone(np.stack([load(str(p)) for p in paths])))
    labels = np.arange(len(paths)) % len(CLASSES)
    head = training.train_head((bottlenecks, labels), (bottlenecks, labels),
                               training.HeadConfig(epochs=3, patience=3))
    expected = training.probabilities(head, bottlenecks)
    record = {"backbone": {"name": backbone.spec.name, "handle": str(copy), "input_size": 224,
                           "identity": backbone.identity}}
    folder = export_like_notebook_05(backbone, head.model, tmp_path / "model", record)
    del backbone
    shutil.rmtree(copy)

    result = _cli("predict", "--json", "--model", str(folder), *map(str, paths[:4]))
    assert result.returncode == 0, result.stderr
    fresh = np.array([[r["probabilities"][c] for c in CLASSES]
                      for r in map(json.loads, result.stdout.splitlines())])
    np.testing.assert_allclose(fresh, expected[:4], atol=1e-5)

    model = inference.ExportedModel(folder)
    assert model.size_bytes > 8e6  # MobileNet V2's 3.5 million weights are inside
    assert model.input_size == 224
    pictures = np.stack([inference.camera_image(p.read_bytes(), *CAMERA) for p in paths])
    convert_like_notebook_05(folder, "float32")
    convert_like_notebook_05(folder, "float16")
    convert_like_notebook_05(folder, "int8", pictures[:16])
    table = inference.variants_table(model, pictures[16:], ["float32", "float16", "int8"], repeats=2)
    assert table.loc["float32", "largest probability difference"] < 1e-4
    # float16 features, standardised by the head, move its probabilities by a few hundredths
    assert table.loc["float16", "largest probability difference"] < 0.1
    sizes = {variant: inference.TFLiteModel(folder, variant).size_bytes
             for variant in ("float32", "float16", "int8")}
    assert 0.4 * sizes["float32"] < sizes["float16"] < 0.6 * sizes["float32"]
    assert sizes["int8"] < 0.4 * sizes["float32"]


def _metrics(record: dict) -> dict:
    interval = {"estimate": 0.7, "low": 0.6, "high": 0.8}
    auc = {"estimate": 0.78, "low": 0.69, "high": 0.86}
    per_class = {f"{c} {m}": interval for c in CLASSES for m in ("sensitivity", "specificity")}
    per_class["indeterminate sensitivity"] = {"estimate": None, "low": None, "high": None}
    return {"data_source": record["data_source"], "head": training.record_digest(record),
            "test_images": 42, "intervals": {"accuracy": interval, "balanced accuracy": interval,
                                             "AUC malignant vs rest": auc},
            "per_class_intervals": per_class,
            "operating_point": {"target sensitivity": 0.9,
                                "test": {"threshold": 0.26, "sensitivity": 0.82, "specificity": 0.59}},
            "calibration": {"temperature": 0.83, "test ECE before": 0.07, "test ECE after": 0.04}}


def test_the_model_card_is_written_from_the_run(converted, trained_smoke):
    _, manifest, *_ = trained_smoke
    table = inference.variants_table(converted, _pictures(manifest, 0, 1), repeats=1)
    metrics = _metrics(converted.record["training"])
    card = modelcard.write(converted.folder, metrics, manifest, table).read_text()
    assert DISCLAIMER in card
    assert "0.780 (95% interval 0.690–0.860)" in card
    assert "indeterminate: sensitivity not measured" in card
    assert "Dermoscopic images only" in card and "Fitzpatrick" in card
    assert "| int8 |" in card
    assert f"one uint8 RGB picture `[1, {CAMERA[0]}, {CAMERA[1]}, 3]`" in card and "`labels.txt`" in card
    for label in CLASSES:
        assert f"{label} {int((manifest['label'] == label).sum())}" in card


def test_the_model_card_refuses_a_report_of_another_head(exported, trained_smoke, tmp_path):
    _, manifest, *_ = trained_smoke
    folder = tmp_path / "model"
    shutil.copytree(exported.folder, folder, ignore=shutil.ignore_patterns(modelcard.NAME))
    metrics = _metrics(exported.record["training"]) | {"head": "the digest of another head"}
    with pytest.raises(ModelError, match="Run notebook 04 again"):
        modelcard.write(folder, metrics, manifest)
    assert not (folder / modelcard.NAME).exists()


def _widgets_major() -> int:
    import ipywidgets

    return int(ipywidgets.__version__.split(".")[0])


def _upload(upload, name: str, data: bytes) -> None:
    """What the browser does when a file is chosen: ipywidgets 8 sets ``value``; in ipywidgets 7
    (Colab's) ``value`` is read-only and follows ``metadata``, ``data`` and ``_counter``."""
    if _widgets_major() >= 8:
        upload.value = ({"name": name, "type": "text/plain", "size": len(data),
                         "last_modified": datetime.now(), "content": memoryview(data)},)
    else:
        upload.metadata = [{"name": name, "type": "text/plain", "size": len(data), "lastModified": 0}]
        upload.data = [data]
        upload._counter += 1


def test_the_demo_figure_and_the_upload_box(exported, odd_files, capsys):
    import ipywidgets

    from lesionlib import demo

    figure = demo.prediction_figure(exported, odd_files["png"].read_bytes(), odd_files["png"].name)
    assert figure._suptitle.get_text() == DISCLAIMER
    key = figure.axes[-1]  # the occlusion map's colour key
    assert [t.get_text() for t in key.get_yticklabels()] == ["raises", "no change", "lowers"]
    assert "hiding a patch" in key.get_ylabel()
    box = demo.upload_demo(exported)
    assert demo.NEEDS_KERNEL in repr(box)  # what a saved copy shows where the widget is dead
    upload = next(child for child in box.children if isinstance(child, ipywidgets.FileUpload))
    assert (upload.layout.width, upload.layout.min_width, upload.layout.align_self) == ("auto", "200px", "flex-start")
    _upload(upload, "notes.txt", b"not an image")
    assert "notes.txt: not predicted: not an image" in capsys.readouterr().out
    assert DISCLAIMER in box.children[0].value
    _upload(upload, "lesion.jpg", odd_files["good"].read_bytes())  # the figure and the same as text
    p = exported.predict_pixels(exported.pixels_of(odd_files["good"].read_bytes())[None])[0]
    shown = ", ".join(f"{label} {value:.2f}" for label, value in zip(CLASSES, p))
    assert f"lesion.jpg: the model's probabilities are {shown}. {DISCLAIMER}" in capsys.readouterr().out


def test_uploads_are_read_from_ipywidgets_7_and_8():
    from lesionlib.demo import _uploads

    data = io.BytesIO(b"abc").getvalue()
    assert _uploads(({"name": "a.jpg", "content": memoryview(data)},)) == [("a.jpg", data)]
    assert _uploads({"a.jpg": {"metadata": {}, "content": data}}) == [("a.jpg", data)]


def test_atomic_folder_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("the previous model")
    real_replace = os.replace

    def failing_second_rename(source, destination):
        if Path(source).name.endswith(".tmp"):
            raise OSError("no space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="no space"), fsutil.atomic_folder(target) as temporary:
        (temporary / "weights").write_text("the new model")
    assert (target / "weights").read_text() == "the previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.fixture
def fake_colab(monkeypatch):
    """Stand-ins for the ``google.colab`` modules, which exist only on Colab's machines."""
    import types

    calls: dict[str, object] = {"enabled": 0, "uploads": {}}
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(
        enable_custom_widget_manager=lambda: calls.__setitem__("enabled", calls["enabled"] + 1))
    colab.files = types.SimpleNamespace(upload=lambda: calls["uploads"])
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return calls


def test_on_colab_the_demo_enables_widgets_and_offers_colabs_own_upload(exported, odd_files, fake_colab,
                                                                        capsys):
    from lesionlib import demo

    demo.upload_demo(exported)
    # ipywidgets 8 needs Colab's custom widget manager; Colab's own ipywidgets 7 does not
    assert fake_colab["enabled"] == (1 if _widgets_major() >= 8 else 0)
    fake_colab["uploads"] = {"notes.txt": b"not an image", "lesion.png": odd_files["png"].read_bytes()}
    demo.colab_upload(exported)
    out = capsys.readouterr().out
    assert DISCLAIMER in out and "notes.txt: not predicted: not an image" in out
    assert "Figure" in out  # the good image was displayed


def test_colab_upload_elsewhere_says_what_to_use_instead(exported):
    from lesionlib import demo

    with pytest.raises(RuntimeError, match="upload_demo"):
        demo.colab_upload(exported)


def test_records_table_and_a_new_process(exported, odd_files, tmp_path):
    records = inference.predict_in_new_process(exported.folder, [odd_files["good"], odd_files["text"]])
    table = inference.records_table(records)
    assert list(table.index) == [odd_files["good"].name, odd_files["text"].name]
    assert list(table.columns) == ["label", "error", *(f"p_{c}" for c in CLASSES)]
    assert table.loc[odd_files["text"].name, "error"].startswith("not an image")
    with pytest.raises(ModelError, match="holds no exported model"):
        inference.predict_in_new_process(tmp_path, [odd_files["good"]])


def test_smallest_agreeing_variant():
    import pandas as pd

    table = pd.DataFrame({"size (MB)": [10.0, 9.0, 4.5, 2.5], "top-1 agreement": [1.0, 1.0, 1.0, 0.9]},
                         index=["SavedModel", "float32", "float16", "int8"])
    assert inference.smallest_agreeing(table, 0.99) == "float16"
    assert inference.smallest_agreeing(table, 0.9) == "int8"
    assert inference.smallest_agreeing(table.drop(index=["float32", "float16"]), 0.99) is None


def test_odd_paths_in_a_new_process_are_operands_refused_or_escaped(exported, odd_files, tmp_path,
                                                                    monkeypatch):
    """A file named like an option, a FIFO, /dev/zero and a name that is not UTF-8: each gets
    its own record, the others are still predicted, and the output is valid UTF-8 JSON."""
    import os
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(odd_files["good"], "--model=x.jpg")  # relative: it starts with "--"
    os.mkfifo("waiting.jpg")
    latin = os.fsdecode(b"l\xe9sion.jpg")  # Latin-1 bytes in the name
    shutil.copy(odd_files["good"], os.fsencode(latin))
    # the FIFO before /dev/zero: a run that blocks on it times out instead of filling memory
    paths = ["--model=x.jpg", "waiting.jpg", "/dev/zero", latin, str(odd_files["text"])]
    records = inference.predict_in_new_process(exported.folder, paths, timeout=240)
    assert [r["image"] for r in records] == ["--model=x.jpg", "waiting.jpg", "/dev/zero",
                                             "l\\xe9sion.jpg", str(odd_files["text"])]
    for record in records:
        json.dumps(record).encode("utf-8")
        record["image"].encode("utf-8")  # no lone surrogates
    here = next(inference.predict_files(exported, [odd_files["good"]]))
    assert records[0]["probabilities"] == here["probabilities"]
    assert records[3]["probabilities"] == here["probabilities"]
    assert records[1]["error"] == "not a regular file (a pipe (FIFO)): give an image file"
    assert records[2]["error"] == "not a regular file (a character device): give an image file"
    assert records[4]["error"].startswith("not an image")
