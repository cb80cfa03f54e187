"""Notebook 05's upload demo in a real JupyterLab, driven by headless Chromium: the upload box
shows its whole label, a picture gets its probabilities (those of the exported model) and the
disclaimer, a text file named ``.jpg`` gets a clear message, and no host but the server is asked
for anything.

Needs JupyterLab, Playwright for Python and a Chromium (found as tests/test_page.py finds it);
without them the test is skipped, saying which is missing. The server, its kernel and their
files live in the test's temporary folder: nothing is written to ~/.jupyter or the repository.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from lesionlib import DISCLAIMER
from tests import test_export, test_page
from tests.conftest import ROOT

exported, saved_head = test_export.exported, test_export.saved_head  # the exported smoke model (fixtures)
browser = test_page.browser  # headless Chromium, launched as for notebook 05's page
KERNEL = "lesionlib-test"  # the kernelspec written for the server: this Python, sys.executable
KERNEL_NAME = "Python (lesion-course tests)"
TOKEN = "lesion-course-test"
WAIT = 120_000  # ms, the bound of every wait in the browser: kernel start and TensorFlow's import are slow


def _missing() -> str | None:
    for module, install in (("jupyterlab", "pip install jupyterlab==4.6.6"),
                            ("ipywidgets", "pip install ipywidgets==8.1.9")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed: {install}"
    return test_page.browser_missing()


MISSING = _missing()
if MISSING:  # said in every test run's summary, not only with -rs
    warnings.warn(f"tests/test_lab_demo.py: the browser test of notebook 05's upload demo is skipped: {MISSING}",
                  stacklevel=1)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"browser test skipped: {MISSING}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _jupyter_env(base: Path) -> dict[str, str]:
    """The environment of the server and its kernel: Jupyter's and IPython's folders under
    ``base``, one kernelspec (this Python), lesionlib from this checkout."""
    data = base / "data"
    spec = data / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL_NAME, "language": "python"}))
    settings = base / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no "Would you like to get notified about official Jupyter news?"
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                            "checkForUpdates": False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(data),
               JUPYTER_PATH=str(data), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               IPYTHONDIR=str(base / "ipython"), LESIONLIB_HOME=str(base / "home"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """A JupyterLab server on a free port of 127.0.0.1: (its URL, its root folder, its log).
    Stopped however the test ends, within 40 seconds."""
    base = tmp_path_factory.mktemp("jupyter")
    root = base / "root"
    root.mkdir()
    port = _free_port()
    log = (base / "lab.log").open("w")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
               "--allow-root", "--ServerApp.terminals_enabled=False", "--LabApp.news_url=None",
               "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
               f"--KernelSpecManager.allowed_kernelspecs={KERNEL}", "--KernelSpecManager.ensure_native_kernel=False",
               f"--MappingKernelManager.default_kernel_name={KERNEL}"]
    server = subprocess.Popen(command, cwd=root, env=_jupyter_env(base), stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {server.returncode}; its log: {log.name}")
            try:
                direct.open(f"{url}/api/status?token={TOKEN}", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {url} within 60 s; its log: {log.name}")
                time.sleep(0.5)
        yield url, root, Path(log.name)
    finally:
        server.terminate()  # the server shuts its kernels down
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # its kernels watch it (JPY_PARENT_PID) and stop with it
            server.wait(timeout=10)
        log.close()


def _notebook(root: Path, model_folder: Path) -> str:
    """A one-cell notebook that prints its kernel's Python and shows the demo."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    source = ("import sys\nfrom lesionlib import demo, inference\nprint('kernel:', sys.executable)\n"
              f"demo.upload_demo(inference.ExportedModel({str(model_folder)!r}))")
    notebook = new_notebook(cells=[new_code_cell(source)], metadata={
        "kernelspec": {"name": KERNEL, "display_name": KERNEL_NAME, "language": "python"}})
    nbformat.write(notebook, root / "demo.ipynb")
    return "demo.ipynb"


def _choose(tab, upload, path: Path) -> None:
    """Click the upload box and choose ``path`` in the file dialog, as a learner does."""
    with tab.expect_file_chooser(timeout=10_000) as chooser:
        upload.click()
    chooser.value.set_files(str(path))


def _shown_probabilities(text: str, name: str, classes: list[str]) -> dict[str, float]:
    """The probabilities of the demo's line of text for the image ``name``."""
    line = next(line for line in text.splitlines() if line.startswith(f"{name}: "))
    return {label: float(p) for label, p in re.findall(rf"\b({'|'.join(classes)}) (\d\.\d\d)\b", line)}


def test_the_upload_demo_in_jupyterlab(lab, browser, exported, trained_smoke, tmp_path):
    from playwright.sync_api import Error as PlaywrightError

    url, root, log = lab
    _, manifest, *_ = trained_smoke
    picture = Path(manifest["path"].iloc[-1])  # a smoke-profile JPEG, as notebook 01 stores them
    expected = exported.predict_bytes([picture.read_bytes()])[0]
    notes = tmp_path / "notes.jpg"
    notes.write_text("a shopping list, not a lesion")
    notebook = _notebook(root, exported.folder)
    requested: list[str] = []
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.on("request", lambda request: requested.append(request.url))
    tab.on("websocket", lambda socket: requested.append(socket.url))
    try:
        tab.goto(f"{url}/lab/tree/{notebook}?token={TOKEN}", timeout=WAIT)
        # the status bar names the kernel once it is connected: a cell run before that is dropped
        tab.get_by_text(f"{KERNEL_NAME} | Idle").wait_for(timeout=WAIT)
        tab.click(".jp-Cell .jp-InputArea-editor")
        tab.keyboard.press("Control+Enter")
        upload = tab.wait_for_selector(".widget-upload", timeout=WAIT)  # TensorFlow's import and the model's load
        assert f"kernel: {sys.executable}" in tab.inner_text(".jp-Cell .jp-OutputArea")
        scroll, client, label = upload.evaluate("e => [e.scrollWidth, e.clientWidth, e.innerText]")
        assert label.startswith("Upload an image") and scroll <= client, (label, scroll, client)  # not "Upload an ima…"

        _choose(tab, upload, picture)
        output = tab.locator(".widget-output")
        output.get_by_text(f"{picture.name}: the model's probabilities").wait_for(timeout=WAIT)
        assert output.locator("img").count() == 1  # the figure: the image, where the model looked, the bars
        text = output.inner_text()
        assert DISCLAIMER in text
        shown = _shown_probabilities(text, picture.name, exported.classes)
        assert list(shown) == exported.classes, text
        np.testing.assert_allclose([shown[c] for c in exported.classes], expected, atol=0.005 + 1e-4)

        _choose(tab, upload, notes)
        output.get_by_text(f"{notes.name}: not predicted: not an image").wait_for(timeout=WAIT)
        assert "give a JPEG or PNG image" in output.inner_text()
        assert output.locator("img").count() == 0  # the earlier picture's prediction is gone
    except Exception as error:
        shot = tmp_path / "jupyterlab.png"
        try:
            tab.screenshot(path=shot, full_page=True, timeout=10_000)
            error.add_note(f"screenshot of the browser: {shot}")
        except PlaywrightError as failure:  # a crashed browser: the test's own error matters more
            error.add_note(f"no screenshot of the browser: {failure}")
        error.add_note(f"JupyterLab's log: {log}")
        raise
    finally:
        tab.close()
    others = [address for address in requested
              if urlsplit(address).scheme not in ("data", "blob")
              and urlsplit(address).hostname not in ("127.0.0.1", "localhost")]
    assert requested and not others, others
