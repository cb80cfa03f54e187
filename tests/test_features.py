"""Backbones and the bottleneck cache: real TensorFlow models, real images, real files."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest

from lesionlib import backbones, dataset, features, preprocessing, synthetic
from lesionlib.settings import SettingsError


@pytest.fixture
def smoke(make_settings):
    settings = make_settings(profile="smoke")
    manifest = dataset.prepare(settings, progress=False).manifest
    return settings, manifest, backbones.load(settings)


def _extract(settings, manifest, backbone, **options):
    return features.extract(manifest, backbone, settings.bottleneck_dir, progress=False, **options)


def test_tiny_backbone_gives_fixed_features(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    assert first.features.shape == (len(manifest), backbone.spec.feature_dim)
    assert (first.computed, first.reused) == (len(manifest), 0)
    assert list(first.index) == list(manifest.index)
    again = _extract(settings, manifest, backbone)
    assert (again.computed, again.reused) == (0, len(manifest))
    assert np.array_equal(again.features, first.features)


def test_renamed_or_moved_images_hit_the_cache(smoke, tmp_path):
    settings, manifest, backbone = smoke
    _extract(settings, manifest, backbone)
    moved = manifest.copy()
    for row in moved.itertuples():
        target = tmp_path / "elsewhere" / f"renamed-{row.Index}.jpg"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(row.path, target)
        moved.at[row.Index, "path"] = target
    assert _extract(settings, moved, backbone).computed == 0


def test_a_changed_image_misses_the_cache(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    drawing = synthetic.draw_lesion("malignant", np.random.default_rng(99))
    drawing.save(manifest["path"].iloc[0], "JPEG")  # the file changes; the manifest does not
    result = _extract(settings, manifest, backbone)
    assert (result.computed, result.reused) == (1, len(manifest) - 1)
    assert not np.allclose(result.features[0], first.features[0])


def test_an_image_replaced_by_another_gets_that_ones_features(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    shutil.copy(manifest["path"].iloc[1], manifest["path"].iloc[0])
    result = _extract(settings, manifest, backbone)
    assert result.computed == 0
    assert np.array_equal(result.features[0], first.features[1])


def test_cache_folders_differ_by_backbone_and_preprocessing(smoke):
    _, _, backbone = smoke
    key = features.cache_key(backbone, features.Preprocessing())
    assert key == features.cache_key(backbone, features.Preprocessing())
    other_weights = dataclasses.replace(backbone, identity="folder:0123")
    other_size = dataclasses.replace(backbone, spec=dataclasses.replace(backbone.spec, input_size=96))
    others = {features.cache_key(other_weights, features.Preprocessing()),
              features.cache_key(other_size, features.Preprocessing()),
              features.cache_key(backbone, features.Preprocessing(method="nearest")),
              features.cache_key(backbone, features.Preprocessing(antialias=False)),
              features.cache_key(backbone, features.Preprocessing(crop=True)),
              features.cache_key(backbone, features.Preprocessing(resolution=64)),
              features.cache_key(backbone, features.Preprocessing(colour="shades_of_gray"))}
    assert key not in others and len(others) == 7


def test_caches_of_the_original_preprocessing_keep_their_folder(smoke):
    _, _, backbone = smoke
    import hashlib
    import json

    before = {"format": features.FORMAT, "backbone": backbone.identity,  # the key before crop & co.
              "input_size": backbone.spec.input_size, "value_range": [0.0, 1.0],
              "method": "bilinear", "antialias": True}
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert features.cache_key(backbone, features.Preprocessing()).endswith(digest)


def _image(pixels: np.ndarray):
    import tensorflow as tf

    return tf.constant(pixels, dtype=tf.float32)


def test_centre_crop_keeps_the_middle_square_unsqueezed():
    pixels = np.zeros((40, 80, 3), np.float32)
    pixels[:, 20:60] = 1.0  # a white square in the middle of a black 2:1 picture
    whole = preprocessing.prepare(_image(pixels), 40).numpy()
    cropped = preprocessing.prepare(_image(pixels), 40, features.Preprocessing(crop=True)).numpy()
    assert cropped.min() > 0.99  # only the white middle is left
    assert whole.mean() == pytest.approx(0.5, abs=0.02)  # squeezed: black sides still there


def test_a_common_resolution_removes_fine_detail():
    pixels = np.tile(np.array([0.0, 1.0], np.float32), 32)[None, :, None] * np.ones((64, 1, 3), np.float32)
    sharp = preprocessing.prepare(_image(pixels), 64).numpy()
    coarse = preprocessing.prepare(_image(pixels), 64, features.Preprocessing(resolution=16)).numpy()
    assert sharp.std() > 0.4 and coarse.std() < 0.05  # one-pixel stripes are gone at 16 pixels


def test_shades_of_gray_removes_a_colour_cast():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.8, (32, 32, 1)) * np.ones((1, 1, 3))
    cast = (scene * np.array([0.9, 0.6, 0.4])).astype(np.float32)  # the same scene under warm light
    fixed = preprocessing.prepare(_image(cast), 32, features.Preprocessing(colour="shades_of_gray")).numpy()
    means = fixed.reshape(-1, 3).mean(axis=0)
    assert means.max() - means.min() < 0.01  # grey again
    grey = preprocessing.shades_of_gray(_image(scene.astype(np.float32))).numpy()
    np.testing.assert_allclose(grey, scene, atol=1e-3)  # a grey scene is left as it is


def test_preprocessing_settings_are_checked_and_described():
    with pytest.raises(ValueError, match="shades_of_gray"):
        features.Preprocessing(colour="grey world")
    with pytest.raises(ValueError, match="at least 8"):
        features.Preprocessing(resolution=2)
    assert features.Preprocessing().describe() == "the whole image, resized to the network's input (bilinear)"
    assert features.Preprocessing(crop=True, resolution=64, colour="shades_of_gray").describe() == (
        "the centre square, scaled to 64 pixels, then to the network's input, shades of gray colour "
        "constancy (bilinear)")


def test_a_corrupt_shard_is_reported_and_recomputed(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    shard = next(settings.bottleneck_dir.rglob("shard-*.npz"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the stored features
    shard.write_bytes(bytes(data))
    repaired = _extract(settings, manifest, backbone)
    assert repaired.repaired and "corrupt" in repaired.repaired[0]
    assert repaired.computed == len(manifest)
    assert np.allclose(repaired.features, first.features)


def test_a_truncated_shard_is_recomputed(smoke):
    settings, manifest, backbone = smoke
    _extract(settings, manifest, backbone)
    shard = next(settings.bottleneck_dir.rglob("shard-*.npz"))
    shard.write_bytes(shard.read_bytes()[:100])
    assert _extract(settings, manifest, backbone).computed == len(manifest)


def test_an_interrupted_run_keeps_its_finished_shards(smoke, monkeypatch):
    settings, manifest, backbone = smoke
    monkeypatch.setattr(features, "SHARD_ROWS", 16)
    calls = {"n": 0}

    def flaky(images):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the learner pressed stop during the fourth batch
        return backbone.model(images)

    with pytest.raises(KeyboardInterrupt):
        features.extract(manifest, backbone, settings.bottleneck_dir, network=flaky, progress=False,
                         batch_size=8)
    resumed = _extract(settings, manifest, backbone)
    # three batches of 8 were done: 16 rows went to a shard when it was full, the other 8 on
    # the way out of the interrupted run; none of the 24 is computed again
    assert resumed.reused == 24 and resumed.computed == len(manifest) - 24


def test_unreadable_images_are_reported_and_skipped(smoke):
    settings, manifest, backbone = smoke
    broken = manifest.copy()
    broken.at[broken.index[0], "path"].write_bytes(b"no longer a picture")
    broken.at[broken.index[1], "path"].unlink()
    result = _extract(settings, broken, backbone)
    assert len(result.features) == len(manifest) - 2
    reasons = dict(zip(result.failed["image_id"], result.failed["reason"]))
    assert reasons[broken["image_id"].iloc[0]] == "could not be decoded"
    assert reasons[broken["image_id"].iloc[1]].startswith("unreadable file")
    assert broken.index[0] not in result.index and broken.index[1] not in result.index
    assert list(result.index) == list(broken.index[2:])  # rows stay aligned with their images


def test_a_pipeline_and_network_of_ones_own_fill_the_same_cache(smoke):
    """Notebook 03 writes its own ``load`` and loads the network itself with hub.load: what they
    compute is what the library's defaults compute (with LiteRT on a CPU: the same to within
    float32 rounding), stored under the same entries."""
    import tensorflow as tf
    import tensorflow_hub as hub

    settings, manifest, backbone = smoke
    network = hub.load(str(backbone.folder))

    def load(path):
        image = tf.image.convert_image_dtype(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), tf.float32)
        return preprocessing.prepare(image, backbone.spec.input_size, settings.preprocessing)

    own = _extract(settings, manifest, backbone, network=network, load=load,
                   preprocessing=settings.preprocessing)
    assert own.computed == len(manifest)
    shutil.rmtree(settings.bottleneck_dir)
    library = _extract(settings, manifest, backbone, preprocessing=settings.preprocessing)
    np.testing.assert_allclose(own.features, library.features, atol=1e-5)


def test_the_tiny_stand_in_is_a_savedmodel_like_any_other(smoke):
    import tensorflow_hub as hub

    settings, manifest, backbone = smoke
    assert (backbone.folder / "saved_model.pb").is_file()
    assert backbones.fetch(settings).folder == backbone.folder  # saved once, then found
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(hub.load(str(backbone.folder))(images), backbone(images), atol=1e-6)


def test_registry_names_and_handles_resolve():
    assert backbones.resolve("mobilenet_v2_100_224").input_size == 224
    assert backbones.resolve("inception_v3").input_size == 299
    handle = backbones.REGISTRY["mobilenet_v3_small_100_224"].handle
    assert backbones.resolve(handle).name == "mobilenet_v3_small_100_224"
    with pytest.raises(backbones.BackboneUnavailable, match="registry name"):
        backbones.resolve("resnet_9000")


def test_offline_handle_fails_with_the_local_alternative(make_settings, monkeypatch):
    asked = []
    monkeypatch.setattr(backbones.net, "probe", lambda url: asked.append(url) or "failed to resolve")
    settings = make_settings(backbone="mobilenet_v3_small_100_224")
    with pytest.raises(backbones.BackboneUnavailable) as raised:
        backbones.load(settings)
    assert asked == [backbones.REGISTRY["mobilenet_v3_small_100_224"].handle]
    assert "LESIONLIB_BACKBONE" in str(raised.value) and "shared/weights" in str(raised.value)
    assert os.environ["TFHUB_CACHE_DIR"] == str(settings.tfhub_cache_dir)


def test_a_cached_handle_loads_without_network(make_settings, tmp_path):
    """A handle whose download is already in data/cache/tfhub/ loads offline (here: a tiny model)."""
    import hashlib

    import tensorflow as tf

    handle = "https://tfhub.dev/example/not-reachable-here/1"
    settings = make_settings(backbone=handle)
    module = tf.Module()
    module.__call__ = tf.function(lambda images: tf.reduce_mean(images, axis=[1, 2]),
                                  input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    tf.saved_model.save(module, str(settings.tfhub_cache_dir / hashlib.sha1(handle.encode()).hexdigest()))
    backbone = backbones.load(settings)
    assert (backbone.spec.input_size, backbone.spec.feature_dim) == (32, 3)
    assert backbone.identity == handle


def test_a_head_finds_the_network_it_was_trained_on(make_settings):
    """Notebooks 04 and 05 load the profile's backbone for a frozen head, and notebook 03's saved
    fine-tuned network for a fine-tuned one; a missing one is an error naming notebook 03."""
    import tensorflow as tf

    settings = make_settings(profile="smoke")
    frozen = backbones.of_head(settings, {"backbone": {"name": "tiny"}})
    assert frozen.identity == backbones.load(settings).identity
    record = {"backbone": {"fine_tuned": {"first_block": 16}}}
    with pytest.raises(backbones.BackboneUnavailable, match="notebook 03 again"):
        backbones.of_head(settings, record)
    module = tf.Module()
    module.__call__ = tf.function(lambda images: tf.reduce_max(images, axis=[1, 2]),
                                  input_signature=[tf.TensorSpec([None, 48, 48, 3], tf.float32)])
    tf.saved_model.save(module, str(settings.fine_tuned_dir))
    tuned = backbones.of_head(settings, record)
    assert tuned.folder == settings.fine_tuned_dir and tuned.identity.startswith("folder:")
    assert (tuned.spec.input_size, tuned.spec.feature_dim) == (48, 3)


def test_fine_tuning_weights_are_a_file_none_or_downloaded_once(make_settings, monkeypatch, tmp_path):
    """LESIONLIB_KERAS_WEIGHTS: a local file is used as it is, 'none' means random weights, and
    'imagenet' is downloaded once into data/cache/keras/ (here from a loopback server)."""
    import functools
    import http.server
    import threading

    weights = tmp_path / "served" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights, but bytes to download")
    assert backbones.keras_weights(make_settings(keras_weights=str(weights))) == str(weights)
    assert backbones.keras_weights(make_settings(keras_weights="none")) is None
    assert backbones.keras_weights(make_settings(profile="smoke")) is None

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(weights.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(backbones, "KERAS_WEIGHTS", f"http://127.0.0.1:{server.server_port}/")
        settings = make_settings(data_source="synthetic")
        found = backbones.keras_weights(settings)
        assert found == str(settings.cache_dir / "keras" / weights.name)
        assert open(found, "rb").read() == weights.read_bytes()
    finally:
        server.shutdown()
    assert backbones.keras_weights(settings) == found  # the server is gone: the cached copy serves


def test_fine_tuning_weights_offline_say_where_to_point(make_settings, monkeypatch):
    monkeypatch.setattr(backbones.net, "probe", lambda url: "failed to resolve")
    with pytest.raises(backbones.BackboneUnavailable, match="LESIONLIB_KERAS_WEIGHTS"):
        backbones.keras_weights(make_settings(data_source="synthetic"))
    with pytest.raises(SettingsError, match="no file at"):
        make_settings(keras_weights="missing.weights.h5")


def _cache_folder(settings, backbone):
    return settings.bottleneck_dir / features.cache_key(backbone, features.ORIGINAL)


def test_a_valid_shard_of_the_wrong_width_is_reported_and_recomputed(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    folder = _cache_folder(settings, backbone)
    (good,) = folder.glob("shard-*.npz")
    with np.load(good) as stored:
        ids = stored["ids"]
    narrow = folder / "shard-9999999999999999999-narrow00.npz"  # the newest: it would win
    np.savez(narrow, ids=ids, features=np.ones((len(ids), 5), np.float32))
    result = _extract(settings, manifest, backbone)
    assert result.features.shape == (len(manifest), backbone.spec.feature_dim)
    assert np.array_equal(result.features, first.features) and result.reused == len(manifest)
    assert len(result.repaired) == 1 and narrow.name in result.repaired[0]
    assert "5 features, the network gives 78" in result.repaired[0]
    assert not narrow.exists() and good.exists()  # the bad one removed, the good one kept


def test_a_wrong_width_everywhere_is_recomputed(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    folder = _cache_folder(settings, backbone)
    (good,) = folder.glob("shard-*.npz")
    with np.load(good) as stored:
        ids = stored["ids"]
    np.savez(good, ids=ids, features=np.ones((len(ids), 5), np.float32))  # the only shard
    result = _extract(settings, manifest, backbone)
    assert result.computed == len(manifest) and np.allclose(result.features, first.features)
    assert result.repaired and "the network gives 78" in result.repaired[0]


def test_odd_things_under_a_shards_name_are_reported_not_raised(smoke):
    settings, manifest, backbone = smoke
    first = _extract(settings, manifest, backbone)
    folder = _cache_folder(settings, backbone)
    (good,) = folder.glob("shard-*.npz")
    odd = {kind: folder / f"shard-0-{kind}.npz" for kind in ("npy", "folder", "full", "keys", "numbers")}
    with odd["npy"].open("wb") as out:
        np.save(out, np.ones((3, 78), np.float32))
    odd["folder"].mkdir()
    odd["full"].mkdir()
    (odd["full"] / "notes.txt").write_text("a learner's own file")
    np.savez(odd["keys"], names=np.array(["a"]), vectors=np.ones((1, 78), np.float32))
    np.savez(odd["numbers"], ids=np.arange(3), features=np.ones((3, 78), np.float32))
    result = _extract(settings, manifest, backbone)
    assert (result.reused, result.computed) == (len(manifest), 0)
    assert np.array_equal(result.features, first.features)
    assert len(result.repaired) == len(odd)
    for kind, path in odd.items():
        (note,) = [r for r in result.repaired if r.startswith(path.name)]
        assert "corrupt" in note
        if kind == "full":  # never a folder's contents: said, and left
            assert (path / "notes.txt").exists() and f"delete {path}" in note
        else:
            assert not path.exists()
    assert good.exists()


@pytest.mark.parametrize("how", ["parent is a file", "replace refused"])
def test_an_unwritable_cache_warns_once_before_computing_and_returns_the_features(smoke, monkeypatch, how):
    settings, manifest, backbone = smoke
    reference = _extract(settings, manifest, backbone)
    shutil.rmtree(settings.bottleneck_dir)
    if how == "parent is a file":  # root ignores chmod: make the folder impossible instead
        settings.bottleneck_dir.write_text("not a folder")
    else:
        def refuse(source, target):
            raise PermissionError(13, "Permission denied", str(target))
        monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(features, "SHARD_ROWS", 8)  # several shards would be written
    order = []

    def network(images):
        order.append("computed")
        return backbone.model(images)

    original = features.warnings.warn
    monkeypatch.setattr(features.warnings, "warn",
                        lambda *a, **k: (order.append("warned"), original(*a, **k)))
    with pytest.warns(features.CacheNotWritable) as warned:
        result = _extract(settings, manifest, backbone, network=network, batch_size=8)
    assert len(warned) == 1 and order[0] == "warned" and order.count("warned") == 1
    message = str(warned[0].message)
    folder = _cache_folder(settings, backbone)
    assert str(folder) in message and "LESIONLIB_HOME" in message and "not kept" in message
    assert result.computed == len(manifest) and np.allclose(result.features, reference.features)
    assert result.unsaved == message and "NOT CACHED" in result.summary()
    if how == "parent is a file":
        assert settings.bottleneck_dir.read_text() == "not a folder"  # nothing else touched
    else:
        assert not list(folder.iterdir())  # no shard, no probe, no temporary left behind


def test_a_shard_that_cannot_be_removed_is_named_with_the_fix(smoke, monkeypatch):
    settings, manifest, backbone = smoke
    _extract(settings, manifest, backbone)
    (shard,) = _cache_folder(settings, backbone).glob("shard-*.npz")
    shard.write_bytes(b"garbage")

    unlink = type(shard).unlink

    def refuse(self, missing_ok=False):
        if self == shard:
            raise PermissionError(13, "Permission denied", str(self))
        return unlink(self, missing_ok)

    monkeypatch.setattr(type(shard), "unlink", refuse)
    result = _extract(settings, manifest, backbone)
    assert result.computed == len(manifest)
    assert "could not be removed (Permission denied" in result.repaired[0]
    assert f"delete {shard}" in result.repaired[0]
