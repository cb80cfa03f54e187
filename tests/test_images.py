"""Checking and converting single images: every odd file is either converted or refused."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionlib import images

# A picture with an unmistakable orientation: red top-left quadrant, green elsewhere.
_PIXELS = np.zeros((60, 80, 3), dtype=np.uint8)
_PIXELS[...] = (0, 200, 0)
_PIXELS[:30, :40] = (220, 0, 0)


def _write(path: Path, image: Image.Image, fmt: str, **options) -> Path:
    image.save(path, fmt, **options)
    return path


def _reference() -> Image.Image:
    return Image.fromarray(_PIXELS)


def test_plain_rgb_jpeg_needs_no_conversion(tmp_path):
    path = _write(tmp_path / "a.jpg", _reference(), "JPEG", quality=95)
    checked = images.inspect_image(path)
    assert isinstance(checked, images.Checked)
    assert (checked.width, checked.height, checked.needs_conversion) == (80, 60, False)
    assert checked.sha256 == images.sha256_of(path)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    reference = _reference()
    if mode == "I;16":
        gray = np.asarray(reference.convert("L"), dtype=np.uint16) * 257
        image, fmt = Image.fromarray(gray), "PNG"
    else:
        image = reference.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = _write(tmp_path / f"image.{fmt.lower()}", image, fmt)
    checked = images.inspect_image(path)
    assert isinstance(checked, images.Checked) and checked.needs_conversion
    rgb = images.load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (80, 60)
    expected = np.asarray(reference.convert("L") if mode in ("L", "LA", "I;16") else reference,
                          dtype=np.int16)
    got = np.asarray(rgb.convert("L") if mode in ("L", "LA", "I;16") else rgb, dtype=np.int16)
    assert np.abs(got - expected).mean() < 12  # the same picture, not a black or clipped one


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)  # fully transparent black
    path = _write(tmp_path / "clear.png", Image.fromarray(rgba), "PNG")
    assert np.asarray(images.load_rgb(path)).min() == 255


def test_exif_rotation_is_applied(tmp_path):
    stored = _reference().transpose(Image.Transpose.ROTATE_270)  # 60 wide, 80 high on disk
    exif = Image.Exif()
    exif[0x0112] = 8  # "turn 90 degrees counter-clockwise to view"
    path = _write(tmp_path / "rotated.jpg", stored, "JPEG", exif=exif, quality=95)
    checked = images.inspect_image(path)
    assert checked.needs_conversion and (checked.width, checked.height) == (80, 60)
    upright = np.asarray(images.load_rgb(path))
    assert upright.shape == (60, 80, 3)
    assert upright[5, 5, 0] > 150 and upright[55, 75, 1] > 150  # red top-left, green elsewhere


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    _reference().save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("empty.jpg", b"", images.EMPTY),
    ("notes.jpg", b"just some text\n", images.NOT_AN_IMAGE),
    ("cut.jpg", _jpeg_bytes()[:300], images.TRUNCATED),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    result = images.inspect_image(path)
    assert isinstance(result, images.Rejected)
    assert result.reason == reason and result.path == path


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _write(tmp_path / "bomb.png", Image.new("1", (8_000, 8_000)), "PNG")
    assert path.stat().st_size < 100_000
    result = images.inspect_image(path, max_pixels=50_000_000)
    assert isinstance(result, images.Rejected) and result.reason == images.TOO_LARGE


def test_a_folder_is_an_unreadable_file(tmp_path):
    result = images.inspect_image(tmp_path)
    assert isinstance(result, images.Rejected) and result.reason == images.UNREADABLE


def _lesion_photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).resize((320, 240))


@pytest.mark.parametrize("axis", [0, 1])
def test_a_streaked_thumbnail_is_refused(tmp_path, axis):
    pixels = np.asarray(_lesion_photo())
    line = pixels[60] if axis == 0 else pixels[:, 80]
    streaked = np.repeat(np.expand_dims(line, axis), pixels.shape[axis], axis=axis)
    path = _write(tmp_path / "streaked.jpg", Image.fromarray(streaked), "JPEG", quality=90)
    result = images.inspect_image(path)
    assert isinstance(result, images.Rejected) and result.reason == images.STREAKED
    assert images.FIXES[images.STREAKED].startswith("get the original image again")


def test_photos_flat_images_and_slivers_are_not_streaked(tmp_path, ham10000):
    for image in (_lesion_photo(), Image.new("RGB", (64, 64), (200, 120, 90)), Image.new("RGB", (500, 1))):
        assert images.streak_ratio(image) > images.STREAK_RATIO
    for path in sorted((ham10000 / "images").glob("*.jpg"))[:200]:  # real dermoscopy, hair and all
        assert isinstance(images.inspect_image(path), images.Checked), path


def _grey_png(path: Path, width: int, height: int, bits: int = 8) -> Path:
    """A PNG of zeros, written row by row, so that even a huge one costs no memory to make."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(1 + width * bits // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _peak_mb(code: str, *args: str) -> tuple[str, float]:
    """Run ``code`` in a new Python process; what it prints and its peak resident memory in MB."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries the peak of the process before exec over
    # into ru_maxrss, and a child forked from a pytest that has loaded TensorFlow starts at 2 GB.
    script = (f"import sys\n{code}\n"
              "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          check=True, timeout=120)
    *printed, peak = done.stdout.strip().splitlines()
    return "\n".join(printed), int(peak) / 1024


def test_a_huge_16bit_png_is_refused_before_decoding(tmp_path):
    path = _grey_png(tmp_path / "deep.png", 9_000, 9_000, bits=16)
    assert path.stat().st_size < 500_000
    with Image.open(path) as image:
        assert (image.mode, image.size) == ("I;16", (9_000, 9_000))
    printed, peak = _peak_mb("from lesionlib import images\n"
                             "r = images.inspect_image(sys.argv[1])\n"
                             "print(r.reason)\nprint(r.detail)", str(path))
    reason, detail = printed.splitlines()
    assert reason == images.TOO_MUCH_MEMORY and "9000x9000" in detail and "budget" in detail
    assert peak < 250, f"{peak:.0f} MB"  # it took 2.2 GB when it was decoded first


def test_a_16bit_png_within_the_budget_is_checked_and_converted_in_bounded_memory(tmp_path):
    path = _grey_png(tmp_path / "deep.png", 4_000, 4_000, bits=16)  # 32 MB as decoded
    printed, peak = _peak_mb("from lesionlib import images\n"
                             "r = images.inspect_image(sys.argv[1])\n"
                             "print(type(r).__name__, r.width, r.height)\n"
                             "print(images.load_rgb(r.path).size)", str(path))
    assert printed.splitlines() == ["Checked 4000 4000", "(4000, 4000)"]
    assert peak < 300, f"{peak:.0f} MB"  # the float64 conversion took over 600 MB


def test_a_large_file_that_is_no_image_is_never_read_whole(tmp_path):
    path = tmp_path / "backup.jpg"
    with path.open("wb") as handle:  # 2 GB, sparse: it costs no disk
        handle.write(b"just some text\n")
        handle.truncate(2 * 2**30)
    printed, peak = _peak_mb("from lesionlib import images\n"
                             "print(images.inspect_image(sys.argv[1]).reason)", str(path))
    assert printed == images.NOT_AN_IMAGE
    assert peak < 250, f"{peak:.0f} MB"  # it took 2.6 GB when read into memory first


def test_the_memory_budget_is_a_parameter(tmp_path):
    photo = _lesion_photo().resize((1_000, 800))
    png = _write(tmp_path / "photo.png", photo, "PNG")
    budget = images.decode_bytes(1_000, 800, "RGB") - 1
    refused = images.inspect_image(png, max_bytes=budget)
    assert isinstance(refused, images.Rejected) and refused.reason == images.TOO_MUCH_MEMORY
    assert images.FIXES[images.TOO_MUCH_MEMORY] in refused.detail
    assert isinstance(images.inspect_image(png, max_bytes=budget + 1), images.Checked)
    # A JPEG over the budget is decoded smaller instead, and laid out at that size.
    jpeg = _write(tmp_path / "photo.jpg", photo, "JPEG", quality=95)
    reduced = images.inspect_image(jpeg, max_bytes=budget)
    assert isinstance(reduced, images.Checked) and reduced.needs_conversion
    assert (reduced.scale, reduced.width, reduced.height) == (2, 500, 400)
    assert images.load_rgb(jpeg, reduced.scale).size == (500, 400)


def test_an_image_too_wide_for_a_jpeg_is_refused_from_its_header(tmp_path):
    result = images.inspect_image(_grey_png(tmp_path / "panorama.png", 70_000, 600))
    assert isinstance(result, images.Rejected) and result.reason == images.TOO_WIDE
    assert "70000x600" in result.detail and images.FIXES[images.TOO_WIDE] in result.detail
