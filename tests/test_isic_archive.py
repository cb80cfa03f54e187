"""The ISIC Archive download, against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
import requests

from lesionlib import dataset, isic_archive
from lesionlib.images import Checked, inspect_image


def _download(archive, folder: Path, per_class: int = 4, **options) -> Path:
    return isic_archive.download_classes(archive.api, folder, per_class=per_class, progress=False,
                                         **options)


def _drawn(archive, per_class: int, label: str = "benign") -> list:
    """The images of a class that a download of ``per_class`` will draw (the default seed);
    the server's request counts start again from zero."""
    records, _, _ = isic_archive.sample_class(isic_archive.make_session(), archive.api, label,
                                              per_class, 42, "thumbnail_256")
    archive.requests.clear()
    return [archive.image(r["isic_id"]) for r in records]


def test_downloads_n_per_class_with_isic_cli_metadata(archive, tmp_path):
    folder = _download(archive, tmp_path / "isic", per_class=4)
    metadata = pd.read_csv(folder / "metadata.csv")
    assert list(metadata.columns[:3]) == ["isic_id", "attribution", "copyright_license"]
    assert metadata["diagnosis_1"].value_counts().to_dict() == {"Benign": 4, "Malignant": 4}
    for isic_id in metadata["isic_id"]:
        served = archive.image(isic_id)
        assert (folder / f"{isic_id}.jpg").read_bytes() == served.thumbnail_bytes() != served.data
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
    image = _drawn(archive, 2)[0]
    victim = image.isic_id
    archive.faults.drop_once.add(victim)
    folder = _download(archive, tmp_path / "isic", per_class=2)
    assert (folder / f"{victim}.jpg").read_bytes() == image.thumbnail_bytes()
    ranges = [r for i, r in archive.ranges if i == victim]
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_transient_503_is_retried(archive, tmp_path):
    image = _drawn(archive, 2)[1]
    archive.faults.unavailable_once.add(image.isic_id)
    folder = _download(archive, tmp_path / "isic", per_class=2)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.thumbnail_bytes()


def test_a_file_always_cut_short_never_counts(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive.time, "sleep", lambda seconds: None)
    victim = _drawn(archive, 2)[0].isic_id
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
    image = _drawn(archive, 1)[0]
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.thumbnail_bytes()[:1000])
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.thumbnail_bytes()
    assert (image.isic_id, "bytes=1000-") in archive.ranges


def test_a_server_that_ignores_range_gets_the_whole_file_again(archive, tmp_path):
    image = _drawn(archive, 1)[0]
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.thumbnail_bytes()[:1000])
    archive.faults.ignore_range.add(image.isic_id)
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.thumbnail_bytes()
    assert archive.requests[f"/thumbnails/{image.isic_id}.jpg"] == 1  # no append, no retry


def test_a_complete_part_file_is_finished_without_fetching(archive, tmp_path):
    image = _drawn(archive, 1)[0]
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.thumbnail_bytes())
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.thumbnail_bytes()
    assert archive.requests[f"/thumbnails/{image.isic_id}.jpg"] == 0


def test_a_part_file_longer_than_the_image_starts_again(archive, tmp_path):
    image = _drawn(archive, 1)[0]
    folder = tmp_path / "isic" / "thumbnail_256"
    folder.mkdir(parents=True)
    (folder / f"{image.isic_id}.jpg.part").write_bytes(image.thumbnail_bytes() + b"junk from elsewhere")
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.thumbnail_bytes()


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
    # Today's fields (issue 15): in metadata.csv as the archive sends them, the broad site in
    # the manifest; no anatom_site_general, which the archive dropped in May 2026.
    metadata = pd.read_csv(settings.downloads_dir / "isic-archive" / "thumbnail_256" / "metadata.csv")
    assert "anatom_site_general" not in metadata.columns
    assert {"pixels_x", "pixels_y"} <= set(metadata.columns)
    sites = {i.isic_id: i.clinical.get("anatom_site_1") for i in archive.images}
    if any(sites.values()):  # the CC0 sample's images carry them (the drawn stand-ins do not)
        assert {"anatom_site_1", "anatom_site_2", "diagnosis_2", "diagnosis_3"} <= set(metadata.columns)
        assert (built.manifest["site"] == built.manifest["image_id"].map(sites)).all()


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
    """The benign and the malignant image a download of one per class draws."""
    return [_drawn(archive, 1, label)[0] for label in ("benign", "malignant")]


