"""The ISIC Archive download, against a real HTTP server on loopback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from lesionlib import dataset, isic_archive
from lesionlib.images import Checked, inspect_image


def _download(archive, folder: Path, per_class: int = 4) -> Path:
    return isic_archive.download_classes(archive.api, folder, per_class=per_class, progress=False)


def test_downloads_n_per_class_with_isic_cli_metadata(archive, tmp_path):
    folder = _download(archive, tmp_path / "isic", per_class=4)
    metadata = pd.read_csv(folder / "metadata.csv")
    assert list(metadata.columns[:3]) == ["isic_id", "attribution", "copyright_license"]
    assert metadata["diagnosis_1"].value_counts().to_dict() == {"Benign": 4, "Malignant": 4}
    for isic_id in metadata["isic_id"]:
        served = next(i for i in archive.images if i.isic_id == isic_id)
        assert (folder / f"{isic_id}.jpg").read_bytes() == served.data
    assert (folder / "attribution.txt").read_text().strip() == "Anonymous"
    assert not list(folder.glob("*.part"))


def test_search_follows_pages(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive, "PAGE_SIZE", 3)
    records = isic_archive.search(isic_archive.make_session(), archive.api,
                                  isic_archive.class_query("benign"), limit=8)
    assert len(records) == 8
    assert len({r["isic_id"] for r in records}) == 8
    assert archive.requests["/api/v2/images/search/"] == 3  # pages of 3, 3 and 2


def test_dropped_connection_resumes_with_a_range_request(archive, tmp_path):
    victim = archive.images[0].isic_id
    archive.faults.drop_once.add(victim)
    folder = _download(archive, tmp_path / "isic", per_class=2)
    assert (folder / f"{victim}.jpg").read_bytes() == archive.images[0].data
    ranges = [r for i, r in archive.ranges if i == victim]
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_transient_503_is_retried(archive, tmp_path):
    victim = archive.images[1].isic_id
    archive.faults.unavailable_once.add(victim)
    folder = _download(archive, tmp_path / "isic", per_class=2)
    assert (folder / f"{victim}.jpg").read_bytes() == archive.images[1].data


def test_a_file_always_cut_short_never_counts(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive.time, "sleep", lambda seconds: None)
    victim = archive.images[0].isic_id
    archive.faults.always_short.add(victim)
    with pytest.warns(UserWarning, match="1 of 4 images could not be downloaded"):
        folder = _download(archive, tmp_path / "isic", per_class=2)
    assert not (folder / f"{victim}.jpg").exists()
    assert (folder / f"{victim}.jpg.part").exists()  # kept, to resume from
    # The import then lists it as missing and goes on with the others.
    settings_home = tmp_path / "home"
    from lesionlib.settings import load_settings
    settings = load_settings({"LESIONLIB_HOME": str(settings_home),
                              "LESIONLIB_DATA_SOURCE": str(folder)})
    built = dataset.prepare(settings, progress=False)
    assert victim in set(built.rejected["image_id"])
    assert len(built.manifest) == 3


def test_interrupted_part_file_is_completed_on_the_next_run(archive, tmp_path):
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    image = archive.images[0]
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.data[:1000])
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.data
    assert (image.isic_id, "bytes=1000-") in archive.ranges


def test_a_server_that_ignores_range_gets_the_whole_file_again(archive, tmp_path):
    image = archive.images[0]
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.data[:1000])
    archive.faults.ignore_range.add(image.isic_id)
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.data
    assert archive.requests[f"/thumbnails/{image.isic_id}.jpg"] == 1  # no append, no retry


def test_a_complete_part_file_is_finished_without_fetching(archive, tmp_path):
    image = archive.images[0]
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.data)
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.data
    assert archive.requests[f"/thumbnails/{image.isic_id}.jpg"] == 0


def test_a_part_file_longer_than_the_image_starts_again(archive, tmp_path):
    image = archive.images[0]
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.data + b"junk from elsewhere")
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.data


def test_a_login_page_instead_of_the_api_is_a_clear_error(archive, tmp_path):
    archive.faults.portal = True
    with pytest.raises(isic_archive.ArchiveError, match="Wi-Fi login page"):
        _download(archive, tmp_path / "isic", per_class=2)


def test_a_missing_image_is_fetched_with_a_fresh_search(archive, tmp_path):
    folder = _download(archive, tmp_path / "isic", per_class=3)
    victim = next(folder.glob("ISIC_*.jpg"))
    victim.unlink()
    searches = archive.requests["/api/v2/images/search/"]
    _download(archive, tmp_path / "isic", per_class=3)
    assert victim.is_file()
    assert archive.requests["/api/v2/images/search/"] > searches  # new, unexpired links
    assert archive.requests[f"/thumbnails/{victim.name}"] == 2


def test_rerun_downloads_nothing_and_needs_no_network(archive, tmp_path):
    first = _download(archive, tmp_path / "isic", per_class=3)
    before = sum(archive.requests.values())
    archive.stop()  # the archive is gone: everything must come from the cache
    again = _download(archive, tmp_path / "isic", per_class=3)
    assert again == first
    assert sum(archive.requests.values()) == before
    assert len(pd.read_csv(again / "metadata.csv")) == 6


def test_downloaded_images_are_valid_jpegs(archive, tmp_path):
    folder = _download(archive, tmp_path / "isic", per_class=3)
    for path in folder.glob("*.jpg"):
        assert isinstance(inspect_image(path), Checked)


def test_workshop_settings_download_and_import_end_to_end(archive, make_settings):
    settings = make_settings(isic_api=archive.api, profile="workshop")
    built = dataset.prepare(settings, progress=False)
    served = pd.Series([i.diagnosis_1.lower() for i in archive.images]).value_counts()
    expected = served.clip(upper=settings.per_class_limit).to_dict()
    counts = built.manifest["label"].value_counts().to_dict()
    duplicates = (built.rejected["reason"] == "duplicate of another image").sum()
    assert sum(counts.values()) + duplicates == sum(expected.values())
    assert built.layout == "isic-download"
    assert built.manifest["license"].eq("CC-0").all()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_fails_fast_with_the_alternatives(make_settings):
    settings = make_settings(isic_api=f"http://127.0.0.1:{_closed_port()}/api/v2/",
                             profile="workshop")
    started = time.monotonic()
    with pytest.raises(isic_archive.ArchiveUnreachable) as raised:
        dataset.prepare(settings, progress=False)
    assert time.monotonic() - started < 15
    message = str(raised.value)
    assert "LESIONLIB_DATA_SOURCE" in message and "LESIONLIB_PROFILE=smoke" in message


def test_a_silent_archive_is_given_up_within_the_deadline(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        api = f"http://127.0.0.1:{silent.getsockname()[1]}/api/v2/"
        started = time.monotonic()
        with pytest.raises(isic_archive.ArchiveUnreachable, match="no answer|timed out"):
            isic_archive.download_classes(api, tmp_path / "isic", per_class=2, progress=False)
        elapsed = time.monotonic() - started
    assert isic_archive.REACH_DEADLINE - 1 <= elapsed < 15


def test_the_class_query_uses_diagnosis_1():
    assert isic_archive.class_query("malignant").startswith('diagnosis_1:"Malignant"')
