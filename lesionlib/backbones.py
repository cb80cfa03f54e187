"""Feature extractors ("backbones"): frozen ImageNet networks that turn an image into a vector.

``LESIONLIB_BACKBONE`` names one of three things:

* a name in :data:`REGISTRY` (``mobilenet_v2_100_224``, ``inception_v3``, ...), fetched from TF Hub;
* any TF Hub or Kaggle model handle (an ``https://`` URL) of a TF2 feature-vector SavedModel;
* a local folder holding such a SavedModel, e.g. ``../shared/weights/tfhub/...``.

:func:`fetch` finds the network's SavedModel folder (downloading a handle into
``data/cache/tfhub/`` once; ``TFHUB_CACHE_DIR`` is set to it); notebook 03 then loads it with
``tensorflow_hub.load``, which returns a plain callable, and :func:`load` does the same for
later notebooks. The course never uses ``hub.KerasLayer``: under Keras 3 (TensorFlow 2.21's
default) it fails with "Only instances of keras.Layer can be added to a Sequential model"
unless the legacy ``tf-keras`` is switched on. Feature extraction needs no Keras layer at all.
Offline with nothing cached, :func:`fetch` stops within seconds and says how to point at a
local copy.

On a CPU, the same network runs about three times faster through LiteRT, TensorFlow's inference
runtime, with its XNNPACK kernels (fused convolution + batch norm + activation, no graph
executor between operations): :func:`litert` converts it once into a float32 ``.tflite`` file
kept in ``data/cache/litert/``, and :func:`bottleneck_network` picks that runtime for
bottlenecks on a machine without a GPU (see ``benchmarks/bottlenecks.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import LesionlibError, fsutil, net
from .settings import IMAGENET, Settings
from .tfutil import import_tensorflow, native_output_filtered

TINY = "tiny"


@dataclass(frozen=True)
class BackboneSpec:
    """What the course must know about a network to feed it."""

    name: str
    handle: str  # an https:// handle, a local folder, or "builtin:tiny"
    input_size: int  # square input, in pixels
    feature_dim: int | None  # None until loaded, for handles outside the registry
    description: str = ""  # every network here takes colour values in [0, 1], as TF Hub's do


_HUB = "https://tfhub.dev/google/imagenet"
REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec("mobilenet_v2_100_224", f"{_HUB}/mobilenet_v2_100_224/feature_vector/5", 224, 1280,
                 "MobileNet V2 1.0: fast on a laptop CPU (workshop default)"),
    BackboneSpec("mobilenet_v3_small_100_224", f"{_HUB}/mobilenet_v3_small_100_224/feature_vector/5",
                 224, 1024, "MobileNet V3 small: the fastest, a little less accurate"),
    BackboneSpec("mobilenet_v3_large_100_224", f"{_HUB}/mobilenet_v3_large_100_224/feature_vector/5",
                 224, 1280, "MobileNet V3 large"),
    BackboneSpec("inception_v3", f"{_HUB}/inception_v3/feature_vector/5", 299, 2048,
                 "Inception V3: the original project's choice; about 5x slower than MobileNet V2"),
    BackboneSpec(TINY, "builtin:tiny", 64, 78,
                 "a tiny stand-in (colour and layout statistics, no learned weights) for the "
                 "smoke profile: runs anywhere, learns nothing about skin"),
)}


class BackboneUnavailable(LesionlibError):
    """The network cannot be loaded; the message says how to point at a local copy."""


@dataclass(frozen=True)
class Backbone:
    """A network on disk (``folder``, a SavedModel) and, once loaded, the network itself:
    ``backbone(images)`` maps ``[N, s, s, 3]`` floats in [0, 1] to ``[N, D]`` features."""

    spec: BackboneSpec
    identity: str  # changes whenever the network's weights could have changed
    folder: Path
    model: object = None  # set by :func:`load`
    converted_dir: Path | None = None  # where :func:`litert` keeps its .tflite file

    def __call__(self, images):
        return self.model(images)


def registry_table() -> pd.DataFrame:
    """The registry as a table for the lesson."""
    return pd.DataFrame([{"name": s.name, "input": f"{s.input_size}x{s.input_size}",
                          "features": s.feature_dim, "about": s.description}
                         for s in REGISTRY.values()]).set_index("name")


def resolve(value: str) -> BackboneSpec:
    """The spec for a registry name, a handle or a local folder (not loaded yet)."""
    if value in REGISTRY:
        return REGISTRY[value]
    known = {spec.handle: spec for spec in REGISTRY.values()}
    if value in known:
        return known[value]
    if value.startswith(("https://", "http://")):
        return BackboneSpec(value, value, 224, None, "a TF Hub / Kaggle handle")
    path = Path(value)
    if path.is_dir():  # a copy of a registry network keeps its name, e.g. mobilenet_v2_100_224_...
        same = next((s for s in REGISTRY.values() if s.name != TINY and s.name in path.name), None)
        return BackboneSpec(path.name, str(path), same.input_size if same else 224,
                            same.feature_dim if same else None, "a local SavedModel folder")
    raise BackboneUnavailable(
        f"LESIONLIB_BACKBONE={value!r} is neither a registry name ({', '.join(REGISTRY)}), "
        "nor an https:// model handle, nor an existing folder.")


def _folder_fingerprint(folder: Path) -> str:
    """A hash of every file of a SavedModel folder: a changed network changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def hub_cache_folder(handle: str, cache_dir: Path) -> Path:
    """Where tensorflow_hub keeps ``handle`` once downloaded: ``<cache>/<sha1(handle)>``."""
    return cache_dir / hashlib.sha1(handle.encode("utf8")).hexdigest()


