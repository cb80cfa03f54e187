"""Downloading a seeded sample of images by diagnosis from the ISIC Archive (API v2), resumably.

Why not call ``isic image download`` (isic-cli, the archive's official client)? It is the
right tool for a bulk download and the course shows the command, but inside a lesson it
misbehaves offline: it retries one request 15 times with growing back-off (about 22 minutes),
then asks on stdin whether to send a bug report, and checks PyPI for a newer version first.
It also takes the *oldest* images of a search: the archive returns them oldest first and has
no random order. The few calls the course needs are written here instead:

* **a fair sample.** The archive's ids end in digits that say nothing about the image, so the
  images whose id ends in given digits (``isic_id:*37``) are a random part of a class from
  every era and clinic. Each class is counted first; the fewest final digits that make one
  such part no larger than the images wanted are chosen, parts are read *whole* in an order
  drawn from the seed until there are enough, and the images wanted are drawn from them with
  the same seed (:func:`sample_class`). ``download.json`` records how each class was drawn;
* the archive is contacted once, with a deadline, before anything else: offline, a clear
  message names the alternatives within :data:`REACH_DEADLINE` seconds. After that, a search
  rides out a few minutes of trouble (:func:`search_retry`, :func:`patience`), and a class
  whose search still fails is reported while the other classes are downloaded;
* an answer the archive refuses shows the archive's own words (``Could not parse search
  query.``);
* each image is written to ``<name>.part`` and renamed only when complete (its size checked
  against the archive's record), so a partial file never counts as an image;
* an interrupted file resumes with an HTTP ``Range`` request carrying the file's ``ETag`` in
  ``If-Range`` (kept in ``<name>.etag``): a file that changed meanwhile is fetched again from
  its first byte, never spliced onto the old one. Transient errors (dropped connections,
  429/5xx) are retried with exponential back-off;
* each file is capped (at the size the archive's record announces, or :data:`MAX_FILE_BYTES`
  when it announces none) and given up after :data:`FILE_DEADLINE` seconds however slowly it
  trickles; a ``Retry-After`` longer than :data:`MAX_RETRY_AFTER` is not waited for;
* search pages that loop, or run past :data:`MAX_PAGES`, end the search with a clear message;
* records that are unusable (no or odd ``isic_id``, no http(s) file URL, an impossible size,
  not even a dict) are skipped with a warning, and a search that held any is not kept, so the
  next run asks the archive again;
* the samples drawn are kept, so a re-run with everything present needs no network at all.

The result is the folder isic-cli writes: ``<isic_id>.jpg``, ``metadata.csv`` (same columns,
written the same way), ``attribution.txt`` and ``licenses/``, read by
:func:`lesionlib.sources.read_isic_download`; and ``download.json``, how it was drawn.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import random
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm  # plain text: it stays readable in executed notebooks
from urllib3.util.retry import RequestHistory, Retry

from . import LesionlibError, fsutil, net
from .taxonomy import CLASSES

REACH_DEADLINE = net.DEADLINE  # seconds for the first contact
TIMEOUT = (5.0, 30.0)  # connect and read timeouts of every later request
ATTEMPTS = 5  # per file, each resuming where the last one stopped
SEARCH_ATTEMPTS = 10  # per search request: with the back-off below, about 5 minutes of trouble
SEARCH_BACKOFF = 1.0  # seconds; pauses of 0, 2, 4, ... 64, 64 s between a search's attempts
SEARCH_BACKOFF_MAX = 64.0
PAGE_SIZE = 100
WORKERS = 8  # downloads are latency-bound, so a few run at once
MAX_FILE_BYTES = 64 << 20  # cap of a file whose record announces no size (and of any announced)
FILE_DEADLINE = 300.0  # seconds for one file, all attempts and pauses included
MAX_RETRY_AFTER = 30.0  # longest Retry-After (429/503) waited for; a longer one is an error
MAX_PAGES = 200  # search pages followed for one query
# Images of one class taken at most (the full profile's "every image" of a collection): as many
# as one search may read. More than HAM10000 or BCN20000 hold (~19,000 in all); a larger
# collection (the 2020 challenge's, ~33,000 benign) gives a sample of it, with a warning.
MAX_PER_CLASS = MAX_PAGES * PAGE_SIZE
MAX_REDIRECTS = 10
MAX_ID_DIGITS = 4  # final id digits that define one part of a class (10,000 parts at most)
ISIC_ID = re.compile(r"ISIC_\d{7}")
DOWNLOAD_FILE = "download.json"  # how a download was drawn, beside its metadata.csv
# The archive's licences (its CopyrightLicense values): name and link, for licenses/<id>.txt.
LICENCES = {
    "CC-0": ("CC0 1.0 Universal (public domain dedication)",
             "https://creativecommons.org/publicdomain/zero/1.0/legalcode"),
    "CC-BY": ("Creative Commons Attribution 4.0 International (CC BY 4.0)",
              "https://creativecommons.org/licenses/by/4.0/legalcode"),
    "CC-BY-NC": ("Creative Commons Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)",
                 "https://creativecommons.org/licenses/by-nc/4.0/legalcode"),
}


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
            "train/benign, train/malignant, ...), or to several folders separated by commas;\n"
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


_TRANSIENT = (429, 500, 502, 503, 504)


def search_retry() -> Retry:
    """The searches' policy: :data:`SEARCH_ATTEMPTS` retries of a dropped connection or a
    429/5xx answer, with exponential back-off (see :func:`patience`)."""
    return _Retry(total=SEARCH_ATTEMPTS, backoff_factor=SEARCH_BACKOFF,
                  backoff_max=SEARCH_BACKOFF_MAX, status_forcelist=_TRANSIENT,
                  allowed_methods={"GET"}, respect_retry_after_header=True, raise_on_status=False)


def file_retry() -> Retry:
    """The files' policy: a few quick retries; :func:`download_file` resumes and bounds the rest."""
    return _Retry(total=ATTEMPTS, connect=2, read=2, status=ATTEMPTS, backoff_factor=0.5,
                  status_forcelist=_TRANSIENT, allowed_methods={"GET"},
                  respect_retry_after_header=True, raise_on_status=False)