def test_a_file_longer_than_its_record_announces_is_refused_at_that_size(archive, tmp_path):
    victim, other = _first_of_each_class(archive)
    archive.faults.padding[victim.isic_id] = 20 << 20  # 20 MB after the image
    folder = tmp_path / "isic" / "thumbnail_256"
    started = time.monotonic()
    with _PeakSize(folder) as watch, \
            pytest.warns(UserWarning, match=r"1 of 2 images .* larger than the "
                         rf"{len(victim.thumbnail_bytes())} bytes the archive's record announces"):
        _download(archive, tmp_path / "isic", per_class=1)
    assert time.monotonic() - started < 5
    assert watch.peak <= max(len(victim.thumbnail_bytes()), len(other.thumbnail_bytes()))  # never more on disk
    assert not list(folder.glob(f"{victim.isic_id}*"))  # no image, no .part
    assert archive.requests[f"/thumbnails/{victim.isic_id}.jpg"] == 1  # refused, not retried
    assert archive.sent[victim.isic_id] < 20 << 20  # the client hung up early
    assert (folder / f"{other.isic_id}.jpg").read_bytes() == other.thumbnail_bytes()


def test_a_file_of_unknown_size_is_capped(archive, tmp_path, monkeypatch):
    cap = max(len(i.thumbnail_bytes()) for i in archive.images) + 1000
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
    assert (folder / f"{other.isic_id}.jpg").read_bytes() == other.thumbnail_bytes()  # unknown size is fine


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
    assert (folder / f"{victim.isic_id}.jpg").read_bytes() == victim.thumbnail_bytes()
    assert (victim.isic_id, f"bytes={kept}-") in archive.ranges
    assert not list(folder.glob("*.part"))


def test_a_next_link_that_loops_ends_the_search(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive, "PAGE_SIZE", 2)
    archive.faults.loop_next = True
    started = time.monotonic()
    with pytest.raises(isic_archive.ArchiveError, match="search pages .* loop"):
        _download(archive, tmp_path / "isic", per_class=6)
    assert time.monotonic() - started < 3
    # the probe, then for each class a count and two pages (one for indeterminate: it has none)
    assert archive.requests["/api/v2/images/search/"] == 1 + 3 + 2 + 3
    kept = [p.name for p in (tmp_path / "isic" / "thumbnail_256").glob("search-*.json")]
    assert kept == ["search-indeterminate.json"]  # the archive has none: a search that worked


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


def _edit(victim, change):
    """Changes the record of ``victim`` wherever it is served."""
    def edit(results):
        return [change(r) if r["isic_id"] == victim.isic_id else r for r in results]
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
    archive.faults.edit_results = _edit(_drawn(archive, 2)[0], change)
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
    assert (folder / f"{other.isic_id}.jpg").read_bytes() == other.thumbnail_bytes()


def test_duplicate_records_are_downloaded_once(archive, tmp_path, recwarn):
    first = _drawn(archive, 3)[0]

    def duplicate(results):
        return [copy for r in results for copy in [r] * (3 if r["isic_id"] == first.isic_id else 1)]

    archive.faults.edit_results = duplicate
    folder = _download(archive, tmp_path / "isic", per_class=3)
    assert archive.requests[f"/thumbnails/{first.isic_id}.jpg"] == 1
    assert (folder / f"{first.isic_id}.jpg").read_bytes() == first.thumbnail_bytes()
    metadata = pd.read_csv(folder / "metadata.csv")
    assert metadata["isic_id"].is_unique and first.isic_id in set(metadata["isic_id"])
    assert not list(folder.glob("*.part"))
    assert not [w for w in recwarn if "could not" in str(w.message)]


def test_a_bad_search_is_not_kept_and_a_rerun_asks_again(archive, tmp_path):
    archive.faults.edit_results = _edit(_drawn(archive, 2)[0], _without_id)
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


