"""A real HTTP server on loopback that answers like the ISIC Archive API v2.

It serves ``GET /api/v2/images/search/`` (cursor-paged, filtered by ``diagnosis_1:"..."``) and
the image files, with HTTP Range support, and can misbehave on purpose: drop a connection
half-way through a file, serve a file that is always cut short, or answer 503 once.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
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


class FakeArchive:
    """Start with :meth:`start`; ``api`` is the base URL to give the client."""

    def __init__(self, images: list[ArchiveImage]) -> None:
        self.images = images
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.ranges: list[tuple[str, str]] = []
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
        return {"count": len(chosen), "next": next_url, "previous": None,
                "results": [self.record(i) for i in page]}

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
                drop = first and isic_id in archive.faults.drop_once
                self._send(status, body, headers, send_bytes=len(body) // 2 if drop else None)

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