def patience(retry: Retry) -> float:
    """Seconds a policy pauses in all before it gives up (``Retry-After`` answers aside)."""
    return sum(retry.new(history=(RequestHistory("GET", None, None, None, None),) * n)
               .get_backoff_time() for n in range(1, retry.total + 1))


def make_session(retry: Retry | None = None) -> requests.Session:
    """A session that retries transient HTTP errors as ``retry`` says (default: the files')."""
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    adapter = HTTPAdapter(max_retries=retry or file_retry(), pool_maxsize=WORKERS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": "lesion-course (lesionlib)", "Accept": "application/json"})
    return session


def check_reachable(api: str, deadline: float = REACH_DEADLINE, cache: Path | None = None) -> None:
    """Raise :class:`ArchiveUnreachable` unless the archive answers a search within ``deadline``."""
    reason = net.probe(urljoin(api, "images/search/?limit=1"), deadline)
    if reason:
        raise ArchiveUnreachable(api, reason, cache)


def _archive_words(response: requests.Response) -> str:
    """What the archive said about a refusal (``{"message": ...}`` or ``{"detail": ...}``)."""
    try:
        body = response.json()
        said = body.get("message") or body.get("detail") or body.get("error")
    except (ValueError, AttributeError):
        return ""
    return f': {said if isinstance(said, str) else json.dumps(said)[:300]}' if said else ""


def _get_json(session: requests.Session, url: str, params: dict | None, what: str):
    """The JSON answer to one GET, or an :class:`ArchiveError` saying what ``what`` met."""
    try:
        response = session.get(url, params=params, timeout=TIMEOUT)
    except requests.RequestException as error:
        raise ArchiveError(f"{what} failed: {error}") from None
    if not response.ok:
        raise ArchiveError(f"{what}: the archive answered HTTP {response.status_code}"
                           f"{_archive_words(response)} ({response.url})")
    try:
        return response.json()
    except ValueError:
        raise ArchiveError(f"{response.url} did not answer like the ISIC Archive API; is a "
                           "proxy or a Wi-Fi login page in the way?") from None


def collection_name(session: requests.Session, api: str, collection: int) -> str:
    """The name of a public collection; an :class:`ArchiveError` naming the fix if there is none."""
    try:
        return str(_get_json(session, urljoin(api, f"collections/{collection}/"), None,
                             f"Looking up collection {collection}")["name"])
    except ArchiveError as error:
        raise ArchiveError(f"{error}\nThe ISIC Archive has no public collection {collection} that "
                           "answers: see https://www.isic-archive.com (Collections) for the ids, "
                           "and fix LESIONLIB_DATA_SOURCE / LESIONLIB_EXTERNAL_SOURCE "
                           "(isic-archive:collection=<id>).") from None
    except (KeyError, TypeError):
        raise ArchiveError(f"{urljoin(api, f'collections/{collection}/')} did not answer like "
                           "the ISIC Archive API.") from None


def _params(query: str, collection: int | None, limit: int) -> dict:
    params = {"query": query, "limit": limit}
    return {**params, "collections": str(collection)} if collection is not None else params


def count_matches(session: requests.Session, api: str, query: str,
                  collection: int | None = None) -> int:
    """How many images match ``query`` (the archive counts on the first page only)."""
    page = _get_json(session, urljoin(api, "images/search/"), _params(query, collection, 1),
                     f"Counting the archive's images for {query!r}")
    count = page.get("count") if isinstance(page, dict) else None
    if type(count) is not int or count < 0:
        raise ArchiveError(f"The archive gave no count of the images for {query!r}; is a proxy "
                           "or a Wi-Fi login page in the way?")
    return count


def search(session: requests.Session, api: str, query: str, limit: int,
           collection: int | None = None) -> list[dict]:
    """Up to ``limit`` image records matching ``query`` (oldest first, as the archive sends
    them), following the archive's pages; only from ``collection`` if one is given.

    The records are returned as the archive sent them; :func:`usable_records` checks them.
    """
    url: str | None = urljoin(api, "images/search/")
    params: dict | None = _params(query, collection, min(limit, PAGE_SIZE))
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
        page = _get_json(session, url, params, f"Searching the archive for {query!r}")
        try:
            results, following = page["results"], page.get("next")
            if not isinstance(results, list) or not isinstance(following, (str, type(None))):
                raise TypeError
        except (KeyError, TypeError, AttributeError):
            raise ArchiveError(f"{key} did not answer like the ISIC Archive API; is a "
                               "proxy or a Wi-Fi login page in the way?") from None
        if following is not None and urlparse(following).scheme not in ("http", "https"):
            raise ArchiveError(f"The archive's search for {query!r} gave a next page that is not "
                               f"an http(s) link: {following!r}")
        if not results:  # an empty page ends the search, whatever its next link says
            break
        ids = {r["isic_id"] for r in results
               if isinstance(r, dict) and isinstance(r.get("isic_id"), str)}
        if ids and not ids - found:  # a page of records seen already: the next links loop
            raise ArchiveError(f"The archive's search pages for {query!r} loop: {key} "
                               f"brought back only records already seen. Try again later.")
        found |= ids
        records += results
        url, params = following, None  # the next link carries the query itself
    return records[:limit]


def id_digits(count: int, per_class: int) -> int:
    """How many final id digits define one part of a class of ``count`` images: the fewest
    that make a part (``count / 10**digits`` images on average) no larger than ``per_class``."""
    digits = 0
    while digits < MAX_ID_DIGITS and count > per_class * 10 ** digits:
        digits += 1
    return digits


def sample_class(session: requests.Session, api: str, label: str, per_class: int, seed: int,
                 file_kind: str, collection: int | None = None
                 ) -> tuple[list[dict], list[str], dict]:
    """A seeded random sample of up to ``per_class`` usable records of one class:
    ``(records, problems, how it was drawn)``; see the module's description."""
    query = class_query(label)
    count = count_matches(session, api, query, collection)
    digits = id_digits(count, per_class)
    rng = random.Random(f"{seed}:{label}")
    endings = [f"{n:0{digits}d}" for n in range(10 ** digits)] if digits else [""]
    rng.shuffle(endings)
    read: list = []
    used: list[str] = []
    for ending in endings:
        if len(read) >= per_class:
            break
        part = f"{query} AND isic_id:*{ending}" if ending else query
        # a part is read whole (twice its expected size at most), or it would lean to the oldest
        read += search(session, api, part, 2 * per_class if ending else per_class, collection)
        used.append(ending)
    usable, problems = usable_records(read, file_kind)
    chosen = sorted(rng.sample(range(len(usable)), min(per_class, len(usable))))
    drawn = {"query": query, "collection": collection, "matching": count, "id_digits": digits,
             "id_endings_read": used, "records_read": len(read), "drawn": len(chosen),
             "seed": seed}
    return [usable[i] for i in chosen], problems, drawn


class _Incomplete(Exception):
    pass


class _TooLarge(Exception):
    pass


class _TimeUp(Exception):
    pass


def _strong_etag(value: str | None) -> str | None:
    """An ``ETag`` that ``If-Range`` may carry (a strong one, ``"..."``), else None."""
    return value if value and value.startswith('"') and value.endswith('"') else None


def download_file(session: requests.Session, url: str, target: Path,
                  size: int | None = None, attempts: int = ATTEMPTS,
                  deadline: float | None = None, max_bytes: int | None = None) -> Path:
    """Fetch ``url`` to ``target`` through ``target.part``, resuming and retrying; never partial.

    A ``.part`` is resumed with ``Range`` and, if the server gave the file an ``ETag`` (kept
    in ``<target>.etag``), ``If-Range``: a file that changed comes whole, from its first byte
    (and a server that sends a piece of another version anyway is caught by its ``ETag``).
    At most ``size`` bytes (the archive's record) or, when no size is known, ``max_bytes``
    (:data:`MAX_FILE_BYTES`) are ever written: a longer file is refused and its ``.part``
    removed. Everything (attempts, pauses, a server that trickles) ends within ``deadline``
    seconds (:data:`FILE_DEADLINE`) plus at most one read timeout; the ``.part`` is then kept
    to resume from.
    """
    part = target.with_name(target.name + ".part")
    tag_file = target.with_name(target.name + ".etag")
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
                tag_file.unlink(missing_ok=True)
                return target
            part.unlink()
            have = 0
        elif have > limit:
            part.unlink()
            have = 0
        etag = _strong_etag(tag_file.read_text().strip()) if have and tag_file.is_file() else None
        headers = {"Range": f"bytes={have}-", **({"If-Range": etag} if etag else {})} if have else {}
        timeout = (min(TIMEOUT[0], remaining), min(TIMEOUT[1], remaining))
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                if response.status_code == 416:  # nothing past what we have: start again
                    part.unlink(missing_ok=True)
                    raise _Incomplete("range not satisfiable")
                if response.status_code not in (200, 206):
                    hint = (" (the link expired or the file is gone: run again for fresh links)"
                            if response.status_code == 403 else "")
                    raise ArchiveError(f"HTTP {response.status_code} for {url}{hint}")
                total = size
                if response.status_code == 206:
                    start, whole = _content_range(response.headers.get("Content-Range"))
                    if start != have or (etag and response.headers.get("ETag") != etag):
                        part.unlink(missing_ok=True)  # another piece or another file: from zero
                        raise _Incomplete(f"asked for bytes from {have} of {etag or 'the file'}, "
                                          f"got from {start} of {response.headers.get('ETag')}")
                    if whole is not None and whole > limit:
                        raise _TooLarge(f"the server announces {whole} bytes")
                    total = total or whole
                else:  # a full answer (the file changed, or the range was ignored): from zero
                    have = 0
                    length = _content_length(response.headers.get("Content-Length"))
                    if length is not None and length > limit:
                        raise _TooLarge(f"the server announces {length} bytes")
                    total = total or length
                    new_tag = _strong_etag(response.headers.get("ETag"))
                    if new_tag:
                        fsutil.write_text_atomic(tag_file, new_tag)
                    else:
                        tag_file.unlink(missing_ok=True)
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
            tag_file.unlink(missing_ok=True)
            return target
        except _TooLarge as error:
            part.unlink(missing_ok=True)
            tag_file.unlink(missing_ok=True)
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
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, dict) for v in metadata.values()):
        return f"{isic_id}'s metadata is not a mapping of mappings"
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