# Issue 15: the archive as it is today.

def _ids(folder: Path) -> list[str]:
    return sorted(pd.read_csv(folder / "metadata.csv", dtype=str)["isic_id"])


def test_the_sample_is_drawn_across_the_archive_with_the_seed(archive, tmp_path):
    oldest = sorted(i.isic_id for i in archive.images if i.diagnosis_1 == "Benign")[:20]
    folder = _download(archive, tmp_path / "isic", per_class=20)
    drawn = [i for i in _ids(folder) if archive.image(i).diagnosis_1 == "Benign"]
    assert len(drawn) == 20 and len(set(drawn) & set(oldest)) < 10  # not the archive's first
    assert max(drawn) > max(oldest)
    assert sorted(i.isic_id for i in _drawn(archive, 20)) == drawn  # the same seed, the same
    other_seed, _, _ = isic_archive.sample_class(isic_archive.make_session(), archive.api,
                                                 "benign", 20, 7, "thumbnail_256")
    assert sorted(r["isic_id"] for r in other_seed) != drawn
    how = json.loads((folder / isic_archive.DOWNLOAD_FILE).read_text())
    benign = how["classes"]["benign"]
    count = sum(i.diagnosis_1 == "Benign" for i in archive.images)
    assert (how["seed"], how["per_class"], benign["matching"], benign["drawn"]) == (42, 20, count, 20)
    assert benign["id_digits"] == isic_archive.id_digits(count, 20) > 0
    assert benign["records_read"] >= 20 and len(benign["id_endings_read"]) >= 1
    assert how["classes"]["indeterminate"]["matching"] == 0


def test_id_digits_make_a_part_no_larger_than_wanted():
    assert isic_archive.id_digits(300, 500) == 0  # fewer than wanted: all of them
    assert isic_archive.id_digits(4_000, 500) == 1  # parts of ~400
    assert isic_archive.id_digits(60_000, 500) == 3  # parts of ~60
    assert isic_archive.id_digits(10**9, 1) == isic_archive.MAX_ID_DIGITS


def test_the_search_policy_rides_out_minutes_and_files_stay_quick():
    assert 180 <= isic_archive.patience(isic_archive.search_retry()) <= 600  # isic-cli: ~20 min
    assert isic_archive.patience(isic_archive.file_retry()) <= 30


def test_a_search_that_fails_for_a_while_is_retried(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive, "SEARCH_BACKOFF", 0.0)  # the policy, without the waiting
    archive.faults.search_down['"Benign"'] = isic_archive.SEARCH_ATTEMPTS - 1
    folder = _download(archive, tmp_path / "isic", per_class=2)
    assert len(_ids(folder)) == 4


def test_one_class_that_fails_is_reported_while_the_others_finish(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive, "SEARCH_BACKOFF", 0.0)
    archive.faults.search_down['"Malignant"'] = 1000
    with pytest.warns(UserWarning, match=r"search for malignant images failed.*HTTP 503"):
        folder = _download(archive, tmp_path / "isic", per_class=2)
    assert [archive.image(i).diagnosis_1 for i in _ids(folder)] == ["Benign", "Benign"]
    how = json.loads((folder / isic_archive.DOWNLOAD_FILE).read_text())
    assert "HTTP 503" in how["classes"]["malignant"]["failed"]
    assert not (folder / "search-malignant.json").exists()  # the next run asks again
    archive.faults.search_down.clear()
    assert len(_ids(_download(archive, tmp_path / "isic", per_class=2))) == 4


def test_a_refused_query_shows_the_archives_words(archive):
    with pytest.raises(isic_archive.ArchiveError,
                       match=r"HTTP 400: Could not parse search query\."):
        isic_archive.search(isic_archive.make_session(), archive.api,
                            'diagnosis_1:"Benign" AND anatom_site_general:trunk', limit=2)


