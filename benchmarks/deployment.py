"""How fast is the exported model? The SavedModel against each TFLite variant, on real images.

    .venv/bin/python benchmarks/deployment.py [--model build/model] [--images 200] [--shared ../shared]

Needs a model exported by notebook 05 with its TFLite files, e.g. after
``LESIONLIB_DATA_SOURCE=../shared/data/ham10000 make course``. For each way of running it:

* latency: the median time of one image, in milliseconds (what a user waits for);
* throughput: images per second over all images (SavedModel in batches of 32; TFLite one
  image at a time, as an app runs it).

The SavedModel is timed twice: from the JPEG bytes (decoding and resizing inside) and from
decoded pixels (what TFLite gets, so that the comparison is fair). Prints a table; asserts
nothing (speed is measured here, never in the tests).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe

from lesionlib import LesionlibError, export, inference
from lesionlib.settings import load_settings
from lesionlib.tfutil import import_tensorflow

ROOT = Path(__file__).resolve().parent.parent


def _throughput(run_all, count: int) -> float:
    run_all()  # warm up
    started = time.perf_counter()
    run_all()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: build/model of LESIONLIB_HOME")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    tf = import_tensorflow()

    folder = args.model or load_settings().model_dir
    try:
        model = inference.ExportedModel(folder)
        lites = {variant: inference.TFLiteModel(folder, variant) for variant in export.TFLITE_VARIANTS}
    except LesionlibError as error:
        raise SystemExit(f"{error}\n(Export one first, e.g. LESIONLIB_DATA_SOURCE=../shared/data/ham10000 "
                         "make course.)") from None
    paths = sorted((args.shared / "data" / "ham10000" / "images").glob("ISIC_*.jpg"))[:args.images]
    if not paths:
        raise SystemExit(f"No HAM10000 images in {args.shared}/data/ham10000/images.")
    encoded = [path.read_bytes() for path in paths]
    pixels = np.stack([model.pixels_of(data) for data in encoded])
    n = len(paths)

    rows = {
        "SavedModel, JPEG bytes": (
            inference.latency_ms(lambda: model.predict_bytes(encoded[:1])),
            _throughput(lambda: model.predict_bytes(encoded, batch_size=32), n), model.size_bytes),
        "SavedModel, pixels": (
            inference.latency_ms(lambda: model.predict_pixels(pixels[:1])),
            _throughput(lambda: model.predict_pixels(pixels, batch_size=32), n), model.size_bytes),
    }
    for variant, lite in lites.items():
        rows[f"TFLite {variant}"] = (inference.latency_ms(lambda lite=lite: lite.predict_one(pixels[0])),
                                     _throughput(lambda lite=lite: lite.predict(pixels), n), lite.size_bytes)
    table = pd.DataFrame(rows, index=["latency (ms)", "images/s", "size (MB)"]).T
    table["size (MB)"] /= 1e6
    print(f"{n} HAM10000 images (200x150 JPEG), model {folder} "
          f"({model.record['training']['backbone']['name']}, input {model.input_size})")
    print(describe(tf))
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
