"""The head: trained on bottlenecks (on real ones in tests/test_packs.py), repeatable, saved
with what the original wrote."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionlib import backbones, dataset, features, splits, training
from lesionlib.taxonomy import CLASSES


def test_scores_of_an_empty_part_are_none_not_an_error():
    trained = training.TrainedHead(model=None, history=pd.DataFrame(), best_epoch=0)
    empty = (np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64))
    assert training.scores(trained, *empty) == {"images": 0, "accuracy": None,
                                                "balanced accuracy": None}


def test_class_weights_balance_present_classes():
    y = np.array([0] * 6 + [2] * 2)
    assert training.class_weights(y) == {0: 8 / (2 * 6), 1: 1.0, 2: 8 / (2 * 2)}


def _trained(settings, **config):
    manifest = dataset.prepare(settings, progress=False).manifest
    bottlenecks = features.extract(manifest, backbones.load(settings), settings.bottleneck_dir,
                                   progress=False)
    part = splits.grouped_split(manifest, seed=settings.seed)
    head = training.train_head(training.arrays(bottlenecks, manifest, part, "train"),
                               training.arrays(bottlenecks, manifest, part, "validation"),
                               training.HeadConfig(**config))
    return head, training.scores(head, *training.arrays(bottlenecks, manifest, part, "test"))


def test_training_is_repeatable_and_learns_the_smoke_set(make_settings):
    settings = make_settings(profile="smoke")
    first, first_scores = _trained(settings)
    second, second_scores = _trained(settings)
    assert first_scores == second_scores
    assert first.history.equals(second.history)
    assert first_scores["balanced accuracy"] > 0.6  # the drawings are easy to tell apart


def test_arrays_keep_features_and_labels_together():
    manifest = pd.DataFrame({"label": ["benign", "malignant", "indeterminate", "benign"]},
                            index=[10, 11, 12, 13])
    part = pd.Series(["train", "train", "test", "validation"], index=manifest.index)
    # rows as extract() returns them: image 11 failed
    bottlenecks = features.Bottlenecks(features=np.array([[10.0], [12.0], [13.0]], dtype=np.float32),
                                       index=pd.Index([10, 12, 13]))
    x, y = training.arrays(bottlenecks, manifest, part, "train")
    assert x[:, 0].tolist() == [10.0] and y.tolist() == [0]
    x, y = training.arrays(bottlenecks, manifest, part, "test")
    assert x[:, 0].tolist() == [12.0] and y.tolist() == [CLASSES.index("indeterminate")]
    x, _ = training.arrays(bottlenecks, manifest, part, "validation")
    assert x[:, 0].tolist() == [13.0]


def test_the_head_is_notebook_03s_and_its_l2_is_the_configs():
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(50, 6)).astype("float32")
    head = training.build_head(x, training.HeadConfig(l2=0.5, dropout=0.25))
    assert [layer.name for layer in head.layers] == ["standardize", "dropout", "probabilities"]
    assert head.get_layer("dropout").rate == 0.25
    assert head.get_layer("probabilities").kernel_regularizer.l2 == pytest.approx(0.5)
    standardized = head.get_layer("standardize")(x).numpy()
    assert abs(standardized.mean()) < 1e-4 and standardized.std() == pytest.approx(1.0, abs=1e-3)


def test_saved_head_reloads_with_labels_and_record(make_settings):
    settings = make_settings(profile="smoke")
    head, scores = _trained(settings, epochs=5)
    folder = training.save_head(head.model, head.history, settings.head_dir, {"test": scores})
    assert (folder / "labels.txt").read_text().split() == list(CLASSES)
    loaded, record = training.load_head(folder)
    assert record == {"test": scores}
    history = pd.read_csv(folder / "history.csv", index_col="epoch")
    assert list(history.index) == list(head.history.index) and "val_loss" in history
    probe = np.random.default_rng(0).normal(size=(4, head.model.input_shape[-1])).astype("float32")
    assert np.allclose(training.probabilities(loaded, probe), training.probabilities(head, probe), atol=1e-6)


def test_loading_without_a_trained_head_says_what_to_run(tmp_path):
    with pytest.raises(training.ManifestError, match="Run notebook 03"):
        training.load_head(tmp_path)


def test_the_malignant_auc_metric_agrees_with_the_evaluation():
    from lesionlib import evaluation

    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), 400)
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), 400)
    probabilities[labels == CLASSES.index("malignant"), CLASSES.index("malignant")] += 0.3  # some signal
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    metric = training.malignant_auc()
    metric.update_state(labels, probabilities.astype("float32"))
    table = pd.DataFrame({"label": np.array(CLASSES)[labels],
                          **{f"p_{name}": probabilities[:, i] for i, name in enumerate(CLASSES)}})
    assert float(metric.result()) == pytest.approx(evaluation.malignant_auc(table), abs=2e-3)
    assert 0.6 < float(metric.result()) < 0.95