def test_metadata_writes_whole_numbers_as_isic_cli_does_and_licences_beside(archive, tmp_path):
    with_gap, other = _drawn(archive, 2)
    with_gap.clinical["age_approx"] = None
    other.copyright_license = "CC-BY-NC"
    folder = _download(archive, tmp_path / "isic", per_class=2)
    rows = {line.split(",")[0]: line for line in (folder / "metadata.csv").read_text().splitlines()}
    columns = rows["isic_id"].split(",")
    ages = {i: rows[i].split(",")[columns.index("age_approx")] for i in rows if i != "isic_id"}
    assert ages[with_gap.isic_id] == "" and ages[other.isic_id] == str(other.clinical["age_approx"])
    assert not [age for age in ages.values() if "." in age]  # 55, never 55.0
    licences = folder / "licenses"
    assert sorted(p.name for p in licences.iterdir()) == ["CC-0.txt", "CC-BY-NC.txt"]
    assert "creativecommons.org/licenses/by-nc/4.0" in (licences / "CC-BY-NC.txt").read_text()


def test_a_resume_sends_the_etag_and_a_changed_file_starts_again(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(isic_archive.time, "sleep", lambda seconds: None)
    image = _drawn(archive, 1)[0]
    archive.faults.always_short.add(image.isic_id)
    with pytest.warns(UserWarning, match="could not be downloaded"):
        folder = _download(archive, tmp_path / "isic", per_class=1)
    first_tag = [h for i, h in archive.headers if i == image.isic_id]
    etag = (folder / f"{image.isic_id}.jpg.etag").read_text()
    assert "If-Range" not in first_tag[0] and first_tag[1]["If-Range"] == etag  # resumed, checked
    archive.faults.always_short.clear()
    old = image.thumbnail_bytes()
    image.thumbnail = old[:-2000] + b"\0" * 1000 + old[-1000:]  # the archive's file changed
    archive.headers.clear()
    _download(archive, tmp_path / "isic", per_class=1)
    assert (folder / f"{image.isic_id}.jpg").read_bytes() == image.thumbnail  # not spliced
    sent = [h for i, h in archive.headers if i == image.isic_id]
    assert len(sent) == 1 and sent[0]["If-Range"] == etag and sent[0]["Range"] != "bytes=0-"
    assert not list(folder.glob("*.etag")) and not list(folder.glob("*.part"))


def test_a_named_collection_gives_only_its_images(archive, tmp_path, cc0_sample):
    folder = _download(archive, tmp_path / "isic", per_class=3, collection=202)
    assert len(_ids(folder)) == 6
    assert all(archive.image(i).collections == {202} for i in _ids(folder))
    how = json.loads((folder / isic_archive.DOWNLOAD_FILE).read_text())
    assert (how["collection"], how["collection_name"]) == (202, "Another clinic (test)")
    with pytest.raises(isic_archive.ArchiveError, match=r"no public collection 999.*"
                       r"isic-archive:collection=<id>"):
        _download(archive, tmp_path / "other", per_class=3, collection=999)


def test_notebook_01_downloads_the_collections_its_settings_name(archive, tmp_path, cc0_sample):
    from lesionlib.settings import load_settings
    settings = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "workshop",
                              "LESIONLIB_ISIC_API": archive.api,
                              "LESIONLIB_DATA_SOURCE": "isic-archive:collection=101",
                              "LESIONLIB_EXTERNAL_SOURCE": "isic-archive:collection=202"})
    main = dataset.prepare(settings, progress=False).manifest
    other = dataset.prepare(settings.external(), progress=False).manifest
    assert len(main) and len(other)
    assert set(main["source"]) == {"isic-archive-collection-101"}
    assert all(archive.image(Path(i).stem).collections == {101} for i in main["path"])
    assert all(archive.image(Path(i).stem).collections == {202} for i in other["path"])