def _hub_cached(handle: str, cache_dir: Path) -> bool:
    """Whether tensorflow_hub has ``handle`` in its cache (a non-empty folder)."""
    folder = hub_cache_folder(handle, cache_dir)
    return folder.is_dir() and any(folder.iterdir())


def _input_size(model) -> int | None:
    """The square input size declared by a SavedModel's call signature, if it declares one."""
    try:
        shape = model.__call__.concrete_functions[0].structured_input_signature[0][0].shape
        return int(shape[1]) if shape[1] is not None else None
    except (AttributeError, IndexError, TypeError):
        return None


def _tiny_folder(settings: Settings) -> Path:
    """The tiny stand-in saved as a SavedModel (once), so it loads like any other network."""
    folder = settings.tfhub_cache_dir / "builtin-tiny-v2"
    if not (folder / "saved_model.pb").is_file():
        tf = import_tensorflow()
        from .tiny import TinyFeatures

        with fsutil.atomic_folder(folder) as temporary:
            tf.saved_model.save(TinyFeatures(REGISTRY[TINY].input_size), str(temporary))
    return folder


def fetch(settings: Settings) -> Backbone:
    """``settings.backbone``'s SavedModel folder, downloaded into the cache first if it is a
    handle not there yet; load it with ``tensorflow_hub.load(str(backbone.folder))``."""
    spec = resolve(settings.backbone)
    converted = settings.cache_dir / "litert"
    if spec.handle == "builtin:tiny":
        return Backbone(spec, "builtin:tiny:v2", _tiny_folder(settings), converted_dir=converted)
    if not spec.handle.startswith(("https://", "http://")):
        folder = Path(spec.handle)  # a renamed copy still hits the caches:
        return Backbone(spec, f"folder:{_folder_fingerprint(folder)}", folder, converted_dir=converted)
    os.environ["TFHUB_CACHE_DIR"] = str(settings.tfhub_cache_dir)
    if not _hub_cached(spec.handle, settings.tfhub_cache_dir):
        reason = net.probe(spec.handle)
        if reason:
            raise BackboneUnavailable(
                f"Could not download the network {spec.name} from {spec.handle} ({reason}). "
                "Without internet, point LESIONLIB_BACKBONE at a local copy of a TF2 "
                "feature-vector SavedModel, e.g. "
                "../shared/weights/tfhub/mobilenet_v2_100_224_feature_vector, or copy a "
                f"data/cache/tfhub/ folder from a machine that has it into "
                f"{settings.tfhub_cache_dir}; or set LESIONLIB_PROFILE=smoke for the tiny "
                "stand-in network.")
    hub = import_hub()
    return Backbone(spec, spec.handle, Path(hub.resolve(spec.handle)), converted_dir=converted)


def import_hub():
    """``tensorflow_hub``, without the warning its import still prints."""
    import_tensorflow()
    with warnings.catch_warnings():  # tensorflow-hub 0.16.1 still imports pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import tensorflow_hub as hub
    return hub


def load(settings: Settings) -> Backbone:
    """:func:`fetch`, then the network loaded, as notebook 03 does it, for later notebooks;
    the input size and feature count are read from the network itself."""
    tf = import_tensorflow()
    backbone = fetch(settings)
    spec = backbone.spec
    try:
        model = import_hub().load(str(backbone.folder))
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise BackboneUnavailable(f"{backbone.folder} could not be loaded as a TF2 SavedModel "
                                  f"({type(error).__name__}: {error}).") from None
    size = _input_size(model) or spec.input_size
    probe = model(tf.zeros([1, size, size, 3]))
    spec = BackboneSpec(spec.name, spec.handle, size, int(probe.shape[-1]), spec.description)
    return Backbone(spec, backbone.identity, backbone.folder, model, backbone.converted_dir)


