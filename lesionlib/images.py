"""Reading one image file safely: check it, hash it, and turn it into upright 8-bit RGB.

Every image enters the course through :func:`inspect_image`. A file that cannot be used is
never an exception for the caller: it comes back as a :class:`Rejected` with a reason that a
learner can act on. Accepted images of any mode (grayscale, palette, CMYK, alpha, 16-bit,
EXIF-rotated) are converted the same way, by :func:`to_rgb`.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Reasons, as they appear in the rejection table.
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated or corrupt image"
TOO_LARGE = "too many pixels (possible decompression bomb)"
TOO_MUCH_MEMORY = "too much memory to decode"
TOO_WIDE = "a side too long for a JPEG"
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
    TOO_MUCH_MEMORY: "scale it down (or save it as an 8-bit JPEG) first",
    TOO_WIDE: "scale it down or crop it first",
    UNREADABLE: "check the path and that the file can be read",
    STREAKED: "get the original image again; this copy was damaged when it was converted",
}

# Colour used under transparent pixels: white, as an image viewer shows them.
BACKGROUND = (255, 255, 255)

# The most memory one image may take to decode and convert, estimated from its header before
# any pixel is decoded (see :func:`decode_bytes`). A JPEG above it is decoded at 1/2, 1/4 or
# 1/8 of its size (and laid out that size); any other image above it is refused. Images being
# decoded at once by several threads share this budget too.
MAX_DECODE_BYTES = 256 * 2**20
JPEG_MAX_SIDE = 65_500  # libjpeg's limit: a wider or taller image cannot be saved as a JPEG
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_STRIP_PIXELS = 1 << 20  # 16-bit and float images are scaled to 8 bits this many pixels at a time


def decode_bytes(width: int, height: int, mode: str) -> int:
    """An upper estimate of the memory to decode an image and convert it to 8-bit RGB: the
    decoded pixels as Pillow stores them, an 8-bit grey copy and the RGB result (4 bytes a pixel)."""
    return width * height * (_STORED_BYTES.get(mode, 4) + 1 + 4)


@dataclass(frozen=True)
class Checked:
    """An image that can be used, with what the manifest records about it."""

    path: Path
    sha256: str
    width: int  # the size it is laid out at: upright, and reduced when ``scale`` > 1
    height: int
    needs_conversion: bool  # False when the file is already an upright 8-bit RGB JPEG
    scale: int = 1  # a JPEG too large for the memory budget is decoded at 1/scale of its size


@dataclass(frozen=True)
class Rejected:
    """A file that cannot be used, and why."""

    path: Path
    reason: str
    detail: str = ""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


_budget = threading.Condition()
_in_use = 0


@contextmanager
def _reserved(amount: int, limit: int):
    """Wait until ``amount`` bytes fit beside what other threads are decoding (one image at a
    time may always go), and hold them for the block."""
    global _in_use
    with _budget:
        _budget.wait_for(lambda: _in_use == 0 or _in_use + amount <= limit)
        _in_use += amount
    try:
        yield
    finally:
        with _budget:
            _in_use -= amount
            _budget.notify_all()


def _open(source, max_pixels: int) -> Image.Image:
    """Open ``source`` (a path or a binary file object), reading only the header."""
    try:
        with warnings.catch_warnings():  # the size is checked by the caller, against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except UnidentifiedImageError:
        raise _Refusal(NOT_AN_IMAGE, "no image format recognised") from None
    except Image.DecompressionBombError as error:
        raise _Refusal(TOO_LARGE, str(error)) from None
    except OSError as error:
        if error.errno is not None:  # the file, not its contents
            raise _Refusal(UNREADABLE, error.strerror or str(error)) from None
        raise _Refusal(TRUNCATED, f"{type(error).__name__}: {error}") from None
    except Exception as error:  # noqa: BLE001  decoders raise many kinds of errors on bad input
        raise _Refusal(TRUNCATED, f"{type(error).__name__}: {error}") from None


def _scale_for(image: Image.Image, max_pixels: int, max_bytes: int) -> int:
    """Check the header's size against the limits before decoding; the JPEG scale to decode at."""
    width, height = image.size
    if width * height > max_pixels:
        raise _Refusal(TOO_LARGE, f"{width}x{height} is over {max_pixels:,} pixels")
    if max(width, height) > JPEG_MAX_SIDE:
        raise _Refusal(TOO_WIDE, f"{width}x{height}: a JPEG's sides are at most {JPEG_MAX_SIDE:,} "
                                 f"pixels; {FIXES[TOO_WIDE]}")
    need = decode_bytes(width, height, image.mode)
    if need <= max_bytes:
        return 1
    if image.format == "JPEG":  # libjpeg decodes at 1/2, 1/4 or 1/8 of the size directly
        for scale in (2, 4, 8):
            if decode_bytes(-(-width // scale), -(-height // scale), image.mode) <= max_bytes:
                return scale
    raise _Refusal(TOO_MUCH_MEMORY, f"{width}x{height} {image.mode} needs about {need / 2**20:,.0f} MB "
                                    f"to decode, over the budget of {max_bytes / 2**20:,.0f} MB; "
                                    f"{FIXES[TOO_MUCH_MEMORY]}")


def _reduce_for_scale(image: Image.Image, scale: int) -> None:
    if scale > 1:
        width, height = image.size
        image.draft(image.mode, (-(-width // scale), -(-height // scale)))


def _inspect(path: Path, opener: Callable[[], object], hasher: Callable[[], str],
             max_pixels: int, max_bytes: int) -> Checked | Rejected:
    try:
        with opener() as source, _open(source, max_pixels) as image:
            scale = _scale_for(image, max_pixels, max_bytes)
            digest = hasher()  # in chunks, and only once the header says it is an image
            with _reserved(decode_bytes(*image.size, image.mode) // (scale * scale), max_bytes):
                _reduce_for_scale(image, scale)
                try:
                    image.load()
                except Exception as error:  # noqa: BLE001
                    raise _Refusal(TRUNCATED, f"{type(error).__name__}: {error}") from None
                ratio = streak_ratio(image)
                orientation = image.getexif().get(0x0112, 1)  # EXIF orientation tag
                upright = orientation in (0, 1)
                ready = image.format == "JPEG" and image.mode == "RGB" and upright and scale == 1
                width, height = image.size if orientation not in (5, 6, 7, 8) else image.size[::-1]
    except _Refusal as refusal:
        return Rejected(path, refusal.reason, refusal.detail)
    except OSError as error:  # opening or hashing the file itself
        return Rejected(path, UNREADABLE, error.strerror or str(error))
    if ratio < STREAK_RATIO:
        return Rejected(path, STREAKED, f"detail across the streaks is {ratio:.2f} of the detail "
                                        f"along them (below {STREAK_RATIO})")
    return Checked(path, digest, width, height, not ready, scale)


def inspect_image(path: Path, max_pixels: int = Image.MAX_IMAGE_PIXELS,
                  max_bytes: int | None = None) -> Checked | Rejected:
    """Check one file: readable, non-empty, an image, complete, not absurdly large and within
    the memory budget (``max_bytes``, default :data:`MAX_DECODE_BYTES`). The header is checked
    before anything is decoded, and the file is never read into memory whole."""
    path = Path(path)
    max_bytes = MAX_DECODE_BYTES if max_bytes is None else max_bytes
    try:
        if not path.is_file():
            return Rejected(path, UNREADABLE, "not a file" if path.exists() else "no such file")
        if path.stat().st_size == 0:
            return Rejected(path, EMPTY, "0 bytes")
    except OSError as error:
        return Rejected(path, UNREADABLE, error.strerror or str(error))
    return _inspect(path, lambda: path.open("rb"), lambda: sha256_of(path), max_pixels, max_bytes)


def inspect_bytes(data: bytes, path: Path, max_pixels: int = Image.MAX_IMAGE_PIXELS,
                  max_bytes: int | None = None) -> Checked | Rejected:
    """:func:`inspect_image` for a file's bytes already in memory (an upload, say); ``path``
    names it in the result."""
    if not data:
        return Rejected(path, EMPTY, "0 bytes")
    max_bytes = MAX_DECODE_BYTES if max_bytes is None else max_bytes
    return _inspect(path, lambda: io.BytesIO(data), lambda: hashlib.sha256(data).hexdigest(),
                    max_pixels, max_bytes)


def streak_ratio(image: Image.Image) -> float:
    """How much an image changes from row to row against column to column (the smaller over
    the larger, so 1 is balanced). A photograph of skin scores about 1; a thumbnail broken by
    repeating one row or column down the image scores near 0. Flat or tiny images score 1."""
    if image.width * image.height > 16_000_000:  # scale a large image down first, cheaply
        small = _eight_bit(image, orient=False)
        if small.mode in ("1", "P"):
            small = small.convert("RGBA")
        factor = max(1, min(small.size) // 1024)
        image = small.reduce(factor) if factor > 1 else small
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


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _eight_bit(image: Image.Image, orient: bool = True) -> Image.Image:
    """16-bit and float images as 8-bit grey, a strip of rows at a time (a whole 16-bit image
    in float64 would take 8 bytes a pixel); other images as they are."""
    if image.mode not in _SIXTEEN_BIT and image.mode != "F":
        return image
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        if image.mode == "F":
            values = np.clip(np.round(strip), 0, 255)
        else:  # 16-bit (Pillow also opens 16-bit PNGs as 32-bit "I"): 0..65535 onto 0..255
            values = np.clip(np.round(strip.astype(np.float32) / np.float32(257.0)), 0, 255)
        out[top:top + len(strip)] = values
    return Image.fromarray(out)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, 16-bit scaled, alpha laid on white, CMYK converted."""
    orientation = image.getexif().get(0x0112, 1)
    image = _eight_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    else:
        image = image.convert("RGB")
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def load_rgb(path: Path, scale: int = 1) -> Image.Image:
    """Open a file and return it as upright 8-bit RGB (for files already accepted), a JPEG at
    1/``scale`` of its size when :func:`inspect_image` said so."""
    with Image.open(path) as image:
        _reduce_for_scale(image, scale)
        image.load()
        return to_rgb(image)
