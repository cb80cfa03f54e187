"""Bottlenecks: each image's feature vector, computed once and cached on disk.

Notebook 03 writes the pipeline and calls the network itself, then hands both to
:func:`extract`, which adds the bookkeeping: what is cached already, the positions of images
that cannot be decoded, the shards, the progress bar. Later notebooks call :func:`extract`
with the library's copy of that pipeline (:func:`image_loader`) and, on a CPU, the network run
by LiteRT (:func:`lesionlib.backbones.bottleneck_network`).

The cache lives in ``data/cache/bottlenecks/<key>/``, where ``<key>`` is a hash of the
backbone's identity (its handle, or a hash of a local model folder's files) and of the
preprocessing. Inside, entries are found by the **image's content hash**, computed from the
file's bytes at extraction time, so a renamed or moved image still hits the cache while a
changed image, backbone or preprocessing misses it.
Entries are stored in ``.npz`` shards, each written atomically; an interrupted run keeps the
shards it finished. A corrupt or truncated shard (its zip checksums no longer match) is
reported, removed and its entries computed again; so is anything else found under a shard's
name (a lone ``.npy``, a folder, rows whose width is not the network's). A cache that cannot
be written is reported once, before computing, and the features are still returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text: it stays readable in executed notebooks

from . import fsutil, images
from .backbones import REGISTRY, Backbone, bottleneck_network
from .preprocessing import ORIGINAL, Preprocessing, decode, prepare
from .tfutil import import_tensorflow

FORMAT = 1  # bump when the stored layout changes: old caches are then simply not found
SHARD_ROWS = 512  # features written per shard while extracting: what an interruption can lose
MAX_SHARDS = 32  # more than this and the shards are merged into one on the next read


@dataclass
class Bottlenecks:
    """Features of a set of images, row by row, and what happened while getting them."""

    features: np.ndarray  # [rows, D] float32
    index: pd.Index  # the manifest index of each row's image
    computed: int = 0  # rows the network computed in this call
    reused: int = 0  # rows found in the cache
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)  # image_id, path, reason
    repaired: list[str] = field(default_factory=list)  # cache problems found and fixed
    unsaved: str | None = None  # why the computed rows could not be kept in the cache

    def summary(self) -> str:
        text = f"{len(self.features)} bottlenecks: {self.computed} computed, {self.reused} from the cache"
        if len(self.failed):
            text += f"; {len(self.failed)} images could not be read (see .failed)"
        if self.repaired:
            text += f"; repaired the cache: {'; '.join(self.repaired)}"
        if self.unsaved:
            text += f"; NOT CACHED: {self.unsaved}"
        return text


def cache_key(backbone: Backbone, preprocessing: Preprocessing) -> str:
    """The cache folder's name for a backbone and a preprocessing.

    It does not name the runtime (TensorFlow or LiteRT): both compute the same network in
    float32, and on real HAM10000 images MobileNet V2's features differ by at most about 3e-5
    (of features up to about 6: float32 rounding in another order of operations), with the
    same head predictions (tests/test_runtime.py); a conversion that differs more is refused
    (:data:`lesionlib.backbones.EQUAL_WITHIN`). A cache may thus mix rows of both runtimes.
    Naming the runtime would recompute every cache when a learner moves from a laptop to a
    GPU, or switches to watch TensorFlow, and buy nothing a head can tell apart."""
    # Steps left at their default are left out, so caches made before they existed stay valid.
    steps = {key: value for key, value in asdict(preprocessing).items()
             if key in ("method", "antialias") or value != getattr(ORIGINAL, key)}
    description = {"format": FORMAT, "backbone": backbone.identity,
                   "input_size": backbone.spec.input_size,
                   # Every network takes [0, 1] now; kept so that older caches keep their folder.
                   "value_range": [0.0, 1.0], **steps}
    text = json.dumps(description, sort_keys=True)
    label = backbone.spec.name if backbone.spec.name in REGISTRY else "model"  # for people only
    return f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class CacheNotWritable(UserWarning):
    """The bottleneck cache's folder cannot be written: features are computed but not kept."""


