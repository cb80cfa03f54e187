"""How fast are bottlenecks computed? Four ways, on real HAM10000 images, with MobileNet V2.

    .venv/bin/python benchmarks/bottlenecks.py [--images 640] [--shared ../shared]

(a) the original's way: decode one image, run the network on it, repeat;
(b) the course's pipeline (tf.data, parallel decode and resize, batches of 32) with an
    empty cache;
(c) the same again, with every bottleneck in the cache;
(d) the network alone on batches already decoded and resized in memory: the ceiling.

Targets on a 2-core CPU: (b) >= 0.85 x (d); (b) >= 5 x (a); (c) >= 50 x (b).
Prints a table; asserts nothing (speed is measured here, never in the tests).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from machine import describe

from lesionlib import backbones, features, images, sources
from lesionlib.settings import load_settings
from lesionlib.tfutil import import_tensorflow

ROOT = Path(__file__).resolve().parent.parent


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    tf = import_tensorflow()

    ham = args.shared / "data" / "ham10000"
    _, candidates = sources.read_source(ham)
    frame = candidates.head(args.images).rename(columns={"source_path": "path"})
    frame["sha256"] = [images.sha256_of(p) for p in frame["path"]]
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({"LESIONLIB_HOME": home, "LESIONLIB_BACKBONE": str(
            args.shared / "weights/tfhub/mobilenet_v2_100_224_feature_vector")})
        backbone = backbones.load(settings)
        size = backbone.spec.input_size
        n = len(frame)

        # Warm up: trace the network for both batch shapes once, outside the clocks.
        backbone(tf.zeros([1, size, size, 3]))
        backbone(tf.zeros([32, size, size, 3]))

        def one_at_a_time() -> None:
            for path in frame["path"]:
                image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
                image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), [size, size])
                backbone(image[tf.newaxis]).numpy()

        load = features.image_loader(size)
        decoded = list(tf.data.Dataset.from_tensor_slices([str(p) for p in frame["path"]]).map(load).batch(32))

        def network_alone() -> None:
            for batch in decoded:
                backbone(batch).numpy()

        cache = Path(home) / "cache"
        extract = lambda: features.extract(frame, backbone, cache, progress=False)  # noqa: E731
        timings = {
            "(a) one image at a time (the original)": _timed(one_at_a_time),
            "(b) course pipeline, cold cache": _timed(extract),
            "(c) course pipeline, warm cache": _timed(extract),
            "(d) network alone, decoded batches in memory": _timed(network_alone),
        }
    rates = {name: n / seconds for name, seconds in timings.items()}
    table = pd.DataFrame({"seconds": timings, "images/s": rates}).round(3)
    a, b, c, d = rates.values()
    print(f"{n} HAM10000 images (200x150 JPEG) -> MobileNet V2 at {size}x{size}, batch 32")
    print(describe(tf))
    print(table.to_string())
    print(f"(b)/(d) = {b / d:.2f}  (target >= 0.85)")
    print(f"(b)/(a) = {b / a:.1f}  (target >= 5)")
    print(f"(c)/(b) = {c / b:.0f}  (target >= 50)")


if __name__ == "__main__":
    main()
