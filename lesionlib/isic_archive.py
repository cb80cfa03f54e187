"""Downloading images by diagnosis from the ISIC Archive (API v2), resumably.

Why not call ``isic image download`` (isic-cli, the archive's official client)? It is the
right tool for a bulk download and the course shows the command, but inside a lesson it
misbehaves offline: it retries one request 15 times with growing back-off (about 22 minutes),
then asks on stdin whether to send a bug report, and checks PyPI for a newer version first.
The few calls the course needs are written here instead, with these guarantees:

* the archive is contacted once, with a deadline, before anything else: offline, a clear
  message names the alternatives within :data:`REACH_DEADLINE` seconds;
* each image is written to ``<name>.part`` and renamed only when complete (its size checked
  against the archive's record), so a partial file never counts as an image;
* an interrupted file resumes with an HTTP ``Range`` request; transient errors (dropped
  connections, 429/5xx) are retried with exponential back-off;
* the search results are kept, so a re-run with everything present needs no network at all.

The result is the folder isic-cli writes: ``<isic_id>.jpg``, ``metadata.csv`` (same columns)
and ``attribution.txt``, read by :func:`lesionlib.sources.read_isic_download`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlparse

import pandas as pd
import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm  # plain text: it stays readable in executed notebooks
from urllib3.util.retry import Retry

from . import LesionlibError, fsutil, net
from .taxonomy import CLASSES

REACH_DEADLINE = net.DEADLINE  # seconds for the first contact
TIMEOUT = (5.0, 30.0)  # connect and read timeouts of every later request
ATTEMPTS = 5  # per file, each resuming where the last one stopped
PAGE_SIZE = 100
WORKERS = 8  # downloads are latency-bound, so a few run at once


class ArchiveError(LesionlibError):
    """The archive answered, but not with what the course needs."""


class ArchiveUnreachable(ArchiveError):
    """The archive cannot be reached; the message lists what to do instead."""

    def __init__(self, api: str, reason: str, cache: Path | None = None) -> None:
        kept = (f"\nImages already downloaded stay in {cache}; run again when online to continue."
                if cache else "")
        super().__init__(
            f"Could not reach the ISIC Archive at {api} ({reason}).\n"
            "Alternatives that need no internet:\n"
            "  * images you already have: set LESIONLIB_DATA_SOURCE to their folder (an ISIC "
            "download with metadata.csv, HAM10000, ISIC JSON records, or class folders "
            "train/benign, train/malignant, ...);\n"
            "  * no images at all: set LESIONLIB_PROFILE=smoke to run the course's mechanics "
            "on synthetic images." + kept)


def class_query(label: str) -> str:
    """The archive search for one course class, e.g. ``diagnosis_1:"Malignant"``."""
    return f'diagnosis_1:"{label.capitalize()}" AND image_type:dermoscopic'


def make_session() -> requests.Session:
    """A session that retries transient HTTP errors (429, 5xx) with exponential back-off."""
    retry = Retry(total=ATTEMPTS, connect=2, read=2, status=ATTEMPTS, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods={"GET"},
                  respect_retry_after_header=True, raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=WORKERS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": "lesion-course (lesionlib)", "Accept": "application/json"})
    return session


def check_reachable(api: str, deadline: float = REACH_DEADLINE, cache: Path | None = None) -> None:
    """Raise :class:`ArchiveUnreachable` unless the archive answers a search within ``deadline``."""
    reason = net.probe(urljoin(api, "images/search/?limit=1"), deadline)
    if reason:
        raise ArchiveUnreachable(api, reason, cache)


def search(session: requests.Session, api: str, query: str, limit: int) -> list[dict]:
    """Up to ``limit`` image records matching ``query``, following the archive's pages."""
    url: str | None = urljoin(api, "images/search/")
    params: dict | None = {"query": query, "limit": min(limit, PAGE_SIZE)}
    records: list[dict] = []
    while url and len(records) < limit:
        try:
            response = session.get(url, params=params, timeout=TIMEOUT)
        except requests.RequestException as error:
            raise ArchiveError(f"Searching the archive for {query!r} failed: {error}") from None
        if not response.ok:
            raise ArchiveError(f"The archive answered HTTP {response.status_code} to {response.url}")
        try:
            page = response.json()
            records += list(page["results"])
            url, params = page.get("next"), None  # the next link carries the query itself
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ArchiveError(f"{response.url} did not answer like the ISIC Archive API; is a "
                               "proxy or a Wi-Fi login page in the way?") from None
    return records[:limit]


class _Incomplete(Exception):
    pass


