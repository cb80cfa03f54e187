"""Reading one image file safely: check it, hash it, and turn it into upright 8-bit RGB.

Every image enters the course through :func:`inspect_image`. A file that cannot be used is
never an exception for the caller: it comes back as a :class:`Rejected` with a reason that a
learner can act on. Accepted images of any mode (grayscale, palette, CMYK, alpha, 16-bit,
EXIF-rotated) are converted the same way, by :func:`to_rgb`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Reasons, as they appear in the rejection table.
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated or corrupt image"
TOO_LARGE = "too many pixels (possible decompression bomb)"
UNREADABLE = "unreadable file"
DUPLICATE = "duplicate of another image"
STREAKED = "streaked (rows or columns smeared across the image: a broken conversion)"
STREAK_RATIO = 0.25  # HAM10000's 10,015 images all score above 0.33; broken thumbnails below 0.25
# What to do about a file refused for each reason (for messages about one file).
FIXES = {
    EMPTY: "copy or download it again",
    NOT_AN_IMAGE: "give a JPEG or PNG image",
    TRUNCATED: "the file is damaged or cut short: copy or download it again",
    TOO_LARGE: "scale it down first",
    UNREADABLE: "check the path and that the file can be read",
    STREAKED: "get the original image again; this copy was damaged when it was converted",
}

# Colour used under transparent pixels: white, as an image viewer shows them.
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Checked:
    """An image that can be used, with what the manifest records about it."""

    path: Path
    sha256: str
    width: int
    height: int
    needs_conversion: bool  # False when the file is already an upright 8-bit RGB JPEG


@dataclass(frozen=True)
class Rejected:
    """A file that cannot be used, and why."""

    path: Path
    reason: str
    detail: str = ""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode ``data``; raise ``_Refusal`` with a reason when it is unusable."""
    # Decoders raise many kinds of errors on malformed input; each means "corrupt" here.
    try:
        with warnings.catch_warnings():  # the size is checked below, against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _Refusal(NOT_AN_IMAGE, "no image format recognised") from None
    except Image.DecompressionBombError as error:
        raise _Refusal(TOO_LARGE, str(error)) from None
    except Exception as error:  # noqa: BLE001
        raise _Refusal(TRUNCATED, f"{type(error).__name__}: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise _Refusal(TOO_LARGE, f"{width}x{height} is over {max_pixels:,} pixels")
    try:
        image.load()
    except Exception as error:  # noqa: BLE001
        raise _Refusal(TRUNCATED, f"{type(error).__name__}: {error}") from None
    return image


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def inspect_image(path: Path, max_pixels: int = Image.MAX_IMAGE_PIXELS) -> Checked | Rejected:
    """Check one file: readable, non-empty, an image, complete and not absurdly large."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        return Rejected(path, UNREADABLE, error.strerror or str(error))
    return inspect_bytes(data, path, max_pixels)


def inspect_bytes(data: bytes, path: Path, max_pixels: int = Image.MAX_IMAGE_PIXELS) -> Checked | Rejected:
    """:func:`inspect_image` for a file's bytes already in memory (an upload, say); ``path``
    names it in the result."""
    if not data:
        return Rejected(path, EMPTY, "0 bytes")
    try:
        image = _open_checked(data, max_pixels)
    except _Refusal as refusal:
        return Rejected(path, refusal.reason, refusal.detail)
    ratio = streak_ratio(image)
    if ratio < STREAK_RATIO:
        return Rejected(path, STREAKED, f"detail across the streaks is {ratio:.2f} of the detail "
                                        f"along them (below {STREAK_RATIO})")
    upright = image.getexif().get(0x0112, 1) in (0, 1)  # EXIF orientation tag
    ready = image.format == "JPEG" and image.mode == "RGB" and upright
    width, height = image.size if upright else ImageOps.exif_transpose(image).size
    return Checked(path, hashlib.sha256(data).hexdigest(), width, height, not ready)


def streak_ratio(image: Image.Image) -> float:
    """How much an image changes from row to row against column to column (the smaller over
    the larger, so 1 is balanced). A photograph of skin scores about 1; a thumbnail broken by
    repeating one row or column down the image scores near 0. Flat or tiny images score 1."""
    grey = to_rgb(image).convert("L")
    grey.thumbnail((256, 256))
    pixels = np.asarray(grey, dtype=np.float32)
    if min(pixels.shape) < 8:
        return 1.0
    down = np.abs(np.diff(pixels, axis=0)).mean()
    across = np.abs(np.diff(pixels, axis=1)).mean()
    if max(down, across) < 0.1:  # no detail either way (a flat image): not a streak
        return 1.0
    return float(min(down, across) / max(down, across))


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, 16-bit scaled, alpha laid on white, CMYK converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit (Pillow also opens 16-bit PNGs as 32-bit "I"): scale 0..65535 onto 0..255.
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        background = Image.new("RGB", image.size, BACKGROUND)
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Open a file and return it as upright 8-bit RGB (for files already accepted)."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)
