"""Asking a server whether it is there, with a hard deadline.

Used before any long download (images from the ISIC Archive, a network from TF Hub), so that a
learner without internet gets a clear message within seconds instead of a long wait.
"""

from __future__ import annotations

import queue
import threading

import requests

DEADLINE = 10.0  # seconds; the lessons promise a message within 15


def _reason(error: Exception) -> str:
    text = str(error)
    for marker in ("Failed to resolve", "Connection refused", "timed out", "Network is unreachable"):
        if marker in text:
            return marker.lower()
    return type(error).__name__


def probe(url: str, deadline: float = DEADLINE) -> str | None:
    """``None`` if ``url`` answers with success within ``deadline`` seconds, else the reason why not.

    The request runs in a daemon thread so that even a name lookup that hangs (which
    ``requests``' own timeout does not cover) is given up on time, and cannot keep the
    program from exiting afterwards.
    """
    answers: queue.Queue = queue.Queue()

    def ask() -> None:
        try:
            response = requests.get(url, timeout=(min(5.0, deadline), deadline), stream=True)
            response.close()
            answers.put(None if response.ok else f"HTTP {response.status_code} from {url}")
        except requests.RequestException as error:
            answers.put(_reason(error))

    threading.Thread(target=ask, daemon=True, name="lesionlib-probe").start()
    try:
        return answers.get(timeout=deadline)
    except queue.Empty:
        return f"no answer within {deadline:.0f} s"