def of_head(settings: Settings, record: dict) -> Backbone:
    """The network notebook 03's head was trained on, loaded: the profile's backbone, or the
    fine-tuned network notebook 03 saved in ``settings.fine_tuned_dir`` when the head's
    ``record`` says so (``record["backbone"]["fine_tuned"]``)."""
    if not record.get("backbone", {}).get("fine_tuned"):
        return load(settings)
    folder = settings.fine_tuned_dir
    if not (folder / "saved_model.pb").is_file():
        raise BackboneUnavailable(f"The head in {settings.head_dir} was trained on a fine-tuned network that "
                                  f"is no longer in {folder}. Run notebook 03 again.")
    return load(replace(settings, backbone=str(folder)))


LITERT_FORMAT = 1  # bump when the conversion changes: older .tflite files are then not found
EQUAL_WITHIN = 1e-3  # the largest feature difference from TensorFlow a conversion may show,
# relative to the largest feature: MobileNet V2 converts to within 3e-5 of features up to ~6


class NotConverted(LesionlibError):
    """The network does not convert for LiteRT, or its conversion computes other features."""


class TensorFlowFallback(UserWarning):
    """Bottlenecks are computed with TensorFlow because the network did not convert."""


class LiteRTNetwork:
    """A network converted to a float32 ``.tflite`` model, run by LiteRT with XNNPACK kernels.

    ``network(images)`` maps ``[N, s, s, 3]`` floats in [0, 1] to ``[N, D]`` features, like the
    TensorFlow network. It runs one image at a time: on a 2-core CPU that was as fast as
    batches of 4 to 8 and faster than batches of 32 (whose activations no longer fit the CPU's
    caches), and a fixed input shape never needs re-planning for a shorter last batch.
    """

    def __init__(self, model: Path | bytes, input_size: int, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(model) if isinstance(model, (str, Path)) else None  # None: in memory only
        self.threads = threads or _usable_cores()
        source = {"model_path": str(model)} if self.path else {"model_content": model}
        with native_output_filtered():  # not "INFO: Created TensorFlow Lite XNNPACK delegate"
            self._interpreter = Interpreter(**source, num_threads=self.threads)
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._output = self._interpreter.get_output_details()[0]["index"]
            self._interpreter.resize_tensor_input(self._input, [1, input_size, input_size, 3])
            self._interpreter.allocate_tensors()

    def __call__(self, images) -> np.ndarray:
        rows = []
        for image in np.asarray(images, dtype=np.float32):
            self._interpreter.set_tensor(self._input, image[np.newaxis])
            self._interpreter.invoke()
            rows.append(self._interpreter.get_tensor(self._output)[0])  # a copy
        return np.stack(rows)

    def __repr__(self) -> str:
        return f"LiteRT (XNNPACK, {self.threads} threads)"


def _usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's in a restricted container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def runtime_name(network: Callable) -> str:
    """What runs ``network``: "LiteRT (XNNPACK, n threads)" or "TensorFlow"."""
    return repr(network) if isinstance(network, LiteRTNetwork) else "TensorFlow"


def cpu_name() -> str:
    """The processor's model name, to print beside every speed figure."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), platform.processor() or "unknown CPU")


def _litert_stem(backbone: Backbone) -> str:
    """The converted file's name without its content hash: from hashes, never from an id."""
    description = json.dumps({"format": LITERT_FORMAT, "backbone": backbone.identity,
                              "input_size": backbone.spec.input_size}, sort_keys=True)
    label = backbone.spec.name if backbone.spec.name in REGISTRY else "model"  # for people only
    return f"{label}-{hashlib.sha256(description.encode()).hexdigest()[:16]}"


def _content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _convert(backbone: Backbone, network: Callable | None) -> bytes:
    """The network as a float32 ``.tflite`` flatbuffer, checked against TensorFlow on two random
    images; :class:`NotConverted` (saying why) if it cannot be converted or computes otherwise."""
    tf = import_tensorflow()
    size = backbone.spec.input_size
    network = network or backbone.model or import_hub().load(str(backbone.folder))
    probe = np.random.default_rng(0).uniform(size=(2, size, size, 3)).astype(np.float32)
    try:
        function = network.__call__.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.float32))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], network)
        # Freeze the function's graph and convert it, rather than save it as a SavedModel, load
        # that back and convert it: the same file, about five times faster (MobileNet V2 on a
        # busy 2-core machine: 5 s instead of 26 s).
        converter.experimental_lower_to_saved_model = False
        with native_output_filtered():
            flatbuffer = converter.convert()
        expected = np.asarray(network(probe), dtype=np.float32)
        converted = LiteRTNetwork(flatbuffer, size, threads=1)(probe)
    except Exception as error:  # noqa: BLE001 - converters fail in many ways; each one means "use TensorFlow"
        raise NotConverted(f"The network {backbone.spec.name} could not be converted for LiteRT "
                           f"({type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}).") from None
    difference = float(np.abs(converted - expected).max()) if converted.shape == expected.shape else np.inf
    if not difference <= EQUAL_WITHIN * max(1.0, float(np.abs(expected).max())):
        raise NotConverted(f"The network {backbone.spec.name} converted for LiteRT computes other "
                           f"features than TensorFlow (shape {converted.shape} vs {expected.shape}, "
                           f"largest difference {difference:.3g}).")
    return flatbuffer


