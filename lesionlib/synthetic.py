"""A small SYNTHETIC image set for the ``smoke`` profile: no internet, no real patients.

These are drawn pictures, not photographs of skin. They exist so that every notebook and
test can run its mechanics in seconds on any machine. A model trained on them learns to tell
the drawings apart and nothing about melanoma.

The set is written in the layout of an ISIC Archive download (``metadata.csv`` + images), so
it enters the course through the same importer as real data. It deliberately contains the
kinds of files that the import checks must catch or convert: an empty file, a truncated JPEG,
a text file named ``.jpg``, a decompression bomb, a thumbnail streaked by a broken conversion,
an exact duplicate, a metadata row without a file, and images in grayscale, palette, CMYK,
RGBA, 16-bit and EXIF-rotated form.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .taxonomy import CLASSES

VERSION = 3  # bump when the drawings change, so cached sets are regenerated
SIZE = 96
PER_CLASS = 28

# Per class: lesion colour (RGB), radius range as a fraction of the image, edge irregularity.
_LOOK = {
    "benign": ((150, 100, 70), (0.18, 0.26), 0.04),
    "indeterminate": ((185, 80, 75), (0.22, 0.32), 0.15),
    "malignant": ((60, 35, 30), (0.28, 0.40), 0.35),
}
# The archive's anatomic sites since May 2026: the broad level and the next (anatom_site_1, _2).
_SITES = (("Trunk", "Anterior trunk"), ("Trunk", "Posterior trunk"), ("Upper extremity", "Forearm"),
          ("Lower extremity", "Thigh"), ("Head and neck", "Head"))
_DIAGNOSIS_1 = {"benign": "Benign", "indeterminate": "Indeterminate", "malignant": "Malignant"}


def draw_lesion(label: str, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """One drawn 'lesion': a blotch on a skin-coloured, noisy background."""
    colour, (r_min, r_max), irregular = _LOOK[label]
    skin = np.array([225, 185, 160]) + rng.normal(0, 8, 3)
    pixels = np.clip(skin + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    centre = size / 2 + rng.normal(0, size * 0.05, 2)
    radius = size * rng.uniform(r_min, r_max)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = radius * (1 + irregular * rng.standard_normal(48).cumsum() / 4)
    outline = [(float(centre[0] + r * np.cos(a)), float(centre[1] + r * np.sin(a)))
               for r, a in zip(np.clip(radii, radius * 0.4, radius * 1.6), angles)]
    tint = tuple(int(c) for c in np.clip(np.array(colour) + rng.normal(0, 12, 3), 0, 255))
    ImageDraw.Draw(image).polygon(outline, fill=tint)
    return image.filter(ImageFilter.GaussianBlur(0.8 + 1.5 * (1 - irregular)))


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, **options)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _odd_forms(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Pictures stored in the modes that import must convert to upright RGB (one each)."""
    pictures = [draw_lesion("benign", rng) for _ in range(6)]
    rotated = pictures[5].transpose(Image.Transpose.ROTATE_270)  # stored on its side...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...with the EXIF tag that tells viewers to rotate it back upright
    sixteen = (np.asarray(pictures[4].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return [
        ("grayscale", _png(pictures[0].convert("L"))),
        ("palette", _png(pictures[1].convert("P", palette=Image.Palette.ADAPTIVE))),
        ("cmyk", _jpeg(pictures[2].convert("CMYK"))),
        ("rgba", _png(pictures[3].convert("RGBA"))),
        ("16bit", _png(Image.fromarray(sixteen))),
        ("exif-rotated", _jpeg(rotated, exif=exif)),
    ]


def _broken_files(good_jpeg: bytes) -> list[tuple[str, str, bytes]]:
    """(name, suffix, bytes) of files that the import checks must refuse."""
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, "PNG")  # 400 megapixels in a few kB
    with Image.open(io.BytesIO(good_jpeg)) as good:  # its middle row repeated down the image
        pixels = np.asarray(good.convert("RGB"))
    streaked = Image.fromarray(np.repeat(pixels[len(pixels) // 2][np.newaxis], len(pixels), axis=0))
    return [
        ("empty", ".jpg", b""),
        ("streaked", ".jpg", _jpeg(streaked)),
        ("truncated", ".jpg", good_jpeg[: len(good_jpeg) // 2]),
        ("text", ".jpg", b"This is a text file, not a photograph.\n"),
        ("bomb", ".png", buffer.getvalue()),
    ]


def other_camera(image: Image.Image) -> Image.Image:
    """A drawing as another clinic's dermatoscope would show it: closer framing, warmer light,
    softer focus. The smoke profile's "external source" for notebook 06."""
    width, height = image.size
    image = image.crop((width // 10, height // 10, width - width // 10, height - height // 10))
    pixels = np.asarray(image.resize((width, height)), dtype=np.float64) * np.array([1.0, 0.86, 0.7])
    warmer = Image.fromarray(np.clip(pixels + 12, 0, 255).astype(np.uint8))
    return warmer.filter(ImageFilter.GaussianBlur(1.2))


def generate(folder: Path, seed: int = 42, per_class: int = PER_CLASS, other_clinic: bool = False) -> Path:
    """Write the synthetic set into ``folder`` (once; a complete set is reused). Returns ``folder``.

    ``other_clinic``: the same kind of drawings (other ones) through :func:`other_camera`,
    without the broken files.
    """
    folder = Path(folder)
    stamp = folder / ".complete"
    wanted = f"synthetic v{VERSION} seed={seed} per_class={per_class} other_clinic={other_clinic}\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".synthetic-"))
    try:
        _write_set(staging, seed, per_class, wanted, other_clinic)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def _write_set(staging: Path, seed: int, per_class: int, stamp: str, other_clinic: bool = False) -> None:
    rng = np.random.default_rng(seed)
    prefix = "SYO" if other_clinic else "SYN"  # ids never shared with the main synthetic set
    camera = other_camera if other_clinic else (lambda image: image)
    rows: list[dict] = []

    def add(name: str, suffix: str, data: bytes | None, label: str, lesion: str, patient: str) -> None:
        if data is not None:
            (staging / f"{name}{suffix}").write_bytes(data)
        rows.append({
            "isic_id": name, "attribution": "lesion-course synthetic images",
            "copyright_license": "CC-0", "image_type": "synthetic",
            "diagnosis_1": _DIAGNOSIS_1[label], "lesion_id": lesion, "patient_id": patient,
            "age_approx": int(rng.integers(4, 17)) * 5, "sex": str(rng.choice(["female", "male"])),
            **dict(zip(("anatom_site_1", "anatom_site_2"), _SITES[rng.choice(len(_SITES))])),
        })

    number = 0
    for label in CLASSES:
        lesion_number = 0
        while sum(r["diagnosis_1"] == _DIAGNOSIS_1[label] for r in rows) < per_class:
            lesion_number += 1
            lesion = f"{prefix}_L_{label[0]}{lesion_number:03d}"
            patient = f"{prefix}_P_{int(rng.integers(1, 40)):03d}"
            for _ in range(int(rng.choice([1, 1, 2, 3]))):  # some lesions have several images
                number += 1
                image = camera(draw_lesion(label, rng))
                add(f"{prefix}_{number:05d}", ".jpg", _jpeg(image), label, lesion, patient)
    if other_clinic:
        _write_metadata(staging, rows, stamp)
        return

    for form, data in _odd_forms(rng):
        number += 1
        add(f"SYN_{number:05d}_{form}", ".png" if data[:4] == b"\x89PNG" else ".jpg",
            data, "benign", f"SYN_L_odd_{form}", "SYN_P_900")
    for kind, suffix, data in _broken_files(_jpeg(draw_lesion("benign", rng))):
        number += 1
        add(f"SYN_{number:05d}_{kind}", suffix, data, "benign", f"SYN_L_bad_{kind}", "SYN_P_901")
    first = rows[0]["isic_id"]
    number += 1
    add(f"SYN_{number:05d}_duplicate", ".jpg", (staging / f"{first}.jpg").read_bytes(),
        "benign", "SYN_L_dup", "SYN_P_902")
    number += 1
    add(f"SYN_{number:05d}_missing", ".jpg", None, "malignant", "SYN_L_missing", "SYN_P_903")

    _write_metadata(staging, rows, stamp)


def _write_metadata(staging: Path, rows: list[dict], stamp: str) -> None:
    with (staging / "metadata.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (staging / "attribution.txt").write_text("lesion-course synthetic images (generated, CC-0)\n")
    (staging / ".complete").write_text(stamp)
