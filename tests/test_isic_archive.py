"""The ISIC Archive download, against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
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


# Issue 14: nothing unbounded, nothing half-written, no raw tracebacks, no sticky bad search.

class _PeakSize:
    """Watches a folder from a thread and remembers the largest file seen in it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for path in list(self.folder.glob("*")) if self.folder.is_dir() else []:
                try:
                    self.peak = max(self.peak, path.stat().st_size)
                except OSError:
                    pass
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _first_of_each_class(archive) -> list:
    return [next(i for i in archive.images if i.diagnosis_1 == label)
            for label in ("Benign", "Malignant")]


def test_a_file_longer_than_its_record_announces_is_refused_at_that_size(archive, tmp_path):
    victim, other = _first_of_each_class(archive)
    archive.faults.padding[victim.isic_id] = 20 << 20  # 20 MB after the image
    folder = tmp_path / "isic" / "thumbnail_256"
    started = time.monotonic()
    with _PeakSize(folder) as watch, \
            pytest.warns(UserWarning, match=r"1 of 2 images .* larger than the "
                         rf"{len(victim.data)} bytes the archive's record announces"):
        _download(archive, tmp_path / "isic", per_class=1)
    assert time.monotonic() - started < 5
    assert watch.peak <= max(len(victim.data), len(other.data))  # never more on disk
    assert not list(folder.glob(f"{victim.isic_id}*"))  # no image, no .part
    assert archive.requests[f"/thumbnails/{victim.isic_id}.jpg"] == 1  # refused, not retried
    assert archive.sent[victim.isic_id] < 20 << 20  # the client hung up early
    assert (folder / f"{other.isic_id}.jpg").read_bytes() == other.data


def test_a_file_of_unknown_size_is_capped(archive, tmp_path, monkeypatch):
    cap = max(len(i.data) for i in archive.images) + 1000
    monkeypatch.setattr(isic_archive, "MAX_FILE_BYTES", cap)
    victim, other = _first_of_each_class(archive)

    def no_sizes(results):
        for record in results:
            for entry in record["files"].values():
                del entry["size"]
        return results

    archive.faults.edit_results = no_sizes
    archive.faults.no_length.add(victim.isic_id)  # and no Content-Length either
    archive.faults.padding[victim.isic_id] = 20 << 20
    folder = tmp_path / "isic" / "thumbnail_256"
    with _PeakSize(folder) as watch, \
            pytest.warns(UserWarning, match=rf"cap of {cap} bytes for a file of unknown size"):
        _download(archive, tmp_path / "isic", per_class=1)
    assert watch.peak <= cap
    assert not list(folder.glob(f"{victim.isic_id}*"))
    assert (folder / f"{other.isic_id}.jpg").read_bytes() == other.data  # unknown size is fine


