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
* each file is capped (at the size the archive's record announces, or :data:`MAX_FILE_BYTES`
  when it announces none) and given up after :data:`FILE_DEADLINE` seconds however slowly it
  trickles; a ``Retry-After`` longer than :data:`MAX_RETRY_AFTER` is not waited for;
* search pages that loop, or run past :data:`MAX_PAGES`, end the search with a clear message;
* records that are unusable (no or odd ``isic_id``, no http(s) file URL, an impossible size,
  not even a dict) are skipped with a warning, and a search that held any is not kept, so the
  next run asks the archive again;
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
MAX_FILE_BYTES = 64 << 20  # cap of a file whose record announces no size (and of any announced)
FILE_DEADLINE = 300.0  # seconds for one file, all attempts and pauses included
MAX_RETRY_AFTER = 30.0  # longest Retry-After (429/503) waited for; a longer one is an error
MAX_PAGES = 200  # search pages followed for one query
MAX_REDIRECTS = 10
ISIC_ID = re.compile(r"ISIC_\d{7}")


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


class _Retry(Retry):
    """urllib3's retry, but a ``Retry-After`` beyond :data:`MAX_RETRY_AFTER` is refused at once
    (urllib3 itself would wait for hours) instead of being slept through."""

    def get_retry_after(self, response):
        seconds = super().get_retry_after(response)
        if seconds is not None and seconds > MAX_RETRY_AFTER:
            raise ArchiveError(
                f"The archive answered HTTP {response.status} and asks to wait {seconds:.0f} s "
                f"(Retry-After) before the next request, longer than the {MAX_RETRY_AFTER:.0f} s "
                "the course waits. It is busy or limiting requests: try again later.")
        return seconds


def make_session() -> requests.Session:
    """A session that retries transient HTTP errors (429, 5xx) with exponential back-off."""
    retry = _Retry(total=ATTEMPTS, connect=2, read=2, status=ATTEMPTS, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods={"GET"},
                  respect_retry_after_header=True, raise_on_status=False)
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
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
    """Up to ``limit`` image records matching ``query``, following the archive's pages.

    The records are returned as the archive sent them; :func:`usable_records` checks them.
    """
    url: str | None = urljoin(api, "images/search/")
    params: dict | None = {"query": query, "limit": min(limit, PAGE_SIZE)}
    records: list = []
    seen: set[str] = set()  # pages asked for
    found: set = set()  # isic_ids received
    while url and len(records) < limit:
        try:
            key = requests.Request("GET", url, params=params).prepare().url or url
        except requests.RequestException as error:
            raise ArchiveError(f"The archive's search for {query!r} gave an unusable page link "
                               f"{url!r}: {error}") from None
        if key in seen:
            raise ArchiveError(f"The archive's search pages for {query!r} loop: {key} came back as "
                               f"the next page after {len(records)} records. Try again later.")
        if len(seen) >= MAX_PAGES:
            raise ArchiveError(f"The archive's search for {query!r} went on for more than "
                               f"{MAX_PAGES} pages without reaching {limit} records; giving up.")
        seen.add(key)
        try:
            response = session.get(url, params=params, timeout=TIMEOUT)
        except requests.RequestException as error:
            raise ArchiveError(f"Searching the archive for {query!r} failed: {error}") from None
        if not response.ok:
            raise ArchiveError(f"The archive answered HTTP {response.status_code} to {response.url}")
        try:
            page = response.json()
            results, following = page["results"], page.get("next")
            if not isinstance(results, list) or not isinstance(following, (str, type(None))):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ArchiveError(f"{response.url} did not answer like the ISIC Archive API; is a "
                               "proxy or a Wi-Fi login page in the way?") from None
        if following is not None and urlparse(following).scheme not in ("http", "https"):
            raise ArchiveError(f"The archive's search for {query!r} gave a next page that is not "
                               f"an http(s) link: {following!r}")
        if not results:  # an empty page ends the search, whatever its next link says
            break
        ids = {r["isic_id"] for r in results
               if isinstance(r, dict) and isinstance(r.get("isic_id"), str)}
        if ids and not ids - found:  # a page of records seen already: the next links loop
            raise ArchiveError(f"The archive's search pages for {query!r} loop: {response.url} "
                               f"brought back only records already seen. Try again later.")
        found |= ids
        records += results
        url, params = following, None  # the next link carries the query itself
    return records[:limit]


class _Incomplete(Exception):
    pass


class _TooLarge(Exception):
    pass


class _TimeUp(Exception):
    pass