def download_file(session: requests.Session, url: str, target: Path,
                  size: int | None = None, attempts: int = ATTEMPTS) -> Path:
    """Fetch ``url`` to ``target`` through ``target.part``, resuming and retrying; never partial."""
    part = target.with_name(target.name + ".part")
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have >= size:  # complete already (or too long: start again)
            if have == size:
                os.replace(part, target)
                return target
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
                if response.status_code == 416:  # nothing past what we have: start again
                    part.unlink(missing_ok=True)
                    raise _Incomplete("range not satisfiable")
                if response.status_code not in (200, 206):
                    raise ArchiveError(f"HTTP {response.status_code} for {url}")
                total = size
                if response.status_code == 206:
                    start, whole = _content_range(response.headers.get("Content-Range"))
                    if start != have:  # not the piece we asked for: start again from zero
                        part.unlink(missing_ok=True)
                        raise _Incomplete(f"asked for bytes from {have}, got from {start}")
                    total = total or whole
                else:  # a full answer: the server ignored the range, start from zero
                    have = 0
                    length = response.headers.get("Content-Length")
                    total = total or (int(length) if length else None)
                with part.open("ab" if have else "wb") as out:
                    # read1 returns what has arrived, so a dropped connection loses nothing
                    # that came before it (iter_content would discard a partial chunk).
                    while chunk := response.raw.read1(1 << 16, decode_content=True):
                        out.write(chunk)
            got = part.stat().st_size
            if total is not None and got != total:
                if got > total:
                    part.unlink()
                raise _Incomplete(f"{got} of {total} bytes")
            os.replace(part, target)
            return target
        except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError,
                _Incomplete) as error:
            last = error
    raise ArchiveError(f"{url}: not complete after {attempts} attempts ({last}). "
                       f"Run again to resume from {part.name}.")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range: bytes 100-199/200`` header."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _file_of(record: dict, file_kind: str) -> tuple[str, int | None, str]:
    """(url, size, file name) of one record's image file."""
    files = record.get("files", {})
    entry = files.get(file_kind) or files.get("full") or {}
    if "url" not in entry:
        raise ArchiveError(f"Record {record.get('isic_id')} has no {file_kind!r} file URL.")
    suffix = PurePosixPath(urlparse(entry["url"]).path).suffix.lower()
    suffix = suffix if suffix in (".jpg", ".jpeg", ".png") else ".jpg"
    return entry["url"], entry.get("size"), fsutil.safe_name(record["isic_id"]) + suffix


def metadata_table(records: Iterable[dict]) -> pd.DataFrame:
    """The records as isic-cli's ``metadata.csv``: id, attribution, licence, then the fields."""
    rows = []
    for record in records:
        row = {"isic_id": record["isic_id"], "attribution": record.get("attribution"),
               "copyright_license": record.get("copyright_license")}
        for key, value in record.get("metadata", {}).items():
            if isinstance(value, dict):  # acquisition, clinical, ...
                row.update(value)
            else:
                row[key] = value
        rows.append(row)
    base = ["isic_id", "attribution", "copyright_license"]
    frame = pd.DataFrame(rows, columns=None if rows else base)
    return frame[base + sorted(c for c in frame.columns if c not in base)]


def _attributions(records: list[dict]) -> str:
    counts = Counter(r.get("attribution") or "Anonymous" for r in records)
    ordered = sorted(counts, key=lambda a: (a == "Anonymous", -counts[a], a))
    return "\n\n".join(ordered) + "\n"


def _cached_search(folder: Path, label: str, limit: int) -> list[dict] | None:
    """The last search for one class, if ``search-<label>.json`` holds enough records."""
    try:
        state = json.loads((folder / f"search-{label}.json").read_text(encoding="utf-8"))
        if state["query"] == class_query(label) and (state["limit"] >= limit or state["exhausted"]):
            return list(state["records"])[:limit]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: search again
    return None


def _missing(records: list[dict], folder: Path, file_kind: str) -> list[tuple[str, int | None, Path]]:
    """``(url, size, target)`` of each record whose image is not in ``folder`` yet."""
    wanted = [_file_of(r, file_kind) for r in records]
    return [(url, size, folder / name) for url, size, name in wanted if not (folder / name).is_file()]


def download_classes(api: str, folder: Path, per_class: int, classes: Iterable[str] = CLASSES,
                     file_kind: str = "thumbnail_256", progress: bool = True) -> Path:
    """Download up to ``per_class`` dermoscopic images of each class into ``folder``; resumable.

    Re-running with every image present touches no network. Returns ``folder``.
    """
    folder = Path(folder) / file_kind
    folder.mkdir(parents=True, exist_ok=True)
    cached = [_cached_search(folder, label, per_class) for label in classes]
    records = [r for found in cached if found for r in found]
    session = make_session()
    if any(found is None for found in cached) or _missing(records, folder, file_kind):
        # Something must be fetched, so search afresh: the archive's download links are
        # signed and expire, and old ones cannot resume an interrupted download.
        check_reachable(api, cache=folder if any(folder.glob("ISIC_*")) else None)
        records = []
        for label in classes:
            found = search(session, api, class_query(label), per_class)
            fsutil.write_json_atomic(folder / f"search-{label}.json", {
                "query": class_query(label), "limit": per_class, "records": found,
                "exhausted": len(found) < per_class})
            records += found
    missing = _missing(records, folder, file_kind)
    failures: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(download_file, session, url, target, size)
                   for url, size, target in missing]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                           desc="downloading", disable=not progress or not futures, mininterval=2):
            try:
                future.result()
            except ArchiveError as error:
                failures.append(str(error))
    fsutil.write_atomic(folder / "metadata.csv",
                        lambda out: metadata_table(records).to_csv(out, index=False))
    fsutil.write_text_atomic(folder / "attribution.txt", _attributions(records))
    if failures:  # go on with what arrived; the import lists the rest as missing files
        warnings.warn(f"{len(failures)} of {len(records)} images could not be downloaded; run "
                      f"again to resume them. First error: {failures[0]}", stacklevel=2)
    return folder
