"""Notebook 05's web page in a real headless Chromium: it runs the exported TFLite file with
LiteRT.js, answers like the SavedModel, refuses a file that is not an image, and asks no host
but its own for anything.

Needs Playwright for Python, a Chromium and LiteRT.js from npm; without any of them the tests
are skipped, saying which is missing and how to get it (``.ci/run`` installs all three).
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionlib import DISCLAIMER, inference, page
from tests import test_export
from tests.test_export import CAMERA, convert_like_notebook_05

exported, saved_head = test_export.exported, test_export.saved_head  # the exported smoke model (fixtures)

CHROMIUM = os.environ.get("LESIONLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    """What a browser test lacks, Playwright or Chromium, in words; None when nothing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed: pip install playwright==1.65.2"
    if not CHROMIUM:
        return ("no Chromium found (set LESIONLIB_CHROMIUM or put chromium on the PATH): "
                "apt-get install chromium")
    if not os.access(CHROMIUM, os.X_OK):
        return f"LESIONLIB_CHROMIUM={CHROMIUM} is not an executable file"
    return None


def _missing() -> str | None:
    missing = browser_missing()
    if missing:
        return missing
    try:
        page.litert_version()
    except page.PageError as error:
        return str(error)
    return None


MISSING = _missing()
needs_browser = pytest.mark.skipif(MISSING is not None, reason=f"browser test skipped: {MISSING}")
if MISSING:  # said in every test run's summary, not only with -rs
    warnings.warn(f"tests/test_page.py: the browser test of notebook 05's page is skipped: {MISSING}", stacklevel=1)


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """The page for the float32 TFLite file, served on a free port of 127.0.0.1."""
    convert_like_notebook_05(exported.folder, "float32")
    folder = page.write(exported.folder, "float32", tmp_path_factory.mktemp("site") / "page")
    server = page.server(folder, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _pictures(exported, trained_smoke, tmp_path: Path, count: int = 3) -> list[Path]:
    """Test pictures already of the model's input size, as PNG: the page does not resize them,
    so its answers must be the SavedModel's."""
    _, manifest, *_ = trained_smoke
    paths = []
    for index, source in enumerate(manifest["path"].iloc[-count:]):
        picture = inference.camera_image(Path(source).read_bytes(), *CAMERA)
        paths.append(tmp_path / f"picture-{index}.png")
        Image.fromarray(picture).save(paths[-1])
    return paths


def _answered(tab, count: int) -> None:
    tab.wait_for_selector(f'body[data-answered="{count}"]', state="attached", timeout=60_000)


@needs_browser
def test_the_page_answers_like_the_savedmodel_and_asks_no_other_host(served, browser, exported,
                                                                     trained_smoke, tmp_path):
    requested: list[str] = []
    tab = browser.new_page()
    tab.on("request", lambda request: requested.append(request.url))
    tab.goto(served + "/")
    tab.wait_for_selector('body[data-ready="true"]', state="attached", timeout=60_000)
    assert DISCLAIMER in tab.inner_text("#disclaimer")
    pictures = _pictures(exported, trained_smoke, tmp_path)
    expected = exported.predict_camera(np.stack([np.asarray(Image.open(p)) for p in pictures]))
    for count, picture in enumerate(pictures, start=1):
        tab.set_input_files("#file", str(picture))
        _answered(tab, count)
        rows = tab.query_selector_all("#probabilities tr")
        shown = {row.get_attribute("data-label"): float(row.get_attribute("data-probability")) for row in rows}
        assert list(shown) == exported.classes
        np.testing.assert_allclose([shown[c] for c in exported.classes], expected[count - 1], atol=1e-4)
        assert "not a diagnosis" in tab.inner_text("#result-disclaimer")
    tab.close()
    assert requested and all(url.startswith(served + "/") for url in requested), requested
    assert any(url.endswith(".wasm") for url in requested) and any(url.endswith(".tflite") for url in requested)


@needs_browser
def test_a_file_that_is_not_an_image_gets_a_clear_message(served, browser, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("a shopping list, not a lesion")
    tab = browser.new_page()
    tab.goto(served + "/")
    tab.wait_for_selector('body[data-ready="true"]', state="attached", timeout=60_000)
    tab.set_input_files("#file", str(notes))
    _answered(tab, 1)
    assert "“notes.jpg” is not an image this page can read" in tab.inner_text("#message")
    assert tab.is_hidden("#result")
    if os.environ.get("LESIONLIB_PAGE_SCREENSHOT"):
        tab.screenshot(path=os.environ["LESIONLIB_PAGE_SCREENSHOT"], full_page=True)
    tab.close()


def test_the_page_is_refused_without_litert_and_served_only_when_written(exported, tmp_path):
    web = tmp_path / "web"
    shutil.copytree(page.WEB, web, ignore=shutil.ignore_patterns("node_modules"))
    with pytest.raises(page.PageError, match="npm ci --prefix"):
        page.write(exported.folder, "float32", tmp_path / "page", web=web)
    assert not (tmp_path / "page").exists()
    with pytest.raises(page.PageError, match="Run notebook 05"):
        page.server(tmp_path / "nothing", 0)

