"""The lesionlib command."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

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
