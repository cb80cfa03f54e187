"""The frozen network in two runtimes: TensorFlow, and LiteRT with XNNPACK (the CPU default).

Real networks, real images, real files: the tiny stand-in always, MobileNet V2 on HAM10000 when
../shared/ is there.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from lesionlib import backbones, dataset, features, sources
from lesionlib.taxonomy import CLASSES

MOBILENET = "weights/tfhub/mobilenet_v2_100_224_feature_vector"


@pytest.fixture
def smoke(make_settings):
    settings = make_settings(profile="smoke")
    manifest = dataset.prepare(settings, progress=False).manifest
    return settings, manifest, backbones.load(settings)


def _converted(settings):
    return sorted((settings.cache_dir / "litert").glob("*.tflite"))


def test_on_a_cpu_bottlenecks_come_from_litert_with_tensorflows_features(smoke, tmp_path):
    settings, manifest, backbone = smoke
    network = backbones.bottleneck_network(backbone)
    assert isinstance(network, backbones.LiteRTNetwork)
    assert backbones.runtime_name(network).startswith("LiteRT (XNNPACK")
    assert backbones.runtime_name(backbone.model) == "TensorFlow"
    fast = features.extract(manifest, backbone, settings.bottleneck_dir, progress=False)  # the default
    slow = features.extract(manifest, backbone, tmp_path / "tensorflow", network=backbone.model, progress=False)
    assert fast.computed == slow.computed == len(manifest)
    assert np.abs(fast.features - slow.features).max() < 1e-5


def test_the_conversion_is_kept_named_by_hashes_and_rebuilt_when_damaged(smoke, monkeypatch):
    settings, _, backbone = smoke
    (kept,) = _converted(settings) or [backbones.litert(backbone).path]
    assert kept.parent == settings.cache_dir / "litert"
    images = np.random.default_rng(3).uniform(size=(3, 64, 64, 3)).astype(np.float32)
    expected = backbone.model(images).numpy()
    monkeypatch.setattr(backbones, "_convert", lambda *a: pytest.fail("converted again"))
    assert backbones.litert(backbone).path == kept  # found, not converted again
    monkeypatch.undo()

    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    kept.write_bytes(bytes(data))
    rebuilt = backbones.litert(backbone)
    assert rebuilt.path == kept and kept.read_bytes() != bytes(data)  # same content, same name
    np.testing.assert_allclose(rebuilt(images), expected, atol=1e-5)
    assert _converted(settings) == [kept]

    # An identity is hashed, never used as a path.
    strange = dataclasses.replace(backbone, identity="../../escape", spec=dataclasses.replace(
        backbone.spec, name="../../escape"))
    assert backbones.litert(strange).path.parent == kept.parent
    assert len(_converted(settings)) == 2


def test_a_network_that_does_not_convert_falls_back_to_tensorflow_once_said(smoke):
    settings, _, backbone = smoke

    def python_only(images):  # no concrete function to convert: a plain Python callable
        return backbone.model(images)

    with pytest.warns(backbones.TensorFlowFallback, match="could not be converted.*TensorFlow instead") as said:
        network = backbones.bottleneck_network(backbone, python_only)
    assert network is python_only and len(said) == 1
    with pytest.raises(backbones.NotConverted, match=backbone.spec.name):
        backbones.litert(dataclasses.replace(backbone, identity="other"), python_only)
    assert _converted(settings) == []  # nothing kept of a failed conversion


def test_a_conversion_that_computes_otherwise_is_refused(smoke, monkeypatch):
    _, _, backbone = smoke
    original = backbones.LiteRTNetwork.__call__
    monkeypatch.setattr(backbones.LiteRTNetwork, "__call__", lambda self, images: original(self, images) + 0.01)
    with pytest.raises(backbones.NotConverted, match="other features.*largest difference 0.01"):
        backbones.litert(backbone)


def test_mobilenet_on_real_images_same_features_same_predictions_in_both_runtimes(make_settings, ham10000, tmp_path):
    """MobileNet V2 on 120 real HAM10000 images: LiteRT's features are TensorFlow's within 1e-4,
    and a head trained on TensorFlow's features predicts the same class from either."""
    settings = make_settings(data_source=ham10000, backbone=ham10000.parent.parent / MOBILENET)
    backbone = backbones.load(settings)
    assert (backbone.spec.input_size, backbone.spec.feature_dim) == (224, 1280)
    _, candidates = sources.read_source(ham10000)
    manifest = (candidates.groupby("label").head(40).rename(columns={"source_path": "path"})
                .reset_index(drop=True))
    assert set(manifest["label"]) == set(CLASSES)
    fast = features.extract(manifest, backbone, settings.bottleneck_dir, progress=False)
    assert isinstance(backbones.bottleneck_network(backbone), backbones.LiteRTNetwork)
    slow = features.extract(manifest, backbone, tmp_path / "tensorflow", network=backbone.model, progress=False)
    assert fast.computed == slow.computed == len(manifest) == 120
    assert slow.features.std(axis=0).mean() > 0.05  # real, varied features
    difference = np.abs(fast.features - slow.features).max()
    assert difference < 1e-4, f"largest feature difference {difference:.2g}"

    labels = manifest["label"].to_numpy()
    train = np.arange(len(manifest)) % 3 != 0
    mean, spread = slow.features[train].mean(axis=0), slow.features[train].std(axis=0) + 1e-6
    head = LogisticRegression(C=0.1, max_iter=2000).fit((slow.features[train] - mean) / spread, labels[train])
    tensorflow_says = head.predict_proba((slow.features - mean) / spread)
    litert_says = head.predict_proba((fast.features - mean) / spread)
    assert (tensorflow_says.argmax(axis=1) == litert_says.argmax(axis=1)).all()
    assert np.abs(tensorflow_says - litert_says).max() < 1e-3
