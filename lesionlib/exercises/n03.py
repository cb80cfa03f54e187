"""Checks for notebook 03's exercises: a pipeline step, class weights, a hidden layer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..taxonomy import CLASSES
from ..tfutil import import_tensorflow
from ..training import class_weights
from . import passed, require, unanswered


def mirror(function: Callable) -> None:
    """``function(image)`` mirrors a ``[height, width, 3]`` image left to right."""
    tf = import_tensorflow()
    image = tf.constant(np.random.default_rng(3).uniform(size=(5, 7, 3)), tf.float32)
    result = function(image)
    if unanswered(result):
        return
    result = np.asarray(result)
    require(result.shape == (5, 7, 3), f"An image of shape (5, 7, 3) came back as {result.shape}: "
                                       "mirroring keeps the shape.")
    require(not np.allclose(result, image.numpy()[::-1]), "That is upside down: mirror left to "
                                                          "right, along the width (axis 1).")
    require(np.allclose(result, image.numpy()[:, ::-1]), "The pixels are not those of the image "
                                                         "mirrored left to right (along axis 1).")
    passed("The same lesion, seen in a mirror: a map step any pipeline can take.")


def class_weight(answer: dict, y_train: np.ndarray) -> None:
    """``answer`` is ``training.class_weights(y_train)``, computed by hand."""
    if unanswered(answer):
        return
    expected = class_weights(np.asarray(y_train))
    require(isinstance(answer, dict) and set(answer) == set(range(len(CLASSES))),
            f"Give a dict with one weight per class index: {list(range(len(CLASSES)))}.")
    wrong = [c for c in expected if not np.isclose(float(answer[c]), expected[c], rtol=1e-4)]
    counts = np.bincount(np.asarray(y_train), minlength=len(CLASSES))
    shaped = [c for c in wrong if counts[c]]
    require(not shaped or not all(np.isclose(float(answer[c]), 1 / counts[c]) for c in shaped),
            "1 / count is the right shape, but scale it: multiply by images / classes present, "
            "so an image of an average class weighs about 1.")
    if wrong:
        require(False, f"The weight of class {CLASSES[wrong[0]]!r} is not right: images / (classes "
                       "present x images of that class).")
    passed("Each class now pulls on the head as hard as the others, however many images it has.")


def hidden_layer(model, x_train: np.ndarray) -> None:
    """``model`` is a Keras head with a 64-unit ReLU hidden layer before a softmax over the classes."""
    if unanswered(model):
        return
    import keras

    require(isinstance(model, keras.Model), "deeper should be a Keras model, e.g. keras.Sequential([...]).")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    require(len(dense) == 2, f"The head should have two Dense layers (hidden, then softmax); it has {len(dense)}.")
    hidden, last = dense
    require(hidden.units == 64 and hidden.activation is keras.activations.relu,
            "The hidden layer should have 64 units with the ReLU activation.")
    require(last.units == len(CLASSES) and last.activation is keras.activations.softmax,
            f"The last layer should give {len(CLASSES)} probabilities with a softmax.")
    require(getattr(model, "optimizer", None) is not None, "Compile it, as make_head does, before training it.")
    out = np.asarray(model(np.asarray(x_train[:4], np.float32), training=False))
    require(out.shape == (min(4, len(x_train)), len(CLASSES)) and np.allclose(out.sum(axis=1), 1, atol=1e-4),
            "Called on bottlenecks, the model should return one probability per class, summing to 1.")
    passed("A hidden layer gives the head more to learn with; judge it on validation, as above.")
