"""Notebook 03's checks: right answers pass, placeholders are reported, wrong answers are refused."""

from __future__ import annotations

import numpy as np
import pytest

from lesionlib import training
from lesionlib.exercises import NotRight, n03


def test_mirror(capsys):
    import tensorflow as tf

    n03.mirror(lambda image: tf.image.flip_left_right(image))
    assert "✓" in capsys.readouterr().out
    n03.mirror(lambda image: None)  # the placeholder's `...` returns None
    assert "Not answered yet" in capsys.readouterr().out
    with pytest.raises(NotRight, match="upside down"):
        n03.mirror(lambda image: tf.image.flip_up_down(image))
    with pytest.raises(NotRight, match="shape"):
        n03.mirror(lambda image: tf.transpose(image, [1, 0, 2]))


def test_class_weight(capsys):
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    n03.class_weight(training.class_weights(y), y)
    assert "✓" in capsys.readouterr().out
    n03.class_weight(..., y)
    assert "Not answered yet" in capsys.readouterr().out
    with pytest.raises(NotRight, match="scale it"):
        n03.class_weight({0: 1 / 6, 1: 1 / 3, 2: 1.0}, y)
    with pytest.raises(NotRight, match="one weight per class"):
        n03.class_weight({0: 1.0, 1: 1.0}, y)
    missing = np.array([0, 0, 2])  # no image of class 1: its weight is 1
    with pytest.raises(NotRight, match="indeterminate"):
        n03.class_weight({0: 0.75, 1: 0.0, 2: 1.5}, missing)


def _head(hidden: int | None, activation: str = "relu", compiled: bool = True):
    import keras

    layers = [keras.Input((6,)), keras.layers.Dropout(0.5)]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation=activation))
    layers.append(keras.layers.Dense(3, activation="softmax"))
    model = keras.Sequential(layers)
    if compiled:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_hidden_layer(capsys):
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    n03.hidden_layer(_head(64), x)
    assert "✓" in capsys.readouterr().out
    n03.hidden_layer(..., x)
    assert "Not answered yet" in capsys.readouterr().out
    with pytest.raises(NotRight, match="two Dense layers"):
        n03.hidden_layer(_head(None), x)
    with pytest.raises(NotRight, match="64 units"):
        n03.hidden_layer(_head(64, "sigmoid"), x)
    with pytest.raises(NotRight, match="Compile"):
        n03.hidden_layer(_head(64, compiled=False), x)