def metadata_rows(records: Iterable[dict]) -> tuple[list[str], list[dict]]:
    """``(columns, rows)`` of isic-cli's ``metadata.csv``: id, attribution, licence, then every
    acquisition and clinical field, sorted. Values stay as the archive sent them, so a whole
    number is written ``55`` and a missing one as nothing (pandas would write ``55.0``)."""
    base = ["isic_id", "attribution", "copyright_license"]
    fields: set[str] = set()
    rows = []
    for record in records:
        row = {key: record.get(key) for key in base}
        for group in record.get("metadata", {}).values():  # acquisition, clinical
            row.update(group)
            fields |= set(group)
        rows.append(row)
    return base + sorted(fields - set(base)), rows


def write_metadata(path: Path, records: Iterable[dict]) -> None:
    """Write ``metadata.csv`` as isic-cli does (:func:`metadata_rows`), atomically."""
    columns, rows = metadata_rows(records)

    def write(out) -> None:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(rows)

    fsutil.write_atomic(path, write)


def _attributions(records: list[dict]) -> str:
    counts = Counter(str(r.get("attribution") or "Anonymous") for r in records)
    ordered = sorted(counts, key=lambda a: (a == "Anonymous", -counts[a], a))
    return "\n\n".join(ordered) + "\n"


