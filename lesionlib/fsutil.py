"""Writing files so that a crash never leaves a half-written one where a whole one is expected."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends like the target (".tmp.keras"): some writers check the suffix.
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=f".tmp{target.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(target: Path, writer: Callable[[IO[str]], Any]) -> None:
    """Write a text file through ``writer(handle)``, atomically."""
    with atomic_path(target) as temporary, temporary.open("w", encoding="utf-8", newline="") as out:
        writer(out)


def write_text_atomic(target: Path, text: str) -> None:
    write_atomic(target, lambda out: out.write(text))


def write_json_atomic(target: Path, data: Any) -> None:
    write_atomic(target, lambda out: json.dump(data, out, indent=2, sort_keys=True, default=str))


def link_or_copy(source: Path, target: Path) -> None:
    """Place ``source``'s bytes at ``target`` atomically: a hard link when possible, else a copy."""
    with atomic_path(target) as temporary:
        temporary.unlink()
        try:
            os.link(source, temporary)
        except OSError:  # another file system, or links not allowed: copy instead
            shutil.copyfile(source, temporary)
