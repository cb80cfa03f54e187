"""The smoke profile's stand-in for an ImageNet network: fixed image statistics, no weights.

It maps ``[N, 64, 64, 3]`` images in ``[0, 1]`` to 78 numbers each: the mean colour of a 4x4
grid of cells (48), the mean and spread of each channel (6) and an 8-bin histogram of each
channel (24). That is enough to tell the synthetic drawings apart and nothing more; it lets
every notebook run in seconds, offline, with the same code as a real backbone.
"""

from __future__ import annotations

import tensorflow as tf

BINS = 8


class TinyFeatures(tf.Module):
    def __init__(self, input_size: int = 64) -> None:
        super().__init__(name="tiny_features")
        self.input_size = input_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        cell = self.input_size // 4  # average pooling, not resize "area": TFLite has no ResizeArea
        grid = tf.nn.avg_pool2d(images, ksize=[cell, cell], strides=[cell, cell], padding="VALID")
        cells = tf.reshape(grid, [-1, 48])
        mean = tf.reduce_mean(images, axis=[1, 2])
        spread = tf.math.reduce_std(images, axis=[1, 2])
        bins = tf.cast(tf.clip_by_value(images * BINS, 0, BINS - 1), tf.int32)
        onehot = tf.one_hot(bins, BINS)  # [N, H, W, 3, BINS]
        histogram = tf.reshape(tf.reduce_mean(onehot, axis=[1, 2]), [-1, 3 * BINS])
        return tf.concat([cells, mean, spread, histogram], axis=1)