def licence_note(licence: str) -> str:
    """The text of ``licenses/<licence>.txt``: the licence's name and link (or what is known)."""
    if licence in LICENCES:
        name, link = LICENCES[licence]
        return (f"{licence}: {name}\nFull text: {link}\n\nImages under this licence are listed with "
                "it in metadata.csv (copyright_license); credit them as attribution.txt says.\n")
    return (f"{licence}: a licence lesion-course does not know. Read the terms where these images "
            "came from before you share or reuse them.\n")


def write_licences(folder: Path, licences: Iterable[str]) -> Path:
    """Write ``folder/licenses/<licence>.txt`` for each licence (replacing the folder's old
    ones), as isic-cli does beside ``attribution.txt``; return that folder."""
    target = Path(folder) / "licenses"
    with fsutil.atomic_folder(target) as staging:
        for licence in sorted(set(licences)):
            (staging / f"{fsutil.safe_name(licence)}.txt").write_text(licence_note(licence),
                                                                        encoding="utf-8")
    return target


def _cached_sample(folder: Path, label: str, limit: int, file_kind: str, seed: int,
                   collection: int | None) -> tuple[list[dict], dict] | None:
    """The last sample of one class (``search-<label>.json``) if it was drawn the same way and
    holds enough usable records: ``(records, how it was drawn)``."""
    try:
        state = json.loads((folder / f"search-{label}.json").read_text(encoding="utf-8"))
        drawn = state["drawn"]
        same = (drawn["query"], drawn["collection"], drawn["seed"]) == (
            class_query(label), collection, seed)
        if same and (state["limit"] >= limit or state["exhausted"]):
            usable, problems = usable_records(list(state["records"])[:limit], file_kind)
            if not problems:  # a cache written by an older version may hold bad records
                return usable, drawn
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none yet, or unreadable, or drawn another way: search again
    return None


