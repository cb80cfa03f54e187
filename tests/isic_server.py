"""A real HTTP server on loopback that answers like the ISIC Archive API v2.

It serves ``GET /api/v2/images/search/`` (cursor-paged, filtered by ``diagnosis_1:"..."``) and
the image files, with HTTP Range support, and can misbehave on purpose: drop a connection
half-way through a file, serve a file that is always cut short, or answer 503 once; send
more bytes than a record announces (or no length at all), trickle a file a byte at a time,
redirect a file to itself, answer 429 with a long ``Retry-After``, give a search page whose
``next`` link points to itself, and hand out odd records.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from lesionlib.images import Rejected, inspect_image


@dataclass
class ArchiveImage:
    isic_id: str
    diagnosis_1: str  # "Benign", "Indeterminate" or "Malignant"
    data: bytes
    clinical: dict = field(default_factory=dict)


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
    loop_next: bool = False  # each search page's next link is the page itself
    edit_results: Callable[[list], list] | None = None  # rewrites each page's results


class FakeArchive:
    """Start with :meth:`start`; ``api`` is the base URL to give the client."""

    def __init__(self, images: list[ArchiveImage]) -> None:
        self.images = images
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.ranges: list[tuple[str, str]] = []
        self.sent: Counter[str] = Counter()  # bytes of each file the socket accepted
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.api = f"http://127.0.0.1:{self._server.server_address[1]}/api/v2/"

    def start(self) -> FakeArchive:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, image: ArchiveImage) -> dict:
        base = self.api.replace("/api/v2/", "")
        return {
            "isic_id": image.isic_id,
            "public": True,
            "copyright_license": "CC-0",
            "attribution": "Anonymous",
            "files": {
                "full": {"url": f"{base}/files/{image.isic_id}.jpg", "size": len(image.data)},
                "thumbnail_256": {"url": f"{base}/thumbnails/{image.isic_id}.jpg",
                                  "size": len(image.data)},
            },
            "metadata": {
                "acquisition": {"image_type": "dermoscopic"},
                "clinical": {"diagnosis_1": image.diagnosis_1, **image.clinical},
            },
        }

    def _search(self, query: str, limit: int, cursor: int) -> dict:
        match = re.search(r'diagnosis_1:"([^"]+)"', query)
        chosen = [i for i in self.images if not match or i.diagnosis_1 == match.group(1)]
        page = chosen[cursor:cursor + limit]
        following = cursor + limit
        next_url = (f"{self.api}images/search/?query={query}&limit={limit}&cursor={following}"
                    if following < len(chosen) else None)
        if self.faults.loop_next:
            next_url = f"{self.api}images/search/?query={query}&limit={limit}&cursor={cursor}"
        results = [self.record(i) for i in page]
        if self.faults.edit_results:
            results = self.faults.edit_results(results)
        return {"count": len(chosen), "next": next_url, "previous": None, "results": results}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        archive = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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

            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                url = urlparse(self.path)
                with archive._lock:
                    archive.requests[url.path] += 1
                    throttle = (archive.faults.throttled > 0
                                and archive.faults.throttle_path in url.path)
                    if throttle:
                        archive.faults.throttled -= 1
                if throttle:
                    self._send(429, b"slow down", {"Retry-After": archive.faults.retry_after})
                    return
                if url.path.endswith("/images/search/") and archive.faults.portal:
                    self._send(200, b"<html>Please log in to the Wi-Fi</html>",
                               {"Content-Type": "text/html"})
                    return
                if url.path.endswith("/images/search/"):
                    params = {k: v[0] for k, v in parse_qs(url.query).items()}
                    body = archive._search(params.get("query", ""), int(params.get("limit", 100)),
                                           int(params.get("cursor", 0)))
                    self._send(200, json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
                    return
                isic_id = Path(url.path).stem
                image = next((i for i in archive.images if i.isic_id == isic_id), None)
                if image is None:
                    self._send(404, b"not found")
                    return
                with archive._lock:
                    archive._seen[isic_id] += 1
                    first = archive._seen[isic_id] == 1
                    archive.ranges.append((isic_id, self.headers.get("Range", "")))
                if first and isic_id in archive.faults.unavailable_once:
                    self._send(503, b"busy", {"Retry-After": "0"})
                    return
                data, start = image.data, 0
                range_header = self.headers.get("Range")
                if isic_id in archive.faults.ignore_range:
                    range_header = None
                if range_header:
                    start = int(re.match(r"bytes=(\d+)-", range_header).group(1))
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        return
                if isic_id in archive.faults.always_short:
                    data = data[: len(data) * 2 // 3]  # a file that is cut short, every time
                body = data[start:]
                headers = {"Content-Type": "image/jpeg", "Accept-Ranges": "bytes"}
                status = 200
                if range_header:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                faults = archive.faults
                if isic_id in faults.redirect_loop:
                    self._send(302, b"", {"Location": self.path})
                    return
                if isic_id in faults.padding or isic_id in faults.no_length or isic_id in faults.trickle:
                    self._stream(isic_id, status, headers, body, faults.padding.get(isic_id, 0),
                                 isic_id not in faults.no_length, faults.trickle.get(isic_id, 0))
                    return
                drop = first and isic_id in faults.drop_once
                self._send(status, body, headers, send_bytes=len(body) // 2 if drop else None)

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
                        with archive._lock:
                            archive.sent[isic_id] += len(piece)
                        time.sleep(pause)
                    while padding > 0:
                        piece = junk[:padding]
                        self.wfile.write(piece)
                        padding -= len(piece)
                        with archive._lock:
                            archive.sent[isic_id] += len(piece)
                except OSError:  # the client hung up: what it should do with a bad file
                    pass

        return Handler


def images_from_shared(folder: Path, count: int | None = None) -> list[ArchiveImage]:
    """Real images and diagnoses from the CC0 ISIC sample (its older JSON records).

    The sample's streaked thumbnails (broken by a conversion, refused by notebook 01's
    checks) are left out: these tests are about downloading, not about bad images.
    """
    found = []
    for json_path in sorted(folder.glob("ISIC_*.json")):
        if count is not None and len(found) == count:
            break
        if isinstance(inspect_image(json_path.with_suffix(".jpg")), Rejected):
            continue
        record = json.loads(json_path.read_text())
        clinical = record["meta"]["clinical"]
        diagnosis_1 = (clinical.get("benign_malignant") or "benign").capitalize()
        found.append(ArchiveImage(record["name"], diagnosis_1,
                                  json_path.with_suffix(".jpg").read_bytes(),
                                  {"age_approx": clinical.get("age_approx"),
                                   "sex": clinical.get("sex"),
                                   "lesion_id": f"IL_{record['name'][-7:]}"}))
    return found
