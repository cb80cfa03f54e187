"""A real HTTP server on loopback that answers like the ISIC Archive API v2 as it is today.

Like the archive (ImageMarkup/isic, read in August 2026), it serves
``GET /api/v2/images/search/?query=...&collections=...&limit=...&cursor=...``: the query in
the archive's grammar (``field:value``, ``"quoted values"``, ``*`` wildcards at either end,
``-`` negation, ``AND``, ``OR``, brackets; only the archive's searchable fields) filters the
images, oldest first; a query it cannot parse gets a 400 with ``{"message": "Could not parse
search query."}``; ``count`` is sent on the first page only; pages are linked by an opaque
cursor; at most 100 records a page. ``GET /api/v2/collections/<id>/`` describes a collection.
Records carry ``pixels_x/y``, ``anatom_site_1``... and ``diagnosis_1``...; there is no
``anatom_site_general`` any more. The image files (full size and 256-pixel thumbnails, which
differ) come from a second server on another port, as the archive's come from S3: signed-looking
links, an ``ETag`` per file, ``Range`` with ``If-Range`` and ``If-Match``, and a 403 for a file
that is not there.

It can misbehave on purpose (see :class:`Faults`): drop a connection half-way through a file,
serve a file that is always cut short, answer 503 once, send more bytes than a record announces
(or no length at all), trickle a file a byte at a time, redirect a file to itself, answer 429
with a long ``Retry-After``, fail the searches of one class, give a search page whose ``next``
link points to itself, and hand out odd records.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from isic_metadata import FIELD_REGISTRY
from PIL import Image

from lesionlib.images import Rejected, inspect_image

# What the archive's search accepts: its searchable fields (without the one it dropped in May
# 2026) and four of its own.
SEARCHABLE = ({k for k, v in FIELD_REGISTRY.items() if v.search} - {"anatom_site_general"}
              | {"isic_id", "public", "age_approx", "copyright_license"})
PARSE_ERROR = {"message": "Could not parse search query."}
PAGE_MAX = 100


@cache
def _thumbnail(data: bytes) -> bytes:
    """A 256-pixel thumbnail of a JPEG, as the archive makes one (other bytes than the image)."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB")
        small.thumbnail((256, 256))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=90)
    return out.getvalue()