def test_a_trickling_file_is_given_up_at_the_deadline_and_resumed_later(archive, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(isic_archive, "FILE_DEADLINE", 1.0)
    victim, _ = _first_of_each_class(archive)
    archive.faults.trickle[victim.isic_id] = 0.05  # a byte every 50 ms, never a read timeout
    folder = tmp_path / "isic" / "thumbnail_256"
    started = time.monotonic()
    with pytest.warns(UserWarning, match=r"given up after 1 s, the download's deadline"):
        _download(archive, tmp_path / "isic", per_class=1)
    assert time.monotonic() - started < 4
    assert not (folder / f"{victim.isic_id}.jpg").exists()
    kept = (folder / f"{victim.isic_id}.jpg.part").stat().st_size
    assert 0 < kept < 100  # what arrived in a second, kept to resume from
    archive.faults.trickle.clear()
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{victim.isic_id}.jpg").read_bytes() == victim.data
    assert (victim.isic_id, f"bytes={kept}-") in archive.ranges
    assert not list(folder.glob("*.part"))


def test_a_next_link_that_loops_ends_the_search(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive, "PAGE_SIZE", 2)
    archive.faults.loop_next = True
    started = time.monotonic()
    with pytest.raises(isic_archive.ArchiveError, match="search pages .* loop"):
        _download(archive, tmp_path / "isic", per_class=6)
    assert time.monotonic() - started < 3
    assert archive.requests["/api/v2/images/search/"] <= 4  # the probe, then two pages
    assert not list((tmp_path / "isic" / "thumbnail_256").glob("search-*.json"))


def test_a_next_link_to_the_same_url_is_not_followed_twice(archive, monkeypatch):
    monkeypatch.setattr(isic_archive, "PAGE_SIZE", 2)
    archive.faults.loop_next = True
    # records without an isic_id, so the loop must be noticed by its links alone
    archive.faults.edit_results = lambda results: [dict(r, isic_id=None) for r in results]
    with pytest.raises(isic_archive.ArchiveError, match="came back as the next page"):
        isic_archive.search(isic_archive.make_session(), archive.api,
                            isic_archive.class_query("benign"), limit=50)
    assert archive.requests["/api/v2/images/search/"] == 2  # first URL, then its cursor=0 twin


def test_search_pages_are_capped(archive, monkeypatch):
    monkeypatch.setattr(isic_archive, "PAGE_SIZE", 1)
    monkeypatch.setattr(isic_archive, "MAX_PAGES", 3)
    with pytest.raises(isic_archive.ArchiveError, match="more than 3 pages"):
        isic_archive.search(isic_archive.make_session(), archive.api,
                            isic_archive.class_query("benign"), limit=10)
    assert archive.requests["/api/v2/images/search/"] == 3


def test_a_long_retry_after_is_not_waited_for(archive, monkeypatch):
    monkeypatch.setattr(isic_archive, "MAX_RETRY_AFTER", 1.0)
    archive.faults.throttled, archive.faults.throttle_path = 100, "/images/search/"
    started = time.monotonic()
    with pytest.raises(isic_archive.ArchiveError, match=r"HTTP 429 and asks to wait 3600 s"):
        isic_archive.search(isic_archive.make_session(), archive.api,
                            isic_archive.class_query("benign"), limit=2)
    assert time.monotonic() - started < 2
    assert archive.requests["/api/v2/images/search/"] == 1


def test_a_short_retry_after_is_waited_for(archive, monkeypatch):
    monkeypatch.setattr(isic_archive, "MAX_RETRY_AFTER", 5.0)
    archive.faults.throttled, archive.faults.throttle_path = 1, "/images/search/"
    archive.faults.retry_after = "1"
    started = time.monotonic()
    records = isic_archive.search(isic_archive.make_session(), archive.api,
                                  isic_archive.class_query("benign"), limit=2)
    assert len(records) == 2 and 0.9 <= time.monotonic() - started < 3
    assert archive.requests["/api/v2/images/search/"] == 2


def test_a_long_retry_after_on_images_is_a_clear_warning(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive, "MAX_RETRY_AFTER", 1.0)
    archive.faults.throttled, archive.faults.throttle_path = 1000, "/thumbnails/"
    started = time.monotonic()
    with pytest.warns(UserWarning, match=r"2 of 2 images .* asks to wait 3600 s"):
        folder = _download(archive, tmp_path / "isic", per_class=1)
    assert time.monotonic() - started < 3
    assert not list(folder.glob("ISIC_*"))


def _edit_first(change):
    """Changes the first record of the benign search's first page."""
    def edit(results):
        if results and results[0]["metadata"]["clinical"]["diagnosis_1"] == "Benign":
            results[0] = change(results[0])
        return results
    return edit


def _with_url(url):
    def change(record):
        record["files"]["thumbnail_256"]["url"] = url
        return record
    return change


def _with_size(size):
    def change(record):
        record["files"]["thumbnail_256"]["size"] = size
        return record
    return change


def _without_id(record):
    del record["isic_id"]
    return record


@pytest.mark.parametrize("change, message", [
    (_with_url("file:///etc/passwd"), "'file:///etc/passwd' is not an http\\(s\\) link"),
    (_with_size(0), "impossible size 0"),
    (_with_size(-5), "impossible size -5"),
    (_with_size("1234"), "impossible size '1234'"),
    (_without_id, "a record without an isic_id"),
    (lambda record: record["isic_id"], "a str where a record was expected"),
    (lambda record: [record], "a list where a record was expected"),
    (lambda record: dict(record, isic_id="../../escaped"), "'../../escaped' is not like ISIC_"),
    (lambda record: dict(record, isic_id="ISIC_123"), "'ISIC_123' is not like ISIC_"),
    (lambda record: dict(record, metadata=["x"]), "metadata is not a mapping"),
], ids=["file-url", "size-0", "size-negative", "size-string", "no-id", "string", "list",
        "path-id", "short-id", "metadata-list"])
def test_an_odd_record_is_skipped_with_a_clear_warning(archive, tmp_path, change, message):
    archive.faults.edit_results = _edit_first(change)
    with pytest.warns(UserWarning, match=r"1 record from the archive could not be used .*"
                      + message) as caught:
        folder = _download(archive, tmp_path / "isic", per_class=2)
    assert len(caught) == 1  # nothing else went wrong
    metadata = pd.read_csv(folder / "metadata.csv")
    assert len(metadata) == 3 and len(list(folder.glob("ISIC_*.jpg"))) == 3
    assert not list(folder.glob("*.part"))
    assert not list(tmp_path.rglob("escaped*"))


def test_a_page_whose_results_are_not_a_list_is_a_clear_error(archive, tmp_path):
    archive.faults.edit_results = lambda results: {"oops": results}
    with pytest.raises(isic_archive.ArchiveError, match="did not answer like the ISIC Archive"):
        _download(archive, tmp_path / "isic", per_class=2)
    assert not list((tmp_path / "isic" / "thumbnail_256").glob("search-*.json"))


def test_an_image_that_redirects_in_a_loop_is_a_clear_warning(archive, tmp_path):
    victim, other = _first_of_each_class(archive)
    archive.faults.redirect_loop.add(victim.isic_id)
    started = time.monotonic()
    with pytest.warns(UserWarning, match=r"1 of 2 images .* redirects in a loop"):
        folder = _download(archive, tmp_path / "isic", per_class=1)
    assert time.monotonic() - started < 3
    assert archive.requests[f"/thumbnails/{victim.isic_id}.jpg"] == \
        isic_archive.MAX_REDIRECTS + 1
    assert not list(folder.glob(f"{victim.isic_id}*"))
    assert (folder / f"{other.isic_id}.jpg").read_bytes() == other.data


def test_duplicate_records_are_downloaded_once(archive, tmp_path, recwarn):
    def duplicate(results):
        return [results[0]] * 3 + results[1:] if results else results

    archive.faults.edit_results = duplicate
    folder = _download(archive, tmp_path / "isic", per_class=3)
    first = _first_of_each_class(archive)[0]
    assert archive.requests[f"/thumbnails/{first.isic_id}.jpg"] == 1
    assert (folder / f"{first.isic_id}.jpg").read_bytes() == first.data
    metadata = pd.read_csv(folder / "metadata.csv")
    assert metadata["isic_id"].is_unique and first.isic_id in set(metadata["isic_id"])
    assert not list(folder.glob("*.part"))
    assert not [w for w in recwarn if "could not" in str(w.message)]


def test_a_bad_search_is_not_kept_and_a_rerun_asks_again(archive, tmp_path):
    archive.faults.edit_results = _edit_first(_without_id)
    with pytest.warns(UserWarning, match="next run asks the archive again"):
        folder = _download(archive, tmp_path / "isic", per_class=2)
    assert not (folder / "search-benign.json").exists()  # the search with the bad record
    assert (folder / "search-malignant.json").exists()
    archive.faults.edit_results = None  # the archive is healthy again
    searches = archive.requests["/api/v2/images/search/"]
    _download(archive, tmp_path / "isic", per_class=2)
    assert archive.requests["/api/v2/images/search/"] > searches
    assert len(list(folder.glob("ISIC_*.jpg"))) == 4
    assert (folder / "search-benign.json").exists()
    assert len(pd.read_csv(folder / "metadata.csv")) == 4


def test_a_cached_search_holding_a_bad_record_is_not_trusted(archive, tmp_path):
    folder = _download(archive, tmp_path / "isic", per_class=2)
    cache = folder / "search-benign.json"
    state = json.loads(cache.read_text())
    state["records"][0]["files"]["thumbnail_256"]["size"] = "1234"  # its image is present
    cache.write_text(json.dumps(state))
    searches = archive.requests["/api/v2/images/search/"]
    _download(archive, tmp_path / "isic", per_class=2)
    assert archive.requests["/api/v2/images/search/"] > searches
    assert isinstance(json.loads(cache.read_text())["records"][0]["files"]["thumbnail_256"]["size"],
                      int)
