"""The static page of notebook 05: the exported TFLite model, run in the browser by LiteRT.js.

:func:`write` puts the page (``web/`` of the course's repository), LiteRT.js's JavaScript and
WebAssembly files (from ``web/node_modules``, installed by ``npm ci --prefix web``), one
``.tflite`` file and ``page.json`` (which file, its input size, classes, disclaimer) into
``build/page/``. :func:`serve` serves that folder on localhost (``lesionlib serve``). The page
has no server logic: the image a learner drops is decoded, resized and classified in the
browser, and its Content-Security-Policy forbids requests to any other host.
"""

from __future__ import annotations

import functools
import json
import shutil
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from . import DISCLAIMER, LesionlibError, fsutil
from .export import read_record, tflite_path

WEB = Path(__file__).resolve().parent.parent / "web"  # the page's sources, in the repository
PAGE_FILES = ("index.html", "page.js", "page.css")
LITERT = Path("node_modules") / "@litertjs"
# What the page loads from LiteRT.js: its module, the one module it imports, and the plain
# (non-threaded) WebAssembly runtime with its fallback for browsers without relaxed SIMD.
RUNTIME = {"core/dist/index.js": "index.js", "wasm-utils/dist/bundle.js": "wasm-utils.js",
           **{f"core/wasm/litert_wasm{kind}_internal.{ext}": f"wasm/litert_wasm{kind}_internal.{ext}"
              for kind in ("", "_compat") for ext in ("js", "wasm")}}
CONFIG = "page.json"


def folder(settings) -> Path:
    """Where notebook 05 writes the page and ``lesionlib serve`` serves it from: ``build/page``."""
    return settings.build_dir / "page"


class PageError(LesionlibError):
    """The page cannot be written: its sources or LiteRT.js are missing; the message says how to get them."""


def litert_version(web: Path = WEB) -> str:
    """The installed ``@litertjs/core`` version, or a :class:`PageError` saying how to install it."""
    package = web / LITERT / "core" / "package.json"
    if not (web / "index.html").is_file():
        raise PageError(f"The page's files are not here ({web}): the page needs the course's "
                        "repository (git clone), not only the lesionlib package.")
    if not package.is_file():
        raise PageError(f"LiteRT.js is not installed in {web / 'node_modules'}. Install it with "
                        f"`npm ci --prefix {web}` (needs Node.js and npm; the version is pinned in "
                        "web/package-lock.json).")
    return json.loads(package.read_text(encoding="utf-8"))["version"]


def write(model_folder: Path, variant: str, target: Path, output_quantization: tuple[float, int] | None = None,
          web: Path = WEB) -> Path:
    """Write the page for ``model-<variant>.tflite`` of ``model_folder`` into ``target``, replacing
    it whole. ``output_quantization``: the output's ``(scale, zero_point)`` when it is quantised."""
    version = litert_version(web)
    record = read_record(model_folder)
    model = tflite_path(model_folder, variant)
    if not model.is_file():
        raise PageError(f"{model} is missing. Run notebook 05 to convert the model.")
    if "camera_input" not in record:
        raise PageError(f"{model_folder} was exported before models took camera images: run notebook 05 again.")
    with fsutil.atomic_folder(target) as temporary:
        for name in PAGE_FILES:
            shutil.copyfile(web / name, temporary / name)
        for source, name in RUNTIME.items():
            (temporary / "litert" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(web / LITERT / source, temporary / "litert" / name)
        shutil.copyfile(model, temporary / model.name)
        config = {"model": model.name, "variant": variant, "bytes": model.stat().st_size,
                  "input": record["camera_input"], "classes": record["classes"], "disclaimer": DISCLAIMER,
                  "litert": version, "output_quantization": list(output_quantization) if output_quantization else None}
        fsutil.write_json_atomic(temporary / CONFIG, config)
    return Path(target)


class _Handler(SimpleHTTPRequestHandler):
    """Static files only, never cached, quiet; WebAssembly with its own type."""

    extensions_map: ClassVar[dict[str, str]] = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript", ".tflite": "application/octet-stream"}

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        pass


def server(folder: Path, port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for the written page on 127.0.0.1 (only this computer can reach it);
    ``port=0`` picks a free port. Call ``serve_forever()`` on it, ``shutdown()`` to stop."""
    if not (Path(folder) / CONFIG).is_file():
        raise PageError(f"{folder} holds no page ({CONFIG} is missing). Run notebook 05 to write it.")
    handler = functools.partial(_Handler, directory=str(folder))
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def size_bytes(folder: Path) -> int:
    """What a browser downloads to open the page: every file in its folder."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def publish(model_folder: Path, variant: str, target: Path, output_quantization: tuple[float, int] | None = None) -> str:
    """:func:`write`, then one line for the notebook: where the page is and how to open it, or
    what is missing and how to get it (the notebook goes on either way)."""
    try:
        written = write(model_folder, variant, target, output_quantization)
    except PageError as error:
        return f"The page was not written: {error}"
    return (f"The page is in {written} ({size_bytes(written) / 1e6:.1f} MB with LiteRT.js and "
            f"model-{variant}.tflite). To open it: `lesionlib serve`, then the address it prints.")