def download_file(session: requests.Session, url: str, target: Path,
                  size: int | None = None, attempts: int = ATTEMPTS,
                  deadline: float | None = None, max_bytes: int | None = None) -> Path:
    """Fetch ``url`` to ``target`` through ``target.part``, resuming and retrying; never partial.

    At most ``size`` bytes (the archive's record) or, when no size is known, ``max_bytes``
    (:data:`MAX_FILE_BYTES`) are ever written: a longer file is refused and its ``.part``
    removed. Everything (attempts, pauses, a server that trickles) ends within ``deadline``
    seconds (:data:`FILE_DEADLINE`) plus at most one read timeout; the ``.part`` is then kept
    to resume from.
    """
    part = target.with_name(target.name + ".part")
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    deadline = FILE_DEADLINE if deadline is None else deadline
    if size is not None and (type(size) is not int or not 0 < size <= max_bytes):
        raise ArchiveError(f"{url}: the archive announces a size of {size!r} bytes; expected a "
                           f"whole number from 1 to {max_bytes}. Skipped.")
    if urlparse(url).scheme not in ("http", "https"):
        raise ArchiveError(f"{url}: not an http(s) link; skipped.")
    limit = size or max_bytes
    give_up = time.monotonic() + deadline
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            pause = min(0.5 * 2 ** (attempt - 1), 8.0)
            if time.monotonic() + pause >= give_up:
                last = _TimeUp(f"no time left within {deadline:g} s")
                break
            time.sleep(pause)
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            last = _TimeUp(f"no time left within {deadline:g} s")
            break
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have >= size:  # complete already (or too long: start again)
            if have == size:
                os.replace(part, target)
                return target
            part.unlink()
            have = 0
        elif have > limit:
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        timeout = (min(TIMEOUT[0], remaining), min(TIMEOUT[1], remaining))
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
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
                    if whole is not None and whole > limit:
                        raise _TooLarge(f"the server announces {whole} bytes")
                    total = total or whole
                else:  # a full answer: the server ignored the range, start from zero
                    have = 0
                    length = _content_length(response.headers.get("Content-Length"))
                    if length is not None and length > limit:
                        raise _TooLarge(f"the server announces {length} bytes")
                    total = total or length
                with part.open("ab" if have else "wb") as out:
                    got = have
                    # read1 returns what has arrived, so a dropped connection loses nothing
                    # that came before it (iter_content would discard a partial chunk).
                    while chunk := response.raw.read1(1 << 16, decode_content=True):
                        if got + len(chunk) > limit:  # never write past the cap
                            raise _TooLarge(f"more than {limit} bytes arrived")
                        out.write(chunk)
                        got += len(chunk)
                        if time.monotonic() > give_up:
                            raise _TimeUp(f"{got} bytes arrived within {deadline:g} s")
            got = part.stat().st_size
            if total is not None and got != total:
                if got > total:
                    part.unlink()
                raise _Incomplete(f"{got} of {total} bytes")
            os.replace(part, target)
            return target
        except _TooLarge as error:
            part.unlink(missing_ok=True)
            cap = (f"the {size} bytes the archive's record announces" if size
                   else f"the cap of {max_bytes} bytes for a file of unknown size")
            raise ArchiveError(f"{url} is larger than {cap} ({error}); refused, nothing "
                               "kept.") from None
        except _TimeUp as error:
            last = error
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError, _Incomplete) as error:
            last = error
        except requests.TooManyRedirects:
            raise ArchiveError(f"{url} redirects in a loop (more than {MAX_REDIRECTS} "
                               "redirects); skipped.") from None
        except requests.RequestException as error:
            raise ArchiveError(f"{url} could not be downloaded: {error}") from None
    if isinstance(last, _TimeUp):
        raise ArchiveError(f"{url}: given up after {deadline:g} s, the download's deadline "
                           f"({last}). Run again to resume from {part.name}.")
    raise ArchiveError(f"{url}: not complete after {attempts} attempts ({last}). "
                       f"Run again to resume from {part.name}.")


