"""The lesionlib command."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from lesionlib import cli


def test_settings_prints_the_resolved_values(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LESIONLIB_HOME", str(tmp_path))
    monkeypatch.setenv("LESIONLIB_PROFILE", "smoke")
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "profile: smoke" in out and str(tmp_path) in out


def test_data_builds_the_manifest(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LESIONLIB_HOME", str(tmp_path))
    monkeypatch.setenv("LESIONLIB_PROFILE", "smoke")
    monkeypatch.delenv("LESIONLIB_DATA_SOURCE", raising=False)
    assert cli.main(["data", "--quiet"]) == 0
    out = capsys.readouterr().out
    manifest = pd.read_csv(tmp_path / "data" / "manifest.csv")
    assert f"{len(manifest)} images from synthetic" in out
    assert "7 files left out" in out


def test_a_settings_error_is_one_clear_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LESIONLIB_HOME", str(tmp_path))
    monkeypatch.setenv("LESIONLIB_DATA_SOURCE", "no/such/folder")
    assert cli.main(["data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lesionlib: LESIONLIB_DATA_SOURCE='no/such/folder'")
    assert "Traceback" not in err


def test_installed_command_runs():
    result = subprocess.run([sys.executable, "-m", "lesionlib.cli", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("lesionlib ")


def test_printable_names_are_valid_utf8_with_the_odd_bytes_escaped():
    import json
    import os

    name = os.fsdecode(b"/images/l\xe9sion-\xff.jpg")  # Latin-1 bytes: not UTF-8
    shown = cli.printable(name)
    assert shown == "/images/l\\xe9sion-\\xff.jpg"
    assert cli.printable("/images/lésion.jpg") == "/images/lésion.jpg"  # real UTF-8 stays
    assert cli.printable("odd \ud800") == "odd \\ud800"
    text = json.dumps({"image": shown})
    assert json.loads(text.encode("utf-8").decode("utf-8"))["image"] == shown


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path):
    import os
    import threading

    from lesionlib import inference

    fifo = tmp_path / "lesion.jpg"
    os.mkfifo(fifo)

    fired = []

    def unblock():  # if the read blocked, a writer ends it (with no bytes) and the test fails
        fired.append(True)
        with open(fifo, "wb"):
            pass

    watchdog = threading.Timer(10, unblock)
    watchdog.start()
    try:
        with pytest.raises(ValueError, match=r"not a regular file \(a pipe \(FIFO\)\)"):
            inference.read_image_file(fifo)
    finally:
        watchdog.cancel()
    assert not fired
    with pytest.raises(ValueError, match=r"not a regular file \(a folder\)"):
        inference.read_image_file(tmp_path)


def test_dev_zero_and_a_huge_file_are_refused_without_reading_them(tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as out:  # sparse: 65 MB declared, nothing on disk
        out.truncate(65 << 20)
    small = tmp_path / "small.jpg"
    small.write_bytes(b"\xff\xd8 some bytes")
    # in a child with 1 GB of address space and a time limit: reading /dev/zero to its end
    # would otherwise fill the machine's memory
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from lesionlib import inference\n"
            "for path in sys.argv[1:]:\n"
            "    try: print(len(inference.read_image_file(path)))\n"
            "    except ValueError as error: print(error)\n")
    result = subprocess.run([sys.executable, "-c", code, "/dev/zero", str(huge), str(small)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "not a regular file (a character device): give an image file",
        "file too large (over 67,108,864 bytes): give an image file of at most 64 MB",
        str(len(small.read_bytes()))]


def test_a_file_that_grows_past_the_cap_while_read_is_refused(tmp_path, monkeypatch):
    from lesionlib import inference

    growing = tmp_path / "growing.jpg"
    growing.write_bytes(b"x" * 10)
    real_fstat = inference.os.fstat

    def stale_fstat(fd):  # the size when it was opened; it has grown since
        fields = list(real_fstat(fd))
        fields[6] = 5
        return inference.os.stat_result(fields)

    monkeypatch.setattr(inference.os, "fstat", stale_fstat)
    with pytest.raises(ValueError, match="file too large"):
        inference.read_image_file(growing, limit=9)
    assert inference.read_image_file(growing, limit=10) == b"x" * 10


def test_serve_serves_the_page_folder_on_localhost_only(tmp_path):
    """``lesionlib serve`` in its own process: it prints its address, serves the page's files
    (WebAssembly with its type, nothing cached) and refuses a folder without a page."""
    import json
    import urllib.request

    folder = tmp_path / "page"
    folder.mkdir()
    (folder / "page.json").write_text(json.dumps({"model": "model-float16.tflite"}))
    (folder / "runtime.wasm").write_bytes(b"\0asm")
    server = subprocess.Popen([sys.executable, "-m", "lesionlib", "serve", "--port", "0", "--page", str(folder)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first.startswith(f"Serving {folder} at http://127.0.0.1:")
        address = first.split(" at ")[1].split()[0]
        with urllib.request.urlopen(address + "page.json", timeout=30) as response:
            assert json.load(response) == {"model": "model-float16.tflite"}
        with urllib.request.urlopen(address + "runtime.wasm", timeout=30) as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert response.headers["Cache-Control"] == "no-store"
    finally:
        server.terminate()
        server.communicate(timeout=30)
    refused = subprocess.run([sys.executable, "-m", "lesionlib", "serve", "--page", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "holds no page" in refused.stderr and "Run notebook 05" in refused.stderr
    assert "Traceback" not in refused.stderr
