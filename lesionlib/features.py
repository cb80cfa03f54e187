"""Bottlenecks: each image's feature vector, computed once by a batched pipeline and cached.

Extraction is a ``tf.data`` pipeline: files are read, decoded and resized in parallel and
batched, while the network works on the previous batch (``prefetch``).

The cache lives in ``data/cache/bottlenecks/<key>/``, where ``<key>`` is a hash of the
backbone's identity (its handle, or a hash of a local model folder's files) and of the
preprocessing. Inside, entries are found by the **image's content hash**, computed from the
file's bytes at extraction time, so a renamed or moved image still hits the cache while a
changed image, backbone or preprocessing misses it.
Entries are stored in ``.npz`` shards, each written atomically; an interrupted run keeps the
shards it finished. A corrupt or truncated shard (its zip checksums no longer match) is
reported, removed and its entries computed again.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text: it stays readable in executed notebooks

from . import fsutil, images
from .backbones import REGISTRY, Backbone
from .preprocessing import ORIGINAL, Preprocessing
from .tfutil import import_tensorflow

FORMAT = 1  # bump when the stored layout changes: old caches are then simply not found
SHARD_ROWS = 512  # features written per shard while extracting: what an interruption can lose
MAX_SHARDS = 32  # more than this and the shards are merged into one on the next read


@dataclass(frozen=True)
class Augmentation:
    """``copies`` fixed, randomly transformed versions of each image, each cached like an image.

    Copy ``k`` of an image is always the same picture (its randomness is seeded by the image's
    hash, ``seed`` and ``k``), so its bottleneck can be cached. Transformations: flips, quarter
    turns, and small changes of brightness, contrast and saturation: a lesion has no "up", and
    dermatoscopes differ in light.
    """

    copies: int = 2
    seed: int = 0

    def entry(self, sha256: str, copy: int) -> str:
        return f"{sha256}/aug-v1-seed{self.seed}-copy{copy}"


@dataclass
class Bottlenecks:
    """Features of a set of images, row by row, and what happened while getting them."""

    features: np.ndarray  # [rows, D] float32
    index: pd.Index  # the manifest index of each row's image
    copy: np.ndarray  # 0: the image itself; k: its k-th augmented copy
    computed: int = 0  # rows the network computed in this call
    reused: int = 0  # rows found in the cache
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)  # image_id, copy, path, reason
    repaired: list[str] = field(default_factory=list)  # cache problems found and fixed

    def summary(self) -> str:
        text = f"{len(self.features)} bottlenecks: {self.computed} computed, {self.reused} from the cache"
        if len(self.failed):
            text += f"; {len(self.failed)} images could not be read (see .failed)"
        if self.repaired:
            text += f"; repaired the cache: {'; '.join(self.repaired)}"
        return text


def cache_key(backbone: Backbone, preprocessing: Preprocessing) -> str:
    """The cache folder's name for a backbone and a preprocessing."""
    # Steps left at their default are left out, so caches made before they existed stay valid.
    steps = {key: value for key, value in asdict(preprocessing).items()
             if key in ("method", "antialias") or value != getattr(ORIGINAL, key)}
    description = {"format": FORMAT, "backbone": backbone.identity,
                   "input_size": backbone.spec.input_size,
                   "value_range": list(backbone.spec.value_range), **steps}
    text = json.dumps(description, sort_keys=True)
    label = backbone.spec.name if backbone.spec.name in REGISTRY else "model"  # for people only
    return f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class BottleneckCache:
    """A folder of ``.npz`` shards, each holding entry ids and their feature rows."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def read(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Every stored entry, and a note for each corrupt shard found (and removed)."""
        entries: dict[str, np.ndarray] = {}
        problems: list[str] = []
        shards = sorted(self.folder.glob("shard-*.npz"))
        for shard in shards:
            try:
                with np.load(shard, allow_pickle=False) as stored:
                    ids, features = stored["ids"], stored["features"]
                if features.ndim != 2 or len(ids) != len(features) or not np.isfinite(features).all():
                    raise ValueError("inconsistent contents")
            except FileNotFoundError:  # merged away by another run meanwhile
                continue
            except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                problems.append(f"{shard.name} was corrupt ({error}); its entries are recomputed")
                shard.unlink(missing_ok=True)
                continue
            entries.update(zip(ids.tolist(), features))
        if len(shards) > MAX_SHARDS and entries:
            self._merge(entries, [s for s in shards if s.exists()])
        return entries, problems

    def write(self, ids: list[str], features: np.ndarray) -> None:
        """Add entries as one new shard, written atomically."""
        if not ids:
            return
        target = self.folder / f"shard-{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz"
        with fsutil.atomic_path(target) as temporary, temporary.open("wb") as out:
            np.savez(out, ids=np.array(ids), features=np.asarray(features, dtype=np.float32))

    def _merge(self, entries: dict[str, np.ndarray], shards: list[Path]) -> None:
        ids = list(entries)
        self.write(ids, np.stack([entries[i] for i in ids]))
        for shard in shards:
            shard.unlink(missing_ok=True)


def _augment(image, seed):
    tf = import_tensorflow()

    image = tf.image.stateless_random_flip_left_right(image, seed)
    image = tf.image.stateless_random_flip_up_down(image, seed + 1)
    turns = tf.random.stateless_uniform([], seed + 2, 0, 4, dtype=tf.int32)
    image = tf.image.rot90(image, turns)
    image = tf.image.stateless_random_brightness(image, 0.08, seed + 3)
    image = tf.image.stateless_random_contrast(image, 0.9, 1.1, seed + 4)
    image = tf.image.stateless_random_saturation(image, 0.9, 1.1, seed + 5)
    return tf.clip_by_value(image, 0.0, 1.0)


