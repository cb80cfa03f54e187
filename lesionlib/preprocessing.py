"""How an image file becomes a network's input: the settings (:class:`Preprocessing`) and the
TensorFlow functions that apply them (:func:`decode`, :func:`prepare`).

The same functions prepare the training images (notebook 03's pipeline) and, inside the
exported model, a deployed model's images (notebook 05), so both see an image alike.
TensorFlow is imported only when they run: profiles name their defaults without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tfutil import import_tensorflow

COLOUR_CONSTANCY = ("none", "shades_of_gray")


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the network's input. Part of the cache key.

    The defaults are the original ``retrain.py``'s: the whole image resized to the network's
    square input. The other steps exist because images from another clinic differ in framing,
    sharpness and light (notebook 06 measures what each does):

    * ``crop``: cut the centre square first, so a 4:3 photo is not squeezed;
    * ``resolution``: scale to this many pixels a side first, then up to the network's input,
      so that every source is seen with the same (low) level of detail;
    * ``colour``: ``"shades_of_gray"`` divides out the colour of the light (Finlayson and
      Trezzi, 2004, with p = 6), as the ISIC 2019 challenge's winners did.
    """

    method: str = "bilinear"
    antialias: bool = True
    crop: bool = False
    resolution: int | None = None
    colour: str = "none"

    def describe(self) -> str:
        """In words, for tables and the model card."""
        steps = ["the centre square" if self.crop else "the whole image"]
        if self.resolution:
            steps.append(f"scaled to {self.resolution} pixels, then to the network's input")
        else:
            steps.append("resized to the network's input")
        if self.colour != "none":
            steps.append(self.colour.replace("_", " ") + " colour constancy")
        return ", ".join(steps) + f" ({self.method})"

    def __post_init__(self) -> None:
        if self.colour not in COLOUR_CONSTANCY:
            raise ValueError(f"colour={self.colour!r}: use one of {', '.join(COLOUR_CONSTANCY)}.")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution={self.resolution}: use None or at least 8 pixels.")


ORIGINAL = Preprocessing()  # the original retrain.py's way: the whole image, resized


def preprocessing_of(record: dict) -> Preprocessing:
    """The preprocessing a head was trained with, from its record (``training.json``). Records
    written before preprocessing had settings used the defaults."""
    return Preprocessing(**record.get("preprocessing", {}))


def decode(encoded):
    """Encoded image bytes (JPEG, PNG, GIF or BMP) as a ``[height, width, 3]`` float tensor in [0, 1]."""
    tf = import_tensorflow()
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.image.convert_image_dtype(image, tf.float32)


def shades_of_gray(image, power: float = 6.0):
    """``image`` (``[h, w, 3]`` in [0, 1]) as if lit by white light: each channel divided by
    its ``power``-mean, normalised so that a grey image stays as it is."""
    tf = import_tensorflow()
    illuminant = tf.reduce_mean(tf.pow(image + 1e-6, power), axis=[0, 1]) ** (1.0 / power)
    illuminant = illuminant / (tf.norm(illuminant) + 1e-6) * tf.sqrt(3.0)
    return tf.clip_by_value(image / (illuminant + 1e-6), 0.0, 1.0)


def prepare(image, size: int, preprocessing: Preprocessing = ORIGINAL):
    """A decoded image (``[h, w, 3]`` in [0, 1]) as the network's square ``[size, size, 3]``
    input, as :class:`Preprocessing` says: centre crop, common resolution, resize, colour
    constancy."""
    tf = import_tensorflow()
    if preprocessing.crop:
        shape = tf.shape(image)
        side = tf.minimum(shape[0], shape[1])
        image = tf.image.resize_with_crop_or_pad(image, side, side)
    if preprocessing.resolution:  # always antialiased: shrinking without it keeps noise, not detail
        image = tf.image.resize(image, [preprocessing.resolution] * 2, method=preprocessing.method,
                                antialias=True)
    image = tf.image.resize(image, [size, size], method=preprocessing.method,
                            antialias=preprocessing.antialias)
    image.set_shape([size, size, 3])
    if preprocessing.colour == "shades_of_gray":
        image = shades_of_gray(image)
    return image