class BottleneckCache:
    """A folder of ``.npz`` shards, each holding entry ids and their feature rows."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.unwritable: str | None = None  # why shards cannot be written here, once known

    def read(self, width: int | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
        """Every stored entry, and a note for each corrupt shard found (and removed).

        A shard must be an ``.npz`` file holding ``ids`` (strings, one per row) and
        ``features`` (finite floats, ``[rows, width]``). ``width`` is the network's feature
        width; when it is not known, the width of most stored rows. Anything else (a damaged
        zip, a lone ``.npy``, a folder, rows of another width) is reported, removed if it can
        be, and its entries are computed again."""
        entries: dict[str, np.ndarray] = {}
        problems: list[str] = []
        shards = sorted(self.folder.glob("shard-*.npz"))
        found: list[tuple[Path, np.ndarray, np.ndarray]] = []
        for shard in shards:
            try:
                if shard.is_dir():
                    raise ValueError("a folder, not a file")
                with np.load(shard, allow_pickle=False) as stored:
                    if not isinstance(stored, np.lib.npyio.NpzFile):
                        raise ValueError("not an .npz archive")
                    if sorted(stored.files) != ["features", "ids"]:
                        raise ValueError(f"holds {sorted(stored.files)}, not ids and features")
                    ids, features = stored["ids"], stored["features"]
                if ids.ndim != 1 or ids.dtype.kind != "U" or features.ndim != 2 \
                        or features.dtype.kind != "f" or len(ids) != len(features) \
                        or not np.isfinite(features).all():
                    raise ValueError("inconsistent contents")
            except FileNotFoundError:  # merged away by another run meanwhile
                continue
            except (ValueError, KeyError, EOFError, OSError, zipfile.BadZipFile, AttributeError,
                    TypeError) as error:
                problems.append(self._discard(shard, f"was corrupt ({error})"))
                continue
            found.append((shard, ids, features))
        if width is None and found:  # the width of most rows
            rows: dict[int, int] = {}
            for _, ids, features in found:
                rows[features.shape[1]] = rows.get(features.shape[1], 0) + len(ids)
            width = max(rows, key=rows.get)
        kept = []
        for shard, ids, features in found:
            if features.shape[1] != width:
                problems.append(self._discard(
                    shard, f"was corrupt ({len(ids)} rows of {features.shape[1]} features, the "
                           f"network gives {width})"))
                continue
            entries.update(zip(ids.tolist(), features))
            kept.append(shard)
        if len(kept) > MAX_SHARDS and entries:
            try:
                self._merge(entries, [s for s in kept if s.exists()])
            except OSError as error:
                self.unwritable = self.unwritable or _strerror(error)
        return entries, problems

    def _discard(self, shard: Path, problem: str) -> str:
        """Remove a bad shard if possible (an empty folder too, never a folder's contents);
        the note for :attr:`Bottlenecks.repaired`."""
        try:
            shard.rmdir() if shard.is_dir() else shard.unlink(missing_ok=True)
            return f"{shard.name} {problem}; it was removed and its entries are recomputed"
        except OSError as error:
            return (f"{shard.name} {problem}; it could not be removed ({_strerror(error)}), so "
                    f"it is ignored and its entries are recomputed: delete {shard}")

    def writable(self) -> bool:
        """Whether a shard can be written here: checked by writing (and removing) a small file
        the way shards are written. On failure, :attr:`unwritable` says why."""
        if self.unwritable is None:
            probe = self.folder / f"probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                with fsutil.atomic_path(probe) as temporary:
                    temporary.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                self.unwritable = _strerror(error)
        return self.unwritable is None

    def write(self, ids: list[str], features: np.ndarray) -> None:
        """Add entries as one new shard, written atomically."""
        if not ids:
            return
        target = self.folder / f"shard-{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz"
        with fsutil.atomic_path(target) as temporary, temporary.open("wb") as out:
            np.savez(out, ids=np.array(ids), features=np.asarray(features, dtype=np.float32))

    def keep(self, ids: list[str], features: np.ndarray) -> None:
        """:meth:`write`, unless the folder is unwritable: then warn (once) and keep nothing,
        so that the features computed are still returned."""
        if self.unwritable is None:
            try:
                self.write(ids, features)
            except OSError as error:
                self.unwritable = _strerror(error)
                self.warn()

    def warn(self) -> None:
        warnings.warn(self.message(), CacheNotWritable, stacklevel=3)

    def message(self) -> str:
        return (f"The bottleneck cache {self.folder} cannot be written ({self.unwritable}): the "
                "features are computed and returned but not kept, so the next run computes them "
                "again. To keep them, make that folder writable (or remove what is in its way), or "
                "set LESIONLIB_HOME to a folder you can write.")

    def _merge(self, entries: dict[str, np.ndarray], shards: list[Path]) -> None:
        ids = list(entries)
        self.write(ids, np.stack([entries[i] for i in ids]))
        for shard in shards:
            shard.unlink(missing_ok=True)


def _strerror(error: OSError) -> str:
    where = f": {error.filename}" if getattr(error, "filename", None) else ""
    return f"{error.strerror or error}{where}"


def image_loader(size: int, preprocessing: Preprocessing = ORIGINAL) -> Callable:
    """The library's copy of notebook 03's ``load``: an image file's path -> the network's
    input, ``[size, size, 3]`` in [0, 1]."""
    tf = import_tensorflow()

    def load(path):
        return prepare(decode(tf.io.read_file(path)), size, preprocessing)

    return load


def extract(manifest: pd.DataFrame, backbone: Backbone, cache_root: Path, *,
            preprocessing: Preprocessing = ORIGINAL, network: Callable | None = None,
            load: Callable | None = None, batch_size: int = 8, progress: bool = True) -> Bottlenecks:
    """Bottlenecks of every manifest image, from the cache when possible.

    ``network`` (images -> features; default :func:`backbones.bottleneck_network`: the
    backbone through LiteRT on a CPU, TensorFlow on a GPU) and ``load`` (a path -> the
    network's input, as ``preprocessing`` says; default :func:`image_loader`) compute what the
    cache does not hold yet. They must match ``backbone`` and ``preprocessing``, which name the
    cache.
    """
    load = load or image_loader(backbone.spec.input_size, preprocessing)
    cache = BottleneckCache(Path(cache_root) / cache_key(backbone, preprocessing))
    known, repaired = cache.read(backbone.spec.feature_dim)
    hashes, failed = {}, []
    for index, image_id, path in zip(manifest.index, manifest["image_id"], manifest["path"]):
        try:
            hashes[index] = images.sha256_of(Path(path))  # the bytes now, not what the manifest says
        except OSError as error:
            failed.append({"image_id": image_id, "path": str(path),
                           "reason": f"unreadable file ({error.strerror or error})"})
    todo = {sha: manifest.at[index, "path"] for index, sha in hashes.items() if sha not in known}
    if todo and not cache.writable():  # say so before the long computation, not after it
        cache.warn()
    if todo and network is None:  # only now: with everything cached, nothing is converted
        network = bottleneck_network(backbone)
    computed = _compute(network, load, cache, todo, batch_size, progress, known)

    kept = [index for index, sha in hashes.items() if sha in known]
    failed += [{"image_id": manifest.at[index, "image_id"], "path": str(manifest.at[index, "path"]),
                "reason": "could not be decoded"} for index, sha in hashes.items() if sha not in known]
    features = (np.stack([known[hashes[index]] for index in kept]).astype(np.float32) if kept
                else np.zeros((0, backbone.spec.feature_dim or 0), np.float32))
    return Bottlenecks(features, pd.Index(kept, name=manifest.index.name),
                       computed=sum(hashes[index] in computed for index in kept),
                       reused=sum(hashes[index] not in computed for index in kept),
                       failed=pd.DataFrame(failed, columns=["image_id", "path", "reason"]),
                       repaired=repaired, unsaved=cache.message() if cache.unwritable else None)


def _compute(network: Callable, load: Callable, cache: BottleneckCache, todo: dict[str, str],
             batch_size: int, progress: bool, known: dict[str, np.ndarray]) -> set[str]:
    """Run ``load`` and ``network`` on the images ``todo`` (content hash -> path); store results
    in ``known`` and, every :data:`SHARD_ROWS` and on the way out (even when interrupted), in
    cache shards. Images ``load`` cannot decode are dropped, so one bad file never stops a run:
    each image carries its position through the pipeline."""
    if not todo:
        return set()
    tf = import_tensorflow()
    entries, paths = list(todo), [str(path) for path in todo.values()]
    pipeline = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
                .map(lambda position, path: (position, load(path)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .ignore_errors()
                .batch(batch_size)
                .prefetch(tf.data.AUTOTUNE))
    pending: dict[str, np.ndarray] = {}
    done: set[str] = set()
    try:
        with tqdm(total=len(todo), desc="bottlenecks", unit="img", disable=not progress,
                  mininterval=2) as bar:
            for positions, batch in pipeline:
                vectors = np.asarray(network(batch), dtype=np.float32)
                for position, vector in zip(positions.numpy(), vectors):
                    entry = entries[position]
                    known[entry] = pending[entry] = vector
                    done.add(entry)
                if len(pending) >= SHARD_ROWS:
                    cache.keep(list(pending), np.stack(list(pending.values())))
                    pending = {}
                bar.update(len(vectors))
    finally:
        if pending:
            cache.keep(list(pending), np.stack(list(pending.values())))
    return done