def _missing(records: list[dict], folder: Path, file_kind: str) -> list[tuple[str, int | None, Path]]:
    """``(url, size, target)`` of each record whose image is not in ``folder`` yet, once each."""
    wanted = {name: (url, size) for url, size, name in (_file_of(r, file_kind) for r in records)}
    return [(url, size, folder / name) for name, (url, size) in wanted.items()
            if not (folder / name).is_file()]


def _warn_skipped(skipped: list[str]) -> None:
    shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
    warnings.warn(f"{len(skipped)} record{'s' if len(skipped) > 1 else ''} from the archive "
                  f"could not be used and {'were' if len(skipped) > 1 else 'was'} skipped "
                  f"({shown}). Searches holding such records are not kept, so the next run "
                  "asks the archive again.", stacklevel=3)


def _recorded_name(folder: Path, collection: int | None) -> str | None:
    """The collection's name as the last ``download.json`` in ``folder`` recorded it."""
    try:
        previous = json.loads((folder / DOWNLOAD_FILE).read_text(encoding="utf-8"))
        return previous["collection_name"] if previous["collection"] == collection else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _draw_all(api: str, folder: Path, classes: list[str], per_class: int, seed: int,
              file_kind: str, collection: int | None):
    """Draw every class afresh, keeping each good sample in ``search-<label>.json``:
    ``(samples, collection name, records skipped, classes failed)``."""
    check_reachable(api, cache=folder if any(folder.glob("ISIC_*")) else None)
    session = make_session(search_retry())
    name = collection_name(session, api, collection) if collection is not None else None
    samples: dict[str, tuple[list[dict], dict]] = {}
    skipped: list[str] = []
    failed: dict[str, str] = {}
    for label in classes:
        cache = folder / f"search-{label}.json"
        try:
            found, problems, drawn = sample_class(session, api, label, per_class, seed,
                                                  file_kind, collection)
        except ArchiveError as error:  # reported once the other classes are in
            failed[label] = str(error)
            cache.unlink(missing_ok=True)
            continue
        if problems:  # never keep a search that failed its checks: the next run asks again
            cache.unlink(missing_ok=True)
            skipped += problems
        else:
            fsutil.write_json_atomic(cache, {
                "limit": per_class, "records": found, "drawn": drawn,
                "exhausted": drawn["id_digits"] == 0 and drawn["records_read"] < per_class})
        samples[label] = (found, drawn)
    return samples, name, skipped, failed