def litert(backbone: Backbone, network: Callable | None = None, threads: int | None = None) -> LiteRTNetwork:
    """``backbone`` run by LiteRT: its ``.tflite`` file in ``backbone.converted_dir``, converted
    first if missing. A damaged file (its content no longer matches the hash in its name) is
    removed and converted again. ``network`` is the TensorFlow network (``hub.load`` of
    ``backbone.folder``; default ``backbone.model``, else loaded here), needed only to convert.
    :class:`NotConverted` if the network does not convert or computes other features."""
    size = backbone.spec.input_size
    if backbone.converted_dir is None:  # a Backbone made by hand: convert, keep nothing
        return LiteRTNetwork(_convert(backbone, network), size, threads)
    folder = Path(backbone.converted_dir)
    stem = _litert_stem(backbone)
    for path in sorted(folder.glob(f"{stem}-*.tflite")):
        try:
            if path.is_file() and _content_hash(path.read_bytes()) == path.stem.rsplit("-", 1)[-1]:
                return LiteRTNetwork(path, size, threads)
            path.unlink()  # damaged (or not ours to trust): converted again below
        except OSError:
            continue
    flatbuffer = _convert(backbone, network)
    target = folder / f"{stem}-{_content_hash(flatbuffer)}.tflite"
    try:
        with fsutil.atomic_path(target) as temporary:
            temporary.write_bytes(flatbuffer)
    except OSError as error:
        warnings.warn(f"The converted network could not be kept in {folder} ({error.strerror or error}): "
                      "it is used from memory and converted again next time.", stacklevel=2)
        return LiteRTNetwork(flatbuffer, size, threads)
    return LiteRTNetwork(target, size, threads)


def bottleneck_network(backbone: Backbone, network: Callable | None = None) -> Callable:
    """The fastest way this machine has to run ``backbone``: LiteRT (:func:`litert`) without a
    GPU; TensorFlow (``network``, default ``backbone.model``, else loaded here) on a GPU, and
    when the network does not convert (then a :class:`TensorFlowFallback` warning says why)."""
    tf = import_tensorflow()
    if not tf.config.list_physical_devices("GPU"):
        try:
            return litert(backbone, network)
        except NotConverted as error:
            warnings.warn(f"{error} Bottlenecks are computed with TensorFlow instead: the same "
                          "features, more slowly on a CPU.", TensorFlowFallback, stacklevel=2)
    return network or backbone.model or import_hub().load(str(backbone.folder))


KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


def keras_weights(settings: Settings, alpha: float = 1.0, size: int = 224) -> str | None:
    """The ``weights=`` for ``keras.applications.MobileNetV2`` (notebook 03's fine-tuning): a
    local file, or None for random weights (the smoke profile). ``imagenet`` is downloaded
    once into ``data/cache/keras/``; offline, this stops within seconds and names the fix."""
    if settings.keras_weights != IMAGENET:
        return None if settings.keras_weights is None else str(settings.keras_weights)
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"
    cached = settings.cache_dir / "keras" / name
    if not cached.is_file():
        reason = net.probe(KERAS_WEIGHTS + name)
        if reason:
            raise BackboneUnavailable(
                f"Could not download the ImageNet weights of MobileNet V2 ({reason}). Without "
                "internet, set LESIONLIB_KERAS_WEIGHTS to a local copy, e.g. ../shared/weights/"
                "keras/mobilenet_v2_1.0_224_float_no_top.weights.h5, or to 'none' (random weights).")
        _download(KERAS_WEIGHTS + name, cached)
    return str(cached)


def _download(url: str, target: Path, limit: int = 64 << 20) -> None:
    """``url`` into ``target``, written atomically (an interrupted download never counts) and
    refused past ``limit`` bytes (MobileNet V2's weights are 9 MB)."""
    import requests

    written = 0
    with requests.get(url, stream=True, timeout=(10, 60)) as response:
        response.raise_for_status()
        with fsutil.atomic_path(target) as temporary, temporary.open("wb") as out:
            for chunk in response.iter_content(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise BackboneUnavailable(f"{url} sent more than {limit >> 20} MB: not MobileNet "
                                              "V2's weights. Set LESIONLIB_KERAS_WEIGHTS to a local copy.")
                out.write(chunk)
