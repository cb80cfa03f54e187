"""How a decoded image becomes a network's input: the settings, in one small dataclass.

The TensorFlow code that applies them is :func:`lesionlib.features.to_input`; keeping the
settings here lets profiles name their defaults without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

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
