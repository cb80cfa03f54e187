"""How fast is the exported model? The SavedModel against each TFLite variant, on real images,
and the page of notebook 05 in a headless Chromium.

    .venv/bin/python benchmarks/deployment.py [--model build/model] [--images 200] [--shared ../shared]
                                              [--page build/page] [--page-images 20] [--screenshot out.png]

Needs a model exported by notebook 05 with its TFLite files, e.g. after
``LESIONLIB_DATA_SOURCE=../shared/data/ham10000 make course``. For each way of running it:

* latency: the median time of one image, in milliseconds (what a user waits for);
* throughput: images per second over all images (SavedModel in batches of 32; TFLite one
  image at a time, as an app runs it).

The SavedModel is timed twice: from the JPEG bytes (decoding and resizing inside) and from
camera pictures (what TFLite gets, so that the comparison is fair). With ``--page`` (needs
Playwright and Chromium, as tests/test_page.py), the page's own figures: its agreement with the
SavedModel on ``--page-images`` pictures, the largest difference of a probability and the
median time it shows. Prints tables; asserts nothing (speed is measured here, never in the
tests).
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
    parser.add_argument("--page", type=Path, default=None, help="a page written by notebook 05 (build/page)")
    parser.add_argument("--page-images", type=int, default=20)
    parser.add_argument("--screenshot", type=Path, default=None, help="save the page after the last picture")
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
    pictures = np.stack([inference.camera_image(data, *model.camera_input) for data in encoded])
    pixels = np.stack([model.pixels_of(data) for data in encoded])
    n = len(paths)

    rows = {
        "SavedModel, JPEG bytes": (
            inference.latency_ms(lambda: model.predict_bytes(encoded[:1])),
            _throughput(lambda: model.predict_bytes(encoded, batch_size=32), n), model.size_bytes),
        "SavedModel, prepared pixels": (
            inference.latency_ms(lambda: model.predict_pixels(pixels[:1])),
            _throughput(lambda: model.predict_pixels(pixels, batch_size=32), n), model.size_bytes),
        "SavedModel, camera pictures": (
            inference.latency_ms(lambda: model.predict_camera(pictures[:1])),
            _throughput(lambda: model.predict_camera(pictures), n), model.size_bytes),
    }
    for variant, lite in lites.items():
        rows[f"TFLite {variant}"] = (inference.latency_ms(lambda lite=lite: lite.predict_one(pictures[0])),
                                     _throughput(lambda lite=lite: lite.predict(pictures), n), lite.size_bytes)
    table = pd.DataFrame(rows, index=["latency (ms)", "images/s", "size (MB)"]).T
    table["size (MB)"] /= 1e6
    print(f"{n} HAM10000 images (200x150 JPEG), model {folder} "
          f"({model.record['training']['backbone']['name']}, input {model.input_size})")
    print(describe(tf))
    print(table.round(2).to_string())
    if args.page:
        _page_figures(args.page, paths[:args.page_images], model, args.screenshot)


def _page_figures(folder: Path, paths: list[Path], model, screenshot: Path | None) -> None:
    """The page in a headless Chromium: each picture chosen in turn, its probabilities and time read."""
    import json
    import shutil
    import threading

    from playwright.sync_api import sync_playwright

    from lesionlib import page

    config = json.loads((folder / "page.json").read_text())
    server = page.server(folder, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shown, times, hosts = [], [], set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 900, "height": 700})
        tab.on("request", lambda request: hosts.add(request.url.split("/")[2]))
        tab.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        tab.wait_for_selector('body[data-ready="true"]', state="attached", timeout=120_000)
        for count, path in enumerate(paths, start=1):
            tab.set_input_files("#file", str(path))
            tab.wait_for_selector(f'body[data-answered="{count}"]', state="attached", timeout=60_000)
            shown.append([float(row.get_attribute("data-probability"))
                          for row in tab.query_selector_all("#probabilities tr")])
            times.append(float(tab.inner_text("#timing").split(" in ")[1].split(" ms")[0]))
        if screenshot:
            tab.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    server.shutdown()
    expected = model.predict_bytes([path.read_bytes() for path in paths])
    shown = np.array(shown)
    print(f"page (model-{config['variant']}.tflite, LiteRT.js {config['litert']}, headless Chromium): "
          f"{len(paths)} pictures, top-1 agreement with the SavedModel "
          f"{(shown.argmax(1) == expected.argmax(1)).mean():.3f}, largest probability difference "
          f"{np.abs(shown - expected).max():.3g}, median {np.median(times):.0f} ms per picture "
          f"(first {times[0]:.0f} ms); hosts asked: {', '.join(sorted(hosts))}")


if __name__ == "__main__":
    main()