def decode(encoded):
    """Encoded image bytes (JPEG, PNG, GIF or BMP) as a ``[height, width, 3]`` float tensor in [0, 1].

    Used both when extracting bottlenecks and inside the exported model (notebook 05), so a
    deployed model sees its images exactly as the head was trained on them.
    """
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


def to_input(image, size: int, preprocessing: Preprocessing = ORIGINAL):
    """A decoded image as the network's square ``[size, size, 3]`` input, as
    :class:`Preprocessing` says: centre crop, common resolution, resize, colour constancy."""
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


def image_pipeline(paths: list[str], seeds: np.ndarray, size: int, value_range: tuple[float, float],
                   preprocessing: Preprocessing = ORIGINAL, batch_size: int = 32):
    """A ``tf.data`` pipeline of ``(position, images)`` batches: parallel decode and resize.

    ``seeds`` holds one ``[a, b]`` pair per path; ``b == 0`` means "the image as it is",
    anything else an augmented copy. Files that cannot be decoded are dropped (their
    positions are missing from the output), so one bad file never stops a run.
    """
    tf = import_tensorflow()

    low, high = value_range

    def load(position, path, seed):
        image = decode(tf.io.read_file(path))
        image = tf.cond(seed[1] > 0, lambda: _augment(image, seed), lambda: image)
        return position, to_input(image, size, preprocessing) * (high - low) + low

    positions = np.arange(len(paths), dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((positions, list(paths), seeds.astype(np.int64)))
    return (dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors()
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def _seed(sha256: str, augmentation_seed: int, copy: int) -> list[int]:
    return [int(sha256[:8], 16) ^ augmentation_seed, copy]


class _Row(NamedTuple):
    index: object  # the manifest index of the image
    copy: int  # 0: the image itself; k: its k-th augmented copy
    entry: str  # the cache id: the file's content hash (plus the copy for augmented ones)
    path: str
    seed: list[int]


def _rows(manifest: pd.DataFrame, augmentation: Augmentation | None) -> tuple[list[_Row], list[dict]]:
    """One row per image and copy, keyed by the hash of the file as it is now, and the
    images that cannot be read at all."""
    rows, unreadable = [], []
    for index, image_id, path in zip(manifest.index, manifest["image_id"], manifest["path"]):
        try:
            sha = images.sha256_of(Path(path))  # the bytes now, not what the manifest remembers
        except OSError as error:
            unreadable.append({"image_id": image_id, "copy": 0, "path": str(path),
                               "reason": f"unreadable file ({error.strerror or error})"})
            continue
        rows.append(_Row(index, 0, sha, str(path), _seed(sha, 0, 0)))
        for copy in range(1, (augmentation.copies if augmentation else 0) + 1):
            rows.append(_Row(index, copy, augmentation.entry(sha, copy), str(path),
                             _seed(sha, augmentation.seed, copy)))
    return rows, unreadable


def extract(manifest: pd.DataFrame, backbone: Backbone, cache_root: Path, *,
            augmentation: Augmentation | None = None, preprocessing: Preprocessing = ORIGINAL,
            batch_size: int = 32, progress: bool = True) -> Bottlenecks:
    """Bottlenecks of every manifest image (and its augmented copies), from the cache when possible."""
    rows, failed = _rows(manifest, augmentation)
    cache = BottleneckCache(Path(cache_root) / cache_key(backbone, preprocessing))
    known, repaired = cache.read()
    todo = list({row.entry: row for row in rows if row.entry not in known}.values())  # unique
    computed = _compute(backbone, cache, todo, preprocessing, batch_size, progress, known)

    kept = [row for row in rows if row.entry in known]
    failed += [{"image_id": manifest.at[row.index, "image_id"], "copy": row.copy,
                "path": row.path, "reason": "could not be decoded"}
               for row in rows if row.entry not in known]
    features = (np.stack([known[row.entry] for row in kept]).astype(np.float32) if kept
                else np.zeros((0, backbone.feature_dim), np.float32))
    return Bottlenecks(features, pd.Index([row.index for row in kept]),
                       np.array([row.copy for row in kept], dtype=int),
                       computed=sum(row.entry in computed for row in kept),
                       reused=sum(row.entry not in computed for row in kept),
                       failed=pd.DataFrame(failed, columns=["image_id", "copy", "path", "reason"]),
                       repaired=repaired)


def _compute(backbone: Backbone, cache: BottleneckCache, todo: list[_Row], preprocessing,
             batch_size: int, progress: bool, known: dict[str, np.ndarray]) -> set[str]:
    """Run the network on ``todo``; store results in ``known`` and, every :data:`SHARD_ROWS`
    and on the way out (even when interrupted), in cache shards."""
    if not todo:
        return set()
    pipeline = image_pipeline([row.path for row in todo], np.array([row.seed for row in todo]),
                              backbone.spec.input_size, backbone.spec.value_range,
                              preprocessing, batch_size)
    pending: dict[str, np.ndarray] = {}
    done: set[str] = set()
    try:
        with tqdm(total=len(todo), desc="bottlenecks", unit="img", disable=not progress,
                  mininterval=2) as bar:
            for positions, batch in pipeline:
                vectors = np.asarray(backbone(batch), dtype=np.float32)
                for position, vector in zip(positions.numpy(), vectors):
                    entry = todo[position].entry
                    known[entry] = pending[entry] = vector
                    done.add(entry)
                if len(pending) >= SHARD_ROWS:
                    cache.write(list(pending), np.stack(list(pending.values())))
                    pending = {}
                bar.update(len(vectors))
    finally:
        if pending:
            cache.write(list(pending), np.stack(list(pending.values())))
    return done
