"""How fast are bottlenecks computed? Six ways, on real HAM10000 images, with MobileNet V2.

    .venv/bin/python benchmarks/bottlenecks.py [--images 640] [--rounds 3] [--shared ../shared]

(a) the original's way: decode one image, run the network (TensorFlow) on it, repeat;
(b) the course's pipeline (tf.data, parallel decode and resize, batches of 32) with an empty
    cache and its default network on a CPU: LiteRT with XNNPACK;
(b') the same with TensorFlow's network (what notebook 03 did before LiteRT; still the GPU way);
(c) the course's pipeline again, with every bottleneck in the cache;
(d) TensorFlow's network alone on batches of 32 already decoded and resized in memory;
(e) LiteRT's network alone on the same images, one at a time (the library's way; a table
    of batch sizes follows).

Targets on a 2-core CPU: (b) >= 3 x (a) and >= 3 x (d); (c) >= 50 x (b). Every rate is also
given as a share of the fastest network-alone rate, the ceiling of this machine. Then each
runtime computes the bottlenecks once more in a fresh process of its own, which reports its
peak memory (VmHWM in /proc/self/status: the resident high-water mark, children excluded).
The load average is printed beside every figure: other programs on the machine slow it down,
so every way runs ``--rounds`` times, round after round, and its fastest run is kept.
Prints tables; asserts nothing (speed is measured here, never in the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe, load_average, peak_memory_mb

from lesionlib import backbones, features, images, sources
from lesionlib.settings import load_settings
from lesionlib.tfutil import import_tensorflow

ROOT = Path(__file__).resolve().parent.parent
RUNTIMES = ("LiteRT", "TensorFlow")


def _timed(run) -> tuple[float, str]:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started, load_average()


def _frame(shared: Path, count: int) -> pd.DataFrame:
    _, candidates = sources.read_source(shared / "data" / "ham10000")
    return candidates.head(count).rename(columns={"source_path": "path"})


def _settings(home: str, shared: Path):
    return load_settings({"LESIONLIB_HOME": home, "LESIONLIB_BACKBONE": str(
        shared / "weights/tfhub/mobilenet_v2_100_224_feature_vector")})


def _litert_batches(network: backbones.LiteRTNetwork, images: np.ndarray, batch: int) -> tuple[float, str]:
    """LiteRT's images/s on ``images`` in batches of ``batch`` (the library uses 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(network.path), num_threads=network.threads)
    source, result = (interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"])
    interpreter.resize_tensor_input(source, [batch, *images.shape[1:]])
    interpreter.allocate_tensors()
    starts = range(0, len(images) - batch + 1, batch)

    def run() -> None:
        for start in starts:
            interpreter.set_tensor(source, images[start:start + batch])
            interpreter.invoke()
            interpreter.get_tensor(result)

    run()  # warm up
    seconds, load = _timed(run)
    return len(starts) * batch / seconds, load


def child(runtime: str, home: str, shared: Path, count: int) -> None:
    """One runtime computing the bottlenecks in a process of its own, as a notebook kernel
    would: prints seconds and the peak memory as JSON. The LiteRT process loads no TensorFlow
    network: its converted file is already in ``home``'s cache."""
    import_tensorflow()
    frame = _frame(shared, count)
    settings = _settings(home, shared)
    if runtime == "LiteRT":
        backbone = backbones.fetch(settings)
        network = backbones.litert(backbone)
    else:
        backbone = backbones.load(settings)
        network = backbone.model
    seconds, load = _timed(lambda: features.extract(frame, backbone, Path(home) / f"cache-{runtime}",
                                                    network=network, progress=False))
    print(json.dumps({"seconds": seconds, "load": load, "peak_mb": peak_memory_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--rounds", type=int, default=3, help="each way's fastest of this many runs")
    parser.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.home, args.shared, args.images)
    tf = import_tensorflow()
    print(describe(tf))
    print(f"load average at the start: {load_average()}")

    frame = _frame(args.shared, args.images)
    frame["sha256"] = [images.sha256_of(p) for p in frame["path"]]
    n = len(frame)
    with tempfile.TemporaryDirectory() as home:
        settings = _settings(home, args.shared)
        backbone = backbones.load(settings)
        size = backbone.spec.input_size
        conversion, conversion_load = _timed(lambda: backbones.litert(backbone))
        fast = backbones.litert(backbone)  # the converted file, from the cache

        # Warm up: trace the network for both batch shapes once, outside the clocks.
        backbone(tf.zeros([1, size, size, 3]))
        backbone(tf.zeros([32, size, size, 3]))
        fast(np.zeros([1, size, size, 3], np.float32))

        def one_at_a_time() -> None:
            for path in frame["path"]:
                image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
                image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), [size, size])
                backbone(image[tf.newaxis]).numpy()

        load = features.image_loader(size)
        decoded = list(tf.data.Dataset.from_tensor_slices([str(p) for p in frame["path"]]).map(load).batch(32))
        outputs = {}

        def network_alone(runtime: str, network) -> None:
            outputs[runtime] = np.concatenate([np.asarray(network(batch)) for batch in decoded])

        def pipeline(cache: str, network=None) -> None:
            features.extract(frame, backbone, Path(home) / cache, network=network, progress=False)

        ways = {
            "(a) one image at a time, TensorFlow (the original)": lambda r: one_at_a_time(),
            "(b) course pipeline, cold cache, LiteRT (the CPU default)": lambda r: pipeline(f"b{r}"),
            "(b') course pipeline, cold cache, TensorFlow": lambda r: pipeline(f"b'{r}", backbone.model),
            "(c) course pipeline, warm cache": lambda r: pipeline(f"b{r}"),
            "(d) network alone, TensorFlow, decoded batches of 32": lambda r: network_alone(
                "TensorFlow", backbone.model),
            "(e) network alone, LiteRT, decoded images one by one": lambda r: network_alone("LiteRT", fast),
        }
        timings: dict[str, tuple[float, str]] = {}
        for round_ in range(args.rounds):  # round after round: a busy spell slows one, not all
            for name, way in ways.items():
                timed = _timed(lambda: way(round_))  # noqa: B023 - called at once
                timings[name] = min(timings.get(name, timed), timed)
        batch_sizes = {size_: _litert_batches(fast, np.concatenate(decoded[:2]), size_)
                       for size_ in (1, 4, 8, 32)}
        memory = {}
        for runtime in RUNTIMES:
            command = [sys.executable, __file__, "--child", runtime, "--home", home,
                       "--shared", str(args.shared), "--images", str(n)]
            done = subprocess.run(command, capture_output=True, text=True, check=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            memory[runtime] = json.loads(done.stdout.strip().splitlines()[-1])

    seconds = {name: value for name, (value, _) in timings.items()}
    rates = {name: n / value for name, value in seconds.items()}
    a, b, b_tf, c, d, e = rates.values()
    ceiling = max(d, e)
    table = pd.DataFrame({"seconds": seconds, "images/s": rates,
                          "x fastest network alone": {k: r / ceiling for k, r in rates.items()},
                          "load average after": {k: load for k, (_, load) in timings.items()}})
    print(f"\n{n} HAM10000 images (200x150 JPEG) -> MobileNet V2 at {size}x{size}, "
          f"LiteRT on {fast.threads} threads; each way's fastest of {args.rounds} rounds")
    print(describe(tf))
    print(table.round({"seconds": 2, "images/s": 1, "x fastest network alone": 2}).to_string())
    print(f"\nconversion to .tflite, once per backbone: {conversion:.1f} s (load {conversion_load})")
    difference = np.abs(outputs["LiteRT"] - outputs["TensorFlow"]).max()
    print(f"largest feature difference, LiteRT vs TensorFlow: {difference:.2g} "
          f"(features up to {np.abs(outputs['TensorFlow']).max():.1f})")
    print(f"(b)/(a)  = {b / a:.1f}  (target >= 3)")
    print(f"(b)/(d)  = {b / d:.1f}  (target >= 3)")
    print(f"(c)/(b)  = {c / b:.0f}  (target >= 50)")
    print(f"(b)/(b') = {b / b_tf:.1f}  (LiteRT's gain in the pipeline)")
    print(f"(e)/(d)  = {e / d:.1f}  (LiteRT's gain, network alone)")
    print(f"(b)/(e)  = {b / e:.2f}  (the pipeline's share of LiteRT's ceiling: decoding costs the rest)")
    print("\nLiteRT alone, by batch size (the library runs one image at a time):")
    print(pd.DataFrame({size_: {"images/s": round(rate, 1), "load average after": load}
                        for size_, (rate, load) in batch_sizes.items()}).T.rename_axis("batch").to_string())
    print("\nEach runtime alone in a fresh process, cold cache (what a notebook kernel holds):")
    print(pd.DataFrame({runtime: {"images/s": round(n / m["seconds"], 1), "peak memory (MB, VmHWM)":
                                  round(m["peak_mb"]), "load average after": m["load"]}
                        for runtime, m in memory.items()}).T.to_string())


if __name__ == "__main__":
    main()