def download_classes(api: str, folder: Path, per_class: int, classes: Iterable[str] = CLASSES,
                     file_kind: str = "thumbnail_256", progress: bool = True, seed: int = 42,
                     collection: int | None = None) -> Path:
    """Download a seeded random sample of up to ``per_class`` dermoscopic images of each class
    (of one collection, if given) into ``folder``; resumable. Returns ``folder``.

    A class whose search fails is reported in a warning while the others are downloaded (an
    error if no class has any image). Re-running with every image present needs no network.
    """
    classes = list(classes)
    folder = Path(folder) / file_kind
    folder.mkdir(parents=True, exist_ok=True)
    cached = {label: _cached_sample(folder, label, per_class, file_kind, seed, collection)
              for label in classes}
    samples = {label: found for label, found in cached.items() if found}
    records = [r for found, _ in samples.values() for r in found]
    name, skipped, failed = _recorded_name(folder, collection), [], {}
    if len(samples) < len(classes) or _missing(records, folder, file_kind):
        # Something must be fetched, so draw afresh: the archive's download links are
        # signed and expire, and old ones cannot resume an interrupted download.
        samples, name, skipped, failed = _draw_all(api, folder, classes, per_class, seed,
                                                   file_kind, collection)
        records = [r for found, _ in samples.values() for r in found]
        if failed and not records:  # nothing to go on with: the first failure is the error
            raise ArchiveError(next(iter(failed.values())))
    records, _ = usable_records(records, file_kind)  # once each, should classes overlap
    if skipped:
        _warn_skipped(skipped)
    missing = _missing(records, folder, file_kind)
    failures: list[str] = []
    session = make_session(file_retry())
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(download_file, session, url, target, size)
                   for url, size, target in missing]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                           desc="downloading", disable=not progress or not futures, mininterval=2):
            try:
                future.result()
            except ArchiveError as error:
                failures.append(str(error))
    write_metadata(folder / "metadata.csv", records)
    fsutil.write_text_atomic(folder / "attribution.txt", _attributions(records))
    write_licences(folder, (r["copyright_license"] for r in records if r.get("copyright_license")))
    fsutil.write_json_atomic(folder / DOWNLOAD_FILE, {
        "api": api, "collection": collection, "collection_name": name, "file": file_kind,
        "per_class": per_class, "seed": seed,
        "classes": {label: samples[label][1] if label in samples else {"failed": failed[label]}
                    for label in classes},
        "written": datetime.now(UTC).isoformat(timespec="seconds")})
    for label, error in failed.items():
        warnings.warn(f"The search for {label} images failed, so this download has none; the "
                      f"other classes were downloaded. Run again to retry it. ({error})",
                      stacklevel=2)
    if failures:  # go on with what arrived; the import lists the rest as missing files
        warnings.warn(f"{len(failures)} of {len(records)} images could not be downloaded; run "
                      f"again to resume them. First error: {failures[0]}", stacklevel=2)
    return folder