@cache
def _pixels(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@dataclass
class ArchiveImage:
    isic_id: str
    diagnosis_1: str  # "Benign", "Indeterminate" or "Malignant"
    data: bytes  # the full image
    clinical: dict = field(default_factory=dict)  # more clinical fields; None values are left out
    collections: set[int] = field(default_factory=set)
    copyright_license: str = "CC-0"
    attribution: str = "Anonymous"
    image_type: str = "dermoscopic"
    thumbnail: bytes | None = None  # default: made from data

    def thumbnail_bytes(self) -> bytes:
        return self.thumbnail if self.thumbnail is not None else _thumbnail(self.data)

    def fields(self) -> dict:
        """Every searchable value of the image, as its record gives them."""
        width, height = _pixels(self.data)
        acquisition = {"image_type": self.image_type, "pixels_x": width, "pixels_y": height}
        clinical = {"diagnosis_1": self.diagnosis_1,
                    **{k: v for k, v in self.clinical.items() if v is not None}}
        return {"acquisition": acquisition, "clinical": clinical}


@dataclass
class Faults:
    drop_once: set[str] = field(default_factory=set)  # isic_ids: first GET stops half-way
    always_short: set[str] = field(default_factory=set)  # isic_ids: every answer is cut short
    unavailable_once: set[str] = field(default_factory=set)  # isic_ids: first GET answers 503
    ignore_range: set[str] = field(default_factory=set)  # isic_ids: Range ignored, whole file sent
    portal: bool = False  # every search answers an HTML page, as a Wi-Fi login page does
    padding: dict[str, int] = field(default_factory=dict)  # isic_id: junk bytes sent after it
    no_length: set[str] = field(default_factory=set)  # isic_ids: no Content-Length, ends at close
    trickle: dict[str, float] = field(default_factory=dict)  # isic_id: seconds between bytes
    redirect_loop: set[str] = field(default_factory=set)  # isic_ids: the file redirects to itself
    throttled: int = 0  # this many requests (matching throttle_path) answer 429 ...
    throttle_path: str = ""
    retry_after: str = "3600"  # ... with this Retry-After
    search_down: dict[str, int] = field(default_factory=dict)  # query text: 503s still to answer
    loop_next: bool = False  # each search page's next link is the page itself
    edit_results: Callable[[list], list] | None = None  # rewrites each page's results


class QueryError(ValueError):
    """The query is not in the archive's grammar."""


_TOKEN = re.compile(r'\s*(?:(?P<bracket>[()])|(?P<op>AND|OR)(?![\w:])|'
                    r'(?P<term>-?(?P<field>\w+):(?P<value>"[^"]*"|[A-Za-z0-9*_.\-]+)))')


def _tokens(query: str) -> list[tuple[str, str | tuple]]:
    found, position = [], 0
    query = query.strip()
    while position < len(query):
        match = _TOKEN.match(query, position)
        if not match or match.end() == position:
            raise QueryError(query[position:])
        if match["bracket"]:
            found.append((match["bracket"], match["bracket"]))
        elif match["op"]:
            found.append((match["op"], match["op"]))
        else:
            if match["field"] not in SEARCHABLE:
                raise QueryError(match["field"])
            value = match["value"].strip('"')
            found.append(("term", (match["field"], value, match["term"].startswith("-"))))
        position = match.end()
    return found


def parse_query(query: str) -> Callable[[dict], bool]:
    """A predicate on an image's fields for ``query``; :class:`QueryError` if it does not parse.
    ``AND`` binds closer than ``OR``; terms side by side are ANDed, as in the archive."""
    tokens = _tokens(query)
    position = 0

    def peek() -> str | None:
        return tokens[position][0] if position < len(tokens) else None

    def unit() -> Callable[[dict], bool]:
        nonlocal position
        kind = peek()
        if kind == "term":
            position += 1
            return _term(*tokens[position - 1][1])
        if kind == "(":
            position += 1
            inner = either()
            if peek() != ")":
                raise QueryError("unclosed bracket")
            position += 1
            return inner
        raise QueryError(f"unexpected {kind}")

    def both() -> Callable[[dict], bool]:
        nonlocal position
        parts = [unit()]
        while peek() in ("AND", "term", "("):
            if peek() == "AND":
                position += 1
            parts.append(unit())
        return lambda fields: all(part(fields) for part in parts)

    def either() -> Callable[[dict], bool]:
        nonlocal position
        parts = [both()]
        while peek() == "OR":
            position += 1
            parts.append(both())
        return lambda fields: any(part(fields) for part in parts)

    if not tokens:
        return lambda fields: True
    predicate = either()
    if position != len(tokens):
        raise QueryError("trailing text")
    return predicate


def _term(name: str, value: str, negated: bool) -> Callable[[dict], bool]:
    def matches(fields: dict) -> bool:
        have = fields.get(name)
        if have is None:
            return negated
        have = str(have).lower() if isinstance(have, bool) else str(have)
        if value == "*":
            hit = True
        elif value.startswith("*"):
            hit = have.endswith(value[1:])
        elif value.endswith("*"):
            hit = have.startswith(value[:-1])
        elif isinstance(fields.get(name), (int, float)) and not isinstance(fields.get(name), bool):
            try:
                hit = float(value) == float(have)
            except ValueError:
                hit = False
        else:
            hit = have == value
        return hit != negated

    return matches


def _cursor(start: int) -> str:
    return base64.b64encode(urlencode({"p": start}).encode()).decode()


def _start_of(cursor: str) -> int:
    try:
        return int(parse_qs(base64.b64decode(cursor, validate=True).decode(), strict_parsing=True)["p"][0])
    except (ValueError, KeyError, UnicodeDecodeError) as error:
        raise QueryError("cursor") from error


class FakeArchive:
    """Start with :meth:`start`; ``api`` is the base URL to give the client, ``files`` the base
    of the image files' host."""

    def __init__(self, images: list[ArchiveImage], collections: dict[int, str] | None = None) -> None:
        self.images = images
        self.collections = collections if collections is not None else {
            c: COLLECTIONS.get(c, f"Collection {c}") for i in images for c in i.collections}
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.ranges: list[tuple[str, str]] = []
        self.headers: list[tuple[str, dict]] = []  # (isic_id, request headers) of each file GET
        self.sent: Counter[str] = Counter()  # bytes of each file the socket accepted
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._api_handler())
        self._file_server = ThreadingHTTPServer(("127.0.0.1", 0), self._file_handler())
        self.api = f"http://127.0.0.1:{self._server.server_address[1]}/api/v2/"
        self.files = f"http://127.0.0.1:{self._file_server.server_address[1]}"

    def start(self) -> FakeArchive:
        for server in (self._server, self._file_server):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self._server, self._file_server):
            server.shutdown()
            server.server_close()

    def image(self, isic_id: str) -> ArchiveImage:
        return next(i for i in self.images if i.isic_id == isic_id)

    def record(self, image: ArchiveImage) -> dict:
        signature = "?X-Amz-Expires=3600&X-Amz-Signature=" + hashlib.sha256(
            image.isic_id.encode()).hexdigest()[:16]
        return {
            "isic_id": image.isic_id,
            "public": True,
            "copyright_license": image.copyright_license,
            "attribution": image.attribution,
            "files": {
                "full": {"url": f"{self.files}/files/{image.isic_id}.jpg{signature}",
                         "size": len(image.data)},
                "thumbnail_256": {"url": f"{self.files}/thumbnails/{image.isic_id}.jpg{signature}",
                                  "size": len(image.thumbnail_bytes())},
            },
            "metadata": image.fields(),
        }

    def _matching(self, query: str, collections: str) -> list[ArchiveImage]:
        predicate = parse_query(query)
        wanted = {int(c) for c in collections.split(",")} if collections else None
        found = []
        for image in self.images:
            fields = {k: v for group in image.fields().values() for k, v in group.items()}
            fields.update(isic_id=image.isic_id, public=True,
                          copyright_license=image.copyright_license)
            if predicate(fields) and (wanted is None or wanted & image.collections):
                found.append(image)
        return found

    def _search(self, url: str, params: dict) -> tuple[int, dict]:
        """``(status, body)`` of one search request."""
        try:
            chosen = self._matching(params.get("query", ""), params.get("collections", ""))
        except QueryError:
            return 400, PARSE_ERROR
        except ValueError:
            return 422, {"detail": [{"loc": ["query", "collections"],
                                     "msg": "Input should be a valid integer"}]}
        try:
            start = _start_of(params["cursor"]) if "cursor" in params else 0
        except QueryError:
            return 422, {"detail": [{"loc": ["query", "cursor"], "msg": "Value error, Invalid cursor."}]}
        limit = max(0, min(int(params.get("limit") or PAGE_MAX), PAGE_MAX))
        page = chosen[start:start + limit]

        def link(position: int) -> str:
            return f"{url}?{urlencode(sorted({**params, 'cursor': _cursor(position)}.items()))}"

        following = link(start) if self.faults.loop_next else (
            link(start + limit) if start + limit < len(chosen) else None)
        results = [self.record(i) for i in page]
        if self.faults.edit_results:
            results = self.faults.edit_results(results)
        return 200, {"count": len(chosen) if "cursor" not in params else None,
                     "next": following, "previous": None, "results": results}

    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        archive = self

        class Handler(_Handler):
            def do_GET(self) -> None:  # the name http.server calls
                url = urlparse(self.path)
                if self._throttled(url.path):
                    return
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path.endswith("/images/search/"):
                    if archive.faults.portal:
                        self._send(200, b"<html>Please log in to the Wi-Fi</html>",
                                   {"Content-Type": "text/html"})
                        return
                    if self._search_down(params.get("query", "")):
                        self._send(503, b"busy", {"Content-Type": "text/plain"})
                        return
                    host = f"http://{self.headers['Host']}{url.path}"
                    status, body = archive._search(host, params)
                    self._json(status, body)
                    return
                match = re.fullmatch(r"/api/v2/collections/(\d+)/", url.path)
                if match and int(match.group(1)) in archive.collections:
                    number = int(match.group(1))
                    self._json(200, {"id": number, "name": archive.collections[number],
                                     "description": "", "public": True, "pinned": True,
                                     "locked": True, "doi": None, "doi_url": None})
                    return
                self._json(404, {"detail": "Not Found"})

            def _search_down(self, query: str) -> bool:
                with archive._lock:
                    for text, left in archive.faults.search_down.items():
                        if text in query and left > 0:
                            archive.faults.search_down[text] = left - 1
                            return True
                return False

        Handler.archive = archive
        return Handler

    def _file_handler(self) -> type[BaseHTTPRequestHandler]:
        archive = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if self._throttled(url.path):
                    return
                kind, _, name = url.path.strip("/").partition("/")
                isic_id = Path(name).stem
                image = next((i for i in archive.images if i.isic_id == isic_id), None)
                if image is None or kind not in ("files", "thumbnails"):
                    self._send(403, b"<Error><Code>AccessDenied</Code><Message>Access Denied"
                               b"</Message></Error>", {"Content-Type": "application/xml"})
                    return
                with archive._lock:
                    archive._seen[isic_id] += 1
                    first = archive._seen[isic_id] == 1
                    archive.ranges.append((isic_id, self.headers.get("Range", "")))
                    archive.headers.append((isic_id, dict(self.headers)))
                faults = archive.faults
                if first and isic_id in faults.unavailable_once:
                    self._send(503, b"busy", {"Retry-After": "0"})
                    return
                data = image.data if kind == "files" else image.thumbnail_bytes()
                etag = f'"{hashlib.md5(data).hexdigest()}"'  # S3's ETag is an MD5
                if self.headers.get("If-Match") not in (None, "*", etag):
                    self._send(412, b"<Error><Code>PreconditionFailed</Code></Error>")
                    return
                range_header = self.headers.get("Range")
                if isic_id in faults.ignore_range or self.headers.get("If-Range") not in (None, etag):
                    range_header = None  # If-Range of another version: the whole file, as S3 does
                start = 0
                if range_header:
                    start = int(re.match(r"bytes=(\d+)-", range_header).group(1))
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        return
                if isic_id in faults.always_short:
                    data = data[: len(data) * 2 // 3]  # a file that is cut short, every time
                body = data[start:]
                headers = {"Content-Type": "image/jpeg", "Accept-Ranges": "bytes", "ETag": etag}
                status = 200
                if range_header:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                if isic_id in faults.redirect_loop:
                    self._send(302, b"", {"Location": self.path})
                    return
                if isic_id in faults.padding or isic_id in faults.no_length or isic_id in faults.trickle:
                    self._stream(isic_id, status, headers, body, faults.padding.get(isic_id, 0),
                                 isic_id not in faults.no_length, faults.trickle.get(isic_id, 0))
                    return
                drop = first and isic_id in faults.drop_once
                self._send(status, body, headers, send_bytes=len(body) // 2 if drop else None)

        Handler.archive = archive
        return Handler


class _Handler(BaseHTTPRequestHandler):
    """What both servers share: sending answers, throttling, streaming with faults."""

    protocol_version = "HTTP/1.1"
    archive: FakeArchive

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None,
              send_bytes: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if send_bytes is None else body[:send_bytes])
        if send_bytes is not None:
            self.close_connection = True

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _throttled(self, path: str) -> bool:
        """Count the request; answer 429 and say so if the throttle fault applies."""
        faults = self.archive.faults
        with self.archive._lock:
            self.archive.requests[path] += 1
            throttle = faults.throttled > 0 and faults.throttle_path in path
            if throttle:
                faults.throttled -= 1
        if throttle:
            self._send(429, b"slow down", {"Retry-After": faults.retry_after})
        return throttle

    def _stream(self, isic_id: str, status: int, headers: dict, body: bytes, padding: int,
                with_length: bool, pause: float) -> None:
        """Send ``body`` and ``padding`` junk bytes in pieces (a byte every ``pause``
        seconds if trickling), counting what the socket accepts, until the client hangs up."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if with_length:
            self.send_header("Content-Length", str(len(body) + padding))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        junk = b"\0" * (1 << 16)
        pieces = ([body[i:i + 1] for i in range(len(body))] if pause else [body])
        try:
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()
                with self.archive._lock:
                    self.archive.sent[isic_id] += len(piece)
                time.sleep(pause)
            while padding > 0:
                piece = junk[:padding]
                self.wfile.write(piece)
                padding -= len(piece)
                with self.archive._lock:
                    self.archive.sent[isic_id] += len(piece)
        except OSError:  # the client hung up: what it should do with a bad file
            pass


# Today's fields for the sample's images, which predate them: the broad site and the next
# level (anatom_site_1, _2), the diagnosis hierarchy below diagnosis_1, and two collections.
_SITES = [("Trunk", "Anterior trunk"), ("Lower extremity", "Thigh"), ("Head and neck", "Head"),
          ("Upper extremity", "Forearm"), ("Trunk", "Posterior trunk")]
_DIAGNOSES = {"nevus": ("Benign melanocytic proliferations", "Nevus"),
              "melanoma": ("Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive")}
COLLECTIONS = {101: "Older cohort (test)", 202: "Another clinic (test)"}


@cache
def _clean(path: Path) -> bool:
    """Whether notebook 01's checks accept the image (remembered: every test starts a server)."""
    return not isinstance(inspect_image(path), Rejected)


def images_from_shared(folder: Path, count: int | None = None) -> list[ArchiveImage]:
    """Real images and diagnoses from the CC0 ISIC sample (its older JSON records), with
    today's fields added (see :data:`_SITES`, :data:`_DIAGNOSES`, :data:`COLLECTIONS`).

    The sample's streaked thumbnails (broken by a conversion, refused by notebook 01's
    checks) are left out: these tests are about downloading, not about bad images.
    """
    found = []
    for json_path in sorted(folder.glob("ISIC_*.json")):
        if count is not None and len(found) == count:
            break
        if not _clean(json_path.with_suffix(".jpg")):
            continue
        record = json.loads(json_path.read_text())
        clinical = record["meta"]["clinical"]
        diagnosis_1 = (clinical.get("benign_malignant") or "benign").capitalize()
        number = int(record["name"][-7:])
        site_1, site_2 = _SITES[number % len(_SITES)]
        diagnosis_2, diagnosis_3 = _DIAGNOSES.get(clinical.get("diagnosis"), (None, None))
        found.append(ArchiveImage(
            record["name"], diagnosis_1, json_path.with_suffix(".jpg").read_bytes(),
            {"age_approx": clinical.get("age_approx"), "sex": clinical.get("sex"),
             "lesion_id": f"IL_{record['name'][-7:]}", "anatom_site_1": site_1,
             "anatom_site_2": site_2, "diagnosis_2": diagnosis_2, "diagnosis_3": diagnosis_3},
            collections={101 if number % 2 else 202}))
    return found