def test_the_full_profile_learns_from_whole_collections_and_holds_one_out(tmp_path, cc0_sample):
    """Issue 13, point 3: with no variable but the archive's address, the full profile takes
    every image of HAM10000 (212) and BCN20000 (249), one manifest of both, and holds the
    Buenos Aires collection (251) out whole for notebook 06."""
    from lesionlib import generalization, splits
    from lesionlib.settings import load_settings
    from tests.isic_server import FakeArchive, images_from_shared

    found = images_from_shared(cc0_sample, count=90)
    for number, image in enumerate(found):
        image.collections = {(212, 249, 251)[number % 3]}
    found[0].collections = {212, 249}  # in both (as in the archive's challenge collections): kept once
    server = FakeArchive(found, {212: "HAM10000", 249: "BCN20000", 251: "HIBA 2019-2022"}).start()
    try:
        settings = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "full",
                                  "LESIONLIB_ISIC_API": server.api})
        assert [part.source_name for part in settings.parts()] == [
            "isic-archive-collection-212", "isic-archive-collection-249"]
        built = dataset.prepare(settings, progress=False)
        sources = generalization.load_sources(settings, progress=False)
    finally:
        server.stop()
    manifest = dataset.load_manifest(settings)
    in_collection = {c: {i.isic_id for i in found if c in i.collections} for c in (212, 249, 251)}
    by_source = manifest.groupby("source")["image_id"].agg(set)
    assert by_source["isic-archive-collection-212"] == in_collection[212]  # every image, not a sample
    assert by_source["isic-archive-collection-249"] == in_collection[249] - {found[0].isic_id}
    assert (settings.data_dir / "sources" / "isic-archive-collection-249" / "manifest.csv").is_file()
    assert all(Path(p).is_file() and settings.data_dir in Path(p).parents for p in manifest["path"])
    assert list(built.rejected["image_id"]) == [found[0].isic_id]
    assert built.rejected["reason"].tolist() == [dataset.REPEATED]
    info = dataset.dataset_info(settings)
    assert info["source"] == "isic-archive:collection=212,isic-archive:collection=249"
    assert info["sources"] == {"isic-archive-collection-212": 30, "isic-archive-collection-249": 30}
    part = splits.grouped_split(manifest, seed=settings.seed)  # notebook 03's: every source in each part
    assert (pd.crosstab(part, manifest["source"]) > 0).all().all()
    held = sources.split(seed=settings.seed)
    is_251 = sources.manifest["source"] == "isic-archive-collection-251"
    assert set(sources.manifest.loc[is_251, "image_id"]) == in_collection[251]
    assert (held[is_251] == splits.HELD_OUT).all() and not (held[~is_251] == splits.HELD_OUT).any()

    # The archive is gone now: everything below needs no network. Building one source again
    # (notebook 01's first steps) leaves no manifest of both that vouches for it.
    dataset.prepare(settings.parts()[0], progress=False)
    with pytest.raises(dataset.ManifestError, match="Run notebook 01"):
        dataset.load_manifest(settings)
    # One collection alone after both: the same downloads serve it, and data/ is its own again.
    alone = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "full",
                           "LESIONLIB_ISIC_API": server.api,
                           "LESIONLIB_DATA_SOURCE": "isic-archive:collection=212"})
    assert set(dataset.prepare(alone, progress=False).manifest["image_id"]) == in_collection[212]
    assert set(dataset.load_manifest(alone)["path"].map(lambda p: Path(p).parent.parent)) == {alone.train_dir}


def test_every_image_of_a_collection_is_bounded(tmp_path, cc0_sample, monkeypatch):
    from lesionlib.settings import load_settings
    from tests.isic_server import FakeArchive, images_from_shared

    monkeypatch.setattr(isic_archive, "MAX_PER_CLASS", 5)
    server = FakeArchive(images_from_shared(cc0_sample, count=40)).start()
    try:
        settings = load_settings({"LESIONLIB_HOME": str(tmp_path), "LESIONLIB_PROFILE": "full",
                                  "LESIONLIB_ISIC_API": server.api,
                                  "LESIONLIB_DATA_SOURCE": "isic-archive:collection=101"})
        with pytest.warns(UserWarning, match=r"more images than one search reads: \d+ benign, \d+ "
                                             r"malignant; a seeded sample of 5 of each was taken"):
            manifest = dataset.prepare(settings, progress=False).manifest
    finally:
        server.stop()
    assert manifest["label"].value_counts().max() == 5


def test_the_full_profile_will_not_take_all_of_the_archive(make_settings):
    settings = make_settings(profile="full", data_source="isic-archive")
    with pytest.raises(dataset.ManifestError, match="name collections instead"):
        dataset.raw_folder(settings)