def _content_length(header: str | None) -> int | None:
    return int(header) if header and header.strip().isdigit() else None


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range: bytes 100-199/200`` header."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _problem(record, file_kind: str) -> str | None:
    """Why ``record`` cannot be used (as a clear phrase), or ``None`` if it can."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__} where a record was expected"
    isic_id = record.get("isic_id")
    if isic_id is None:
        return "a record without an isic_id"
    if not isinstance(isic_id, str) or not ISIC_ID.fullmatch(isic_id):
        return f"isic_id {str(isic_id)[:40]!r} is not like ISIC_0123456"
    files = record.get("files")
    entry = (files.get(file_kind) or files.get("full")) if isinstance(files, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        return f"{isic_id} has no {file_kind!r} file URL"
    parsed = urlparse(entry["url"])
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"{isic_id}'s file URL {entry['url'][:80]!r} is not an http(s) link"
    size = entry.get("size")
    if size is not None and (type(size) is not int or not 0 < size <= MAX_FILE_BYTES):
        return f"{isic_id} announces an impossible size {size!r}"
    if not isinstance(record.get("metadata", {}), dict):
        return f"{isic_id}'s metadata is not a mapping"
    return None


def usable_records(records: Iterable, file_kind: str) -> tuple[list[dict], list[str]]:
    """``(usable records, problems)``: each unusable record is left out and its problem listed;
    a repeated ``isic_id`` is left out silently (two downloads would share one ``.part``)."""
    usable: list[dict] = []
    problems: list[str] = []
    seen: set[str] = set()
    for record in records:
        problem = _problem(record, file_kind)
        if problem:
            problems.append(problem)
        elif record["isic_id"] not in seen:
            seen.add(record["isic_id"])
            usable.append(record)
    return usable, problems


def _file_of(record: dict, file_kind: str) -> tuple[str, int | None, str]:
    """(url, size, file name) of one record's image file (a record :func:`_problem` passed)."""
    problem = _problem(record, file_kind)
    if problem:
        raise ArchiveError(f"Unusable record from the archive: {problem}.")
    files = record["files"]
    entry = files.get(file_kind) or files["full"]
    suffix = PurePosixPath(urlparse(entry["url"]).path).suffix.lower()
    suffix = suffix if suffix in (".jpg", ".jpeg", ".png") else ".jpg"
    return entry["url"], entry.get("size"), record["isic_id"] + suffix


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
    counts = Counter(str(r.get("attribution") or "Anonymous") for r in records)
    ordered = sorted(counts, key=lambda a: (a == "Anonymous", -counts[a], a))
    return "\n\n".join(ordered) + "\n"


def _cached_search(folder: Path, label: str, limit: int, file_kind: str) -> list[dict] | None:
    """The last search for one class, if ``search-<label>.json`` holds enough usable records."""
    try:
        state = json.loads((folder / f"search-{label}.json").read_text(encoding="utf-8"))
        if state["query"] == class_query(label) and (state["limit"] >= limit or state["exhausted"]):
            usable, problems = usable_records(list(state["records"])[:limit], file_kind)
            if not problems:  # a cache written by an older version may hold bad records
                return usable
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none yet, or unreadable: search again
    return None


def _missing(records: list[dict], folder: Path, file_kind: str) -> list[tuple[str, int | None, Path]]:
    """``(url, size, target)`` of each record whose image is not in ``folder`` yet, once each."""
    wanted = {name: (url, size) for url, size, name in (_file_of(r, file_kind) for r in records)}
    return [(url, size, folder / name) for name, (url, size) in wanted.items()
            if not (folder / name).is_file()]


def download_classes(api: str, folder: Path, per_class: int, classes: Iterable[str] = CLASSES,
                     file_kind: str = "thumbnail_256", progress: bool = True) -> Path:
    """Download up to ``per_class`` dermoscopic images of each class into ``folder``; resumable.

    Re-running with every image present touches no network. Returns ``folder``.
    """
    folder = Path(folder) / file_kind
    folder.mkdir(parents=True, exist_ok=True)
    cached = [_cached_search(folder, label, per_class, file_kind) for label in classes]
    records = [r for found in cached if found for r in found]
    session = make_session()
    skipped: list[str] = []
    if any(found is None for found in cached) or _missing(records, folder, file_kind):
        # Something must be fetched, so search afresh: the archive's download links are
        # signed and expire, and old ones cannot resume an interrupted download.
        check_reachable(api, cache=folder if any(folder.glob("ISIC_*")) else None)
        records = []
        for label in classes:
            found = search(session, api, class_query(label), per_class)
            usable, problems = usable_records(found, file_kind)
            if problems:  # never keep a search that failed its checks: the next run asks again
                (folder / f"search-{label}.json").unlink(missing_ok=True)
                skipped += problems
            else:
                fsutil.write_json_atomic(folder / f"search-{label}.json", {
                    "query": class_query(label), "limit": per_class, "records": usable,
                    "exhausted": len(found) < per_class})
            records += usable
    records, _ = usable_records(records, file_kind)  # once each, should classes overlap
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        warnings.warn(f"{len(skipped)} record{'s' if len(skipped) > 1 else ''} from the archive "
                      f"could not be used and {'were' if len(skipped) > 1 else 'was'} skipped "
                      f"({shown}). Searches holding such records are not kept, so the next run "
                      "asks the archive again.", stacklevel=2)
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