@pytest.mark.parametrize("value, problem", [
    ("isic-archive:collection=abc", "by its number"), ("isic-archive:66", "by its number"),
    ("isic-archive:collection=0", "by its number")])
def test_collection_sources_are_parsed_with_a_clear_error(make_settings, value, problem):
    from lesionlib.settings import SettingsError, is_isic_archive, isic_collection
    settings = make_settings(data_source="isic-archive:collection=66",
                             external_source="isic-archive:collection=212")
    assert isic_collection(settings.data_source) == 66 and is_isic_archive(settings.data_source)
    assert settings.source_name == "isic-archive-collection-66"
    assert settings.external().source_name == "isic-archive-collection-212"
    assert isic_collection("isic-archive") is None and is_isic_archive("isic-archive")
    with pytest.raises(SettingsError, match=problem):
        make_settings(data_source=value)


def _get(url: str, **params) -> requests.Response:
    return requests.get(url, params=params, timeout=5)


def test_the_test_server_answers_like_the_archive(archive, cc0_sample):
    """Point 8 of issue 15: what the client above meets in the real archive. (The sample's
    images carry today's fields and collections; cc0_sample skips without them.)"""
    search = archive.api + "images/search/"
    first = _get(search, query='diagnosis_1:"Benign"', limit=3).json()
    assert first["count"] == sum(i.diagnosis_1 == "Benign" for i in archive.images)
    cursor = parse_qs(urlparse(first["next"]).query)["cursor"][0]
    assert not cursor.isdigit()  # opaque
    second = requests.get(first["next"], timeout=5).json()
    assert second["count"] is None and len(second["results"]) == 3  # count on page one only
    assert not {r["isic_id"] for r in first["results"]} & {r["isic_id"] for r in second["results"]}
    # the grammar: OR, brackets, negation, wildcards; image_type is honoured
    archive.image(first["results"][0]["isic_id"]).image_type = "clinical: close-up"
    query = '(diagnosis_1:"Benign" OR diagnosis_1:Malignant) AND image_type:dermoscopic -sex:male'
    found = _get(search, query=query).json()
    assert found["count"] == sum(i.image_type == "dermoscopic" and i.clinical.get("sex") != "male"
                                 for i in archive.images)
    assert _get(search, query="isic_id:*07").json()["count"] == sum(
        i.isic_id.endswith("07") for i in archive.images)
    for bad in ('diagnosis_1:"Benign" AND', "nonsense:1", "anatom_site_general:*", "(sex:male"):
        answer = _get(search, query=bad)
        assert (answer.status_code, answer.json()) == (400, {"message": "Could not parse search query."})
    assert _get(search, collections="x").status_code == 422
    assert _get(search, cursor="%%%").status_code == 422
    # records: today's fields; files from another host, thumbnails not the full image
    record = found["results"][0]
    image = archive.image(record["isic_id"])
    assert record["metadata"]["acquisition"]["pixels_x"] > 0
    assert {"anatom_site_1", "diagnosis_2"} <= set(record["metadata"]["clinical"])
    full, thumbnail = record["files"]["full"], record["files"]["thumbnail_256"]
    assert urlparse(full["url"]).netloc != urlparse(archive.api).netloc
    assert requests.get(full["url"], timeout=5).content == image.data
    assert requests.get(thumbnail["url"], timeout=5).content == image.thumbnail_bytes() != image.data
    assert requests.get(archive.files + "/files/ISIC_9999999.jpg", timeout=5).status_code == 403
    etag = requests.get(full["url"], timeout=5).headers["ETag"]
    assert requests.get(full["url"], headers={"If-Match": '"other"'}, timeout=5).status_code == 412
    assert requests.get(full["url"], headers={"Range": "bytes=10-", "If-Range": etag},
                        timeout=5).status_code == 206
    assert requests.get(full["url"], headers={"Range": "bytes=10-", "If-Range": '"old"'},
                        timeout=5).status_code == 200
    assert _get(archive.api + "collections/202/").json()["name"] == "Another clinic (test)"
    assert _get(archive.api + "collections/999/").status_code == 404
